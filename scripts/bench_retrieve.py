"""The dataflow's sharded top-N retrieval at 1, 2 and 4 workers, and against faiss IndexFlatIP.

Writes P random unit vectors (passages) and Q (queries) of D dims (seeded, numpy), then runs
`examples/bench_retrieve.rs` as a cluster of W processes with one worker each on loopback (W = 1, 2, 4), so
that each process's peak RSS is one worker's, and prints a table: peak RSS per worker, the load of P - L
passages, the scan of Q new queries (each over every shard; queries/s), and L late passages scored against
every live query (passages/s). Then, when faiss is importable (`make bench-deps`), times faiss IndexFlatIP
`search` of the same Q queries over the same P - L passages with T threads against the dataflow's scan with
T workers (T = 1, 2) and prints the ratio (faiss time / fretflow time; >= 1 means fretflow is faster).

Run from the repository root on an otherwise idle machine (the binary is built by `cargo build --examples`):
    .venv/bin/python scripts/bench_retrieve.py [--passages 100000] [--queries 10000] [--dim 384] [--n 10]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target/debug/examples/bench_retrieve"


def unit_rows(rng, count, dim):
    rows = rng.standard_normal((count, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def run_cluster(workers, args, files, torch_threads=1):
    """Runs `workers` processes of one worker each on loopback (each worker's products on `torch_threads`
    LibTorch threads); returns their JSON reports."""
    with tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False) as hosts:
        base = 40000 + (os.getpid() % 1000) * 8
        for k in range(workers):
            hosts.write(f"127.0.0.1:{base + k}\n")
    common = [str(BIN), "--passages", files[0], "--queries", files[1], "--dim", str(args.dim), "--n", str(args.n),
              "--batches", str(args.batches), "--late", str(args.late),
              "--torch-threads", str(torch_threads), "--"]
    if workers == 1:
        cmds = [common + ["-w", "1"]]
    else:
        cmds = [common + ["-w", "1", "-n", str(workers), "-p", str(p), "-h", hosts.name] for p in range(workers)]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True) for c in cmds]
    reports = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            sys.exit(f"bench_retrieve failed ({p.returncode}): {' '.join(p.args)}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    os.unlink(hosts.name)
    return reports


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--late", type=int, default=1000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--faiss-threads", default="1,2")
    args = ap.parse_args()
    if not BIN.exists():
        sys.exit(f"{BIN} is missing: run `cargo build --examples` first")

    rng = np.random.default_rng(20261207)
    tmp = tempfile.mkdtemp(prefix="bench-retrieve-")
    passages, queries = unit_rows(rng, args.passages, args.dim), unit_rows(rng, args.queries, args.dim)
    files = (os.path.join(tmp, "passages.f32"), os.path.join(tmp, "queries.f32"))
    passages.astype("<f4").tofile(files[0])
    queries.astype("<f4").tofile(files[1])
    early = args.passages - args.late
    print(f"{args.passages:,} passages ({args.late:,} of them late) x {args.dim} dims, {args.queries:,} queries, "
          f"top {args.n}, {args.batches} epochs per phase; machine: {os.cpu_count()} cores")

    print(f"\n{'workers':>7} {'peak RSS/worker MiB':>19} {'load s':>7} {'scan s':>7} {'queries/s':>9} "
          f"{'late s':>7} {'late passages/s':>15} {'candidates':>10}")
    scan = {}
    for w in [int(x) for x in args.workers.split(",")]:
        reports = run_cluster(w, args, files)
        rss = max(r["peak_rss_mib"] for r in reports)
        load_s, scan_s, late_s = (max(r[k] for r in reports) for k in ("load_s", "scan_s", "late_s"))
        scan[w] = scan_s
        cands = sum(r["candidates"] for r in reports)
        print(f"{w:>7} {rss:>19.0f} {load_s:>7.2f} {scan_s:>7.2f} {args.queries / scan_s:>9.0f} "
              f"{late_s:>7.2f} {args.late / late_s:>15.0f} {cands:>10}")
    print("(candidates: live (query, passage) pairs at the end, summed over processes; equal on every row)")

    try:
        import faiss
    except ImportError:
        print("\nfaiss is not installed (make bench-deps): no retrieval-peer ratio")
        return
    print(f"\nfaiss {faiss.__version__} IndexFlatIP over the {early:,} passages, search of the {args.queries:,} "
          f"queries, top {args.n}, in {args.batches} batches as the dataflow's epochs")
    print(f"{'threads':>7} {'faiss s':>8} {'fretflow: T workers x 1 thread, s':>34} {'ratio':>6} "
          f"{'1 worker x T LibTorch threads, s':>32} {'ratio':>6}")
    for t in [int(x) for x in args.faiss_threads.split(",")]:
        faiss.omp_set_num_threads(t)
        index = faiss.IndexFlatIP(args.dim)
        index.add(passages[:early])
        started = time.perf_counter()
        for batch in np.array_split(queries, args.batches):
            index.search(batch, args.n)
        faiss_s = time.perf_counter() - started
        ours = scan.get(t)
        if ours is None:
            ours = max(r["scan_s"] for r in run_cluster(t, args, files))
        line = f"{t:>7} {faiss_s:>8.2f} {ours:>34.2f} {faiss_s / ours:>6.2f}"
        if t > 1:
            threaded = run_cluster(1, args, files, torch_threads=t)[0]["scan_s"]
            line += f" {threaded:>32.2f} {faiss_s / threaded:>6.2f}"
        print(line)
    print("(ratio = faiss s / fretflow s at the same number of threads: >= 1 means fretflow is faster; "
          "the issue's target is >= 0.8. T workers: T processes of one worker on loopback, the index sharded; "
          "T LibTorch threads: one worker whose matrix products use T threads, as faiss's T OpenMP threads)")


if __name__ == "__main__":
    main()
