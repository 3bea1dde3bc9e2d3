"""`supportgraph adapt`: arguments, and the thin command over knowledge/adapt.py. It shows a progress
bar and ends with one JSON line (what the run did, where the model is)."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from serve_app.settings import Settings, load_settings
from serve_app.tenancy import validate_tenant_id

if TYPE_CHECKING:
    from serve_app.knowledge.adapt import AdaptConfig


def add_arguments(sub: argparse._SubParsersAction) -> None:
    ad = sub.add_parser(
        "adapt",
        help="train a tenant's own reranker (cross-encoder from MiniLM) on its knowledge base, no labels",
        description="Generates questions from the tenant's chunks (headings, first sentences, inverse "
        "cloze, customer-style rewrites) with hard negatives from BM25 and dense search, trains a "
        "cross-encoder from the bundled MiniLM, and stores it under STATE_DIR/models/TENANT/reranker, "
        "where the `adapted` reranker arm finds it. Bounded by --max-minutes; an interrupted or timed-out "
        "run resumes from its checkpoint. The last line is JSON.",
    )
    ad.add_argument("--tenant", required=True)
    ad.add_argument("--max-minutes", type=float, default=10.0, help="time budget, all phases (10)")
    ad.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="cpu (default)")
    ad.add_argument("--questions", type=int, help="generated pairs (1200)")
    ad.add_argument("--max-length", type=int, help="tokens of question + passage (192)")
    ad.add_argument("--epochs", type=int, help="passes over the pairs (1)")
    ad.add_argument("--retrain", action="store_true", help="new pairs and training from the start")


def config_from(args: argparse.Namespace) -> AdaptConfig:
    from serve_app.knowledge.adapt import AdaptConfig

    given = {"questions": args.questions, "max_length": args.max_length, "epochs": args.epochs}
    cfg = replace(AdaptConfig(), **{k: v for k, v in given.items() if v is not None})
    if cfg.questions < 20 or not 32 <= cfg.max_length <= 512 or cfg.epochs < 1:
        raise ValueError("--questions >= 20, --max-length in [32, 512], --epochs >= 1")
    return cfg


async def run_adapt(
    settings: Settings,
    tenant: str,
    cfg: AdaptConfig,
    max_minutes: float,
    device: str,
    retrain: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume, or keep) the tenant's reranker with a progress bar; what the run did."""
    from rich.progress import Progress

    from serve_app.db.database import Database
    from serve_app.knowledge.adapt import adapt_tenant
    from serve_app.knowledge.factory import build_embedder

    embedder = build_embedder(settings.knowledge.embedder)
    async with Database.of(settings) as db:
        with Progress(transient=True, disable=not show_progress) as bar:
            tasks: dict[str, Any] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done, total=total)

            return await adapt_tenant(
                db,
                embedder.inner,
                settings.state_dir,
                tenant,
                cfg,
                max_minutes=max_minutes,
                device=device,
                progress=progress,
                retrain=retrain,
            )


def default_arms(settings: Settings, tenant: str) -> list[str]:
    """The reranker arm(s) `supportgraph search` gives the tenant by default (its `ab_weights` split)."""
    from serve_app.knowledge.rerankers import assign_arm

    weights = settings.knowledge.ab_weights
    if not weights:
        return []
    if settings.knowledge.ab_split_by == "tenant":
        return [assign_arm(weights, tenant)]
    return sorted(a for a, w in weights.items() if w > 0)


async def prepare_arms(
    settings: Settings, db: Any, embedder: Any, tenant: str, arms: list[str], max_minutes: float
) -> dict[str, Any]:
    """What the given arms need before an evaluation: the tenant's adapted reranker, loaded as published
    (even an unfinished one: `adapt` resumes it), else trained first (bounded by `max_minutes`)."""
    from serve_app.knowledge.adapt import AdaptConfig, adapt_tenant, published

    backends = {a: settings.knowledge.rerankers[a].backend for a in arms if a in settings.knowledge.rerankers}
    if "adapted" not in backends.values():
        return {}
    current = published(settings.state_dir, tenant)
    if current is not None:
        return {
            "adapted": {"loaded": True, **{k: current.get(k) for k in ("steps", "total_steps", "complete")}}
        }
    inner = getattr(embedder, "inner", embedder)
    report = await adapt_tenant(
        db, inner, settings.state_dir, tenant, AdaptConfig(), max_minutes=max_minutes, device="auto"
    )
    return {"adapted": {k: report.get(k) for k in ("steps", "total_steps", "complete", "skipped", "seconds")}}


def _cmd_adapt(args: argparse.Namespace) -> int:
    from serve_app.knowledge.adapt import tenant_dir

    settings = load_settings(args.config)
    validate_tenant_id(args.tenant)
    if args.max_minutes <= 0:
        raise ValueError("--max-minutes must be > 0")
    report = asyncio.run(
        run_adapt(settings, args.tenant, config_from(args), args.max_minutes, args.device, args.retrain)
    )
    done = "complete" if report["complete"] else "stopped at the time limit: run again to resume"
    print(
        f"adapted reranker for {args.tenant}: {report['steps']}/{report['total_steps']} steps ({done}); "
        f"held-out questions ranked first: {report['held_out_first_place']:.2f}"
    )
    print(
        json.dumps(
            {"adapt": args.tenant, "model": str(tenant_dir(settings.state_dir, args.tenant)), **report}
        )
    )
    return 0


COMMANDS = {"adapt": _cmd_adapt}
