//! The tensor AdamW follows torch.optim.AdamW (HF-style no-decay groups, clip_grad_norm_, warmup + linear
//! decay) step for step: parameters to 1e-6 over 5 steps (fixture from
//! tests/fixtures/train/make_optim_fixture.py), and its saved state restores an identical continuation.
use fretflow::train::optim::{AdamW, OptimConfig};
use serde::Deserialize;
use std::collections::HashMap;
use tch::{nn::VarStore, Device, Kind, Tensor};

#[derive(Deserialize)]
struct Fixture {
    config: OptimConfig,
    init: HashMap<String, serde_json::Value>,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    grads: HashMap<String, serde_json::Value>,
    norm_before_clip: f64,
    lr: f64,
    params_after: HashMap<String, serde_json::Value>,
}

const PARAM_TOL: f64 = 1e-6;

fn tensor(v: &serde_json::Value) -> Tensor {
    fn flat(v: &serde_json::Value, out: &mut Vec<f32>, shape: &mut Vec<i64>, depth: usize) {
        match v {
            serde_json::Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len() as i64);
                }
                items.iter().for_each(|x| flat(x, out, shape, depth + 1));
            }
            x => out.push(x.as_f64().expect("number") as f32),
        }
    }
    let (mut out, mut shape) = (Vec::new(), Vec::new());
    flat(v, &mut out, &mut shape, 0);
    Tensor::from_slice(&out).view(shape.as_slice())
}

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/train/optim_fixture.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn store(f: &Fixture) -> (VarStore, HashMap<String, Tensor>) {
    let vs = VarStore::new(Device::Cpu);
    let vars = f.init.iter().map(|(n, v)| (n.clone(), var(&vs, n, &tensor(v)))).collect();
    (vs, vars)
}

/// Creates the variable with dotted name `name` (VarStore paths cannot contain dots).
fn var(vs: &VarStore, name: &str, t: &Tensor) -> Tensor {
    let mut parts: Vec<&str> = name.split('.').collect();
    let leaf = parts.pop().unwrap();
    parts.iter().fold(vs.root(), |p, s| p / *s).var_copy(leaf, t)
}

fn apply_step(opt: &mut AdamW, vars: &HashMap<String, Tensor>, step: &Step) -> (f64, f64) {
    opt.zero_grad();
    for (name, var) in vars {
        // Set the gradient through a backward pass of <var, g>, as training does.
        (var * tensor(&step.grads[name])).sum(Kind::Float).backward();
    }
    let norm = opt.clip_grad_norm();
    (norm, opt.step())
}

fn max_diff(vars: &HashMap<String, Tensor>, expected: &HashMap<String, serde_json::Value>) -> f64 {
    vars.iter().map(|(n, v)| (v - tensor(&expected[n])).abs().max().double_value(&[])).fold(0.0, f64::max)
}

#[test]
fn adamw_with_clipping_and_schedule_matches_pytorch_trajectory() {
    let f = fixture();
    let (vs, vars) = store(&f);
    let mut opt = AdamW::new(&vs, f.config.clone()).unwrap();
    for (t, step) in f.steps.iter().enumerate() {
        let (norm, lr) = apply_step(&mut opt, &vars, step);
        assert!((norm - step.norm_before_clip).abs() < 1e-5, "step {t}: norm {norm} vs {}", step.norm_before_clip);
        assert!((lr - step.lr).abs() < 1e-12, "step {t}: lr {lr} vs {}", step.lr);
        let diff = max_diff(&vars, &step.params_after);
        assert!(diff <= PARAM_TOL, "step {t}: parameters differ from PyTorch by {diff}");
    }
}

#[test]
fn restored_optimizer_state_continues_exactly_like_the_uninterrupted_run() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("optimizer.safetensors");
    let (vs, vars) = store(&f);
    let mut opt = AdamW::new(&vs, f.config.clone()).unwrap();
    for step in &f.steps[..2] {
        apply_step(&mut opt, &vars, step);
    }
    opt.save_state(&state).unwrap();
    vs.save(dir.path().join("params.safetensors")).unwrap();

    // A fresh process: new store loaded from disk, new optimizer restored from the state file.
    let (mut vs2, vars2) = store(&f);
    vs2.load(dir.path().join("params.safetensors")).unwrap();
    let mut opt2 = AdamW::new(&vs2, f.config.clone()).unwrap();
    opt2.load_state(&state, 2).unwrap();
    for step in &f.steps[2..] {
        apply_step(&mut opt2, &vars2, step);
    }
    let diff = max_diff(&vars2, &f.steps.last().unwrap().params_after);
    assert!(diff <= PARAM_TOL, "resumed run differs from PyTorch's uninterrupted run by {diff}");

    // Without the moments the continuation is measurably different: the state matters.
    let (mut vs3, vars3) = store(&f);
    vs3.load(dir.path().join("params.safetensors")).unwrap();
    let mut opt3 = AdamW::new(&vs3, f.config.clone()).unwrap();
    for step in &f.steps[2..] {
        apply_step(&mut opt3, &vars3, step);
    }
    assert!(max_diff(&vars3, &f.steps.last().unwrap().params_after) > 1e-4);
}

#[test]
fn state_of_another_model_is_rejected_with_the_tensor_name() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("optimizer.safetensors");
    let (vs, _) = store(&f);
    AdamW::new(&vs, f.config.clone()).unwrap().save_state(&state).unwrap();
    let other = VarStore::new(Device::Cpu);
    let _ = var(&other, "b.weight", &Tensor::zeros([2], (Kind::Float, Device::Cpu)));
    let err = AdamW::new(&other, f.config.clone()).unwrap().load_state(&state, 1).unwrap_err().to_string();
    assert!(err.contains("b.weight"), "{err}");
}
