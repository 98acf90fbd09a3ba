//! `fretflow eval`: encode a BEIR-layout dataset with a model, retrieve exactly, print a table of
//! nDCG@10, Recall@10/100, MRR@10 and MAP@100, and write a JSON report.
use super::encoder_args::EncoderArgs;
use crate::embed::{SentenceEncoder, TextEmbedder};
use crate::eval::{evaluate, evaluate_at_dims, BeirDataset, EvalOptions, EvalReport, LoadOptions, UnknownIds};
use crate::retrieve::IndexOptions;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `fretflow eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The encoder.
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// Dataset directory in BEIR layout: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv.
    #[arg(long, value_name = "DIR")]
    pub dataset: PathBuf,
    /// Which qrels file to evaluate: qrels/SPLIT.tsv.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// JSON report path [default: out/eval/DATASET-MODEL.json].
    #[arg(long, value_name = "FILE.json")]
    pub output: Option<PathBuf>,
    /// Count and skip qrels lines whose query or passage id is not in the dataset, instead of failing.
    #[arg(long)]
    pub allow_unknown_ids: bool,
    /// Text put before every query, e.g. "task: Given a question, find a passage that answers it | query: "
    /// for a model fine-tuned on FRet's task-prefixed queries (default: none, as the reference pipeline).
    #[arg(long, default_value = "")]
    pub query_prefix: String,
    /// Leave per-query metrics out of the JSON report.
    #[arg(long)]
    pub no_per_query: bool,
    /// Also evaluate at these truncated dimensions (Matryoshka; comma-separated, e.g. 64,128,256): the first
    /// D components of every vector, re-normalized, as sentence-transformers' `truncate_dim`. Texts are
    /// encoded once; each dimension gets its own report (`<output stem>-dimD.json`) and a column in the
    /// table.
    #[arg(long, value_delimiter = ',', value_name = "D,...")]
    pub dim: Vec<usize>,
}

/// Runs `fretflow eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let options = args.encoder.options()?;
    let started = Instant::now();
    let load = LoadOptions {
        split: args.split.clone(),
        unknown_ids: if args.allow_unknown_ids { UnknownIds::Warn } else { UnknownIds::Error },
    };
    let dataset = BeirDataset::load(&args.dataset, &load)?;
    let load_s = started.elapsed().as_secs_f64();

    let device = options.device;
    let encoder = SentenceEncoder::from_name(&args.encoder.model, options)?;
    let opts = EvalOptions {
        model: args.encoder.model.clone(),
        per_query: !args.no_per_query,
        query_prefix: args.query_prefix.clone(),
        index: IndexOptions { device, ..IndexOptions::default() },
        ..EvalOptions::default()
    };
    let output = args.output.clone().unwrap_or_else(|| default_report_path(&dataset.name, &args.encoder.model));
    if args.dim.is_empty() {
        let mut report = evaluate(&encoder, &dataset, &opts)?;
        report.timings.load_s = load_s;
        report.write_json(&output)?;
        print!("{}", report.table());
        println!("\nreport   {}", output.display());
        return Ok(());
    }
    let full = encoder.dim();
    let mut dims = vec![full];
    dims.extend(args.dim.iter().copied().filter(|&d| d != full));
    let mut reports = evaluate_at_dims(&encoder, &dataset, &opts, &dims)?;
    print!("{}", reports[0].table());
    println!("\nby dimension (first D components, re-normalized)\n{}", dims_table(&reports));
    for report in &mut reports {
        report.timings.load_s = load_s;
        let path =
            if report.settings.dim == full { output.clone() } else { dim_report_path(&output, report.settings.dim) };
        report.write_json(&path)?;
        println!("report   {}", path.display());
    }
    Ok(())
}

/// `report.json` -> `report-dim64.json`.
fn dim_report_path(output: &Path, dim: usize) -> PathBuf {
    let stem = output.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "report".into());
    output.with_file_name(format!("{stem}-dim{dim}.json"))
}

/// Metrics as rows, one column per dimension.
fn dims_table(reports: &[EvalReport]) -> String {
    let mut out = format!("{:<12}", "metric");
    for r in reports {
        out.push_str(&format!(" {:>8}", r.settings.dim));
    }
    out.push('\n');
    let columns: Vec<_> = reports.iter().map(|r| r.metrics.named()).collect();
    for (row, (name, _)) in columns[0].iter().enumerate() {
        out.push_str(&format!("{name:<12}"));
        for column in &columns {
            out.push_str(&format!(" {:>8.4}", column[row].1));
        }
        out.push('\n');
    }
    out
}

/// `out/eval/<dataset>-<model>.json`, the model named by its last path component, with characters
/// other than letters, digits, `.`, `_` and `-` replaced by `_`.
fn default_report_path(dataset: &str, model: &str) -> PathBuf {
    let model = Path::new(model.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| model.to_string());
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
    };
    Path::new("out").join("eval").join(format!("{}-{}.json", clean(dataset), clean(&model)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_report_path_names_dataset_and_model() {
        assert_eq!(
            default_report_path("cranfield", "all-MiniLM-L6-v2"),
            Path::new("out/eval/cranfield-all-MiniLM-L6-v2.json")
        );
        assert_eq!(default_report_path("adi", "/models/my model/"), Path::new("out/eval/adi-my_model.json"));
        assert_eq!(
            default_report_path("cisi", "sentence-transformers/all-MiniLM-L6-v2"),
            Path::new("out/eval/cisi-all-MiniLM-L6-v2.json")
        );
    }
}
