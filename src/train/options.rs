//! `fretflow train`'s options, which are also the keys of a pipeline's `[train]` table: one type, parsed by
//! clap from the command line and by serde from a table ([`options_from_table`]), with one set of defaults
//! (the clap attributes; [`TrainOptions::default`] is what they give) and one set of checks
//! ([`TrainOptions::validate`]); and the trainer they describe ([`TrainOptions::trainer`]).
use crate::device::DeviceChoice;
use crate::device::Precision;
use crate::embed::{default_token_budget, EncoderOptions};
use crate::train::buffer::SamplerConfig;
use crate::train::data::{ExampleFilter, QueryFormat};
use crate::train::evaluate::BeirEvaluator;
use crate::train::gradcache::BackwardConfig;
use crate::train::optim::{Decay, OptimConfig};
use crate::train::promotion::PromotionConfig;
use crate::train::{DistillTeacher, GeckoLoss, RunSummary, Trainer, TrainerConfig};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Everything about a training run but where its data comes from: `fretflow train`'s options, and the
/// keys of a pipeline's `[train]` table (see [`options_from_table`]).
#[derive(Debug, Clone, clap::Args, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainOptions {
    /// Base model: a directory in sentence-transformers layout or a short name.
    #[arg(long, default_value = "all-MiniLM-L6-v2")]
    pub model: String,
    /// Output directory for checkpoints, `latest` (the promoted checkpoint), `newest` (the last one written,
    /// where a restart continues), `checkpoints.jsonl` and `ndcg_at_10.png`.
    #[arg(long)]
    pub out: PathBuf,
    /// Total optimizer steps (restarts included); default: one pass over a file; on a topic, forever, or
    /// until --kafka-idle-exit ends the stream and one pass over what was read is done.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Queries per step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Hard negatives per FRet example.
    #[arg(long, default_value_t = 1)]
    pub hard_negatives: usize,
    /// Truncation length in tokens (default: the model's).
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 10)]
    pub warmup_steps: u64,
    /// Schedule after warmup (`linear` decays to zero at --steps).
    #[arg(long, value_enum, default_value_t = Decay::Constant)]
    pub decay: Decay,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Clip the global gradient norm (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Softmax temperature of the loss.
    #[arg(long, default_value_t = 0.05)]
    pub temperature: f64,
    /// Matryoshka dimensions, comma-separated (e.g. 384,256,128,64); empty: full dimension only.
    #[arg(long, value_delimiter = ',')]
    pub matryoshka_dims: Vec<usize>,
    /// Matryoshka weights, one per dimension (default 1 each).
    #[arg(long, value_delimiter = ',')]
    pub matryoshka_weights: Vec<f32>,
    /// Leave the other queries of the batch out of each query's negatives.
    #[arg(long)]
    pub no_same_tower: bool,
    /// Weight of the distillation term: listwise KL from the judge's scores of each query's positive and hard
    /// negatives to the student's (0: contrastive loss only).
    #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
    pub distill_weight: f64,
    /// The judge score distilled: `rrf` (fused), `ql`, `rc`, or `rrf_student` (the fused rank fused again
    /// with the retrieval embedder's cosine rank, k = 60).
    #[arg(long, value_enum, default_value_t = DistillTeacher::Rrf)]
    pub distill_teacher: DistillTeacher,
    /// Temperature of the teacher's softmax, on its score's scale (RRF values span ~0.025-0.033: 0.001; QL
    /// log-probabilities: ~1; RC probabilities: ~0.05).
    #[arg(long, default_value_t = 0.001, value_parser = positive)]
    pub distill_temperature: f64,
    /// How FRet queries are given to the encoder: `task` (`task: {task} | query: {query}`, Gecko's prompt)
    /// or `plain` (the query alone, as the base model was trained; use the checkpoints with plain queries).
    #[arg(long, value_enum, default_value_t = QueryFormat::Task)]
    pub query_format: QueryFormat,
    /// Which FRet examples are trained on: `all`, or `consistent`: only those whose judged positive is the
    /// passage their query was written for (round-trip consistency; measured in docs/results/finetune.md as
    /// `seed` labels).
    #[arg(long, value_enum, default_value_t = ExampleFilter::All)]
    pub examples: ExampleFilter,
    /// Prefix of the evaluation queries of checkpoints (the promotion gate and the manifest measure each
    /// checkpoint as it is used; the base model is measured with plain queries) [default: with
    /// `--query-format task`, `task: Given a question, find a passage that answers the question | query: `;
    /// with `plain`, none].
    #[arg(long)]
    pub eval_query_prefix: Option<String>,
    /// Use GradCache: constant memory whatever the batch size, one extra forward pass.
    #[arg(long)]
    pub grad_cache: bool,
    /// Padded tokens per encoder chunk [default on a CPU: 2048 in f32, 4096 in bf16 (cache-sized blocks); on a GPU 8192].
    #[arg(long)]
    pub chunk_tokens: Option<usize>,
    /// Train with the model's dropout.
    #[arg(long)]
    pub dropout: bool,
    /// `f32`, or `bf16`: mixed precision (bf16 matrix products; f32 weights, gradients, optimizer state,
    /// LayerNorms and loss), faster on CPUs with AVX-512 BF16/AMX and on GPUs. Checkpoints are f32 either
    /// way, and are evaluated in f32.
    #[arg(long, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Extra `{query, positive}` JSONL datasets mixed into batches.
    #[arg(long)]
    pub pairs: Vec<PathBuf>,
    /// Fraction of each batch taken from --pairs.
    #[arg(long, default_value_t = 0.0)]
    pub pair_mix_ratio: f64,
    /// Checkpoint every N steps.
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Checkpoint every T minutes.
    #[arg(long)]
    pub checkpoint_minutes: Option<f64>,
    /// Checkpoints kept besides the best.
    #[arg(long, default_value_t = 3)]
    pub keep_last: usize,
    /// BEIR datasets to evaluate each checkpoint on (directories).
    #[arg(long)]
    pub eval_dataset: Vec<PathBuf>,
    /// Also evaluate each checkpoint at these truncated (Matryoshka) dimensions, comma-separated: metrics
    /// recorded as `METRIC/D` (`ndcg@10/256`) in the manifest and the model card [default: the
    /// --matryoshka-dims, if any].
    #[arg(long, value_delimiter = ',')]
    pub eval_dims: Vec<usize>,
    /// Metric choosing the best checkpoint (mean over --eval-dataset).
    #[arg(long, default_value = "ndcg@10")]
    pub best_metric: String,
    /// Turn the promotion gate off: `latest` follows every checkpoint. With the gate on (the default, acting
    /// when --eval-dataset is given) `latest` moves only to a checkpoint whose --promote-metric beats the
    /// promoted model's (at first the base model's, measured before the first step) by more than
    /// --promote-margin; until one does, there is no `latest`. In a `[train]` table: `promotion_gate = false`.
    #[arg(long)]
    pub no_promotion_gate: bool,
    /// Metric the promotion gate compares (mean over --eval-dataset; higher is better) [default: --best-metric].
    #[arg(long)]
    pub promote_metric: Option<String>,
    /// A checkpoint is promoted when its metric > the promoted model's + this margin: at 0 (the default) it
    /// must be strictly better, a tie keeps `latest` where it is; a negative margin accepts a drop (-1: every
    /// checkpoint).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub promote_margin: f64,
    /// Examples needed before the first step.
    #[arg(long, default_value_t = 1)]
    pub min_examples: usize,
    /// Start from the base model even if --out holds a checkpoint.
    #[arg(long)]
    pub no_resume: bool,
    /// Seed of batch sampling and dropout.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Intra-op CPU threads for LibTorch (default: LibTorch's choice, one per core).
    #[arg(long)]
    pub threads: Option<i32>,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// `v` when it is a finite number >= 0.
fn check_non_negative(v: f64) -> Result<f64, String> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err("must be a finite number >= 0".into())
    }
}

