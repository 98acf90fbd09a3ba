//! `fretflow embed`: texts or a JSONL file of passages in, one vector per text out (JSONL or Parquet).
use super::encoder_args::EncoderArgs;
use crate::connectors::file::{jsonl, parquet::EmbeddingParquetWriter};
use crate::embed::{SentenceEncoder, TextEmbedder};
use crate::records::Passage;
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `fretflow embed`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["texts", "input"])))]
pub struct EmbedArgs {
    /// The encoder.
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// A text to embed (repeatable); ids are the texts' positions, from 0.
    #[arg(long = "text", value_name = "T")]
    pub texts: Vec<String>,
    /// JSONL of passages: `id` (or `_id`), optional `title`, `text`; embedded as `title + " " + text`.
    #[arg(long, value_name = "FILE.jsonl")]
    pub input: Option<PathBuf>,
    /// Output file: `.jsonl` (`{"id":..,"embedding":[..]}` per line) or `.parquet` (columns `id`,
    /// `embedding`). Default: JSONL on stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print one JSON line of timings to stderr at the end (`load_s`, `encode_s`, `texts_per_s`).
    #[arg(long)]
    pub stats: bool,
}

/// One output line.
#[derive(Serialize)]
struct EmbeddingRecord<'a> {
    id: &'a str,
    embedding: &'a [f32],
}

/// Runs `fretflow embed`.
pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let output_format = args.output.as_deref().map(OutputFormat::of).transpose()?.unwrap_or(OutputFormat::Jsonl);
    let options = args.encoder.options()?;
    let (ids, texts) = read_input(&args)?;
    let started = Instant::now();
    let encoder = SentenceEncoder::from_name(&args.encoder.model, options)?;
    let load_s = started.elapsed().as_secs_f64();

    let progress = if args.input.is_some() { progress_bar(texts.len()) } else { ProgressBar::hidden() };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encode_started = Instant::now();
    let vectors = encoder.encode_with_progress(&refs, &mut |n| progress.inc(n as u64))?;
    let encode_s = encode_started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    tracing::info!(texts = texts.len(), seconds = encode_s, "Encoded texts.");

    let flat = Vec::<f32>::try_from(vectors.flatten(0, -1)).context("reading embeddings back from LibTorch")?;
    write_output(args.output.as_deref(), output_format, &ids, &flat, encoder.dim())?;
    if args.stats {
        let stats = serde_json::json!({
            "texts": texts.len(), "load_s": load_s, "encode_s": encode_s,
            "texts_per_s": texts.len() as f64 / encode_s.max(1e-9), "threads": tch::get_num_threads(),
            "precision": format!("{:?}", options.precision), "batch_tokens": options.token_budget,
        });
        eprintln!("{stats}");
    }
    Ok(())
}

/// Where the output goes, by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputFormat {
    Jsonl,
    Parquet,
}

impl OutputFormat {
    fn of(path: &Path) -> anyhow::Result<Self> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl") => Ok(Self::Jsonl),
            Some("parquet") => Ok(Self::Parquet),
            _ => bail!("--output {}: unsupported extension, expected .jsonl or .parquet", path.display()),
        }
    }
}

/// Ids and texts to embed, from `--text` or `--input`; fails on an empty input.
fn read_input(args: &EmbedArgs) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let Some(path) = &args.input else {
        let ids = (0..args.texts.len()).map(|i| i.to_string()).collect();
        return Ok((ids, args.texts.clone()));
    };
    let passages = jsonl::read_all::<Passage>(path)?;
    if passages.is_empty() {
        bail!("{}: no passages (the file is empty or holds only blank lines)", path.display());
    }
    Ok(passages
        .into_iter()
        .map(|(_, p)| {
            let text = p.embedding_text();
            (p.id, text)
        })
        .unzip())
}

