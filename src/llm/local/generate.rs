//! Batched generation with a KV cache: the prompts' shared head computed once, the rest left-padded
//! after it and prefilled together, one token per step for every live sequence,
//! finished sequences dropped from the batch, stop tokens and stop strings, greedy or seeded sampling.
//!
//! Each request samples from its own random stream (seeded by `Sampling::seed`), so its output does not
//! depend on which other requests share its batch.
use rand::{Rng, SeedableRng};
use tch::{Kind, TchError, Tensor};

use super::model::{shared_prefix, Attention, Llama};
use super::tokenizer::LlmTokenizer;
use crate::llm::{FinishReason, Generation, LlmError, Sampling};

/// A tokenized generation request.
#[derive(Debug, Clone)]
pub(crate) struct GenJob {
    pub prompt: Vec<u32>,
    pub max_new_tokens: usize,
    pub stop: Vec<String>,
    pub sampling: Sampling,
}

/// One sequence's progress.
struct Row {
    job: usize,
    generated: Vec<u32>,
    rng: rand::rngs::StdRng,
    done: Option<Generation>,
}

/// Index of the largest value (the first one on ties, as `torch.argmax`).
fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// Picks the next token: argmax when `temperature <= 0`, else a draw from the temperature-scaled
/// distribution restricted to the smallest set of tokens whose mass reaches `top_p`.
pub(crate) fn pick(logits: &[f32], s: &Sampling, rng: &mut impl Rng) -> usize {
    if s.temperature <= 0.0 {
        return argmax(logits);
    }
    let t = f64::from(s.temperature);
    let max = f64::from(logits[argmax(logits)]);
    let mut probs: Vec<(usize, f64)> = logits.iter().map(|&l| ((f64::from(l) - max) / t).exp()).enumerate().collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    if s.top_p < 1.0 {
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut mass = 0.0;
        let mut keep = 0;
        while keep < probs.len() && (keep == 0 || mass < f64::from(s.top_p)) {
            mass += probs[keep].1;
            keep += 1;
        }
        probs.truncate(keep);
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.random::<f64>() * total;
    for &(i, p) in &probs {
        r -= p;
        if r <= 0.0 {
            return i;
        }
    }
    probs.last().expect("at least one token is kept. This is a bug.").0
}

/// Earliest occurrence of any stop string in `text`.
fn find_stop(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min()
}

/// Applies a new token to a row; returns whether the row has finished.
fn advance(row: &mut Row, job: &GenJob, token: u32, tok: &LlmTokenizer) -> Result<bool, LlmError> {
    let decode = |ids: &[u32]| tok.decode(ids, true).map_err(|e| LlmError::Model(e.to_string()));
    if tok.stop_ids().contains(&token) {
        let text = decode(&row.generated)?;
        row.done = Some(Generation { text, tokens: row.generated.len(), finish: FinishReason::Stop });
        return Ok(true);
    }
    row.generated.push(token);
    if !job.stop.is_empty() {
        let text = decode(&row.generated)?;
        if let Some(at) = find_stop(&text, &job.stop) {
            let text = text[..at].to_string();
            row.done = Some(Generation { text, tokens: row.generated.len(), finish: FinishReason::Stop });
            return Ok(true);
        }
    }
    if row.generated.len() >= job.max_new_tokens {
        let text = decode(&row.generated)?;
        row.done = Some(Generation { text, tokens: row.generated.len(), finish: FinishReason::Length });
        return Ok(true);
    }
    Ok(false)
}

fn tch_err(e: TchError) -> LlmError {
    LlmError::Model(e.to_string())
}

/// Generates for every job of one batch (all prompts non-empty, `prompt + max_new_tokens` within the
/// model's context); results in the jobs' order.
pub(crate) fn generate_batch(model: &Llama, tok: &LlmTokenizer, jobs: &[GenJob]) -> Result<Vec<Generation>, LlmError> {
    let dev = model.device();
    let b = jobs.len() as i64;
    let t = jobs.iter().map(|j| j.prompt.len()).max().unwrap_or(0) as i64;
    let max_new = jobs.iter().map(|j| j.max_new_tokens).max().unwrap_or(0) as i64;
    let mut rows: Vec<Row> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| Row {
            job: i,
            generated: Vec::new(),
            rng: rand::rngs::StdRng::seed_from_u64(j.sampling.seed),
            done: (j.max_new_tokens == 0).then(|| Generation {
                text: String::new(),
                tokens: 0,
                finish: FinishReason::Length,
            }),
        })
        .collect();
    if max_new == 0 || b == 0 {
        return Ok(rows.into_iter().map(|r| r.done.expect("max_new_tokens is 0. This is a bug.")).collect());
    }
    // The head every prompt shares is computed once; each keeps at least its last token.
    let prompts: Vec<&[u32]> = jobs.iter().map(|j| j.prompt.as_slice()).collect();
    let shared = shared_prefix(&prompts, 1);
    let p = shared as i64;
    let t = t - p;
    // Left padding after the head: the rest of prompt b occupies columns [p + t - len_b, p + t).
    let pad = i64::from(tok.pad_id());
    let width = p + t + max_new;
    let mut ids = vec![pad; (b * t) as usize];
    let mut pos = vec![0i64; (b * t) as usize];
    let mut valid = vec![true; (b * width) as usize];
    for (r, j) in jobs.iter().enumerate() {
        let rest = &j.prompt[shared..];
        let off = t as usize - rest.len();
        for (k, &id) in rest.iter().enumerate() {
            ids[r * t as usize + off + k] = i64::from(id);
            pos[r * t as usize + off + k] = p + k as i64;
        }
        valid[r * width as usize + shared..][..off].iter_mut().for_each(|v| *v = false);
    }
    let ids = Tensor::from_slice(&ids).view([b, t]).to_device(dev);
    let positions = Tensor::from_slice(&pos).view([b, t]).to_device(dev);
    let mut valid = Tensor::from_slice(&valid).view([b, width]).to_device(dev);
    // Prefill mask: causal, real keys only (the head is real for every row); a pad query attends to itself
    // so no row is empty.
    let causal = Tensor::ones([t, p + t], (Kind::Bool, dev)).tril(p);
    let keys = valid.narrow(1, 0, p + t).view([b, 1, 1, p + t]);
    let eye = Tensor::cat(&[Tensor::zeros([t, p], (Kind::Bool, dev)), Tensor::eye(t, (Kind::Bool, dev))], 1);
    let mask = causal.logical_and(&keys).logical_or(&eye);
    let mut cache =
        if shared == 0 { model.new_cache(b, width) } else { model.prefix_cache(&jobs[0].prompt[..shared], b, width) }
            .map_err(tch_err)?;
    let hidden = model.forward(&ids, &positions, Attention::Mask(&mask), Some(&mut cache)).map_err(tch_err)?;
    let mut logits = model.logits(&hidden.select(1, t - 1)).map_err(tch_err)?;
    let mut live: Vec<usize> = (0..rows.len()).filter(|&r| rows[r].done.is_none()).collect();
    let mut next_pos: Vec<i64> = jobs.iter().map(|j| j.prompt.len() as i64).collect();
    loop {
        let vocab = logits.size()[1] as usize;
        let flat = Vec::<f32>::try_from(logits.to_kind(Kind::Float).to_device(tch::Device::Cpu).reshape([-1]))
            .map_err(tch_err)?;
        let mut tokens = Vec::with_capacity(live.len());
        let mut still = Vec::with_capacity(live.len());
        for (k, &r) in live.iter().enumerate() {
            let row = &mut rows[r];
            let job = &jobs[row.job];
            let token = pick(&flat[k * vocab..(k + 1) * vocab], &job.sampling, &mut row.rng) as u32;
            if !advance(row, job, token, tok)? {
                tokens.push(i64::from(token));
                still.push(k as i64);
            }
        }
        if still.is_empty() {
            break;
        }
        if still.len() < live.len() {
            let keep = Tensor::from_slice(&still).to_device(dev);
            cache.retain_rows(&keep).map_err(tch_err)?;
            valid = valid.index_select(0, &keep);
            live = still.iter().map(|&k| live[k as usize]).collect();
        }
        let n = live.len() as i64;
        let step_pos: Vec<i64> = live.iter().map(|&r| next_pos[r]).collect();
        live.iter().for_each(|&r| next_pos[r] += 1);
        let ids = Tensor::from_slice(&tokens).view([n, 1]).to_device(dev);
        let positions = Tensor::from_slice(&step_pos).view([n, 1]).to_device(dev);
        let kv_len = cache.len() + 1;
        let mask = valid.narrow(1, 0, kv_len).view([n, 1, 1, kv_len]);
        let hidden = model.forward(&ids, &positions, Attention::Mask(&mask), Some(&mut cache)).map_err(tch_err)?;
        logits = model.logits(&hidden.select(1, 0)).map_err(tch_err)?;
    }
    Ok(rows.into_iter().map(|r| r.done.expect("every row finishes before the loop ends. This is a bug.")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_pick_is_the_first_maximum() {
        let s = Sampling::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        assert_eq!(pick(&[0.1, 3.0, 3.0, -1.0], &s, &mut rng), 1);
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        let s = Sampling { temperature: 1.0, top_p: 0.5, seed: 7 };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Token 2 holds ~84% of the mass, so a 0.5 nucleus is token 2 alone.
        for _ in 0..50 {
            assert_eq!(pick(&[0.0, 1.0, 3.0], &s, &mut rng), 2);
        }
    }

    #[test]
    fn sampling_is_reproducible_per_seed_and_varies_across_seeds() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let draw = |seed| {
            let s = Sampling { temperature: 1.0, top_p: 1.0, seed };
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (0..20).map(|_| pick(&logits, &s, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn earliest_stop_string_wins() {
        let stop = vec!["\n".to_string(), "Query".to_string()];
        assert_eq!(find_stop("abc Query\nx", &stop), Some(4));
        assert_eq!(find_stop("abc", &stop), None);
    }
}
