"""`supportgraph eval-retrieval`: recall, MRR and nDCG of document retrieval on a BEIR-style dataset.

The dataset folder holds `docs/` (ingested once into an evaluation tenant; re-runs skip unchanged files)
and `qrels/test.tsv` (query-id, corpus-id, score); corpus ids are document paths without their suffix.
Queries come from a separate JSONL file (`_id`, `text`), so tuning uses the dev split and reporting the
test split; a query row may carry its own judgement in `doc` (a corpus id, or a list of them), as the
question sets under evals/ do. Passages are ranked, then collapsed to documents in order of their first
passage.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serve_app.costs.usage import Usage
from serve_app.knowledge.rerankers.learned import Evidence, LearnedFusionReranker, fit_pairwise
from serve_app.knowledge.retrieval import Retriever
from serve_app.stats import percentile

CUTOFFS = (1, 5, 10)


@dataclass(frozen=True)
class Query:
    id: str
    text: str


def load_queries(path: Path) -> list[Query]:
    queries = []
    with path.open() as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                row = json.loads(line)
                if "_id" not in row or "text" not in row:
                    raise ValueError(f"{path}:{n}: each line needs _id and text")
                queries.append(Query(str(row["_id"]), row["text"]))
    return queries


def inline_qrels(path: Path) -> dict[str, set[str]]:
    """query id -> corpus ids from the `doc` field of the query file's rows (rows without one: none)."""
    qrels: dict[str, set[str]] = {}
    with path.open() as fh:
        for line in fh:
            row = json.loads(line) if line.strip() else {}
            if row.get("doc"):
                docs = row["doc"] if isinstance(row["doc"], list) else [row["doc"]]
                qrels[str(row["_id"])] = {str(d) for d in docs}
    return qrels


def load_qrels(dataset: Path) -> dict[str, set[str]]:
    qrels: dict[str, set[str]] = {}
    for path in sorted((dataset / "qrels").glob("*.tsv")):
        with path.open() as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                if float(row.get("score", 1)) > 0:
                    qrels.setdefault(row["query-id"], set()).add(row["corpus-id"])
    if not qrels:
        raise ValueError(f"no relevance judgements under {dataset / 'qrels'}")
    return qrels


def corpus_id(source: str) -> str:
    return source.rsplit(".", 1)[0] if "." in source.rsplit("/", 1)[-1] else source


def metrics_for(ranked: list[str], relevant: set[str]) -> dict[str, float]:
    out = {f"R@{k}": len(set(ranked[:k]) & relevant) / len(relevant) for k in CUTOFFS}
    first = next((i for i, d in enumerate(ranked[:10], 1) if d in relevant), None)
    out["MRR@10"] = 1.0 / first if first else 0.0
    dcg = sum(1.0 / math.log2(i + 1) for i, d in enumerate(ranked[:10], 1) if d in relevant)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(relevant), 10) + 1))
    out["nDCG@10"] = dcg / ideal
    return out


async def evaluate(
    retriever: Retriever,
    tenant_id: str,
    queries: list[Query],
    qrels: dict[str, set[str]],
    mode: str,
    passages: int = 60,
    bill: Callable[[Usage], None] | None = None,
) -> dict[str, object]:
    judged = [q for q in queries if q.id in qrels]
    if not judged:
        raise ValueError("none of the queries has relevance judgements")
    per_query, stages = [], {}
    for q in judged:
        result = await retriever.search(tenant_id, q.text, mode=mode, top_k=passages)
        for usage in result.usage if bill else ():
            bill(usage)
        docs = list(dict.fromkeys(corpus_id(h.passage.source) for h in result.hits))
        per_query.append(metrics_for(docs, qrels[q.id]))
        for stage, ms in result.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    summary = {name: statistics.fmean(m[name] for m in per_query) for name in per_query[0]}
    latency = {s: {"p50": percentile(v, 0.5), "p95": percentile(v, 0.95)} for s, v in stages.items()}
    return {
        "mode": mode,
        "queries": len(judged),
        **{k: round(v, 4) for k, v in summary.items()},
        "latency_ms": {s: {k: round(v, 2) for k, v in d.items()} for s, d in latency.items()},
    }


