//! `fretflow run PIPELINE.toml`: runs the FRet dataflow of a pipeline config, with progress bars and a
//! summary at the end. Timely's cluster flags (`-w`, `-n`, `-p`, `-h`) choose threads and processes.
//! A file `[source]` reads the file; a `[kafka.source]` follows the topic until Ctrl-C or, with
//! `--idle-exit`, until it has been quiet that long. With `[train]` (file pipelines) the encoder is also
//! fine-tuned in this process. All of that is [`crate::pipeline::run`]; this module parses the arguments
//! and shows progress and the summary.
use crate::dataflow::params::DuplicateAction;
use crate::dataflow::progress::Snapshot;
use crate::pipeline::config::{Input, PipelineConfig};
use crate::pipeline::driver::ProgressHook;
use crate::pipeline::metrics::MetricsEndpoint;
use crate::pipeline::{self, write_summary, InputDoneHook, RunOptions};
use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `fretflow run`. (`-h` is timely's hostfile flag here; help is `--help`.)
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// The pipeline config (e.g. pipelines/quickstart.toml).
    pub config: PathBuf,
    /// Worker threads per process (default: the config's `workers`).
    #[arg(short = 'w', long)]
    pub workers: Option<usize>,
    /// Number of processes in the cluster.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub processes: usize,
    /// This process's index in the cluster (0-based).
    #[arg(short = 'p', long, default_value_t = 0)]
    pub process: usize,
    /// File with one `host:port` per process (default: localhost:2101, 2102, ...).
    #[arg(short = 'h', long)]
    pub hostfile: Option<PathBuf>,
    /// Kafka pipelines: stop (drain and commit) once the source topic has been quiet for this many
    /// seconds. Without it a Kafka run follows the topic until Ctrl-C. Ignored by file pipelines.
    #[arg(long, value_name = "SECONDS")]
    pub idle_exit: Option<f64>,
    /// A damaged LLM cache file (the config's `cache`) is moved aside (`<name>.damaged-<unix time>`) and a
    /// new cache started, instead of stopping with an error.
    #[arg(long)]
    pub quarantine_damaged_cache: bool,
    /// No progress bars (also off when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Serve the run's counters for Prometheus at `http://ADDR/metrics` (e.g. 127.0.0.1:9184; port 0
    /// picks a free one, printed at start), refreshed about four times a second.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

impl RunArgs {
    /// Timely's configuration from the cluster flags.
    pub fn timely_config(&self, config_workers: usize) -> anyhow::Result<timely::Config> {
        let mut args = vec![
            "-w".to_string(),
            self.workers.unwrap_or(config_workers).to_string(),
            "-n".to_string(),
            self.processes.to_string(),
            "-p".to_string(),
            self.process.to_string(),
        ];
        if let Some(hostfile) = &self.hostfile {
            args.extend(["-h".to_string(), hostfile.display().to_string()]);
        }
        if self.process >= self.processes {
            anyhow::bail!("--process {} must be smaller than --processes {}", self.process, self.processes);
        }
        timely::Config::from_args(args.into_iter()).map_err(|e| anyhow::anyhow!("invalid cluster flags: {e}"))
    }
}

/// Runs `fretflow run`: the pipeline ([`crate::pipeline::run`]), then its summary.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = PipelineConfig::load(&args.config)?;
    config.quarantine_damaged_cache = args.quarantine_damaged_cache;
    let config = Arc::new(config);
    let idle_exit = match args.idle_exit {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            anyhow::bail!("--idle-exit must be a positive number of seconds, got {s}")
        }
        s => s.map(Duration::from_secs_f64),
    };
    let bars = (!args.no_progress && std::io::stderr().is_terminal()).then(Bars::new);
    let mut progress: Option<ProgressHook> =
        bars.map(|mut b| Box::new(move |s: &Snapshot| b.update(s)) as ProgressHook);
    let mut train_gauges = None;
    if let Some(addr) = &args.metrics {
        let endpoint = MetricsEndpoint::serve(addr)?;
        println!("metrics: http://{}/metrics", endpoint.local_addr());
        progress = Some(endpoint.hook(progress));
        train_gauges = Some(endpoint.train_gauges());
    }
    // With `[train] after_input` the run's summary comes when the input has ended, before training.
    let after_input = config.train.as_ref().is_some_and(|t| t.after_input) && args.process == 0;
    let on_input_done = after_input.then(|| {
        let config = Arc::clone(&config);
        Box::new(move |snapshot: &Snapshot| {
            print_summary(snapshot, &config);
            if let Err(e) = write_summary(&config, snapshot) {
                tracing::error!(error = %e, "Could not write the run summary.");
            }
            println!("training on the {} examples of the FRet set (`[train] after_input`)", snapshot.examples_live);
        }) as InputDoneHook
    });
    let options = RunOptions {
        timely: args.timely_config(config.workers)?,
        process: args.process,
        idle_exit,
        progress,
        on_input_done,
        train_gauges,
    };
    let outcome = pipeline::run(&config, options).with_context(|| format!("pipeline {}", args.config.display()))?;
    // A run that returns has ended its input, so with after_input the summary is already out.
    if after_input {
        println!("{}", outcome.trained.unwrap_or_default());
        return Ok(());
    }
    print_summary(&outcome.snapshot, &config);
    if let Some(text) = outcome.trained {
        println!("{text}");
    }
    write_summary(&config, &outcome.snapshot)
}

