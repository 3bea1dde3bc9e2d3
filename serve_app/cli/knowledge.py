"""Knowledge-base commands: ingest, search, eval-retrieval, fit-reranker."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from serve_app.knowledge.query import MODES
from serve_app.settings import Settings, load_settings
from serve_app.tenancy import validate_tenant_id

if TYPE_CHECKING:
    from serve_app.costs.usage import TenantBill
    from serve_app.db.database import Database
    from serve_app.knowledge.embedders import Embedder
    from serve_app.knowledge.ingest import IngestReport
    from serve_app.knowledge.retrieval import RetrievalResult
from serve_app.cli.common import _with_knowledge


def _cmd_ingest(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from serve_app.knowledge.chunking import iter_files
    from serve_app.knowledge.ingest import ingest_path
    from serve_app.priority import background

    settings = load_settings(args.config)
    validate_tenant_id(args.tenant)
    total = len(iter_files(args.path.expanduser()))

    async def work(db: Database, embedder: Embedder, bill: TenantBill) -> tuple[IngestReport, float]:
        # the graph's requests go first; lowered only now, so that an embedded Postgres this command
        # started runs at its normal priority for the graph that shares it
        with background(settings.serve.background_niceness), Progress(transient=True) as bar:
            task = bar.add_task(f"ingesting {args.path}", total=total)
            report = await ingest_path(
                db,
                embedder,
                args.path,
                args.tenant,
                prune=args.prune,
                **settings.knowledge.chunking(),
                progress=lambda n: bar.advance(task, n),
                bill=bill,
            )
        return report, bill.usd

    report, bill_usd = asyncio.run(_with_knowledge(settings, args.tenant, work))
    for source, why in report.failed.items():
        print(f"skipped {source}: {why}", file=sys.stderr)
    print(
        json.dumps(
            {
                "ingest": str(args.path),
                "tenant": args.tenant,
                **asdict(report) | {"failed": len(report.failed)},
                "billed_usd": round(bill_usd, 6),
            }
        )
    )
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from serve_app.knowledge.factory import build_retriever

    settings = load_settings(args.config)

    async def work(db: Database, embedder: Embedder, bill: TenantBill) -> RetrievalResult:
        result = await build_retriever(db, settings.knowledge, embedder).search(
            args.tenant, args.query, mode=args.mode, top_k=args.k
        )
        for usage in result.usage:
            bill(usage)
        return result

    result = asyncio.run(_with_knowledge(settings, args.tenant, work))
    for n, hit in enumerate(result.hits, 1):
        print(f"{hit.citation(n)}  score={hit.score:.4f}\n    {hit.passage.content[:300]}")
    print(
        json.dumps(
            {
                "query": result.query,
                "mode": result.mode,
                "arm": result.arm,
                "hits": len(result.hits),
                "timings_ms": {k: round(v, 2) for k, v in result.timings_ms.items()},
                "billed": [asdict(u) for u in result.usage],
            }
        )
    )
    return 0


async def _ingest_dataset(
    settings: Settings, db: Database, embedder: Embedder, docs: Path, tenant: str, bill: TenantBill
) -> IngestReport:
    """The evaluation corpus, ingested once (re-runs skip unchanged files); what it did goes to stderr."""
    from rich.progress import Progress

    from serve_app.knowledge.chunking import iter_files
    from serve_app.knowledge.ingest import ingest_path

    started = time.perf_counter()
    with Progress(transient=True) as bar:
        task = bar.add_task(f"ingesting {docs}", total=len(iter_files(docs)))
        report = await ingest_path(
            db,
            embedder,
            docs,
            tenant,
            **settings.knowledge.chunking(),
            progress=lambda n: bar.advance(task, n),
            bill=bill,
        )
    took = time.perf_counter() - started
    print(
        f"ingest {docs}: {report.written} written ({report.chunks} chunks), {report.unchanged} unchanged,"
        f" {took:.1f} s (embedding {report.embed_s:.1f} s, writing {report.write_s:.1f} s)",
        file=sys.stderr,
    )
    return report


def _cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from serve_app.knowledge.commands import default_arms, prepare_arms
    from serve_app.knowledge.factory import build_retriever
    from supportgraph_tools.knowledge.evaluate import evaluate, inline_qrels, load_qrels, load_queries

    settings = load_settings(args.config)
    queries, qrels = load_queries(args.queries), load_qrels(args.dataset) | inline_qrels(args.queries)
    modes = args.mode or list(MODES)
    if args.arms:
        return _eval_arms(
            args, settings, queries, qrels, [a.strip() for a in args.arms.split(",") if a.strip()]
        )

    defaults = default_arms(settings, args.tenant)

    async def work(db: Database, embedder: Embedder, bill: TenantBill) -> list[dict[str, object]]:
        await _ingest_dataset(settings, db, embedder, args.dataset / "docs", args.tenant, bill)
        await prepare_arms(settings, db, embedder, args.tenant, defaults, args.adapt_minutes)
        retriever = build_retriever(db, settings.knowledge, embedder)
        return [await evaluate(retriever, args.tenant, queries, qrels, mode, bill=bill) for mode in modes]

    results = asyncio.run(_with_knowledge(settings, args.tenant, work))
    table = Table(title=f"Retrieval on {args.dataset.name} ({args.queries.name})")
    names = ["R@1", "R@5", "R@10", "MRR@10", "nDCG@10"]
    for col in ["mode", *names, "p50 ms", "p95 ms"]:
        table.add_column(col, justify="left" if col == "mode" else "right")
    for r in results:
        total = r["latency_ms"]["total"]
        table.add_row(
            r["mode"], *(f"{r[n]:.3f}" for n in names), f"{total['p50']:.1f}", f"{total['p95']:.1f}"
        )
    Console(width=120).print(table)
    print(
        json.dumps(
            {
                "eval": "retrieval",
                "dataset": str(args.dataset),
                "queries": str(args.queries),
                "default_mode": "hybrid_rerank",
                "default_arms": defaults,
                "results": results,
            }
        )
    )
    return 0


def _eval_arms(
    args: argparse.Namespace, settings: Settings, queries: list, qrels: dict, arms: list[str]
) -> int:
    """eval-retrieval --arms: every arm on the same queries, paired bootstrap differences to the first."""
    from rich.console import Console
    from rich.table import Table

    from serve_app.knowledge.commands import default_arms, prepare_arms
    from serve_app.knowledge.factory import build_retriever
    from supportgraph_tools.experiments.offline import COMPARED, evaluate_arms

    defaults = default_arms(settings, args.tenant)

    async def work(db: Database, embedder: Embedder, bill: TenantBill) -> dict[str, object]:
        started = time.perf_counter()
        ingest = await _ingest_dataset(settings, db, embedder, args.dataset / "docs", args.tenant, bill)
        ingest_s = time.perf_counter() - started
        prepared = await prepare_arms(
            settings, db, embedder, args.tenant, [*arms, *defaults], args.adapt_minutes
        )
        prepare_s = time.perf_counter() - started - ingest_s
        retriever = build_retriever(db, settings.knowledge, embedder)
        result = await evaluate_arms(retriever, args.tenant, queries, qrels, arms, bill=bill)
        seconds = {"ingest": ingest_s, "embed": ingest.embed_s, "write": ingest.write_s, "adapt": prepare_s}
        seconds["queries"] = time.perf_counter() - started - ingest_s - prepare_s
        extra = {"default_mode": "hybrid_rerank", "default_arms": defaults, "prepared": prepared}
        return result | extra | {"seconds": {k: round(v, 1) for k, v in seconds.items()}}

    result = asyncio.run(_with_knowledge(settings, args.tenant, work))
    took = result["seconds"]
    table = Table(
        title=f"Reranker arms on {args.dataset.name} ({args.queries.name}, {result['queries']} queries;"
        f" ingest {took['ingest']:.0f} s, queries {took['queries']:.0f} s)"
    )
    names = ["R@1", "R@5", "R@10", "MRR@10", "nDCG@10"]
    for col in ["arm", *names, "p50 ms", "p95 ms", *(f"{n} vs {arms[0]} (95% CI)" for n in COMPARED)]:
        table.add_column(col, justify="left" if col == "arm" else "right")
    for arm, scores in result["arms"].items():
        diffs = result["vs_control"].get(arm, {})
        cells = [
            f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" if (d := diffs.get(n)) else "-"
            for n in COMPARED
        ]
        lat = result["latency_ms"][arm]
        table.add_row(
            arm, *(f"{scores[n]:.3f}" for n in names), f"{lat['p50']:.1f}", f"{lat['p95']:.1f}", *cells
        )
    Console(width=200).print(table)
    print(
        json.dumps(
            {"eval": "retrieval-arms", "dataset": str(args.dataset), "queries": str(args.queries), **result}
        )
    )
    return 0


def _cmd_fit_reranker(args: argparse.Namespace) -> int:
    from serve_app.knowledge.factory import build_retriever
    from serve_app.knowledge.rerankers.learned import FEATURES, fit_pairwise, save_weights
    from supportgraph_tools.knowledge.evaluate import (
        judged_candidates,
        leave_one_out,
        load_qrels,
        load_queries,
    )

    settings = load_settings(args.config)
    queries, qrels = load_queries(args.queries), load_qrels(args.dataset)

    async def work(db: Database, embedder: Embedder, bill: TenantBill) -> list:
        await _ingest_dataset(settings, db, embedder, args.dataset / "docs", args.tenant, bill)
        retriever = build_retriever(db, settings.knowledge, embedder, rerank=False)  # fused order only
        return await judged_candidates(retriever, args.tenant, queries, qrels, bill)

    data = asyncio.run(_with_knowledge(settings, args.tenant, work))
    weights = fit_pairwise(data)
    estimate = leave_one_out(data)
    save_weights(args.out, weights, f"{args.dataset.name}/{args.queries.name} ({len(data)} queries)")
    for name, figures in estimate.items():
        print(f"{name:8s} " + "  ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    print(
        json.dumps(
            {"out": str(args.out), "features": FEATURES, "weights": weights, "leave_one_out": estimate}
        )
    )
    return 0
