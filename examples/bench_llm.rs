//! Throughput of the local LLM backend: generation and QL scoring tokens/s at several batch sizes.
//! Driven by scripts/bench_llm.py, which writes the requests and compares against llama.cpp.
//!
//! Usage: `cargo run --example bench_llm -- --requests FILE [--model NAME|PATH] [--threads N]
//! [--batches 1,16] [--precision f32|bf16]`, where FILE is JSON: `{"generate": [{"prompt", "max_new_tokens"}],
//! "score": [{"prompt", "continuation"}]}`. Prints one JSON line per measurement:
//! `{"task", "batch", "requests", "tokens", "secs", "tokens_per_s"}`. Generation counts new tokens;
//! scoring counts every token the model reads (prompt + continuation), as llama.cpp's evaluation does.
use std::time::Instant;

use fretflow::llm::local::{LocalLlm, LocalLlmOptions};
use fretflow::llm::{GenerateRequest, LlmBackend, Prompt, Sampling, ScoreRequest};
use serde_json::{json, Value};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let requests = arg(&args, "--requests").ok_or_else(|| anyhow::anyhow!("--requests FILE is required"))?;
    let model = arg(&args, "--model").unwrap_or_else(|| fretflow::llm::local::DEFAULT_MODEL.to_string());
    let threads = arg(&args, "--threads").map(|t| t.parse::<usize>()).transpose()?;
    let batches: Vec<usize> = arg(&args, "--batches")
        .unwrap_or_else(|| "1,16".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(&requests)?)?;
    let max_batch = batches.iter().copied().max().unwrap_or(1);
    let options = LocalLlmOptions {
        device: fretflow::device::DeviceChoice::Cpu,
        max_batch,
        max_batch_tokens: 64 * 1024,
        threads,
        precision: arg(&args, "--precision").unwrap_or_else(|| "f32".into()).parse()?,
    };
    let llm = LocalLlm::load(&model, options)?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let gen: Vec<GenerateRequest> = spec["generate"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| GenerateRequest {
            prompt: Prompt::Text(r["prompt"].as_str().unwrap_or_default().to_string()),
            max_new_tokens: r["max_new_tokens"].as_u64().unwrap_or(32) as usize,
            stop: vec![],
            sampling: Sampling::default(),
        })
        .collect();
    let score: Vec<ScoreRequest> = serde_json::from_value(spec["score"].clone())?;
    let tok = llm.tokenizer();
    let score_tokens: Vec<usize> = score
        .iter()
        .map(|r| Ok(tok.encode(&r.prompt, true)?.len() + tok.encode(&r.continuation, false)?.len()))
        .collect::<Result<_, fretflow::llm::local::tokenizer::TokenizerError>>()?;
    // Warm-up: one small call of each kind (thread pools, allocator).
    rt.block_on(llm.score(score.iter().take(1).cloned().collect()));
    rt.block_on(llm.generate(gen.iter().take(1).map(|g| GenerateRequest { max_new_tokens: 2, ..g.clone() }).collect()));
    for &batch in &batches {
        let n = gen.len().min(batch.max(4));
        let started = Instant::now();
        let mut tokens = 0;
        for chunk in gen[..n].chunks(batch) {
            for g in rt.block_on(llm.generate(chunk.to_vec())) {
                tokens += g.map_err(|e| anyhow::anyhow!("generation failed: {e}"))?.tokens;
            }
        }
        report("generate", batch, n, tokens, started.elapsed().as_secs_f64());
        let n = score.len().min((2 * batch).max(8));
        let started = Instant::now();
        for chunk in score[..n].chunks(batch) {
            for s in rt.block_on(llm.score(chunk.to_vec())) {
                s.map_err(|e| anyhow::anyhow!("scoring failed: {e}"))?;
            }
        }
        report("score", batch, n, score_tokens[..n].iter().sum(), started.elapsed().as_secs_f64());
    }
    Ok(())
}

fn report(task: &str, batch: usize, requests: usize, tokens: usize, secs: f64) {
    let line = json!({"task": task, "batch": batch, "requests": requests, "tokens": tokens, "secs": secs,
        "tokens_per_s": tokens as f64 / secs});
    println!("{line}");
}