/// One progress line per counter.
struct Bars {
    _multi: MultiProgress,
    lines: Vec<ProgressBar>,
    last: Option<(f64, u64)>,
}

impl Bars {
    const NAMES: [&'static str; 6] =
        ["passages in", "queries", "judged pairs", "examples out", "LLM calls", "dead letters"];

    fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        let style = ProgressStyle::with_template("{spinner} {prefix:>13} {pos:>7} {msg}")
            .expect("valid template. This is a bug.");
        let lines = Self::NAMES
            .iter()
            .map(|name| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                bar.set_prefix(*name);
                bar
            })
            .collect();
        Self { _multi: multi, lines, last: None }
    }

    fn update(&mut self, s: &Snapshot) {
        let rate = match self.last {
            Some((t, calls)) if s.elapsed_s > t => (s.llm_calls.saturating_sub(calls)) as f64 / (s.elapsed_s - t),
            _ => 0.0,
        };
        self.last = Some((s.elapsed_s, s.llm_calls));
        let hits = s.llm_cache_hits as f64 / (s.llm_cache_hits + s.llm_calls).max(1) as f64;
        let values = [s.passages_in, s.queries, s.judged_pairs, s.examples_live, s.llm_calls, s.dead_letters];
        for (bar, value) in self.lines.iter().zip(values) {
            bar.set_position(value);
            bar.tick();
        }
        self.lines[3].set_message(format!("({} changes)", s.example_changes));
        self.lines[4].set_message(format!("{rate:.1}/s, cache hit rate {:.0}%", 100.0 * hits));
    }
}

fn print_summary(s: &Snapshot, config: &PipelineConfig) {
    println!("fretflow run finished in {:.1} s", s.elapsed_s);
    println!("  records read      {:>8}   passages in {}, deleted {}", s.records_in, s.passages_in, s.passages_deleted);
    println!("  queries           {:>8}", s.queries);
    let duplicates = match config.fret_params().duplicate_queries {
        Some(d) if d.action == DuplicateAction::Keep => format!("kept and counted (cosine >= {})", d.threshold),
        Some(d) => format!("dead-lettered (cosine >= {} with a kept query)", d.threshold),
        None => "not checked".to_owned(),
    };
    println!("  duplicate queries {:>8}   {duplicates}", s.duplicate_queries);
    println!("  judged pairs      {:>8}", s.judged_pairs);
    println!("  examples          {:>8}   ({} changes written)", s.examples_live, s.example_changes);
    println!(
        "  p1 != seed        {:>8}   ({:.0}% of examples: the judge preferred another passage)",
        s.positive_not_seed,
        100.0 * s.positive_not_seed as f64 / s.examples_live.max(1) as f64
    );
    let dead_letters = match config.input() {
        Input::File(_) => config.sinks.dead_letters.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        Input::Kafka { sink, .. } => format!("topic {}", sink.dead_letter_topic()),
    };
    println!("  dead letters      {:>8}   -> {dead_letters}", s.dead_letters);
    println!(
        "  LLM calls         {:>8}   cache hits {} ({:.0}%), LLM busy {:.0}% of the run",
        s.llm_calls,
        s.llm_cache_hits,
        100.0 * s.llm_cache_hits as f64 / (s.llm_cache_hits + s.llm_calls).max(1) as f64,
        100.0 * s.llm_busy_share
    );
    println!("  time by stage (model stages: time with a batch in flight):");
    for (stage, seconds) in &s.stage_seconds {
        println!("    {stage:<16} {seconds:>8.2} s");
    }
    for path in config.sinks.changes.iter().chain(&config.sinks.snapshot) {
        println!("  wrote {}", path.display());
    }
    if let Input::Kafka { source, sink, .. } = config.input() {
        println!("  wrote topic {} (compacted; progress committed under group {})", sink.topic, source.group_id);
    }
}
