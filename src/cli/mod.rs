//! The command line: `fretflow <command>`. Each command lives in its own module with its clap arguments.
use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub mod embed;
pub mod encoder_args;
pub mod eval;
pub mod kafka;
pub mod llm;
pub mod run;
pub mod train;

/// fretflow: passages in, a living FRet training set and a fine-tuned embedder out.
#[derive(Debug, Parser)]
#[command(name = "fretflow", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Embed texts or a JSONL file into vectors (JSONL or Parquet out).
    Embed(embed::EmbedArgs),
    /// Evaluate a model on a BEIR-layout dataset: prints a table, writes a JSON report.
    Eval(eval::EvalArgs),
    /// Run the LLM stage alone on a JSONL of passages.
    Llm(llm::LlmArgs),
    /// Run a pipeline from its config file (e.g. pipelines/quickstart.toml).
    Run(run::RunArgs),
    /// Kafka: produce a corpus into a topic, or follow the FRet stream.
    Kafka(kafka::KafkaArgs),
    /// Produce a JSONL or Parquet corpus into a Kafka topic (same as `kafka produce`).
    Produce(kafka::ProduceArgs),
    /// Follow the FRet stream of a Kafka topic (same as `kafka consume`).
    Consume(kafka::ConsumeArgs),
    /// Fine-tune the encoder on FRet examples, with rolling evaluated checkpoints.
    Train(train::TrainArgs),
}

/// Parses arguments, runs the command, and maps any error to a message on stderr and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Llm(args) => llm::run(args),
        Command::Run(args) => run::run(args),
        Command::Kafka(args) => kafka::run(args),
        Command::Produce(args) => kafka::produce(args),
        Command::Consume(args) => kafka::consume(args),
        Command::Train(args) => train::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, joined by `: `, leaving out a cause whose text the message before it already
/// ends with (errors that name their cause in their own message, `cannot read x: No such file ...`, would
/// otherwise print it twice).
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.ends_with(&part) {
            text = format!("{text}: {part}");
        }
    }
    text
}

/// Logs to stderr; `RUST_LOG` overrides the default level (`info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let config = crate::pipeline::config::ConfigError::Read { path: "nope.toml".into(), source: io() };
        let text = error_text(&anyhow::Error::new(config).context("pipeline nope.toml"));
        assert_eq!(
            text,
            "pipeline nope.toml: cannot read pipeline config nope.toml: No such file or directory (os error 2)"
        );
        let plain = anyhow::Error::new(io()).context("cannot open x");
        assert_eq!(error_text(&plain), "cannot open x: No such file or directory (os error 2)");
    }
}
