//! Pipeline configs: the shipped ones parse, and mistakes are named by field.
use fretflow::dataflow::labeler::QuerySeed;
use fretflow::dataflow::params::{DedupParams, DuplicateAction};
use fretflow::pipeline::config::{ConfigError, Input, LlmConfig, PipelineConfig};
use fretflow::pipeline::resources::{self, RoleLlm};
use fretflow::records::Passage;
use std::path::Path;
use std::sync::Arc;

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
    assert!(matches!(quickstart.llm.generator, LlmConfig::Local(_)) && quickstart.llm.shared());
    let Input::File(source) = quickstart.input() else { panic!("quickstart reads a file") };
    assert!(source.path.ends_with("data/sample/passages.jsonl"));
    assert!(source.path.exists());
    let train = quickstart.train.as_ref().expect("the demo fine-tunes in process");
    let out = &train.options.out;
    assert!(out.is_absolute() && out.ends_with("out/checkpoints"), "{out:?}");
    assert_eq!((train.options.steps, train.options.batch_size), (Some(12), 8), "the [train] keys are typed");
    let eval = &train.options.eval_dataset[0];
    assert!(eval.join("qrels/test.tsv").exists(), "{eval:?}");
    let kafka = PipelineConfig::load(&dir.join("kafka.toml")).unwrap();
    let Input::Kafka { connection, source, sink } = kafka.input() else { panic!("kafka.toml reads Kafka") };
    assert_eq!(
        (connection.bootstrap_servers.as_str(), source.topic.as_str(), sink.topic.as_str()),
        ("127.0.0.1:9092", "passages", "fret")
    );
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
fn near_duplicate_queries_are_dead_lettered_by_default_kept_on_request_and_off_at_threshold_one() {
    let fret = |table: &str| parse(&MINIMAL.replace("[llm]", &format!("[fret]\n{table}\n[llm]")));
    let default = parse(MINIMAL).unwrap().fret_params().duplicate_queries;
    assert_eq!(default, Some(DedupParams { threshold: 0.97, action: DuplicateAction::DeadLetter }));
    let keep = fret("duplicate_queries = { threshold = 0.9, action = \"keep\" }").unwrap();
    let want = DedupParams { threshold: 0.9, action: DuplicateAction::Keep };
    assert_eq!(keep.fret_params().duplicate_queries, Some(want));
    assert_eq!(fret("duplicate_queries = { threshold = 1.0 }").unwrap().fret_params().duplicate_queries, None);
    for bad in ["0", "-0.5", "1.01", "nan"] {
        match fret(&format!("duplicate_queries = {{ threshold = {bad} }}")) {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "fret.duplicate_queries.threshold", "{bad}"),
            other => panic!("threshold {bad}: {other:?}"),
        }
    }
    let err = fret("duplicate_queries = { action = \"drop\" }").unwrap_err().to_string();
    assert!(err.contains("drop") && err.contains("dead_letter") && err.contains("keep"), "{err}");
    let err = fret("duplicate_queries = { cosine = 0.9 }").unwrap_err().to_string();
    assert!(err.contains("cosine") && err.contains("line"), "{err}");
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
        ("[fret]\nqueries_per_passage = 0", "fret.queries_per_passage"),
        ("[fret]\nqueries_per_passage = 1001", "fret.queries_per_passage"),
        ("[fret]\ngeneration_attempts = 1001", "fret.generation_attempts"),
        ("[fret]\nfurther_query_temperature = 0.0", "fret.further_query_temperature"),
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

/// MINIMAL with its `[llm]` table replaced by `llm`.
fn with_llm(llm: &str) -> String {
    MINIMAL.replace("[llm]\nbackend = \"instant\"\n", llm)
}

fn local(config: &LlmConfig) -> (&str, &str) {
    match config {
        LlmConfig::Local(l) => (l.model.as_str(), l.precision.name()),
        other => panic!("expected a local LLM: {other:?}"),
    }
}