fn progress_bar(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    let style = ProgressStyle::with_template("{spinner} embedding [{bar:40}] {pos}/{len} texts ({per_sec}, eta {eta})")
        .expect("the progress template is valid. This is a bug.")
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

fn write_output(
    path: Option<&Path>,
    format: OutputFormat,
    ids: &[String],
    flat: &[f32],
    dim: usize,
) -> anyhow::Result<()> {
    match (path, format) {
        (Some(path), OutputFormat::Parquet) => {
            let mut writer = EmbeddingParquetWriter::create(path, dim)?;
            writer.write(ids, flat)?;
            writer.finish()?;
        }
        (Some(path), OutputFormat::Jsonl) => {
            let mut writer =
                jsonl::JsonlWriter::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            for (id, embedding) in ids.iter().zip(flat.chunks_exact(dim)) {
                writer
                    .write(&EmbeddingRecord { id, embedding })
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            writer.finish().with_context(|| format!("writing {}", path.display()))?;
        }
        (None, _) => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for (id, embedding) in ids.iter().zip(flat.chunks_exact(dim)) {
                serde_json::to_writer(&mut out, &EmbeddingRecord { id, embedding })?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::file::parquet::read_embeddings;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmbedArgs,
    }

    fn args(extra: &[&str]) -> EmbedArgs {
        let argv = ["embed", "--device", "cpu"].iter().chain(extra);
        Cli::try_parse_from(argv).expect("arguments parse").args
    }

    fn error_of(extra: &[&str]) -> String {
        format!("{:#}", run(args(extra)).unwrap_err())
    }

    #[test]
    fn missing_input_file_is_named() {
        let err = error_of(&["--input", "/no/such/corpus.jsonl"]);
        assert!(err.contains("/no/such/corpus.jsonl"), "{err}");
    }

    #[test]
    fn malformed_line_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(&path, "{\"_id\":\"a\",\"text\":\"x\"}\n{\"_id\":\"b\",\"text\":\n").unwrap();
        let err = error_of(&["--input", path.to_str().unwrap()]);
        assert!(err.contains("c.jsonl:2:"), "{err}");
    }

    #[test]
    fn empty_input_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.jsonl");
        std::fs::write(&path, "\n  \n").unwrap();
        let err = error_of(&["--input", path.to_str().unwrap()]);
        assert!(err.contains("empty.jsonl") && err.contains("no passages"), "{err}");
    }

    #[test]
    fn unsupported_output_extension_is_rejected() {
        let err = error_of(&["--text", "a", "--output", "out.csv"]);
        assert!(err.contains("out.csv") && err.contains(".parquet"), "{err}");
    }

    #[test]
    fn text_and_input_are_exclusive_and_one_is_required() {
        assert!(Cli::try_parse_from(["embed", "--text", "a", "--input", "x.jsonl"]).is_err());
        assert!(Cli::try_parse_from(["embed"]).is_err());
        assert!(Cli::try_parse_from(["embed", "--precision", "f16", "--text", "a"]).is_err());
    }

    /// Parquet output keeps input order and ids, and a passage is embedded as `title + " " + text`.
    #[test]
    fn jsonl_passages_to_parquet_embed_title_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("c.jsonl");
        let lines = [
            r#"{"_id":"p1","title":"Wings","text":"lift and drag"}"#,
            r#"{"id":"p2","text":"a much longer passage about boundary layers and heat transfer"}"#,
        ];
        std::fs::write(&input, lines.join("\n")).unwrap();
        let out = dir.path().join("v.parquet");
        run(args(&["--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()])).unwrap();
        let rows = read_embeddings(&out).unwrap();
        assert_eq!(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["p1", "p2"]);
        assert_eq!(rows[0].1.len(), 384);

        let joined = dir.path().join("t.jsonl");
        run(args(&["--text", "Wings lift and drag", "--output", joined.to_str().unwrap()])).unwrap();
        let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&joined).unwrap().trim()).unwrap();
        let want: Vec<f32> = serde_json::from_value(line["embedding"].clone()).unwrap();
        let diff = want.iter().zip(&rows[0].1).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "title + text embeds like the joined text (diff {diff})");
        assert_eq!(line["id"], "0");
    }
}
