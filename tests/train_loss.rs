//! The Gecko loss equals the PyTorch reference (tests/fixtures/train/make_loss_fixture.py) on fixed random
//! tensors: loss to 1e-5, gradients w.r.t. queries, positives and negatives to 1e-4 (absolute), for plain,
//! Matryoshka, duplicate-masked, unmasked and no-hard-negative batches.
use fretflow::train::{GeckoLoss, LossInputs};
use serde::Deserialize;
use tch::{Kind, Tensor};

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    config: GeckoLoss,
    positive_ids: Vec<String>,
    negative_ids: Vec<String>,
    queries: Vec<Vec<f64>>,
    positives: Vec<Vec<f64>>,
    negatives: Vec<Vec<f64>>,
    loss: f64,
    grad_queries: Vec<Vec<f64>>,
    grad_positives: Vec<Vec<f64>>,
    grad_negatives: Vec<Vec<f64>>,
}

const LOSS_TOL: f64 = 1e-5;
const GRAD_TOL: f64 = 1e-4;

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/train/loss_fixture.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture readable")).expect("fixture parses")
}

fn leaf(rows: &[Vec<f64>], dim: usize) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, dim as i64]).set_requires_grad(true)
}

fn max_abs_diff(t: &Tensor, expected: &[Vec<f64>]) -> f64 {
    let flat: Vec<f64> = expected.iter().flatten().copied().collect();
    if flat.is_empty() {
        return 0.0;
    }
    let e = Tensor::from_slice(&flat).view(t.size().as_slice());
    (t.to_kind(Kind::Double) - e).abs().max().double_value(&[])
}

fn check(case: &Case) {
    let dim = case.queries[0].len();
    let q = leaf(&case.queries, dim);
    let p = leaf(&case.positives, dim);
    let n = leaf(&case.negatives, dim);
    let loss = case
        .config
        .forward(&LossInputs {
            queries: &q,
            positives: &p,
            negatives: &n,
            positive_ids: &case.positive_ids,
            negative_ids: &case.negative_ids,
        })
        .expect("loss computes");
    let value = loss.double_value(&[]);
    assert!(
        (value - case.loss).abs() <= LOSS_TOL,
        "{}: loss {value} vs reference {} (tolerance {LOSS_TOL})",
        case.name,
        case.loss
    );
    loss.backward();
    for (what, t, expected) in [
        ("queries", &q, &case.grad_queries),
        ("positives", &p, &case.grad_positives),
        ("negatives", &n, &case.grad_negatives),
    ] {
        if expected.is_empty() {
            continue;
        }
        let diff = max_abs_diff(&t.grad(), expected);
        assert!(diff <= GRAD_TOL, "{}: grad w.r.t. {what} differs by {diff} (tolerance {GRAD_TOL})", case.name);
    }
}

fn case(name: &str) -> Case {
    fixture().cases.into_iter().find(|c| c.name == name).expect("case present in fixture")
}

#[test]
fn plain_loss_and_gradients_match_pytorch() {
    check(&case("plain"));
}

#[test]
fn matryoshka_loss_and_gradients_match_pytorch() {
    check(&case("matryoshka"));
}

#[test]
fn duplicate_positive_is_masked_like_pytorch() {
    check(&case("masked_duplicates"));
}

#[test]
fn matryoshka_with_masked_duplicates_matches_pytorch() {
    check(&case("matryoshka_masked_duplicates"));
}

#[test]
fn unmasked_loss_without_same_tower_matches_pytorch() {
    check(&case("unmasked_no_same_tower"));
}

#[test]
fn batch_without_hard_negatives_matches_pytorch() {
    check(&case("no_hard_negatives"));
}

#[test]
fn masking_changes_the_loss_when_positives_repeat() {
    // Guards against a mask that silently does nothing: same inputs, masking off, must differ.
    let c = case("masked_duplicates");
    let dim = c.queries[0].len();
    let (q, p, n) = (leaf(&c.queries, dim), leaf(&c.positives, dim), leaf(&c.negatives, dim));
    let inputs = LossInputs {
        queries: &q,
        positives: &p,
        negatives: &n,
        positive_ids: &c.positive_ids,
        negative_ids: &c.negative_ids,
    };
    let masked = c.config.forward(&inputs).unwrap().double_value(&[]);
    let unmasked = GeckoLoss { mask_false_negatives: false, ..c.config.clone() }.forward(&inputs).unwrap();
    assert!((masked - unmasked.double_value(&[])).abs() > 1e-3);
}

#[test]
fn bad_matryoshka_configuration_is_an_error_naming_the_dimension() {
    let loss = GeckoLoss { matryoshka_dims: vec![384, 512], ..GeckoLoss::default() };
    let err = loss.dims_and_weights(384).unwrap_err().to_string();
    assert!(err.contains("512"), "{err}");
    let loss = GeckoLoss { matryoshka_dims: vec![64], matryoshka_weights: vec![1.0, 2.0], ..GeckoLoss::default() };
    assert!(loss.dims_and_weights(384).is_err());
}