fn query_words(config: &LlmConfig) -> usize {
    match config {
        LlmConfig::Instant(i) => i.query_words,
        other => panic!("expected the instant LLM: {other:?}"),
    }
}

#[test]
fn one_llm_table_serves_both_roles() {
    let llm = "[llm]\nbackend = \"local\"\nmodel = \"SmolLM2-135M-Instruct\"\nprecision = \"bf16\"\n";
    let config = parse(&with_llm(llm)).unwrap();
    assert_eq!(local(&config.llm.generator), ("SmolLM2-135M-Instruct", "bf16"));
    assert_eq!(config.llm.generator, config.llm.judge);
    assert!(config.llm.shared());
    assert_eq!(config.llm.each().map(|(table, _)| table), ["llm", "llm"]);
}

#[test]
fn a_role_table_replaces_llm_for_its_role_and_inherits_nothing() {
    let base = "[llm]\nbackend = \"local\"\nmodel = \"SmolLM2-135M-Instruct\"\nprecision = \"bf16\"\n";
    let judge = "[llm.judge]\nbackend = \"local\"\nmodel = \"qwen2.5-coder-1.5b\"\n";
    let config = parse(&with_llm(&format!("{base}{judge}"))).unwrap();
    assert_eq!(local(&config.llm.generator), ("SmolLM2-135M-Instruct", "bf16"));
    assert_eq!(local(&config.llm.judge), ("qwen2.5-coder-1.5b", "f32"), "precision is not inherited from [llm]");
    assert!(!config.llm.shared());
    assert_eq!(config.llm.each().map(|(table, _)| table), ["llm", "llm.judge"]);

    let generator = "[llm.generator]\nbackend = \"instant\"\nquery_words = 3\n";
    let config = parse(&with_llm(&format!("{base}{generator}"))).unwrap();
    assert_eq!(query_words(&config.llm.generator), 3);
    assert_eq!(local(&config.llm.judge), ("SmolLM2-135M-Instruct", "bf16"));
    assert_eq!(config.llm.each().map(|(table, _)| table), ["llm.generator", "llm"]);
}

#[test]
fn two_role_tables_need_no_llm_backend_and_share_when_identical() {
    let roles = "[llm.generator]\nbackend = \"instant\"\nquery_words = 3\n[llm.judge]\nbackend = \"instant\"\n";
    let config = parse(&with_llm(roles)).unwrap();
    assert_eq!((query_words(&config.llm.generator), query_words(&config.llm.judge)), (3, 8));
    assert!(!config.llm.shared());
    assert_eq!(config.llm.each().map(|(table, _)| table), ["llm.generator", "llm.judge"]);
    // Written as dotted keys under an `[llm]` header, too.
    let dotted = "[llm]\ngenerator = { backend = \"instant\" }\njudge = { backend = \"instant\" }\n";
    assert!(parse(&with_llm(dotted)).unwrap().llm.shared());
    // `[llm]` with a backend of its own and both role tables: the role tables win.
    let all = format!("[llm]\nbackend = \"instant\"\nquery_words = 5\n{roles}");
    let config = parse(&with_llm(&all)).unwrap();
    assert_eq!((query_words(&config.llm.generator), query_words(&config.llm.judge)), (3, 8));
}

#[test]
fn a_role_without_a_backend_is_a_clear_error() {
    let message = |llm: &str| parse(&with_llm(llm)).unwrap_err().to_string();
    let err = message("[llm.judge]\nbackend = \"instant\"\n");
    assert!(err.contains("generator has no backend") && err.contains("[llm.generator]"), "{err}");
    let err = message("[llm.generator]\nbackend = \"instant\"\n");
    assert!(err.contains("judge has no backend") && err.contains("[llm.judge]"), "{err}");
    let err = message("[llm]\n");
    assert!(err.contains("llm: no backend"), "{err}");
}

