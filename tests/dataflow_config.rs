//! Pipeline configs: the shipped ones parse, and mistakes are named by field.
use fretflow::dataflow::config::{ConfigError, Input, LlmConfig, PipelineConfig};
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
            match config.input() {
                Input::File(source) => assert!(source.path.starts_with(&dir), "{}", source.path.display()),
                Input::Kafka { .. } => assert!(config.cache.as_ref().is_none_or(|c| c.starts_with(&dir))),
            }
            seen += 1;
        }
    }
    assert!(seen >= 1);
    let quickstart = PipelineConfig::load(&dir.join("quickstart.toml")).unwrap();
    assert!(matches!(quickstart.llm, LlmConfig::Local(_)));
    let Input::File(source) = quickstart.input() else { panic!("quickstart reads a file") };
    assert!(source.path.ends_with("data/sample/passages.jsonl"));
    assert!(source.path.exists());
    let train = quickstart.train.as_ref().expect("the demo fine-tunes in process");
    let out = train.options["out"].as_str().expect("out is a path");
    assert!(Path::new(out).is_absolute() && out.ends_with("out/checkpoints"), "{out}");
    let eval = train.options["eval_dataset"].as_array().expect("a list")[0].as_str().expect("a path");
    assert!(Path::new(eval).join("qrels/test.tsv").exists(), "{eval}");
    let kafka = PipelineConfig::load(&dir.join("kafka.toml")).unwrap();
    let Input::Kafka { connection, source, sink } = kafka.input() else { panic!("kafka.toml reads Kafka") };
    assert_eq!((connection.bootstrap_servers.as_str(), source.topic.as_str(), sink.topic.as_str()), ("127.0.0.1:9092", "passages", "fret"));
    let cluster = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/cluster/pipeline.toml");
    assert!(matches!(PipelineConfig::load(&cluster).unwrap_or_else(|e| panic!("{e}")).input(), Input::Kafka { .. }));
}

const KAFKA: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"
[kafka.source]
topic = "passages"
[kafka.sink]
topic = "fret"
[llm]
backend = "instant"
"#;

#[test]
fn a_kafka_pipeline_needs_no_sinks_table_and_names_the_conflicting_field() {
    let config = parse(KAFKA).unwrap();
    let Input::Kafka { connection, source, sink } = config.input() else { panic!("a Kafka input") };
    assert_eq!((connection.bootstrap_servers.as_str(), source.group_id.as_str()), ("127.0.0.1:9092", "fretflow"));
    assert_eq!(sink.dead_letter_topic(), "fret.dead-letter");
    let field_of = |text: &str| match parse(text) {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field: {other:?}"),
    };
    let both = format!("{KAFKA}\n[source]\npath = \"c.jsonl\"\n");
    assert_eq!(field_of(&both), "source");
    let no_sink = KAFKA.replace("[kafka.sink]\ntopic = \"fret\"\n", "");
    assert_eq!(field_of(&no_sink), "kafka.sink");
    let neither = KAFKA.replace("[kafka.source]\ntopic = \"passages\"\n", "");
    assert_eq!(field_of(&neither), "source");
    let file_sink = format!("{KAFKA}\n[sinks]\nchanges = [\"out.jsonl\"]\n");
    assert_eq!(field_of(&file_sink), "sinks.changes");
    let summary = format!("{KAFKA}\n[sinks]\nsummary = \"out/summary.json\"\n");
    assert!(parse(&summary).is_ok());
    let latest = KAFKA.replace("topic = \"passages\"", "topic = \"passages\"\nstart_from = \"latest\"");
    assert_eq!(field_of(&latest), "kafka.source.start_from");
    let group = KAFKA.replace("topic = \"passages\"", "topic = \"passages\"\npartitioning = \"group\"");
    assert_eq!(field_of(&group), "kafka.source.partitioning");
    let partitions = KAFKA.replace("topic = \"fret\"", "topic = \"fret\"\npartitions = 0");
    assert_eq!(field_of(&partitions), "kafka.sink.partitions");
    let file_with_kafka_sink = format!("{MINIMAL}\n[kafka.sink]\ntopic = \"fret\"\n");
    assert_eq!(field_of(&file_with_kafka_sink), "kafka.sink");
}

#[test]
fn unknown_kafka_fields_are_named() {
    for (from, to, name) in [
        ("bootstrap_servers", "bootstrap", "bootstrap"),
        ("topic = \"passages\"", "topic = \"passages\"\ngroup = \"g\"", "group"),
        ("topic = \"fret\"", "topic = \"fret\"\ncompact = true", "compact"),
    ] {
        let err = parse(&KAFKA.replace(from, to)).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains("kafka"), "{err}");
    }
}

#[test]
fn a_file_pipeline_still_needs_its_dead_letter_file() {
    let text = MINIMAL.replace("dead_letters = \"out/dead.jsonl\"\n", "");
    assert!(matches!(parse(&text), Err(ConfigError::Invalid { field, .. }) if field == "sinks.dead_letters"));
}

#[test]
fn defaults_follow_the_paper() {
    let config = parse(MINIMAL).unwrap();
    let params = config.fret_params();
    assert_eq!((params.neighbours, params.rrf_k, params.negatives_count), (20, 60.0, 1));
    // NV-Retriever's false-negative filter is on by default; 0 turns it off.
    assert_eq!(params.max_positive_ratio, Some(0.95));
    let off = MINIMAL.replace("[llm]", "[fret]\nhard_negatives = { max_positive_ratio = 0 }\n[llm]");
    assert_eq!(parse(&off).unwrap().fret_params().max_positive_ratio, None);
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
        ("[fret]\nhard_negatives = { max_positive_ratio = -0.5 }", "fret.hard_negatives.max_positive_ratio"),
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