/// `v` when it is a finite number > 0.
fn check_positive(v: f64) -> Result<f64, String> {
    match check_non_negative(v) {
        Ok(v) if v > 0.0 => Ok(v),
        _ => Err("must be a finite number > 0".into()),
    }
}

/// A finite number >= 0 (clap names the option when it is not).
fn non_negative(s: &str) -> Result<f64, String> {
    check_non_negative(s.parse().map_err(|e| format!("{e}"))?)
}

/// A finite number > 0 (clap names the option when it is not).
fn positive(s: &str) -> Result<f64, String> {
    check_positive(s.parse().map_err(|e| format!("{e}"))?)
}

impl Default for TrainOptions {
    /// The command line's defaults (written once, in the clap attributes), with an empty `out`.
    fn default() -> Self {
        let parsed = <TableArgs as clap::Parser>::try_parse_from(["--out", "."])
            .expect("the defaults of fretflow train's options parse. This is a bug.");
        TrainOptions { out: PathBuf::new(), ..parsed.options }
    }
}

/// The task prompt checkpoints trained with `--query-format task` are evaluated with (a question-answering
/// retrieval task, as the FRet generator's prompts mostly are).
pub const EVAL_TASK_PREFIX: &str = "task: Given a question, find a passage that answers the question | query: ";