#[test]
fn mistakes_in_a_role_table_name_the_role_and_the_field() {
    let message = |llm: &str| parse(&with_llm(llm)).unwrap_err().to_string();
    let base = "[llm]\nbackend = \"instant\"\n";
    let err = message(&format!("{base}[llm.judge]\nbackend = \"local\"\nmodel = \"m\"\nprecison = \"bf16\"\n"));
    assert!(err.contains("unknown field `llm.judge.precison`"), "{err}");
    let err = message(&format!("{base}[llm.generator]\nbackend = \"local\"\n"));
    assert!(err.contains("missing field `llm.generator.model`"), "{err}");
    let err = message(&format!("{base}[llm.judge]\nbackend = \"locl\"\n"));
    assert!(err.contains("llm.judge.backend") && err.contains("locl"), "{err}");
    let err = message("[llm]\nbackend = \"instant\"\nlatency = 3\n");
    assert!(err.contains("unknown field `llm.latency`"), "{err}");

    let field_of = |llm: &str| match parse(&with_llm(llm)) {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field: {other:?}"),
    };
    // Precision and device are typed: a bad value is refused while parsing, naming the key and the value.
    let judge_precision = format!("{base}[llm.judge]\nbackend = \"local\"\nmodel = \"m\"\nprecision = \"f16\"\n");
    let err = message(&judge_precision);
    assert!(err.contains("llm.judge:") && err.contains("precision 'f16'"), "{err}");
    let err = message("[llm]\nbackend = \"local\"\nmodel = \"m\"\nprecision = \"f16\"\n");
    assert!(err.contains("precision") && err.contains("f16"), "{err}");
    let err = message("[llm]\nbackend = \"local\"\nmodel = \"m\"\ndevice = \"tpu\"\n");
    assert!(err.contains("device") && err.contains("tpu"), "{err}");
    let no_words = format!("{base}[llm.generator]\nbackend = \"instant\"\nquery_words = 0\n");
    assert_eq!(field_of(&no_words), "llm.generator.query_words");
}

#[test]
fn each_role_may_batch_its_own_way_over_batching_llm() {
    let batching =
        "[batching]\nllm = { max_batch = 8, max_wait_ms = 30, max_in_flight = 2 }\njudge = { max_batch = 32 }\n";
    let config = parse(&MINIMAL.replace("[llm]", &format!("{batching}[llm]"))).unwrap();
    let (generator, judge) = (config.batching.generator(), config.batching.judge());
    assert_eq!((generator.max_batch, generator.max_wait_ms, generator.max_in_flight), (8, 30, 2));
    assert_eq!((judge.max_batch, judge.max_wait_ms, judge.max_in_flight), (32, 30, 2));
    let zero = MINIMAL.replace("[llm]", "[batching]\ngenerator = { max_in_flight = 0 }\n[llm]");
    let field = match parse(&zero) {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field, "batching.generator.max_in_flight");
    let unknown = MINIMAL.replace("[llm]", "[batching]\njudge = { batch = 3 }\n[llm]");
    let err = parse(&unknown).unwrap_err().to_string();
    assert!(err.contains("batch") && err.contains("judge"), "{err}");
}

const REMOTE_ROLES: &str = r#"
[llm.generator]
backend = "remote"
base_url = "http://127.0.0.1:9/v1"
model = "writer"
[llm.judge]
backend = "remote"
base_url = "http://127.0.0.1:9/v1"
model = "writer"
"#;

fn model_of(llm: &RoleLlm) -> Arc<dyn fretflow::llm::LlmBackend> {
    match llm {
        RoleLlm::Model(backend) => Arc::clone(backend),
        RoleLlm::Instant(_) => panic!("expected a model"),
    }
}