async def study_rows(
    retriever: Retriever,
    tenant_id: str,
    dataset: Path,
    paths: list[Path],
    variants: list[str],
    use: Callable[[str], None],
    modes: tuple[str, ...],
    key: str = "variant",
) -> list[dict[str, object]]:
    """A study's rows: each question file, each variant (`use(variant)` sets it up), each mode, scored
    by `evaluate` against the dataset's and the file's own judgements (document-level R@1, R@5, MRR@10)."""
    rows: list[dict[str, object]] = []
    for path in paths:
        queries, qrels = load_queries(path), load_qrels(dataset) | inline_qrels(path)
        for variant in variants:
            use(variant)
            for mode in modes:
                r = await evaluate(retriever, tenant_id, queries, qrels, mode)
                rows.append(
                    {"queries": path.name, key: variant, "mode": mode, "n": r["queries"]}
                    | {m: r[m] for m in ("R@1", "R@5", "MRR@10")}
                )
    return rows


def print_study(
    rows: list[dict[str, object]],
    paths: list[Path],
    variants: list[str],
    modes: tuple[str, ...],
    key: str,
    width: int = 20,
) -> None:
    """`study_rows` as a table per question file: a row per variant (a `width`-wide first column),
    R@1 / R@5 / MRR@10 per mode."""
    for path in paths:
        print(f"\n{path.name}  (R@1 / R@5 / MRR@10, document level)")
        print(f"{key.replace('_', ' '):<{width}}" + "".join(f"{m:>26}" for m in modes))
        for variant in variants:
            cells = {
                r["mode"]: f"{r['R@1']:.3f} / {r['R@5']:.3f} / {r['MRR@10']:.3f}"
                for r in rows
                if r["queries"] == path.name and r[key] == variant
            }
            print(f"{variant:<{width}}" + "".join(f"{cells[m]:>26}" for m in modes))


async def judged_candidates(
    retriever: Retriever,
    tenant_id: str,
    queries: list[Query],
    qrels: dict[str, set[str]],
    bill: Callable[[Usage], None] | None = None,
) -> list[tuple[list[Evidence], list[bool]]]:
    """For each judged query: its fused candidates' evidence and whether each is relevant (the training
    data of the learned reranker)."""
    out = []
    for q in queries:
        if q.id not in qrels:
            continue
        result = await retriever.search(
            tenant_id, q.text, mode="hybrid", top_k=retriever.config.rerank_candidates
        )
        for usage in result.usage if bill else ():
            bill(usage)
        hits = [h for h in result.hits if h.evidence is not None]
        out.append(([h.evidence for h in hits], [corpus_id(h.passage.source) in qrels[q.id] for h in hits]))
    return out


def first_relevant_metrics(relevant_in_order: list[bool]) -> dict[str, float]:
    first = next((i for i, rel in enumerate(relevant_in_order[:10], 1) if rel), None)
    return {f"R@{k}": float(bool(first and first <= k)) for k in CUTOFFS} | {
        "MRR@10": 1.0 / first if first else 0.0
    }


def leave_one_out(data: list[tuple[list[Evidence], list[bool]]], l2: float = 0.1) -> dict[str, dict]:
    """Each query ranked by weights fitted on all the others, against the fused (RRF) order: an honest
    estimate on the fitting queries themselves. R@k here is "a relevant candidate in the top k"."""
    fused, learned = [], []
    for i, (evidence, relevant) in enumerate(data):
        weights = fit_pairwise(data[:i] + data[i + 1 :], l2=l2)
        order = LearnedFusionReranker(weights=weights).rerank_evidence(evidence, len(evidence))
        fused.append(first_relevant_metrics(relevant))
        learned.append(first_relevant_metrics([relevant[j] for j, _ in order]))
    return {
        name: {k: round(statistics.fmean(m[k] for m in rows), 4) for k in rows[0]}
        for name, rows in (("fused", fused), ("learned", learned))
    }