/// Padded tokens per training chunk for mixed bf16 on a CPU: on the 2-core AVX-512/AMX Xeon,
/// `fretflow train --precision bf16` (scripts/bench_train.py's data, batch 16, length 128, best of two runs)
/// made 9.85 examples/s at 2048, 10.01 at 4096 and 8.98 at 8192.
const CPU_MIXED_BF16_CHUNK_TOKENS: usize = 4096;

/// The chunk budget when none is given: the inference rule for f32 and for GPUs (measured for training
/// too by scripts/bench_train.py, 2 CPU threads: f32 at 2048 gave 1.04x sentence-transformers, at 8192
/// 0.75x), [`CPU_MIXED_BF16_CHUNK_TOKENS`] for mixed bf16 on a CPU.
fn default_chunk_tokens(device: tch::Device, precision: Precision) -> usize {
    match (device, precision) {
        (tch::Device::Cpu, Precision::Bf16) => CPU_MIXED_BF16_CHUNK_TOKENS,
        _ => default_token_budget(device, Precision::F32),
    }
}

impl TrainOptions {
    /// The trainer configuration these arguments describe, for training on `device`.
    pub fn config(&self, device: tch::Device) -> TrainerConfig {
        TrainerConfig {
            model: self.model.clone(),
            out_dir: self.out.clone(),
            max_steps: self.steps,
            loss: GeckoLoss {
                temperature: self.temperature,
                matryoshka_dims: self.matryoshka_dims.clone(),
                matryoshka_weights: self.matryoshka_weights.clone(),
                same_tower_negatives: !self.no_same_tower,
                mask_false_negatives: true,
                distill_weight: self.distill_weight,
                distill_teacher: self.distill_teacher,
                distill_temperature: self.distill_temperature,
            },
            optimizer: OptimConfig {
                lr: self.lr,
                weight_decay: self.weight_decay,
                warmup_steps: self.warmup_steps,
                decay: self.decay,
                total_steps: self.steps,
                max_grad_norm: self.max_grad_norm,
                ..OptimConfig::default()
            },
            sampler: SamplerConfig {
                batch_size: self.batch_size,
                hard_negatives: self.hard_negatives,
                pair_mix_ratio: self.pair_mix_ratio,
                seed: self.seed,
            },
            backward: BackwardConfig {
                chunk_tokens: self.chunk_tokens.unwrap_or_else(|| default_chunk_tokens(device, self.precision)),
                grad_cache: self.grad_cache,
                dropout: self.dropout,
                bf16: self.precision == Precision::Bf16,
            },
            checkpoint_every_steps: self.checkpoint_every,
            checkpoint_every_minutes: self.checkpoint_minutes,
            keep_last: self.keep_last,
            best_metric: self.best_metric.clone(),
            min_examples: self.min_examples,
            pair_datasets: self.pairs.clone(),
            resume: !self.no_resume,
            promotion: PromotionConfig {
                enabled: !self.no_promotion_gate,
                metric: self.promote_metric.clone().unwrap_or_else(|| self.best_metric.clone()),
                margin: self.promote_margin,
            },
            query_format: self.query_format,
            examples: self.examples,
        }
    }

    /// Applies `--threads` (process-wide), resolves the device and loads the trainer with its evaluator.
    pub fn trainer(&self) -> anyhow::Result<Trainer> {
        if let Some(n) = self.threads {
            anyhow::ensure!(n > 0, "--threads must be at least 1, got {n}");
            tch::set_num_threads(n);
        }
        let device = self.device.resolve()?;
        let options = EncoderOptions { device, max_seq_length: self.max_seq_length, ..EncoderOptions::default() };
        let config = self.config(device);
        let metric = &config.promotion.metric;
        let gated = config.promotion.enabled && !self.eval_dataset.is_empty();
        if gated && !BeirEvaluator::METRICS.contains(&metric.as_str()) {
            let known = BeirEvaluator::METRICS.join(", ");
            anyhow::bail!("--promote-metric (default: --best-metric) '{metric}' is not measured; one of {known}");
        }
        let mut trainer = Trainer::new(config, options).context("cannot start the trainer")?;
        if !self.eval_dataset.is_empty() {
            let dims = if self.eval_dims.is_empty() { &self.matryoshka_dims } else { &self.eval_dims };
            let prefix = self.eval_query_prefix.clone().unwrap_or_else(|| match self.query_format {
                QueryFormat::Task => EVAL_TASK_PREFIX.to_string(),
                QueryFormat::Plain => String::new(),
            });
            let evaluator = BeirEvaluator::new(&self.eval_dataset, options)?.with_dims(dims).with_query_prefix(prefix);
            trainer.set_evaluator(Box::new(evaluator));
        }
        Ok(trainer)
    }
}