#[test]
fn identical_role_tables_build_one_backend_and_different_ones_two() {
    let shared = parse(&with_llm(REMOTE_ROLES)).unwrap();
    let llms = resources::role_llms(&shared).unwrap();
    assert!(Arc::ptr_eq(&model_of(&llms.generator), &model_of(&llms.judge)), "one backend for both roles");
    let labeler = resources::labeler(&shared).unwrap();
    let provenance = labeler.provenance();
    assert_eq!(provenance.generator.model, provenance.judge.model);

    let (generator_table, judge_table) = REMOTE_ROLES.split_at(REMOTE_ROLES.find("[llm.judge]").unwrap());
    let split = parse(&with_llm(&format!("{generator_table}{}", judge_table.replace("writer", "judge")))).unwrap();
    let llms = resources::role_llms(&split).unwrap();
    let (generator, judge) = (model_of(&llms.generator), model_of(&llms.judge));
    assert!(!Arc::ptr_eq(&generator, &judge));
    assert_eq!((generator.id().model.as_str(), judge.id().model.as_str()), ("writer", "judge"));
    let provenance = resources::labeler(&split).unwrap().provenance();
    let (generator, judge) = (&provenance.generator.model, &provenance.judge.model);
    assert!(generator.ends_with(":writer") && judge.ends_with(":judge"), "{provenance:?}");
}

#[test]
fn an_instant_generator_can_pair_with_a_model_judge() {
    let judge = "[llm.judge]\nbackend = \"remote\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"judge\"\n";
    let generator = "[llm.generator]\nbackend = \"instant\"\nquery_words = 2\n";
    let config = parse(&with_llm(&format!("{generator}{judge}"))).unwrap();
    let labeler = resources::labeler(&config).unwrap();
    let text = "Shock waves form ahead of blunt bodies".to_string();
    let passage = Passage { id: "p".into(), title: String::new(), text };
    let generated = futures::executor::block_on(labeler.generate(vec![QuerySeed::first(passage)]));
    assert_eq!(generated[0].as_ref().unwrap().query, "shock waves");
    let provenance = labeler.provenance();
    assert_eq!(provenance.generator.model, "instant:overlap");
    let judge = &provenance.judge.model;
    assert!(judge.starts_with("remote:") && judge.ends_with(":judge"), "{provenance:?}");
}

#[test]
fn fretflow_llm_url_replaces_the_base_url_of_remote_roles_only() {
    let env = |url: &'static str| move |name: &str| (name == "FRETFLOW_LLM_URL").then(|| url.to_owned());
    let base_url = |config: &LlmConfig| match config {
        LlmConfig::Remote(remote) => Some(remote.base_url.clone()),
        _ => None,
    };
    let mut both = parse(&with_llm(REMOTE_ROLES)).unwrap();
    both.apply_env(env("http://llm-gpu:8000/v1")).unwrap();
    assert_eq!(base_url(&both.llm.generator).as_deref(), Some("http://llm-gpu:8000/v1"));
    assert_eq!(base_url(&both.llm.judge).as_deref(), Some("http://llm-gpu:8000/v1"));
    assert!(both.llm.shared(), "both roles changed alike, so they still share one backend");

    // A local judge keeps its table; an empty value changes nothing.
    let local_judge = "[llm.judge]\nbackend = \"local\"\nmodel = \"SmolLM2-135M-Instruct\"\n";
    let (generator_table, _) = REMOTE_ROLES.split_at(REMOTE_ROLES.find("[llm.judge]").unwrap());
    let mut mixed = parse(&with_llm(&format!("{generator_table}{local_judge}"))).unwrap();
    mixed.apply_env(env("")).unwrap();
    assert_eq!(base_url(&mixed.llm.generator).as_deref(), Some("http://127.0.0.1:9/v1"));
    mixed.apply_env(env("http://other:1/v1")).unwrap();
    assert_eq!(base_url(&mixed.llm.generator).as_deref(), Some("http://other:1/v1"));
    assert!(matches!(mixed.llm.judge, LlmConfig::Local(_)));
}
