#!/usr/bin/env python3
"""Fine-tune all-MiniLM-L6-v2 on a FRet set made from a BEIR corpus, and measure it on that corpus's human
judgments with scripts/cranfield_finetune.sh's protocol, generalised to any BEIR-layout dataset and to
several sampling seeds (issue 13, item 7).

    .venv/bin/python scripts/beir_finetune.py --dataset ../shared/data/cranfield \\
        --fret out/cranfield-full/fret.jsonl --labels seed --seeds 42,1,2 --also ../shared/data/cisi

The corpus is the only input of the FRet set (the pipeline never sees the human queries); the human queries
and their judgments are used for measurement only, in two halves:

- **dev chooses**: every setting (lr, steps, hard negatives, labels, distillation weight, ...) is chosen
  by `--dev-only` runs, which train, evaluate on the dev half only (`fretflow eval --split dev`: the other
  half is never even scored) and print the dev nDCG@10;
- **heldout confirms**: a full run (no `--dev-only`) with the chosen setting, over sampling seeds fixed in
  advance (`--seeds 42,1,2`; at least 3, none of them chosen because of its result), reports heldout, full
  and any `--also` datasets. This script never chooses anything on those numbers; it only measures.

Steps

1. Split: `<out-root>/split-<dataset>/` holds the dataset with corpus.jsonl and queries.jsonl symlinked and
   qrels/{test,dev,heldout}.tsv. The query ids of qrels/test.tsv are sorted (numerically when every id is
   an integer, else lexicographically); dev = the ids at odd positions (1st, 3rd, ...), heldout = the rest,
   test = all. Exactly the split of scripts/cranfield_finetune.sh (cranfield: dev 113, heldout 112).
2. Training examples (`--labels`), from a FRet snapshot JSONL or a change stream (`fret-changes.jsonl`,
   folded: the last upsert of each key, minus retracted keys):
   - `seed`: the examples whose judged positive is their seed passage (the judge agreed with the
     generator), so positive = seed: a consistency filter that uses no human judgment (SUBSET=seed);
   - `consistent`: the same examples chosen by the trainer itself (`fretflow train --examples consistent`
     on the whole set): the user's path to `seed`;
   - `seed_all`: every example with its seed passage as the positive, whether or not the judge (or the
     retrieval) agreed: the generator's pairs unfiltered (InPars/GPL without a consistency filter). Hard
     negatives: the example's own, minus the seed; where the seed was its only negative, the judged
     candidates other than the seed, last-ranked first. Needs the dataset's corpus.jsonl for the seed's text;
   - `hard`: every example, the judge's positive and hard negatives as they are (SUBSET=all);
   - `soft`: every example, plus distillation of the judge's fused RRF scores
     (`--distill-weight W --distill-teacher rrf`);
   - `soft_student`: the same with `--distill-teacher rrf_student` (the judge's fused rank fused again with
     the retrieval embedder's cosine rank, i.e. relabelling fused with the student's own rank).
3. Train once per seed: `fretflow train --no-resume --seed S` from the base model, `--steps auto` = one pass
   over the kept examples at `--batch-size` (16), lr 1e-5, max(3, steps/10) warmup steps then constant,
   temperature 0.05, `--hard-negatives` (1), same-tower negatives, no Matryoshka.
   The checkpoint measured is `newest` (the last one written), trained with `--no-promotion-gate`. The
   promotion gate is not used inside the protocol because it would itself look at evaluation numbers to
   choose a checkpoint: gated on the human judgments it would select on the very queries reported here
   (and on heldout, break "heldout confirms"). The number of steps is fixed in advance instead, so the
   checkpoint measured is decided before any evaluation. `--gate-on-dev EVERY` measures the user's path
   instead: the trainer's promotion gate on, a checkpoint every EVERY steps evaluated on the dev half only
   (a BEIR dir of its own, `<out-root>/gate-<dataset>-dev`, whose qrels/test.tsv is dev), and the model
   measured is `latest` (the last checkpoint that beat the promoted model on dev), or the base model where
   none did (a user following `latest` then keeps the base). Dev chooses, heldout confirms, as above.
4. Evaluate (f32): the tuned model with `--query-prefix` (the training format's task prefix) and the base
   model with plain queries, on the split dir (`--split test`, all queries; dev, heldout and full are the
   per-query means over their ids, read from the report's `per_query`) and on each `--also` dataset.
   Base-model reports do not depend on the FRet set and are cached under `<out-root>/base-cache/` (keyed by
   model, dataset, split, qrels and prefix; `--no-base-cache` re-evaluates). The base model with the prefix
   is printed too, as a reference only (how much of a difference is the prefix's rather than the
   training's; `--no-base-prefix` skips it): the test is tuned-with-prefix vs base-plain, fixed in advance.
5. Report: per seed and mean / min..max / sample std over seeds of nDCG@10; tuned-prefix vs base-plain
   paired sign-flip randomisation tests (10,000 draws, numpy seed 0, two-sided, p = share of draws whose
   |mean| >= the observed |mean|, as scripts/cranfield_finetune.sh): per seed, and pooled over seeds, where
   pooling averages each query's delta over the seeds first and then flips signs over queries (the queries
   are the sampling unit; seeds are not treated as independent samples). Writes `<out>/report.json` and
   appends one row to `docs/results/finetune.md` (`--results`), dev-only trials included, so the number of
   choices made on dev stays visible.

Heavy steps run under `nice -n 15` (`--nice`) and wait while /tmp/bench.lock exists, as the shell script.
Wall time on 2 cores: training ~4 s per step of 16 (cranfield's 605 seed-consistent examples, 38 steps:
~2.5 min), ~65 s per f32 eval of cranfield or cisi; 3 seeds with `--also cisi` ~20 min the first time (base
reports cached afterwards). The adi smoke test (scripts/smoke-adi-instant.toml, `--steps 2 --seeds 1,2`)
takes ~1.5 min.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import json
import math
import os
import shlex
import subprocess
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "task: Given a question, find a passage that answers the question | query: "
LABELS = ("seed", "consistent", "seed_all", "hard", "soft", "soft_student")
DRAWS = 10_000
RESULTS_HEADER = """# Fine-tuning on FRet: heldout measurements (scripts/beir_finetune.py)

