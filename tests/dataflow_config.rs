//! Pipeline configs: the shipped ones parse, and mistakes are named by field.
use fretflow::dataflow::config::{ConfigError, LlmConfig, PipelineConfig};
use std::path::Path;

const MINIMAL: &str = r#"
[source]
path = "c.jsonl"
[llm]
backend = "instant"
[sinks]
changes = ["out/c.jsonl"]
dead_letters = "out/dead.jsonl"
"#;

fn parse(text: &str) -> Result<PipelineConfig, ConfigError> {
    PipelineConfig::parse(text, Path::new("p.toml"))
}

#[test]
fn every_shipped_pipeline_parses_and_resolves_paths_next_to_itself() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config = PipelineConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(config.source.path.starts_with(&dir), "{}", config.source.path.display());
            seen += 1;
        }
    }
    assert!(seen >= 1);
    let quickstart = PipelineConfig::load(&dir.join("quickstart.toml")).unwrap();
    assert!(matches!(quickstart.llm, LlmConfig::Local(_)));
    assert!(quickstart.source.path.ends_with("data/sample/passages.jsonl"));
    assert!(quickstart.source.path.exists());
}

#[test]
fn defaults_follow_the_paper() {
    let config = parse(MINIMAL).unwrap();
    let params = config.fret_params();
    assert_eq!((params.neighbours, params.rrf_k, params.negatives_count), (20, 60.0, 1));
}

#[test]
fn an_unknown_field_is_named_with_its_line() {
    let text = MINIMAL.replace("[llm]", "[fret]\nneighbors = 5\n[llm]");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("neighbors") && err.contains("line"), "{err}");
    let text = MINIMAL.replace("backend = \"instant\"", "backend = \"instant\"\nlatency = 3");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("latency"), "{err}");
}

#[test]
fn out_of_range_values_name_their_field() {
    let cases = [
        ("[fret]\nneighbours = 0", "fret.neighbours"),
        ("[fret]\nneighbours = 3\nhard_negatives = { strategy = \"random\", count = 3 }", "fret.hard_negatives.count"),
        ("[fret]\nrrf_k = -1.0", "fret.rrf_k"),
        ("[batching]\nllm = { max_batch = 0, max_wait_ms = 1 }", "batching.llm.max_batch"),
    ];
    for (extra, field) in cases {
        let text = MINIMAL.replace("[llm]", &format!("{extra}\n[llm]"));
        match parse(&text) {
            Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{extra}: {other:?}"),
        }
    }
    let text = MINIMAL.replace("path = \"c.jsonl\"", "path = \"c.parquet\"\nmode = \"follow\"");
    assert!(matches!(parse(&text), Err(ConfigError::Invalid { field, .. }) if field == "source.mode"));
}