/// What a training run did, in three lines: steps, where `latest` stands (promoted or not), replay buffer.
pub fn summary_text(trainer: &Trainer, summary: &RunSummary, out: &Path) -> anyhow::Result<String> {
    let newest = out.join(crate::train::checkpoint::NEWEST);
    let rate = summary.examples_per_second.map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}"));
    let (upserts, retractions) = trainer.buffer().change_counts();
    Ok(format!(
        "trained {} steps ({} examples, {rate} examples/s); total steps {}; newest checkpoint: {}\n{}\n\
         replay buffer: {} examples ({upserts} upserts and {retractions} retractions applied)",
        summary.steps,
        summary.examples,
        trainer.step(),
        newest.display(),
        trainer.promotion_report()?,
        trainer.buffer().len()
    ))
}

/// A pipeline's `[train]` table as `fretflow train` options.
#[derive(Debug, clap::Parser)]
#[command(name = "[train]", no_binary_name = true, disable_help_flag = true, disable_version_flag = true)]
struct TableArgs {
    #[command(flatten)]
    options: TrainOptions,
}

/// Keys of a `[train]` table that stand for a `--no-NAME` flag when set to `false` (`resume = false`).
const NEGATED_FLAGS: [&str; 3] = ["resume", "promotion_gate", "same_tower"];
/// Repeatable options: a table may give one value or a list.
const LISTS: [&str; 5] = ["eval_dataset", "eval_dims", "pairs", "matryoshka_dims", "matryoshka_weights"];

/// Reads a pipeline's `[train]` table into training options: its keys are `fretflow train`'s long options
/// (`_` or `-`), flags are booleans (`dropout = true`; `NAME = false` for a `--no-NAME` flag such as
/// `resume = false`), repeatable options take one value or a list. Deserialized by serde into the same
/// [`TrainOptions`] the command line gives (missing keys take its defaults), then checked as the command line
/// is. Errors name the key.
pub fn options_from_table(table: &toml::Table) -> anyhow::Result<TrainOptions> {
    let mut normalized = toml::Table::new();
    for (key, value) in table {
        let mut key = key.replace('-', "_");
        let mut value = value.clone();
        if let (true, toml::Value::Boolean(b)) = (NEGATED_FLAGS.contains(&key.as_str()), &value) {
            (key, value) = (format!("no_{key}"), toml::Value::Boolean(!b));
        }
        if LISTS.contains(&key.as_str()) && !value.is_array() {
            value = toml::Value::Array(vec![value]);
        }
        if normalized.insert(key.clone(), value).is_some() {
            anyhow::bail!("[train] {key}: given twice (`_` and `-`, or a flag and its `no_` form)");
        }
    }
    let options: TrainOptions = serde_path_to_error::deserialize(toml::Value::Table(normalized)).map_err(|e| {
        let message = e.inner().to_string();
        let first = message.lines().next().unwrap_or_default().to_owned();
        match e.path().to_string().as_str() {
            "." => anyhow::anyhow!("[train]: {first} (its keys are `fretflow train` options, e.g. batch_size = 16)"),
            key => anyhow::anyhow!("[train] {key}: {first}"),
        }
    })?;
    options.validate().map_err(|e| anyhow::anyhow!("[train] {e}"))?;
    Ok(options)
}