One row per run of `scripts/beir_finetune.py` (issue 13, item 7). The FRet set is made from the dataset's
corpus alone; the human queries and their judgments only measure. They are split by query id (sorted
numerically where ids are integers, else lexicographically): **dev** = odd positions (1st, 3rd, ...),
**heldout** = the rest, **full** = all.

**Dev chooses, heldout confirms.** Settings are chosen only on rows marked *dev only* (the heldout half is
not even evaluated there); a full row is then run once with the chosen setting over sampling seeds fixed in
advance (at least 3). Nothing is chosen on heldout, full or `also` numbers. Every dev trial stays listed.

Columns: *FRet set* (kept / all examples), *generator x judge* (from the examples' provenance), *labels*
(`seed`: positive = seed, only examples whose judged positive is the seed; `seed_all`: every example with
positive := its seed passage, unfiltered; `hard`: all examples, judged
positive and negatives; `soft`: + distillation of the judge's RRF scores; `soft_student`: + distillation
of RRF fused with the student's own cosine rank), *setting* (steps x batch, lr, hard negatives, distill
weight / temperature, precision), *seeds* (batch-sampling seeds). nDCG@10 of the base model with plain
queries vs the tuned model (checkpoint `newest`, no promotion gate) with the task prefix: base / tuned mean
(min..max over seeds, sample std). *delta, p*: tuned mean - base, and the paired sign-flip p of the pooled
test (each query's delta averaged over seeds, then signs flipped over queries, 10,000 draws); per-seed p in
the run's report.json. Goal of issue 13: heldout delta >= +0.02 with pooled p < 0.05 on both cranfield and
cisi.

| date | dataset | FRet set | generator x judge | labels | setting | seeds | dev: base / tuned | heldout: base / tuned | heldout delta, p | full delta, p | also: delta, p | commit |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
"""


class Failure(Exception):
    pass


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- subprocesses


def wait_bench_lock() -> None:
    waited = False
    while os.path.exists("/tmp/bench.lock"):
        if not waited:
            log("   (waiting while /tmp/bench.lock exists)")
            waited = True
        time.sleep(10)


def wait_binary(binary: Path, patience_s: int = 600) -> None:
    """The binary may be missing for a moment while another engineer relinks it: wait for it."""
    t0 = time.time()
    while not (binary.is_file() and os.access(binary, os.X_OK)):
        if time.time() - t0 > patience_s:
            raise Failure(f"{binary} does not exist (build it with `cargo build --bins`)")
        log(f"   ({binary} missing, maybe being relinked: waiting)")
        time.sleep(30)


def heavy(args: argparse.Namespace, cmd: list[str], logfile: Path) -> float:
    """Run a fretflow command under nice, output to logfile; returns its wall time. Retries once when
    the binary vanished under it (relinked)."""
    wait_bench_lock()
    full = ["nice", "-n", str(args.nice), *cmd] if args.nice else cmd
    logfile.parent.mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        wait_binary(Path(cmd[0]))
        t0 = time.time()
        with open(logfile, "w") as f:
            f.write("$ " + shlex.join(cmd) + "\n")
            f.flush()
            rc = subprocess.run(full, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
        wall = time.time() - t0
        if rc == 0:
            return wall
        # A binary being relinked cannot be run (nice: 127 not found, 126 text file busy): retry once.
        if attempt == 1 and rc in (126, 127):
            time.sleep(60)
            continue
        text = logfile.read_text(errors="replace")
        tail = "\n".join("      " + line for line in text.splitlines()[-15:])
        raise Failure(f"`{cmd[1]}` failed (exit {rc}) after {wall:.0f} s; log: {logfile}\n{tail}")
    raise AssertionError


# ---------------------------------------------------------------- data


def read_qrels(path: Path) -> tuple[str, list[list[str]]]:
    lines = path.read_text().splitlines()
    if not lines:
        raise Failure(f"{path} is empty")
    header = ""
    first = lines[0].split("\t")
    if len(first) < 3 or not _is_number(first[2]):
        header, lines = lines[0], lines[1:]
    rows = [line.split("\t") for line in lines if line.strip()]
    return header or "query-id\tcorpus-id\tscore", rows


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def sort_ids(ids: set[str]) -> list[str]:
    if all(i.lstrip("-").isdigit() for i in ids):
        return sorted(ids, key=int)
    return sorted(ids)


def link_texts(dataset: Path, out: Path) -> None:
    """`out`/corpus.jsonl and queries.jsonl as links to `dataset`'s, and `out`/qrels/ made."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        link = out / name
        if link.is_symlink() or link.exists():
            if link.resolve() != (dataset / name).resolve():
                raise Failure(f"{out} belongs to another dataset ({link} -> {link.resolve()}); "
                              "pass another --out-root")
            continue
        link.symlink_to((dataset / name).resolve())


def make_split(dataset: Path, split_dir: Path) -> tuple[set[str], set[str]]:
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        if not (dataset / name).is_file():
            raise Failure(f"{dataset} is not a BEIR-layout dataset: no {name}")
    link_texts(dataset, split_dir)
    header, rows = read_qrels(dataset / "qrels/test.tsv")
    ordered = sort_ids({r[0] for r in rows})
    dev = set(ordered[0::2])
    held = set(ordered[1::2])
    for name, keep in (("test", lambda q: True), ("dev", dev.__contains__), ("heldout", held.__contains__)):
        text = header + "\n" + "".join("\t".join(r) + "\n" for r in rows if keep(r[0]))
        path = split_dir / "qrels" / f"{name}.tsv"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    (split_dir / "dev.ids").write_text("".join(q + "\n" for q in ordered[0::2]))
    return dev, held


def load_fret(path: Path) -> list[dict]:
    if not path.is_file():
        raise Failure(f"no FRet file {path} (make one with `target/debug/fretflow run PIPELINE.toml`; "
                      "its [sinks] snapshot or changes path)")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise Failure(f"{path}:{n}: not JSON ({e})") from None
    if rows and "op" in rows[0]:  # a change stream (e.g. of a run cut short): fold it
        live: dict[str, dict] = {}
        for c in rows:
            if c["op"] == "upsert":
                live[c["key"]] = c["example"]
            else:
                live.pop(c["key"], None)
        rows = list(live.values())
    if not rows:
        raise Failure(f"{path} holds no FRet example")
    return rows


def load_corpus(dataset: Path) -> dict[str, dict]:
    """The corpus's passages by id, as FRet passages ({id, title, text})."""
    out = {}
    with open(dataset / "corpus.jsonl") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                out[str(d["_id"])] = {"id": str(d["_id"]), "title": d.get("title", ""), "text": d["text"]}
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise Failure(f"{dataset / 'corpus.jsonl'} line {n}: not a BEIR passage ({e})")
    return out


def with_seed_positive(row: dict, corpus: dict[str, dict]) -> dict:
    """`row` with its seed passage as the positive; negatives never include the seed."""
    seed = corpus.get(row["seed_id"])
    if seed is None:
        raise Failure(f"FRet example {row['query_id']}: seed passage {row['seed_id']} is not in the corpus")
    negatives = [n for n in row["negatives"] if n["id"] != row["seed_id"]]
    if not negatives:
        # The judge's last-ranked candidates that are not the seed (the judged positive among them).
        order = sorted(row.get("ranking", []), key=lambda c: c.get("rrf", 0.0))
        negatives = [corpus[c["id"]] for c in order if c["id"] != row["seed_id"] and c["id"] in corpus][:1]
    return {**row, "positive": seed, "negatives": negatives}


def select(rows: list[dict], labels: str, corpus: dict[str, dict] | None = None) -> list[dict]:
    if labels == "seed":
        return [r for r in rows if r["positive"]["id"] == r["seed_id"]]
    if labels == "seed_all":
        assert corpus is not None
        return [with_seed_positive(r, corpus) for r in rows]
    return list(rows)


def provenance(rows: list[dict]) -> tuple[str, str]:
    def top(role: str) -> str:
        c = collections.Counter((r.get("provenance", {}).get(role) or {}).get("model", "?") for r in rows)
        name, _ = c.most_common(1)[0]
        return name + (f" (+{len(c) - 1} more)" if len(c) > 1 else "")

    return top("generator"), top("judge")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- evaluation


def per_query(report: Path) -> dict[str, float]:
    data = json.loads(report.read_text())
    if "per_query" not in data:
        raise Failure(f"{report} has no per_query results (was it written with --no-per-query?)")
    return {q: m["ndcg_at_10"] for q, m in data["per_query"].items()}


def evaluate(args, model: str, dataset: Path, split: str, prefix: str, report: Path) -> float:
    # `--opt=value`: a value that starts with '-' (a prefix, a negative number) stays a value.
    cmd = [str(args.bin), "eval", f"--model={model}", f"--dataset={dataset}", f"--split={split}",
           f"--precision={args.eval_precision}", f"--threads={args.threads}", f"--device={args.device}",
           f"--query-prefix={prefix}", f"--output={report}"]
    return heavy(args, cmd, report.with_suffix(".log"))


def base_eval(args, dataset: Path, split: str, prefix: str, name: str, times: dict) -> dict[str, float]:
    """The base model's per-query nDCG@10, cached: it does not depend on the FRet set or the seeds."""
    qrels = dataset / "qrels" / f"{split}.tsv"
    key = json.dumps([args.model, str(dataset.resolve()), split, sha256(qrels), prefix,
                      args.eval_precision])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    slug = Path(args.model).name if os.sep in args.model else args.model
    report = args.out_root / "base-cache" / f"{slug}-{name}-{split}-{digest}.json"
    if report.is_file() and not args.no_base_cache:
        log(f"   base {'prefix' if prefix else 'plain'} {name} ({split}): reused {report.name}")
        return per_query(report)
    wall = evaluate(args, args.model, dataset, split, prefix, report)
    times[f"eval base {'prefix' if prefix else 'plain'} {dataset.name}/{split}"] = wall
    log(f"   base {'prefix' if prefix else 'plain'} {name} ({split}): {wall:.0f} s")
    return per_query(report)


def make_gate_dataset(split_dir: Path, gate_dir: Path) -> Path:
    """The dev half as a BEIR dataset of its own (qrels/test.tsv = dev), for the trainer's promotion gate."""
    link_texts(split_dir, gate_dir)
    shutil.copyfile(split_dir / "qrels" / "dev.tsv", gate_dir / "qrels" / "test.tsv")
    return gate_dir


def gate_record(ckpt: Path) -> dict:
    """Each checkpoint's dev metric and the gate's decision, from the trainer's checkpoints.jsonl."""
    out = []
    base = None
    for line in (ckpt / "checkpoints.jsonl").read_text().splitlines():
        r = json.loads(line)
        metric = next(iter(r.get("metrics", {}).values()), {})
        value = metric.get("ndcg@10", float("nan")) if isinstance(metric, dict) else float("nan")
        if r.get("baseline"):
            base = value
            continue
        out.append({"step": r["step"], "metric": value, "promoted": bool(r.get("promoted")),
                    "why": r.get("promotion", "")})
    latest = ckpt / "latest"
    return {"base_dev": base, "checkpoints": out,
            "latest": latest.resolve().name if (latest / "config.json").exists() else None}


def mean_over(values: dict[str, float], ids: set[str] | None) -> float:
    v = [x for q, x in values.items() if ids is None or q in ids]
    if not v:
        raise Failure("no evaluated query in a subset (are the qrels' query ids in queries.jsonl?)")
    return float(np.mean(v))


def sign_flip(deltas: np.ndarray) -> float:
    if len(deltas) == 0:
        return float("nan")
    rng = np.random.default_rng(0)
    signs = rng.integers(0, 2, size=(DRAWS, len(deltas)), dtype=np.int8) * 2 - 1
    draws = np.abs(signs @ deltas) / len(deltas)
    return float(np.mean(draws >= abs(deltas.mean()) - 1e-12))


def compare(tuned: list[dict[str, float]], base: dict[str, float], ids: set[str] | None) -> dict:
    """Tuned (one dict per seed) against base over the queries in ids: per-seed and pooled tests."""
    qs = sorted(q for q in base if (ids is None or q in ids))
    for t in tuned:
        missing = [q for q in qs if q not in t]
        if missing:
            raise Failure(f"tuned report lacks {len(missing)} queries of the base report (e.g. {missing[0]})")
    b = np.array([base[q] for q in qs])
    per_seed = []
    for t in tuned:
        x = np.array([t[q] for q in qs])
        d = x - b
        per_seed.append({"mean": float(x.mean()), "delta": float(d.mean()),
                         "better": int((d > 1e-9).sum()), "worse": int((d < -1e-9).sum()),
                         "p": sign_flip(d)})
    pooled = np.mean([np.array([t[q] for q in qs]) - b for t in tuned], axis=0)
    means = [s["mean"] for s in per_seed]
    return {
        "queries": len(qs),
        "base": float(b.mean()),
        "tuned": spread(means),
        "per_seed": per_seed,
        "pooled": {"delta": float(pooled.mean()), "better": int((pooled > 1e-9).sum()),
                   "worse": int((pooled < -1e-9).sum()), "p": sign_flip(pooled)},
    }


def spread(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "values": values}


# ---------------------------------------------------------------- report


def fmt_spread(base: float, s: dict) -> str:
    return f"{base:.4f} / {s['mean']:.4f} ({s['min']:.4f}..{s['max']:.4f}, sd {s['std']:.4f})"


def fmt_delta(c: dict) -> str:
    return f"{c['pooled']['delta']:+.4f}, p {c['pooled']['p']:.3f}"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head


def append_results(path: Path, row: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or not path.read_text().strip():
        path.write_text(RESULTS_HEADER)
    with open(path, "a") as f:
        f.write("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |\n")


# ---------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, type=Path, help="BEIR-layout dir (corpus.jsonl, queries.jsonl, "
                   "qrels/test.tsv) whose corpus the FRet set was made from")
    p.add_argument("--fret", required=True, type=Path, help="FRet snapshot JSONL or change stream to fold")
    p.add_argument("--labels", choices=LABELS, default="seed")
    p.add_argument("--seeds", default="42,1,2", help="batch-sampling seeds, comma-separated, fixed in advance")
    p.add_argument("--steps", default="auto", help="optimizer steps; auto = one pass at --batch-size")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--hard-negatives", type=int, default=1)
    p.add_argument("--only-seeds-of", type=Path, metavar="FRET",
                   help="keep only examples whose seed passage also seeds an example of this other FRet set: "
                        "two generators compared on the same passages (e.g. one run cut short)")
    p.add_argument("--distill-weight", type=float, default=0.5, help="soft labels only (default 0.5)")
    p.add_argument("--distill-temperature", type=float, default=0.001,
                   help="teacher softmax temperature on the RRF scale, soft labels only (default 0.001)")
    p.add_argument("--precision", choices=("f32", "bf16"), default="f32", help="training precision")
    p.add_argument("--eval-precision", choices=("f32", "bf16"), default="f32")
    p.add_argument("--query-prefix", default=None,
                   help=f"prefix of the tuned model's queries (default {PREFIX!r}; with --query-format plain, none)")
    p.add_argument("--query-format", choices=("task", "plain"), default="task",
                   help="how the trainer gives FRet queries to the encoder: `task` (Gecko's `task: ... | query: ...`) "
                   "or `plain` (the query alone, as the base model was trained; the tuned model is then evaluated "
                   "with plain queries too)")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="base model (trained from and compared against)")
    p.add_argument("--also", action="append", default=[], type=Path,
                   help="another BEIR dataset to evaluate on (repeatable; not in --dev-only runs)")
    p.add_argument("--gate-on-dev", type=int, metavar="EVERY", default=None,
                   help="the user's path: train with fretflow's promotion gate on, a checkpoint every EVERY steps "
                   "evaluated on the dev half (the gate's only data), and measure `latest` (the base model where no "
                   "checkpoint beat it on dev) on heldout; not with --dev-only")
    p.add_argument("--dev-only", action="store_true", help="evaluate the dev half only and print its nDCG@10: "
                   "the mode for choosing settings")
    p.add_argument("--out", type=Path, help="run dir (default out/finetune/<dataset>-<fret stem>-<labels>, "
                   "+ '-dev' with --dev-only)")
    p.add_argument("--out-root", type=Path, default=ROOT / "out/finetune",
                   help="where split dirs and the base-model cache live")
    p.add_argument("--results", type=Path, default=ROOT / "docs/results/finetune.md",
                   help="Markdown table a row is appended to")
    p.add_argument("--no-results", action="store_true", help="append no row")
    p.add_argument("--no-base-cache", action="store_true", help="re-evaluate the base model")
    p.add_argument("--no-base-prefix", action="store_true",
                   help="skip the reference evaluation of the base model with the prefix")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nice", type=int, default=15)
    p.add_argument("--bin", type=Path, default=ROOT / "target/debug/fretflow")
    args = p.parse_args(argv)
    if args.query_prefix is None:
        args.query_prefix = PREFIX if args.query_format == "task" else ""
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not args.seed_list:
        p.error("--seeds: give at least one seed")
    if len(set(args.seed_list)) != len(args.seed_list):
        p.error("--seeds: a seed is repeated")
    if args.gate_on_dev is not None and (args.dev_only or args.gate_on_dev < 1):
        p.error("--gate-on-dev EVERY: a positive number of steps, and not with --dev-only (the gate chooses on dev)")
    if args.steps != "auto" and not args.steps.isdigit():
        p.error("--steps: a positive integer or auto")
    # Paths are relative to the caller's directory; commands run in the repository root.
    args.dataset = args.dataset.resolve()
    args.fret = args.fret.resolve()
    args.also = [a.resolve() for a in args.also]
    args.bin = args.bin.resolve()
    args.out_root = args.out_root.resolve()
    args.results = args.results.resolve()
    if args.only_seeds_of:
        args.only_seeds_of = args.only_seeds_of.resolve()
    if os.sep in args.model or args.model.startswith("."):
        args.model = str(Path(args.model).resolve())
    stem = args.fret.stem
    if stem in ("fret", "fret-changes"):
        stem = args.fret.parent.name
    args.out = (args.out.resolve() if args.out else
                args.out_root / (f"{args.dataset.name}-{stem}-{args.labels}{'-dev' if args.dev_only else ''}"
                                 + ("-gate" if args.gate_on_dev else "")))
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    t_start = time.time()
    times: dict[str, float] = {}
    name = args.dataset.name
    split_dir = args.out_root / f"split-{name}"
    if args.dev_only and args.also:
        log(f"   --dev-only: --also {' '.join(str(a) for a in args.also)} is not evaluated (choose on dev only)")
        args.also = []
    for a in args.also:
        if not (a / "qrels/test.tsv").is_file():
            raise Failure(f"--also {a}: not a BEIR-layout dataset (no qrels/test.tsv)")

    log(f"== 1. dev/heldout split of {name}'s judged queries -> {split_dir}")
    dev, held = make_split(args.dataset, split_dir)
    log(f"   dev {len(dev)}, heldout {len(held)}, test {len(dev) + len(held)} queries")

    log(f"== 2. training examples ({args.labels}) of {args.fret}")
    rows = load_fret(args.fret)
    only = ""
    if args.only_seeds_of:
        seeds = {r["seed_id"] for r in load_fret(args.only_seeds_of)}
        rows = [r for r in rows if r["seed_id"] in seeds]
        if not rows:
            raise Failure(f"no example of {args.fret} has a seed passage of --only-seeds-of {args.only_seeds_of}")
        only = f", seeds of {args.only_seeds_of.parent.name}/{args.only_seeds_of.name} only"
        log(f"   {len(rows)} examples whose seed passage also seeds one of {args.only_seeds_of} ({len(seeds)})")
    kept = select(rows, args.labels, load_corpus(args.dataset) if args.labels == "seed_all" else None)
    if not kept:
        raise Failure(f"no example of {args.fret} is kept by --labels {args.labels}")
    generator, judge = provenance(kept)
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / f"train-{args.labels}.jsonl"
    with open(data, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    what = {"seed": "positive == seed", "seed_all": "all, positive := seed",
            "consistent": "all; the trainer keeps those with positive == seed"}.get(args.labels, "all")
    log(f"   kept {len(kept)} of {len(rows)} examples ({what}); generator {generator}, judge {judge} -> {data}")

    steps = math.ceil(len(kept) / args.batch_size) if args.steps == "auto" else int(args.steps)
    warmup = min(steps, max(3, steps // 10))
    train_opts = [f"--steps={steps}", f"--batch-size={args.batch_size}", f"--lr={args.lr}",
                  f"--warmup-steps={warmup}", "--decay=constant", f"--temperature={args.temperature}",
                  f"--hard-negatives={args.hard_negatives}", f"--precision={args.precision}", f"--model={args.model}",
                  f"--query-format={args.query_format}"]
    if args.labels == "consistent":
        train_opts.append("--examples=consistent")
    distill = ""
    if args.labels in ("soft", "soft_student"):
        teacher = "rrf" if args.labels == "soft" else "rrf_student"
        train_opts += [f"--distill-weight={args.distill_weight}", f"--distill-teacher={teacher}",
                       f"--distill-temperature={args.distill_temperature}"]
        distill = f", distill {teacher} w {args.distill_weight} T {args.distill_temperature}"
    gate_opts = ["--no-promotion-gate"]
    if args.gate_on_dev:
        gate_dir = make_gate_dataset(split_dir, args.out_root / f"gate-{name}-dev")
        gate_opts = [f"--checkpoint-every={args.gate_on_dev}", f"--eval-dataset={gate_dir}",
                     f"--eval-query-prefix={args.query_prefix}"]
    setting = (f"{steps} x {args.batch_size}, lr {args.lr:g}, hn {args.hard_negatives}{distill}, {args.precision}"
               + ("" if args.query_format == "task" else ", plain queries") + only
               + (f", `latest` of the gate on dev every {args.gate_on_dev}" if args.gate_on_dev else "")
               + ("" if args.query_prefix in (PREFIX, "") else f", prefix {args.query_prefix!r}"))

    tuned: dict[str, list[dict[str, float]]] = {"split": [], **{a.name: [] for a in args.also}}
    gates: list[dict] = []
    eval_split = "dev" if args.dev_only else "test"
    for s in args.seed_list:
        seed_dir = args.out / f"seed-{s}"
        ckpt = seed_dir / "ckpt"
        log(f"== 3. seed {s}: train {steps} steps -> {ckpt}")
        cmd = [str(args.bin), "train", f"--data={data}", f"--out={ckpt}", "--no-resume", *gate_opts,
               f"--seed={s}", f"--threads={args.threads}", f"--device={args.device}", *train_opts]
        wall = heavy(args, cmd, seed_dir / "train.log")
        times[f"train seed {s}"] = wall
        newest = ckpt / "newest"
        if not (newest / "config.json").exists():
            raise Failure(f"training wrote no checkpoint {newest}; log: {seed_dir / 'train.log'}")
        log(f"   trained in {wall:.0f} s")
        model = newest
        if args.gate_on_dev:
            g = gate_record(ckpt)
            gates.append(g)
            for c in g["checkpoints"]:
                log(f"   step {c['step']:>4}: dev {c['metric']:.4f}  {'promoted' if c['promoted'] else 'kept'} ({c['why']})")
            model = ckpt / "latest"
            if not (model / "config.json").exists():
                log(f"   no checkpoint beat the base model on dev: `latest` is absent, a user keeps the base model")
                tuned["split"].append(base_eval(args, split_dir, eval_split, "", name, times))
                for a in args.also:
                    tuned[a.name].append(base_eval(args, a, "test", "", a.name, times))
                continue
            log(f"   latest -> {model.resolve().name}")
        log(f"== 4. seed {s}: evaluate tuned ({'with prefix' if args.query_prefix else 'plain queries'}; f32{', dev only' if args.dev_only else ''})")
        report = seed_dir / f"eval-tuned-prefix-{name}-{eval_split}.json"
        wall = evaluate(args, str(model.resolve()), split_dir, eval_split, args.query_prefix, report)
        times[f"eval seed {s} {split_dir.name}/{eval_split}"] = wall
        tuned["split"].append(per_query(report))
        log(f"   {name}: {wall:.0f} s")
        for a in args.also:
            report = seed_dir / f"eval-tuned-prefix-{a.name}.json"
            wall = evaluate(args, str(model.resolve()), a, "test", args.query_prefix, report)
            times[f"eval seed {s} also {a.name}"] = wall
            tuned[a.name].append(per_query(report))
            log(f"   {a.name}: {wall:.0f} s")

    log("== 5. base model, plain queries (f32)" + ("" if args.no_base_prefix else "; with the prefix for reference"))
    base = {"split": base_eval(args, split_dir, eval_split, "", name, times)}
    for a in args.also:
        base[a.name] = base_eval(args, a, "test", "", a.name, times)
    # The base model with the prefix: how much of a difference is the prefix's, not the training's. A
    # reference only; the comparison stays tuned-with-prefix vs base-plain, fixed in advance.
    base_prefix = {}
    if not args.no_base_prefix and args.query_prefix:
        base_prefix["split"] = base_eval(args, split_dir, eval_split, args.query_prefix, name, times)
        for a in args.also:
            base_prefix[a.name] = base_eval(args, a, "test", args.query_prefix, a.name, times)

    seeds_txt = ",".join(str(s) for s in args.seed_list)
    fret_txt = f"{args.fret.relative_to(ROOT) if args.fret.is_relative_to(ROOT) else args.fret} ({len(kept)} / {len(rows)})"
    common = {
        "date": dt.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(),
        "dataset": str(args.dataset), "fret": {"path": str(args.fret), "sha256": sha256(args.fret),
                                               "examples": len(rows), "kept": len(kept),
                                               "only_seeds_of": str(args.only_seeds_of) if args.only_seeds_of else None},
        "generator": generator, "judge": judge, "labels": args.labels, "seeds": args.seed_list,
        "train_options": train_opts, "query_prefix": args.query_prefix, "model": args.model,
        "split": {"dir": str(split_dir), "dev": len(dev), "heldout": len(held)},
    }

    if args.dev_only:
        c = compare(tuned["split"], base["split"], dev)
        if base_prefix:
            c["base_prefix"] = mean_over(base_prefix["split"], dev)
        log(f"== dev nDCG@10 ({args.labels}; {setting}; seeds {seeds_txt})")
        for s, r in zip(args.seed_list, c["per_seed"]):
            log(f"   seed {s:>4}: {r['mean']:.4f}")
        t = c["tuned"]
        log(f"   tuned ({'with prefix' if args.query_prefix else 'plain queries'}): mean {t['mean']:.4f} (min {t['min']:.4f}, max {t['max']:.4f}, sd {t['std']:.4f}) "
            f"over {c['queries']} queries; base plain {c['base']:.4f}"
            + (f", base with prefix {c['base_prefix']:.4f}" if base_prefix else ""))
        report = {**common, "mode": "dev-only", "dev": c, "times_s": times, "total_s": time.time() - t_start}
        (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        row = [common["date"][:10], name, fret_txt, f"{generator} x {judge}", args.labels, setting, seeds_txt,
               fmt_spread(c["base"], t), "*dev only*", "", "", "", common["commit"]]
    else:
        results = {"dev": compare(tuned["split"], base["split"], dev),
                   "heldout": compare(tuned["split"], base["split"], held),
                   "full": compare(tuned["split"], base["split"], None)}
        for a in args.also:
            results[a.name] = compare(tuned[a.name], base[a.name], None)
        if base_prefix:
            ids = {"dev": dev, "heldout": held, "full": None}
            for c, r in results.items():
                r["base_prefix"] = mean_over(base_prefix.get(c, base_prefix["split"]), ids.get(c))
        log(f"== 6. nDCG@10, tuned ({'with prefix' if args.query_prefix else 'plain'}) vs base plain ({args.labels}; {setting}; prefix {args.query_prefix!r})")
        cols = list(results)
        log(f"   {'':16}" + "".join(f"{c:>12}" for c in cols))
        log(f"   {'base plain':16}" + "".join(f"{results[c]['base']:12.4f}" for c in cols))
        if base_prefix:
            log(f"   {'(base prefix)':16}" + "".join(f"{results[c]['base_prefix']:12.4f}" for c in cols))
        for i, s in enumerate(args.seed_list):
            log(f"   {'seed ' + str(s):16}" + "".join(f"{results[c]['per_seed'][i]['mean']:12.4f}" for c in cols))
        for k in ("mean", "min", "max", "std"):
            log(f"   {'tuned ' + k:16}" + "".join(f"{results[c]['tuned'][k]:12.4f}" for c in cols))
        log(f"   {'delta (mean)':16}" + "".join(f"{results[c]['pooled']['delta']:+12.4f}" for c in cols))
        log(f"\n   paired sign-flip test, tuned vs base ({DRAWS} draws; pooled = per-query delta averaged over seeds):")
        for c in cols:
            r = results[c]
            seeds = "  ".join(f"seed {s}: {x['delta']:+.4f} p {x['p']:.3f}" for s, x in zip(args.seed_list, r["per_seed"]))
            pl = r["pooled"]
            log(f"   {c:10} {r['queries']:4d} q  pooled {pl['delta']:+.4f} (better {pl['better']}, worse "
                f"{pl['worse']}) p {pl['p']:.3f}   |  {seeds}")
        h = results["heldout"]
        met = h["pooled"]["delta"] >= 0.02 and h["pooled"]["p"] < 0.05
        log(f"   issue 13 goal on {name} (heldout delta >= +0.02, pooled p < 0.05): {'met' if met else 'not met'}"
            + ("" if len(args.seed_list) >= 3 else " (fewer than 3 seeds: does not count)"))
        report = {**common, "mode": "full", "results": results, "times_s": times, "total_s": time.time() - t_start}
        if args.gate_on_dev:
            report["gate"] = gates
        (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        also = "; ".join(f"{a.name} {results[a.name]['base']:.4f} / {results[a.name]['tuned']['mean']:.4f}, "
                         f"{fmt_delta(results[a.name])}" for a in args.also)
        row = [common["date"][:10], name, fret_txt, f"{generator} x {judge}", args.labels, setting, seeds_txt,
               fmt_spread(results["dev"]["base"], results["dev"]["tuned"]),
               fmt_spread(h["base"], h["tuned"]), fmt_delta(h), fmt_delta(results["full"]), also or "",
               common["commit"]]

    log("\n   wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
        + f"; total {time.time() - t_start:.0f} s")
    log(f"   report: {args.out / 'report.json'}")
    if not args.no_results:
        append_results(args.results, row)
        log(f"   row appended to {args.results}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Failure as e:
        print(f"beir_finetune: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
