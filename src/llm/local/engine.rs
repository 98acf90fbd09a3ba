//! The synchronous engine behind [`super::LocalLlm`]: turns requests into token ids, groups them into
//! batches by length, and runs generation, scoring and label probabilities. It runs on the backend's own
//! worker thread only.
//!
//! Tokenization at the prompt/continuation boundary (for `score` and multi-token labels): the prompt and
//! the continuation are tokenized separately and concatenated, so a continuation's tokens do not depend on
//! the prompt. Whitespace at the end of a *text* prompt is moved to the front of the continuation first
//! (`"Query: "` + `"wing lift"` is scored as `"Query:"` + `" wing lift"`), because byte-level BPE vocabularies
//! attach a space to the word that follows it; this is lm-evaluation-harness's convention. Chat prompts
//! end with the template's assistant header and are left as they are.
use std::sync::Arc;

use super::chat::ChatTemplate;
use super::generate::{generate_batch, GenJob};
use super::model::Llama;
use super::score::{next_token_logprobs, score_batch, ScoreJob};
use super::tokenizer::LlmTokenizer;
use crate::llm::{
    ContinuationScore, GenerateRequest, Generation, LabelDistribution, LabelRequest, LlmError, Prompt, ScoreRequest,
};

/// Batch limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Most sequences in one forward pass.
    pub max_batch: usize,
    /// Most padded tokens (`batch x longest`) in one forward pass.
    pub max_batch_tokens: usize,
}

/// The model, its tokenizer and chat template, owned by the worker thread.
pub(crate) struct Engine {
    pub model: Llama,
    pub tokenizer: Arc<LlmTokenizer>,
    pub chat: Option<Arc<ChatTemplate>>,
    pub limits: BatchLimits,
    pub name: String,
}

fn invalid(msg: impl Into<String>) -> LlmError {
    LlmError::InvalidRequest(msg.into())
}

