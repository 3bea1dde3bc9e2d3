"""Evaluation commands: eval-router, eval-dedup, eval-screen (tables over the evaluation libraries)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import TYPE_CHECKING

from serve_app.settings import load_settings

if TYPE_CHECKING:
    from serve_app.costs.usage import TenantBill
    from serve_app.db.database import Database
    from serve_app.knowledge.embedders import Embedder
from serve_app.cli.common import _one_blas_thread, _with_knowledge


def _cmd_eval_router(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from supportgraph_tools.routing.evaluate import (
        cached_embed,
        fit_learned,
        load_logged,
        plot,
        run,
        stored_embed,
        strong_accuracy,
    )

    if not 0 < args.quality <= 1:
        raise ValueError("--quality must be in (0, 1]")
    if not 0 < args.delta < 1 or args.resplits < 0:
        raise ValueError("--delta must be in (0, 1) and --resplits >= 0")
    prices = load_settings(args.config).pricing.load()
    fit = load_logged(args.fit, prices, args.weak_model, args.strong_model)
    test = load_logged(args.test, prices, args.weak_model, args.strong_model)
    embed, embedder_name = None, None
    if not args.no_embeddings:
        from serve_app.knowledge.factory import build_embedder

        embedder = build_embedder(load_settings(args.config).knowledge.embedder)
        store = (
            load_settings(args.config).state_dir
            / "cache"
            / f"embeddings-{re.sub(r'[^A-Za-z0-9._-]', '_', embedder.name)}.npz"
        )
        embed_stored = stored_embed(lambda texts: embedder.embed(texts)[0], store)
        embed, embedder_name = cached_embed(embed_stored, fit + test), embedder.name
    precall, precall_scorer, background_dir = None, None, None
    if embed is not None and not args.no_precall:
        from serve_app.routing.precall import QueryScorer, background_model
        from supportgraph_tools.routing.evaluate import WEAK, precall_split_scores

        background = None
        background_dir = args.precall_background or args.fit.parent.parent / "mmlu" / "responses"
        if args.precall_background is not None and not background_dir.is_dir():
            raise ValueError(f"--precall-background {background_dir} is not a directory")
        if background_dir.is_dir() and not args.no_precall_background:
            state = load_settings(args.config).state_dir
            background = background_model(
                background_dir,
                WEAK,
                embed_stored,
                embedder_name,
                state / "cache",
                args.precall_background_rows,
            )
        else:
            background_dir = None
        precall = precall_split_scores(fit + test, embed, background)
        precall_scorer = QueryScorer.fit(
            [r.prompt for r in fit], [r.weak_ok for r in fit], embed, embedder_name, background
        )
    started = time.perf_counter()
    with _one_blas_thread():  # small matrices: threads only contend (badly on a busy machine)
        learned = fit_learned(fit, embed, embedder_name)
        results = run(
            fit,
            test,
            args.quality,
            learned=learned,
            delta=args.delta,
            resplit_times=args.resplits,
            embed=embed,
            embedder_name=embedder_name,
            bound=args.bound,
            loss=args.loss,
            precall=precall,
        )
    simulated_s = time.perf_counter() - started
    bar = args.quality * strong_accuracy(test)
    table = Table(
        title=f"Escalation {args.weak_model} -> {args.strong_model} on {args.test.name} "
        f"(bar: accuracy >= {bar:.3f})"
    )
    columns = ("scorer", "escalated", "accuracy", "saved", "best saved at bar")
    guaranteed_columns = ("g. threshold", "g. expected", "g. saved", "g. accuracy", "held", "resplits held")
    for col in columns + guaranteed_columns:
        table.add_column(col, justify="left" if col == "scorer" else "right")

    rows = []
    for r in results:
        at, best, g = r.test_at_fit_threshold, r.test_best, r.guaranteed
        gs = g.summary() if g else None
        gcells = ("-",) * len(guaranteed_columns)
        if g and gs:
            threshold = "all" if gs["threshold"] is None else f"{gs['threshold']:.3f}"  # escalate all
            if g.choice.precall_threshold is not None:  # combined: pre-call / post-hoc
                threshold = f"{g.choice.precall_threshold:g} / {threshold}"
            gcells = (
                threshold,
                f"{g.expected.saved:.1%}",
                f"{g.test.saved:.1%}",
                f"{g.test.accuracy:.3f}",
                "yes" if g.held else "NO",
                "-" if g.resplit_hold_rate is None else f"{g.resplit_hold_rate:.0%}",
            )
        table.add_row(
            r.scorer,
            f"{at.escalated:.1%}" if at else "-",
            f"{at.accuracy:.3f}" if at else "-",
            f"{at.saved:.1%}" if at else "-",
            f"{best.saved:.1%}" if best else "-",
            *gcells,
        )
        rows.append(
            {
                "scorer": r.scorer,
                "test_at_fit_threshold": at and at.summary(),
                "test_best_at_bar": best and best.summary(),
                "guaranteed": gs,
            }
        )
    Console(width=160).print(table)
    bound = args.bound or ("betting" if args.loss == "paired" else "binomial")
    what = (
        f"accuracy - {args.quality} x the strong model's accuracy on the same prompts is >= 0"
        if args.loss == "paired"
        else f"wrong-answer rate is <= 1 - {args.quality} x the strong model's accuracy on --fit"
    )
    print(
        f"guaranteed (g.): the cheapest threshold at which the {1 - args.delta:.0%} confidence bound "
        f"({args.loss} loss, {bound} bound) on --fit says the {what}; held: the bar on --test; resplits "
        f"held: share of {args.resplits} random resplits of both files where it held (the guarantee: >= "
        f"{1 - args.delta:.0%}). precall: the query-only scorer alone (below its threshold straight to the "
        f"strong model); precall+learned: pre-call / post-hoc thresholds "
        f"(background: {background_dir or 'none'}). Simulation {simulated_s:.1f} s"
    )
    if args.plot:
        plot(results, test, args.plot, args.quality)
        print(f"plot: {args.plot}")
    if args.save_scorer:
        learned.save(args.save_scorer)
        fit_threshold = next(r.fit_threshold for r in results if r.scorer == "learned")
        print(f"learned scorer: {args.save_scorer} (threshold chosen on fit: {fit_threshold})")
    if args.save_precall:
        if precall_scorer is None:
            raise ValueError("--save-precall needs the embeddings and the pre-call scorer")
        precall_scorer.save(args.save_precall)
        chosen = next(r.guaranteed for r in results if r.scorer == "precall+learned")
        print(
            f"pre-call scorer: {args.save_precall} (guaranteed with the learned scorer: precall_threshold "
            f"{chosen.choice.precall_threshold:g}, threshold {chosen.calibrated.threshold:.4f})"
        )
    print(
        json.dumps(
            {
                "eval": "router",
                "fit": str(args.fit),
                "test": str(args.test),
                "strong_accuracy_test": round(strong_accuracy(test), 4),
                "quality": args.quality,
                "delta": args.delta,
                "resplits": args.resplits,
                "loss": args.loss,
                "bound": bound,
                "precall_background": background_dir and str(background_dir),
                "simulation_s": round(simulated_s, 2),
                "results": rows,
            }
        )
    )
    return 0


def _cmd_eval_dedup(args: argparse.Namespace) -> int:
    from rich.console import Console

    from supportgraph_tools.frames import evaluate

    seeds = evaluate.parse_seeds(args.seeds)
    resolutions = [evaluate.parse_resolution(r) for r in args.resolution]
    if not 2.0 <= args.duration <= 600:
        raise ValueError("--duration must be 2 to 600 seconds")
    result = evaluate.evaluate(
        seeds, resolutions, load_settings(args.config).dedup, args.duration, busy=args.busy
    )
    Console(width=120).print(evaluate.table(result, args.seeds, args.resolution))
    print(json.dumps(result.summary()))
    return 0


def _cmd_eval_screen(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from serve_app.knowledge.factory import build_retriever
    from serve_app.knowledge.ingest import ingest_path
    from serve_app.screen.normalize import Vocabulary
    from serve_app.screen.ocr import OcrEngine
    from serve_app.screen.reader import ReaderLimits, ScreenReader
    from serve_app.screen.tenant_vocabulary import TenantVocabularies
    from serve_app.screen.vocabulary import vocabulary_texts
    from supportgraph_tools.screen import evaluate, screens

    settings = load_settings(args.config)
    cfg = settings.screen
    errors = screens.load_errors(args.errors) if args.errors else list(screens.ERRORS)
    reader = ScreenReader(
        limits=ReaderLimits(margin=cfg.margin, max_side=cfg.max_side),
        engine_factory=lambda: OcrEngine(device=cfg.device, threads=cfg.threads),
    )
    all_cases = evaluate.cases(errors, args.per_error, args.seed)
    from supportgraph_tools.frames.evaluate import parse_resolution

    width, height = parse_resolution(args.resolution)

    async def work(db: Database, embedder: Embedder, bill: TenantBill) -> dict:
        await ingest_path(db, embedder, args.help_center, args.tenant, bill=bill)
        # spacing is restored with the tenant's ingested help center, as the ScreenReader replica does
        base = Vocabulary().add(vocabulary_texts(cfg.vocabulary))
        reader.vocabulary = await TenantVocabularies(db, base).get(args.tenant)
        retriever = build_retriever(db, settings.knowledge, embedder)
        rank = evaluate.ranker(retriever.search, args.tenant)
        return await evaluate.evaluate_screen(
            rank, reader, all_cases, width, height, query_chars=cfg.query_chars, busy=args.busy
        )

    result = asyncio.run(_with_knowledge(settings, args.tenant, work))
    screens_ = f"{'busy ' if args.busy else ''}{args.resolution}"
    table = Table(title=f"eval-screen: {result['cases']} cases on {args.help_center.name} ({screens_})")
    for col in ("query", "R@1", "R@5", "MRR@10"):
        table.add_column(col, justify="left" if col == "query" else "right")
    for name in ("question_only", "with_screen"):
        table.add_row(name, *(f"{result[name][k]:.3f}" for k in ("R@1", "R@5", "MRR@10")))
    console = Console(width=120)
    console.print(table)
    stages = Table(title=f"per stage latency (OCR character accuracy {result['ocr_char_accuracy']:.4f})")
    for col in ("stage", "n", "p50 ms", "p95 ms"):
        stages.add_column(col, justify="left" if col == "stage" else "right")
    for stage, lat in result["latency_ms"].items():
        stages.add_row(stage, str(lat["n"]), f"{lat['p50']:.1f}", f"{lat['p95']:.1f}")
    console.print(stages)
    for row in result["rows"]:
        if row["top_grounded"] != [row["doc"]]:
            console.print(f"miss: {row['doc']} ({row['surface']}, {row['reason']}): read {row['read']}")
    keys = ("ocr_char_accuracy", "with_screen", "question_only", "ocr_p95_ms", "busy")
    usable = result["latency_ms"]["toast_to_text"]
    print(
        json.dumps({"eval": "screen", **{k: result[k] for k in keys}, "toast_to_text_p95_ms": usable["p95"]})
    )
    return 0
