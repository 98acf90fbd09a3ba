"""Relabels a FRet set with a hybrid teacher: BM25 fused with the student's own ranking (issue 13).

Measured on cranfield and cisi (docs/results/finetune.md, "Teachers"): reciprocal rank fusion of BM25 and
all-MiniLM-L6-v2 over the whole corpus ranks the human queries' passages far better (nDCG@10 +0.03 on
both collections) than either alone, and better than every LLM judge measured (the best, Qwen2.5-Coder-1.5B
fused with the student, +0.009). This script tests whether that teacher's labels make the student better:
for each FRet example (a query the generator wrote for a seed passage) it ranks the whole corpus by RRF of
BM25 and the base model's cosine, and writes the example with

- `--keep consistent`: only examples whose hybrid top-1 is the seed passage (round-trip consistency under
  the hybrid teacher, in place of the LLM judge's); `top3`: the seed among the hybrid top 3; `all`: every
  example;
- positive: the seed passage;
- negatives: the `--negatives` best-ranked hybrid passages from rank `--negative-from` on (never the seed);
- ranking: the hybrid top `--keep-ranking` with the student's cosine, `rrf` = the hybrid score.

The query text is scored as written (plain). The human queries are never read. The output is a FRet
snapshot (one example per line) for `scripts/beir_finetune.py --fret OUT --labels hard`.

  .venv/bin/python scripts/hybrid_labels.py --dataset ../shared/data/cranfield \\
      --fret out/cranfield-full/fret-changes.jsonl --out out/hybrid/cranfield-consistent.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from beir_finetune import Failure, load_corpus, load_fret  # noqa: E402
from teacher_quality import bm25_top, corpus_texts, encoder, rrf_scores  # noqa: E402


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, type=Path)
    p.add_argument("--fret", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model", default=None, help="student model dir (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--keep", choices=("consistent", "top3", "all"), default="consistent")
    p.add_argument("--negatives", type=int, default=1)
    p.add_argument("--negative-from", type=int, default=5, help="1-based hybrid rank of the first negative")
    p.add_argument("--depth", type=int, default=100, help="each ranking's depth in the fusion")
    p.add_argument("--keep-ranking", type=int, default=10)
    p.add_argument("--k1", type=float, default=0.9)
    p.add_argument("--b", type=float, default=0.4)
    args = p.parse_args(argv)

    corpus = load_corpus(args.dataset)
    ids, texts = corpus_texts(corpus)
    index = {d: j for j, d in enumerate(ids)}
    rows = sorted(load_fret(args.fret), key=lambda r: r["query_id"])
    queries = [r["query"] for r in rows]

    lexical = bm25_top(texts, queries, args.k1, args.b, args.depth)
    st = encoder(args.model or "all-MiniLM-L6-v2")
    passages = st.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    qv = st.encode(queries, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    cosines = qv @ passages.T

    judge = f"hybrid:bm25(k1={args.k1},b={args.b})+{Path(args.model).name if args.model else 'all-MiniLM-L6-v2'}"
    out, kept = [], {"consistent": 0, "top3": 0, "student": 0, "bm25": 0}
    for i, row in enumerate(rows):
        dense = [ids[j] for j in np.argsort(-cosines[i])[: args.depth]]
        lexical_ids = [ids[j] for j in lexical[i]]
        fused = rrf_scores(dense, lexical_ids, depth=args.depth)
        order = sorted(fused, key=lambda d: (-fused[d], d))
        seed = row["seed_id"]
        if seed not in corpus:
            raise Failure(f"FRet example {row['query_id']}: seed passage {seed} is not in the corpus")
        top = order[:3]
        kept["top3"] += seed in top
        kept["consistent"] += top[0] == seed
        kept["student"] += dense[0] == seed
        kept["bm25"] += lexical_ids[0] == seed
        if args.keep == "consistent" and top[0] != seed or args.keep == "top3" and seed not in top:
            continue
        rest = [d for d in order[args.negative_from - 1:] if d != seed]
        negatives = [corpus[d] for d in rest[: args.negatives]]
        ranking = [{"id": d, "cosine": float(cosines[i, index[d]]), "ql": None, "rc": 0.0, "ql_rank": None,
                    "rc_rank": r + 1, "rrf": fused[d]} for r, d in enumerate(order[: args.keep_ranking])]
        provenance = {**row.get("provenance", {}), "judge": {"model": judge, "prompt_version": ""}}
        out.append({**row, "positive": corpus[seed], "negatives": negatives, "ranking": ranking,
                    "provenance": provenance})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for r in out:
            f.write(json.dumps(r) + "\n")
    print(json.dumps({"fret": str(args.fret), "examples": len(rows), "written": len(out), "keep": args.keep,
                      "seed_is_hybrid_top1": kept["consistent"], "seed_in_hybrid_top3": kept["top3"],
                      "seed_is_student_top1": kept["student"], "seed_is_bm25_top1": kept["bm25"],
                      "negative_from": args.negative_from, "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