impl TrainOptions {
    /// The checks the command line's value parsers make, for options read from a table: `KEY: why`.
    pub fn validate(&self) -> Result<(), String> {
        check_non_negative(self.distill_weight).map_err(|e| format!("distill_weight: {e}"))?;
        check_positive(self.distill_temperature).map_err(|e| format!("distill_temperature: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_train_table_reads_as_the_cli_options() {
        let table: toml::Table = toml::from_str(
            "out = \"ckpt\"\nmodel = \"-a-dir-with-a-dash\"\nbatch-size = 8\nlr = 1e-5\ndropout = true\nno_resume = false\n\
             eval_dataset = [\"a\", \"b\"]\nmatryoshka_dims = [384, 128]\nprecision = \"bf16\"\n\
             distill_weight = 0.5\ndistill_teacher = \"rrf_student\"\ndistill-temperature = 0.002\n",
        )
        .unwrap();
        let o = options_from_table(&table).unwrap();
        assert_eq!((o.out.as_path(), o.model.as_str(), o.batch_size), (Path::new("ckpt"), "-a-dir-with-a-dash", 8));
        assert!((o.lr - 1e-5).abs() < 1e-12 && o.dropout && !o.no_resume && o.precision == Precision::Bf16);
        assert_eq!(o.eval_dataset, vec![PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(o.matryoshka_dims, vec![384, 128]);
        let loss = o.config(tch::Device::Cpu).loss;
        let distill = (loss.distill_weight, loss.distill_teacher, loss.distill_temperature);
        assert_eq!(distill, (0.5, DistillTeacher::RrfStudent, 0.002), "the [train] keys reach the loss");

        let nested: toml::Table = toml::from_str("out = \"x\"\n[optimizer]\nlr = 1\n").unwrap();
        assert!(options_from_table(&nested).unwrap_err().to_string().contains("[train] optimizer"));
        let wrong: toml::Table = toml::from_str("out = \"x\"\nbatch_size = \"many\"\n").unwrap();
        let message = options_from_table(&wrong).unwrap_err().to_string();
        assert_eq!(message, "[train] batch_size: invalid type: string \"many\", expected usize");
        let typo: toml::Table = toml::from_str("out = \"x\"\ndropuot = false\n").unwrap();
        let message = options_from_table(&typo).unwrap_err().to_string();
        assert!(message.contains("unknown field `dropuot`"), "a misspelt key set to false is named too: {message}");
        for (key, value) in [("distill_weight", "-0.5"), ("distill_weight", "inf"), ("distill_temperature", "0")] {
            let table: toml::Table = toml::from_str(&format!("out = \"x\"\n{key} = {value}\n")).unwrap();
            let message = options_from_table(&table).unwrap_err().to_string();
            assert!(message.starts_with(&format!("[train] {key}: must be a finite number")), "{message}");
        }
        let table: toml::Table = toml::from_str("out = \"x\"\ndistill_teacher = \"cosine\"\n").unwrap();
        let message = options_from_table(&table).unwrap_err().to_string();
        assert!(message.starts_with("[train] distill_teacher: unknown variant `cosine`"), "{message}");
        let both: toml::Table = toml::from_str("out = \"x\"\nbatch_size = 8\nbatch-size = 9\n").unwrap();
        assert!(options_from_table(&both).unwrap_err().to_string().contains("given twice"));
        let one: toml::Table = toml::from_str("out = \"x\"\neval_dataset = \"d\"\n").unwrap();
        assert_eq!(options_from_table(&one).unwrap().eval_dataset, vec![PathBuf::from("d")], "one value for a list");
        // The table's defaults are the command line's.
        let cli = <TableArgs as clap::Parser>::try_parse_from(["--out", "x"]).unwrap().options;
        let table = options_from_table(&toml::from_str("out = \"x\"\n").unwrap()).unwrap();
        assert_eq!(format!("{cli:?}"), format!("{table:?}"));
    }

    #[test]
    fn the_promotion_gate_options_read_from_a_train_table_and_the_command_line() {
        let table = |body: &str| options_from_table(&toml::from_str(&format!("out = \"x\"\n{body}")).unwrap());
        let defaults = table("").unwrap();
        assert!(!defaults.no_promotion_gate && defaults.promote_metric.is_none() && defaults.promote_margin == 0.0);
        let config = defaults.config(tch::Device::Cpu).promotion;
        assert_eq!(config, PromotionConfig { enabled: true, metric: "ndcg@10".into(), margin: 0.0 });

        let o = table("promotion_gate = false\npromote-metric = \"mrr@10\"\npromote_margin = -1.0\nresume = false");
        let o = o.unwrap();
        assert!(o.no_promotion_gate && o.no_resume, "`name = false` is `--no-name`");
        let config = o.config(tch::Device::Cpu).promotion;
        assert_eq!(config, PromotionConfig { enabled: false, metric: "mrr@10".into(), margin: -1.0 });
        assert!(!table("promotion_gate = true").unwrap().no_promotion_gate);
        assert!(table("no_promotion_gate = true").unwrap().no_promotion_gate);
        let by_best = table("best_metric = \"recall@100\"").unwrap().config(tch::Device::Cpu).promotion;
        assert_eq!(by_best.metric, "recall@100", "the promotion metric defaults to --best-metric");
        let message = table("promote_margin = true").unwrap_err().to_string();
        assert!(message.starts_with("[train] promote_margin: invalid type: boolean"), "{message}");

        let cli = <TableArgs as clap::Parser>::try_parse_from(["--out", "x", "--promote-margin", "-0.5"]).unwrap();
        assert_eq!(cli.options.promote_margin, -0.5, "a negative margin is a value, not a flag");
    }
}
