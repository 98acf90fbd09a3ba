//! The Gecko loss equals the PyTorch reference (tests/fixtures/train/make_loss_fixture.py) on fixed random
//! tensors: loss to 1e-5, gradients w.r.t. queries, positives and negatives to 1e-4 (absolute), for plain,
//! Matryoshka, duplicate-masked, unmasked and no-hard-negative batches.
//!
//! The distillation term equals its PyTorch reference (tests/fixtures/train/make_distill_fixture.py) with the
//! same tolerances, for each teacher (RRF, QL, RC, RRF fused with the student's rank), with Matryoshka,
//! masked duplicates, unscored candidates and queries left with fewer than two scored candidates; with
//! weight 0 it is exactly the contrastive loss. Why these tolerances: the reference runs in float64, fretflow in
//! float32 (what training uses); the cosines carry ~1e-7 relative error, which the temperature (x20) and
//! losses of 10-30 turn into ~1e-6 on the loss (measured: at most 2.5e-6) and into ~1e-6 on the gradients
//! (measured: at most 8.2e-7), so 1e-5 and 1e-4 leave headroom, while a missing candidate, mask or weight moves
//! the values by far more (the fixture's distillation terms are 2.7 to 9.1 before their weight).
use fretflow::train::{DistillTeacher, GeckoLoss, LossInputs, TeacherInputs, TeacherScores};
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
            teacher: None,
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
        teacher: None,
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

#[derive(Deserialize)]
struct DistillFixture {
    cases: Vec<DistillCase>,
}

#[derive(Deserialize)]
struct Scores {
    rrf: f64,
    ql: Option<f64>,
    rc: f64,
    rrf_student: f64,
}

#[derive(Deserialize)]
struct DistillCase {
    #[serde(flatten)]
    base: Case,
    negative_owners: Vec<usize>,
    positive_teachers: Vec<Option<Scores>>,
    negative_teachers: Vec<Option<Scores>>,
    contrastive: f64,
    distill: f64,
}

fn distill_case(name: &str) -> DistillCase {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/train/distill_fixture.json");
    let fixture: DistillFixture =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture readable")).expect("fixture parses");
    fixture.cases.into_iter().find(|c| c.base.name == name).expect("case present in fixture")
}

fn teacher_scores(list: &[Option<Scores>]) -> Vec<Option<TeacherScores>> {
    list.iter()
        .map(|s| s.as_ref().map(|s| TeacherScores { rrf: s.rrf, ql: s.ql, rc: s.rc, rrf_student: s.rrf_student }))
        .collect()
}

/// Loss value and the three gradients of `config` on the case's tensors, with or without teacher inputs.
fn distill_forward(c: &DistillCase, config: &GeckoLoss, with_teacher: bool) -> (f64, [Tensor; 3]) {
    let dim = c.base.queries[0].len();
    let (q, p, n) = (leaf(&c.base.queries, dim), leaf(&c.base.positives, dim), leaf(&c.base.negatives, dim));
    let (positives, negatives) = (teacher_scores(&c.positive_teachers), teacher_scores(&c.negative_teachers));
    let teacher = TeacherInputs { positives: &positives, negatives: &negatives, negative_owners: &c.negative_owners };
    let loss = config
        .forward(&LossInputs {
            queries: &q,
            positives: &p,
            negatives: &n,
            positive_ids: &c.base.positive_ids,
            negative_ids: &c.base.negative_ids,
            teacher: with_teacher.then_some(teacher),
        })
        .expect("loss computes");
    loss.backward();
    (loss.double_value(&[]), [q.grad(), p.grad(), n.grad()])
}

/// Checks a distillation case against its reference; prints the measured differences.
fn check_distill(name: &str) -> DistillCase {
    let c = distill_case(name);
    let (value, grads) = distill_forward(&c, &c.base.config, true);
    let loss_diff = (value - c.base.loss).abs();
    let expected = [&c.base.grad_queries, &c.base.grad_positives, &c.base.grad_negatives];
    let diffs: Vec<f64> = grads.iter().zip(expected).map(|(g, e)| max_abs_diff(g, e)).collect();
    let shown: Vec<String> = diffs.iter().map(|d| format!("{d:.2e}")).collect();
    println!("{name}: max |diff| loss {loss_diff:.2e}, gradients q/p/n {}", shown.join(" / "));
    assert!(loss_diff <= LOSS_TOL, "{name}: loss {value} vs reference {} (tolerance {LOSS_TOL})", c.base.loss);
    for (what, diff) in ["queries", "positives", "negatives"].iter().zip(&diffs) {
        assert!(*diff <= GRAD_TOL, "{name}: grad w.r.t. {what} differs by {diff} (tolerance {GRAD_TOL})");
    }
    c
}

