//! The model card of a checkpoint: a `README.md` in the sentence-transformers layout (YAML front matter
//! with `base_model`, `library_name`, `pipeline_tag`, `tags` and the evaluated metrics; then usage, the
//! FRet training data's provenance, the loss and optimizer, and a metrics table of the base model and the
//! checkpoint per dataset), generated from the checkpoint's `fretflow.json` and its manifest entry, so a
//! person picking up `checkpoints/latest` sees what it is and how it measured.
use super::checkpoint::TrainerState;
use super::data::{ExampleFilter, QueryFormat};
use crate::records::CheckpointEvent;
use std::fmt::Write;

/// The card's file name inside a checkpoint.
pub const MODEL_CARD: &str = "README.md";

/// The Hugging Face id of a short model name fretflow knows, else the name as given.
fn hub_id(model: &str) -> String {
    match model {
        "all-MiniLM-L6-v2" | "all-MiniLM-L6-v2.tar.gz" => "sentence-transformers/all-MiniLM-L6-v2".to_owned(),
        other => other.to_owned(),
    }
}

/// A settings enum's name as configs write it (its serde name: `constant`, `rrf_student`).
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A YAML string scalar (double-quoted, escaped).
fn yaml(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize. This is a bug.")
}

/// The card of the checkpoint `event` describes, written with `state` (its `fretflow.json`), compared with
/// `base` (the base model's evaluation, the manifest's step-0 entry) when there is one. `model` is the base
/// model as the user named it.
pub fn render(model: &str, state: &TrainerState, event: &CheckpointEvent, base: Option<&CheckpointEvent>) -> String {
    let name = event.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut md = String::new();
    // Front matter (https://huggingface.co/docs/hub/model-cards), as sentence-transformers writes it.
    md.push_str("---\n");
    let _ = writeln!(md, "base_model: {}", yaml(&hub_id(model)));
    md.push_str("library_name: sentence-transformers\npipeline_tag: sentence-similarity\n");
    md.push_str(
        "tags:\n- sentence-transformers\n- sentence-similarity\n- feature-extraction\n- fretflow\n- gecko\n- fret\n",
    );
    md.push_str("language:\n- en\nlicense: apache-2.0\n");
    let mut metric_names: Vec<&str> = event.metrics.values().flat_map(|m| m.keys().map(String::as_str)).collect();
    metric_names.sort_unstable();
    metric_names.dedup();
    if !metric_names.is_empty() {
        md.push_str("metrics:\n");
        for metric in &metric_names {
            let _ = writeln!(md, "- {}", yaml(metric));
        }
    }
    md.push_str("---\n\n");

    let _ = writeln!(md, "# {name}: {} fine-tuned on a FRet set by fretflow\n", hub_id(model));
    let _ = writeln!(
        md,
        "A [sentence-transformers](https://www.sbert.net) model: `{}` after {} optimizer steps ({} training \
         examples) of the Gecko recipe (arXiv 2403.20327) on FRet examples that an LLM wrote and relabelled \
         from an unlabeled corpus. Written by fretflow {}.\n",
        hub_id(model),
        state.step,
        state.examples_seen,
        env!("CARGO_PKG_VERSION"),
    );
    let promotion = if event.promoted { "promoted" } else { "not promoted" };
    let reason = event.promotion.strip_prefix("not promoted: ").unwrap_or(&event.promotion);
    let _ = writeln!(md, "**Promotion gate:** {promotion} ({reason}).\n");

    md.push_str("## Usage\n\n```python\nfrom sentence_transformers import SentenceTransformer\n\n");
    let _ = writeln!(md, "model = SentenceTransformer(\"path/to/{name}\")  # the directory of this README");
    md.push_str(match state.query_format {
        QueryFormat::Task => {
            "# Queries carry the task they were trained with (Gecko's prompt); passages are embedded as they are.\n\
             queries = model.encode([\"task: search result | query: how do bees find flowers\"])\n"
        }
        QueryFormat::Plain => {
            "# Trained on plain queries (no task prompt), as the base model; passages are embedded as they are.\n\
             queries = model.encode([\"how do bees find flowers\"])\n"
        }
    });
    md.push_str(
        "passages = model.encode([\"Bees dance to share the direction of flowers.\"])\n\
         print(model.similarity(queries, passages))\n```\n\n",
    );
    if !state.loss.matryoshka_dims.is_empty() {
        let dims: Vec<String> = state.loss.matryoshka_dims.iter().map(|d| d.to_string()).collect();
        let _ = writeln!(
            md,
            "Trained with Matryoshka dimensions {}: `SentenceTransformer(path, truncate_dim=D)` with one of them.\n",
            dims.join(", ")
        );
    }

    md.push_str("## Training data\n\n");
    let data = &state.data;
    let field = |key: &str| data.get(key).map(|v| v.to_string().trim_matches('"').to_owned()).unwrap_or_default();
    let _ = writeln!(md, "- Source: {}", field("source"));
    let _ = writeln!(
        md,
        "- FRet examples in the replay buffer: {} ({} upserts and {} retractions applied)",
        field("buffer_examples"),
        field("upserts"),
        field("retractions")
    );
    if state.examples == ExampleFilter::Consistent {
        let _ = writeln!(
            md,
            "- Round-trip consistent examples only: {} upserts whose judged positive was not the seed passage \
             were not trained on",
            field("filtered_upserts")
        );
    }
    if let Some(share) = data.get("positive_not_seed_share").and_then(|v| v.as_f64()) {
        let _ = writeln!(
            md,
            "- Positive is not the seed passage (the judge chose another passage): {:.1}% of examples",
            100.0 * share
        );
    }
    if let Some(models) = data.get("provenance").and_then(|v| v.as_array()) {
        for entry in models {
            let get = |path: &[&str]| {
                path.iter().try_fold(entry, |v, k| v.get(k)).and_then(|v| v.as_str()).unwrap_or("?").to_owned()
            };
            let _ = writeln!(
                md,
                "- {} examples: generator `{}` (prompt {}), judge `{}` (prompt {}), retrieval embedder `{}`",
                entry.get("examples").and_then(|v| v.as_u64()).unwrap_or(0),
                get(&["generator", "model"]),
                get(&["generator", "prompt_version"]),
                get(&["judge", "model"]),
                get(&["judge", "prompt_version"]),
                get(&["embedder"]),
            );
        }
    }
    let pairs = field("pair_examples");
    if !pairs.is_empty() && pairs != "0" {
        let _ = writeln!(md, "- Extra query-passage pairs mixed in: {pairs} ({})", field("pair_datasets"));
    }

    md.push_str("\n## Training\n\n");
    let l = &state.loss;
    let _ = writeln!(
        md,
        "- Loss: in-batch softmax (InfoNCE) at temperature {}, {} hard negative(s) per query{}{}{}",
        l.temperature,
        state.sampler.hard_negatives,
        if l.same_tower_negatives { ", same-tower negatives" } else { "" },
        if l.mask_false_negatives { ", duplicate positives masked" } else { "" },
        if l.distill_weight > 0.0 {
            format!(
                "; distillation of the judge's `{}` scores, weight {}, teacher temperature {}",
                serde_name(&l.distill_teacher),
                l.distill_weight,
                l.distill_temperature
            )
        } else {
            String::new()
        },
    );
    let o = &state.optimizer;
    let _ = writeln!(
        md,
        "- AdamW: learning rate {}, weight decay {}, {} warmup steps, {} schedule, gradient norm clipped at {}",
        o.lr,
        o.weight_decay,
        o.warmup_steps,
        serde_name(&o.decay),
        o.max_grad_norm
    );
    let _ = writeln!(
        md,
        "- Batches of {} queries, sampling seed {}{}",
        state.sampler.batch_size,
        state.sampler.seed,
        if state.backward.bf16 { ", mixed bf16 precision" } else { ", f32" }
    );
    if let Some(loss) = state.mean_loss {
        let _ = writeln!(md, "- Mean training loss since the previous checkpoint: {loss:.4}");
    }

    md.push_str("\n## Evaluation\n\n");
    if event.metrics.is_empty() {
        md.push_str("No evaluation was configured for this run (`--eval-dataset`).\n");
    } else {
        md.push_str(
            "Each evaluation dataset's judged queries (BEIR layout; as `fretflow eval` measures them, \
             queries as the dataset gives them), the base model before the first step and this checkpoint:\n\n",
        );
        md.push_str("| dataset | metric | base model | this checkpoint |\n| --- | --- | --- | --- |\n");
        for (dataset, metrics) in &event.metrics {
            for (metric, value) in metrics {
                let base_value = base
                    .and_then(|b| b.metrics.get(dataset))
                    .and_then(|m| m.get(metric))
                    .map_or("n/a".to_owned(), |v| format!("{v:.4}"));
                let _ = writeln!(md, "| {dataset} | {metric} | {base_value} | {value:.4} |");
            }
        }
    }
    md.push_str(
        "\n## Files\n\n`fretflow.json` holds every training setting and the data's state; the run's \
         `checkpoints.jsonl` lists every checkpoint with its metrics and why it was or was not promoted.\n",
    );
    md
}