/// Splits `order` (indices sorted by decreasing length) into batches within `limits`.
fn batches(order: &[usize], len: impl Fn(usize) -> usize, limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut longest = 0;
    for &i in order {
        let l = len(i).max(longest);
        if !cur.is_empty() && (cur.len() >= limits.max_batch || l * (cur.len() + 1) > limits.max_batch_tokens) {
            out.push(std::mem::take(&mut cur));
            longest = 0;
        }
        longest = longest.max(len(i));
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Runs `run` over the valid jobs in length-sorted batches and puts each result back in request order.
fn run_batched<J, T: Clone>(
    jobs: Vec<Result<J, LlmError>>,
    len: impl Fn(&J) -> usize,
    limits: BatchLimits,
    mut run: impl FnMut(&[J]) -> Result<Vec<T>, LlmError>,
) -> Vec<Result<T, LlmError>>
where
    J: Clone,
{
    let mut out: Vec<Option<Result<T, LlmError>>> = Vec::with_capacity(jobs.len());
    let mut ok: Vec<usize> = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        match j {
            Ok(_) => {
                ok.push(i);
                out.push(None);
            }
            Err(e) => out.push(Some(Err(e.clone()))),
        }
    }
    let job = |i: usize| jobs[i].as_ref().expect("only valid jobs are batched. This is a bug.");
    ok.sort_by_key(|&i| std::cmp::Reverse(len(job(i))));
    for batch in batches(&ok, |i| len(job(i)), limits) {
        let batch_jobs: Vec<J> = batch.iter().map(|&i| job(i).clone()).collect();
        match run(&batch_jobs) {
            Ok(results) => batch.iter().zip(results).for_each(|(&i, r)| out[i] = Some(Ok(r))),
            Err(e) => batch.iter().for_each(|&i| out[i] = Some(Err(e.clone()))),
        }
    }
    out.into_iter().map(|r| r.expect("every request gets a result. This is a bug.")).collect()
}

impl Engine {
    fn context(&self) -> usize {
        self.model.config().max_positions
    }

    fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, LlmError> {
        self.tokenizer.encode(text, special).map_err(|e| invalid(e.to_string()))
    }

    /// The text a prompt becomes: chat messages go through the chat template with the generation prompt.
    pub fn render(&self, prompt: &Prompt) -> Result<String, LlmError> {
        match prompt {
            Prompt::Text(t) => Ok(t.clone()),
            Prompt::Chat(messages) => {
                let chat = self.chat.as_ref().ok_or_else(|| invalid(format!("{} has no chat template", self.name)))?;
                chat.render(messages, true).map_err(|e| invalid(e.to_string()))
            }
        }
    }

    /// Token ids of a prompt; BOS is added to text prompts where the model wants it (a chat template
    /// writes its own special tokens).
    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>, LlmError> {
        let ids = match prompt {
            Prompt::Text(t) => self.encode(t, true)?,
            Prompt::Chat(_) => self.encode(&self.render(prompt)?, false)?,
        };
        if ids.is_empty() {
            return Err(invalid("empty prompt"));
        }
        if ids.len() >= self.context() {
            return Err(invalid(format!("prompt of {} tokens exceeds the context of {}", ids.len(), self.context())));
        }
        Ok(ids)
    }

    /// Tokenizes a prompt and a continuation under the boundary convention of this module's docs.
    fn score_job(&self, prompt: &Prompt, continuation: &str) -> Result<ScoreJob, LlmError> {
        let (prompt_ids, continuation) = match prompt {
            Prompt::Text(t) => {
                let kept = t.trim_end();
                (self.prompt_ids(&Prompt::Text(kept.to_string()))?, format!("{}{continuation}", &t[kept.len()..]))
            }
            Prompt::Chat(_) => (self.prompt_ids(prompt)?, continuation.to_string()),
        };
        let continuation = self.encode(&continuation, false)?;
        if continuation.is_empty() {
            return Err(invalid("empty continuation"));
        }
        let job = ScoreJob { prompt: prompt_ids, continuation };
        if job.len() > self.context() {
            return Err(invalid(format!(
                "prompt + continuation of {} tokens exceed the context of {}",
                job.len(),
                self.context()
            )));
        }
        Ok(job)
    }

    /// Generates for every request.
    pub fn generate(&self, requests: &[GenerateRequest]) -> Vec<Result<Generation, LlmError>> {
        let jobs = requests
            .iter()
            .map(|r| {
                let prompt = self.prompt_ids(&r.prompt)?;
                let room = self.context() - prompt.len();
                Ok(GenJob {
                    max_new_tokens: r.max_new_tokens.min(room),
                    prompt,
                    stop: r.stop.clone(),
                    sampling: r.sampling,
                })
            })
            .collect();
        run_batched(
            jobs,
            |j: &GenJob| j.prompt.len() + j.max_new_tokens,
            self.limits,
            |b| generate_batch(&self.model, &self.tokenizer, b),
        )
    }

    /// Scores every continuation.
    pub fn score(&self, requests: &[ScoreRequest]) -> Vec<Result<ContinuationScore, LlmError>> {
        let jobs = requests.iter().map(|r| self.score_job(&Prompt::Text(r.prompt.clone()), &r.continuation)).collect();
        run_batched(jobs, ScoreJob::len, self.limits, |b| score_batch(&self.model, self.tokenizer.pad_id(), b))
            .into_iter()
            .map(|r| {
                r.map(|token_logprobs| ContinuationScore {
                    sum_logprob: token_logprobs.iter().map(|&l| f64::from(l)).sum(),
                    token_logprobs,
                })
            })
            .collect()
    }

    /// Full next-token log-probabilities after each prompt.
    pub fn next_token_logprobs(&self, prompts: &[Prompt]) -> Vec<Result<Vec<f32>, LlmError>> {
        let jobs = prompts.iter().map(|p| self.prompt_ids(p)).collect();
        run_batched(jobs, Vec::len, self.limits, |b| {
            let rows = next_token_logprobs(&self.model, self.tokenizer.pad_id(), b)?;
            (0..b.len() as i64)
                .map(|i| {
                    Vec::<f32>::try_from(rows.get(i).to_device(tch::Device::Cpu))
                        .map_err(|e| LlmError::Model(e.to_string()))
                })
                .collect()
        })
    }

    /// Label distributions: one pass over the prompts when every label is one token, else teacher-forced
    /// scores of each label's full token sequence; softmax over the labels' log-probabilities.
    pub fn label_probs(&self, requests: &[LabelRequest]) -> Vec<Result<LabelDistribution, LlmError>> {
        let jobs: Vec<Result<Vec<ScoreJob>, LlmError>> = requests
            .iter()
            .map(|r| {
                if r.labels.is_empty() {
                    return Err(invalid("no labels"));
                }
                r.labels.iter().map(|l| self.score_job(&r.prompt, l)).collect()
            })
            .collect();
        // Single-token labels: one next-token pass per prompt.
        let single: Vec<Result<Vec<ScoreJob>, LlmError>> = jobs
            .iter()
            .map(|j| match j {
                Ok(js) if js.iter().all(|s| s.continuation.len() == 1 && s.prompt == js[0].prompt) => Ok(js.clone()),
                _ => Err(invalid("not single-token")),
            })
            .collect();
        let pad = self.tokenizer.pad_id();
        let mut single_out = run_batched(
            single.clone(),
            |js: &Vec<ScoreJob>| js[0].prompt.len(),
            self.limits,
            |b| {
                let prompts: Vec<Vec<u32>> = b.iter().map(|js| js[0].prompt.clone()).collect();
                let rows = next_token_logprobs(&self.model, pad, &prompts)?;
                b.iter()
                    .enumerate()
                    .map(|(i, js)| {
                        let ids: Vec<i64> = js.iter().map(|s| i64::from(s.continuation[0])).collect();
                        let picked =
                            rows.get(i as i64).index_select(0, &tch::Tensor::from_slice(&ids).to_device(rows.device()));
                        Vec::<f32>::try_from(picked.to_device(tch::Device::Cpu))
                            .map_err(|e| LlmError::Model(e.to_string()))
                    })
                    .collect()
            },
        );
        // Multi-token labels: every (prompt, label) sequence scored in shared batches.
        let multi: Vec<Result<ScoreJob, LlmError>> = jobs
            .iter()
            .zip(&single)
            .filter(|(j, s)| j.is_ok() && s.is_err())
            .flat_map(|(j, _)| j.as_ref().expect("filtered on Ok. This is a bug.").iter().cloned().map(Ok))
            .collect();
        let mut multi_out =
            run_batched(multi, ScoreJob::len, self.limits, |b| score_batch(&self.model, pad, b)).into_iter();
        jobs.into_iter()
            .zip(single)
            .zip(single_out.iter_mut())
            .map(|((job, single), single_result)| {
                let js = job?;
                let logps: Vec<f64> = if single.is_ok() {
                    std::mem::replace(single_result, Ok(Vec::new()))?.into_iter().map(f64::from).collect()
                } else {
                    // Take every label's result before failing, so the next request reads its own.
                    let per_label: Vec<Result<Vec<f32>, LlmError>> = js
                        .iter()
                        .map(|_| multi_out.next().expect("one multi-token result per label. This is a bug."))
                        .collect();
                    per_label
                        .into_iter()
                        .map(|lp| lp.map(|lp| lp.iter().map(|&l| f64::from(l)).sum::<f64>()))
                        .collect::<Result<_, _>>()?
                };
                let max = logps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = logps.iter().map(|l| (l - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                Ok(LabelDistribution { probs: exps.iter().map(|e| (e / total) as f32).collect() })
            })
            .collect()
    }
}