#[test]
fn distill_weight_zero_is_exactly_the_contrastive_loss() {
    let c = check_distill("distill_off");
    assert!(c.distill > 1e-2, "the fixture's term is not trivially zero: weight 0 must be what removes it");
    let (with, grads_with) = distill_forward(&c, &c.base.config, true);
    let (without, grads_without) = distill_forward(&c, &c.base.config, false);
    assert_eq!(with, without, "same value as without teacher inputs");
    for (a, b) in grads_with.iter().zip(&grads_without) {
        assert!(a.equal(b), "same gradients as without teacher inputs");
    }
}

#[test]
fn rrf_distillation_at_each_matryoshka_dim_matches_pytorch() {
    let c = check_distill("distill_rrf_matryoshka");
    assert!((c.base.loss - c.contrastive).abs() > 1e-2, "the term contributes");
}

#[test]
fn rrf_distillation_with_masked_duplicates_matches_pytorch() {
    check_distill("distill_rrf_masked_duplicates");
}

#[test]
fn ql_distillation_leaves_out_candidates_without_ql_like_pytorch() {
    check_distill("distill_ql");
}

#[test]
fn rc_distillation_matches_pytorch() {
    check_distill("distill_rc_matryoshka");
}

#[test]
fn rrf_student_distillation_without_same_tower_matches_pytorch() {
    check_distill("distill_rrf_student_no_same_tower");
}

#[test]
fn queries_with_fewer_than_two_scored_candidates_add_nothing() {
    let c = check_distill("distill_no_scored_query");
    assert_eq!(c.distill, 0.0);
    let (with, _) = distill_forward(&c, &c.base.config, true);
    assert_eq!(with, distill_forward(&c, &c.base.config, false).0);
}

#[test]
fn each_teacher_reads_its_own_score() {
    let s = TeacherScores { rrf: 0.03, ql: None, rc: 0.7, rrf_student: 0.031 };
    let read = |t: DistillTeacher| t.score(&s);
    assert_eq!(
        [DistillTeacher::Rrf, DistillTeacher::Ql, DistillTeacher::Rc, DistillTeacher::RrfStudent].map(read),
        [Some(0.03), None, Some(0.7), Some(0.031)]
    );
}

#[test]
fn bad_distillation_settings_and_inputs_are_errors_naming_them() {
    let bad_weight = GeckoLoss { distill_weight: -1.0, ..GeckoLoss::default() };
    assert!(bad_weight.dims_and_weights(16).unwrap_err().to_string().contains("distill_weight"));
    let bad_nan = GeckoLoss { distill_weight: f64::NAN, ..GeckoLoss::default() };
    assert!(bad_nan.dims_and_weights(16).unwrap_err().to_string().contains("distill_weight"));
    let bad_temperature = GeckoLoss { distill_temperature: 0.0, ..GeckoLoss::default() };
    assert!(bad_temperature.dims_and_weights(16).unwrap_err().to_string().contains("distill_temperature"));

    let c = distill_case("distill_rrf_matryoshka");
    let dim = c.base.queries[0].len();
    let (q, p, n) = (leaf(&c.base.queries, dim), leaf(&c.base.positives, dim), leaf(&c.base.negatives, dim));
    let (positives, negatives) = (teacher_scores(&c.positive_teachers), teacher_scores(&c.negative_teachers));
    let forward = |owners: &[usize]| {
        let teacher = TeacherInputs { positives: &positives, negatives: &negatives, negative_owners: owners };
        c.base.config.forward(&LossInputs {
            queries: &q,
            positives: &p,
            negatives: &n,
            positive_ids: &c.base.positive_ids,
            negative_ids: &c.base.negative_ids,
            teacher: Some(teacher),
        })
    };
    let short = forward(&c.negative_owners[1..]).unwrap_err().to_string();
    assert!(short.contains("negative owners"), "{short}");
    let mut beyond = c.negative_owners.clone();
    beyond[0] = 99;
    let beyond = forward(&beyond).unwrap_err().to_string();
    assert!(beyond.contains("99"), "{beyond}");
}

#[test]
fn old_loss_settings_without_distillation_fields_still_parse() {
    let old = r#"{"temperature": 0.05, "matryoshka_dims": [384], "matryoshka_weights": [],
        "same_tower_negatives": true, "mask_false_negatives": true}"#;
    let loss: GeckoLoss = serde_json::from_str(old).unwrap();
    assert_eq!((loss.distill_weight, loss.distill_teacher), (0.0, DistillTeacher::Rrf));
    let saved = serde_json::to_value(GeckoLoss { distill_teacher: DistillTeacher::RrfStudent, ..loss }).unwrap();
    assert_eq!(saved["distill_teacher"], "rrf_student");
}
