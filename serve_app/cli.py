"""`supportgraph`: the command line. Each subcommand is a thin wrapper over a library function."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from serve_app.inputs import as_utc
from serve_app.knowledge.query import MODES
from serve_app.settings import Settings, load_settings
from serve_app.tenancy import validate_tenant_id

if TYPE_CHECKING:
    from serve_app.costs.usage import TenantBill
    from serve_app.db.database import Database
    from serve_app.knowledge.embedders import Embedder
    from serve_app.knowledge.ingest import IngestReport
    from serve_app.knowledge.retrieval import RetrievalResult

T = TypeVar("T")

DESCRIPTION = """\
supportgraph: multi-modal customer-support agents as a Ray Serve model-serving graph.

Settings come from defaults, then --config FILE (or $SUPPORTGRAPH_CONFIG), then SUPPORTGRAPH_*
environment variables (nested with __, e.g. SUPPORTGRAPH_DEDUP__HAMMING_THRESHOLD=8)."""


def _judged_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """A BEIR-style dataset, a query file and the tenant it is ingested into (eval-retrieval,
    fit-reranker)."""
    parser.add_argument("--dataset", type=Path, required=True, help="folder with docs/ and qrels/")
    parser.add_argument("--queries", type=Path, required=True, help="JSONL with _id and text")
    parser.add_argument("--tenant", default="eval", help="evaluation tenant (eval)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supportgraph", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="start local Ray + the graph, replay generated screen-share sessions, print a report",
        description="Starts a local Ray and the graph on embedded defaults (no keys, no servers), "
        "replays generated screen-share clips over HTTP and prints dedup rate, images sent and cost. "
        "The last line is JSON.",
    )
    demo.add_argument("--duration", type=float, default=30.0, metavar="S", help="seconds per clip (30)")
    demo.add_argument("--streams", type=int, default=2, metavar="N", help="parallel streams (2)")
    demo.add_argument("--port", type=int, help="HTTP port (default: settings, 8000)")

    serve = sub.add_parser(
        "serve",
        help="start local Ray + the graph and serve HTTP until interrupted",
        description="Runs the graph on a local Ray until Ctrl-C or SIGTERM. For YAML-driven runs use "
        "`serve run configs/local.yaml`; for clusters `serve deploy`.",
    )
    serve.add_argument("--host", help="bind address (default: settings, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default: settings, 8000)")

    ingest = sub.add_parser(
        "ingest",
        help="chunk, embed and store documents (Markdown, text, HTML) for a tenant; idempotent",
        description="Ingests a file or folder into the tenant's knowledge base (embedded Postgres unless "
        "db.dsn is set). Unchanged documents are skipped by content hash; an interrupted run resumes.",
    )
    ingest.add_argument("path", type=Path, help="file or folder")
    ingest.add_argument("--tenant", required=True, help="tenant id (lowercase letters, digits, '-')")
    ingest.add_argument("--prune", action="store_true", help="delete documents no longer under PATH")

    search = sub.add_parser(
        "search", help="retrieve cited passages for a question from a tenant's knowledge base"
    )
    search.add_argument("query")
    search.add_argument("--tenant", required=True)
    search.add_argument("--mode", choices=MODES, default="hybrid_rerank")
    search.add_argument("-k", type=int, default=5, help="passages to show (5)")

    ev = sub.add_parser(
        "eval-retrieval",
        help="R@1/5/10, MRR@10, nDCG@10 and per-stage latency on a BEIR-style dataset",
        description="Ingests DATASET/docs into an evaluation tenant (once; re-runs skip unchanged files), "
        "runs the queries of FILE and scores documents against DATASET/qrels. The last line is JSON.",
    )
    _judged_dataset_arguments(ev)
    ev.add_argument("--mode", choices=MODES, action="append", help="repeatable; default: all four")
    ev.add_argument(
        "--arms",
        help="offline A/B: reranker arms (comma-separated, the first is control) on the same queries, "
        "with paired bootstrap intervals of the differences (R@5, MRR@10, nDCG@10)",
    )
    ev.add_argument(
        "--adapt-minutes",
        type=float,
        default=20.0,
        help="an `adapted` arm (given, or the default's) trains the tenant's model first when it has "
        "none, for at most this long (20)",
    )

    fr = sub.add_parser(
        "fit-reranker",
        help="fit the learned reranker's weights on judged queries (a dev split)",
        description="Ingests DATASET/docs like eval-retrieval, collects the fused candidates of each "
        "judged query of FILE, fits the learned reranker (pairwise logistic regression over retrieval "
        "evidence), prints its leave-one-query-out estimate against the fused order and writes the "
        "weights. Fit on a dev split, never on the queries you report.",
    )
    _judged_dataset_arguments(fr)
    fr.add_argument("--out", type=Path, required=True, help="weights JSON (knowledge.rerankers.*.model)")

    er = sub.add_parser(
        "eval-router",
        help="simulate weak -> strong escalation by confidence scorer; cost vs accuracy",
        description="Reads RouteLLM-style CSVs (prompt, per-model correctness and responses). Thresholds "
        "are chosen on --fit and applied to --test; prints each scorer's cost saved and accuracy, the test "
        "curve's best point at the quality bar, optionally a plot. The last line is JSON.",
    )
    er.add_argument("--fit", type=Path, required=True, help="CSV to fit scorers and choose thresholds on")
    er.add_argument("--test", type=Path, required=True, help="CSV to report on (never tuned on)")
    er.add_argument("--weak-model", default="gemini-2.5-flash-lite", help="priced as (pricing table)")
    er.add_argument("--strong-model", default="claude-sonnet-4-5", help="priced as (pricing table)")
    er.add_argument("--quality", type=float, default=0.95, help="share of the strong model's accuracy (0.95)")
    er.add_argument("--plot", type=Path, help="save the cost-vs-accuracy curves (PNG)")
    er.add_argument(
        "--save-scorer", type=Path, help="save the learned scorer (JSON) for routing.policy.learned_scorer"
    )
    er.add_argument(
        "--no-embeddings", action="store_true", help="learned scorer on the text features only (no MiniLM)"
    )
    er.add_argument(
        "--delta",
        type=float,
        default=0.1,
        help="risk level of the guaranteed threshold: the bar holds with probability >= 1 - delta (0.1)",
    )
    er.add_argument(
        "--resplits",
        type=int,
        default=200,
        help="random fit/test resplits of both files to measure how often the guaranteed bar holds (200)",
    )
    er.add_argument(
        "--loss",
        choices=["paired", "wrong"],
        default="paired",
        help="the guarantee's loss: paired (quality x strong right - routed right per prompt: the bar on the "
        "same prompts, the strong accuracy's noise included) or wrong (the wrong-answer rate against 1 - "
        "quality x the fit file's strong accuracy, a plug-in)",
    )
    er.add_argument(
        "--bound",
        choices=["betting", "binomial", "hoeffding_bentkus"],
        help="upper confidence bound of the loss: betting (paired loss, default) or hoeffding_bentkus; "
        "binomial (wrong loss, default) or hoeffding_bentkus",
    )
    er.add_argument(
        "--no-precall",
        action="store_true",
        help="leave out the query-only (pre-call) scorer and its combination with the learned one",
    )
    er.add_argument(
        "--precall-background",
        type=Path,
        help="directory of prompt/correctness logs the pre-call scorer's background model is fitted on "
        "(default: mmlu/responses beside the fit file's directory, when there)",
    )
    er.add_argument(
        "--no-precall-background",
        action="store_true",
        help="the pre-call scorer's head alone (no background model)",
    )
    er.add_argument(
        "--precall-background-rows",
        type=int,
        default=3000,
        help="a random sample of this many background prompts (0: all; MMLU has 13,772 usable ones, which "
        "take long to embed on a few cores) (3000)",
    )
    er.add_argument(
        "--save-precall", type=Path, help="save the pre-call scorer (JSON) for routing.policy.precall_scorer"
    )

    _eval_dedup_arguments(sub)
    _eval_screen_arguments(sub)
    from serve_app.answers.commands import add_arguments as answers_arguments

    answers_arguments(sub)
    from serve_app.knowledge.commands import add_arguments as knowledge_arguments

    knowledge_arguments(sub)

    costs = sub.add_parser("costs", help="a tenant's recorded costs by service and provider")
    costs.add_argument("--tenant", required=True)
    costs.add_argument("--since", type=_timestamp, help="ISO date or time, inclusive")
    costs.add_argument("--until", type=_timestamp, help="ISO date or time, exclusive")

    ab = sub.add_parser(
        "ab-report",
        help="an experiment's arms: resolution, rating, escalation, cost, latency; vs control; SRM",
        description="Per arm, with 95%% intervals, the difference to the control arm (fixed-horizon and "
        "always-valid sequential p-values) and a sample-ratio-mismatch check. Without --tenant: every "
        "tenant's requests (the admin connection must bypass row-level security). The last line is JSON.",
    )
    ab.add_argument("name", help="experiment name (settings `experiments`, or `reranker`: ab_weights)")
    ab.add_argument("--tenant", help="one tenant's requests only (under row-level security)")

    keys = sub.add_parser("keys", help="a tenant's HTTP API keys: create (shown once), list, revoke")
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("--tenant", required=True)
    keys.add_argument("--name", default="", help="create: a label for the key")
    keys.add_argument("--prefix", help="revoke: the key's prefix, as `keys list` shows it")
    keys.add_argument(
        "--role",
        choices=["admin", "agent", "client"],
        default="admin",
        help="create: admin (everything), agent (a human agent: the handoff queue, knowledge search), "
        "client (a widget: chat, frames, feedback, its own handoffs)",
    )

    token = sub.add_parser(
        "token",
        help="mint a LiveKit access token for a tenant's room (LIVEKIT_API_KEY, LIVEKIT_API_SECRET)",
    )
    token.add_argument("--tenant", required=True)
    token.add_argument("--room", required=True, help="room within the tenant (letters, digits, '-')")
    token.add_argument("--identity", required=True, help="participant identity")
    token.add_argument("--ttl", type=int, default=3600, help="seconds the token is valid (3600)")

    manifest = sub.add_parser(
        "manifest",
        help="render cluster.yaml (KubeRay RayService) from configs/rayservice.yaml + a Serve config",
    )
    manifest.add_argument("--serve-config", type=Path, default=Path("configs/production.yaml"))
    manifest.add_argument("--rayservice", type=Path, default=Path("configs/rayservice.yaml"))
    manifest.add_argument("-o", "--output", type=Path, default=Path("cluster.yaml"))

    agent = sub.add_parser(
        "agent",
        help="the LiveKit agent worker (livekit-agents CLI: start, dev, connect, ...)",
        description="Joins tenant_<id>_<room> rooms; needs LIVEKIT_URL/API_KEY/API_SECRET, the STT/TTS "
        "keys and a running graph (RAY_ADDRESS).",
    )
    agent.add_argument("args", nargs=argparse.REMAINDER, help="passed to the livekit-agents CLI")
    return parser


def _eval_dedup_arguments(sub: argparse._SubParsersAction) -> None:
    from serve_app.frames.evaluate import REPORT_SEEDS

    ed = sub.add_parser(
        "eval-dedup",
        help="skip rate, event recall per kind and spurious sends of the frame dedup on generated clips",
        description="Runs the real sampler (pHash + region signal, and pHash alone) over generated screen "
        "shares with labelled events (no Ray): an event counts when a frame within 0.5 s after it is sent; "
        "a send is spurious when no significant event happened in the 0.5 s before it. Thresholds were "
        "chosen on seeds 0-11; the default seeds are the reported ones. The last line is JSON.",
    )
    ed.add_argument("--seeds", default=REPORT_SEEDS, help=f"e.g. 100-105 or 1,2,7 ({REPORT_SEEDS})")
    ed.add_argument("--resolution", nargs="+", default=["1280x720", "640x480"], metavar="WxH", help="(both)")
    ed.add_argument("--duration", type=float, default=30.0, metavar="S", help="seconds per clip (30)")
    ed.add_argument(
        "--busy",
        action="store_true",
        help="busy desktops: a chat sidebar and a terminal that grow line by line (frames/busy.py)",
    )


def _eval_screen_arguments(sub: argparse._SubParsersAction) -> None:
    from serve_app.samples import HELP_CENTER

    es = sub.add_parser(
        "eval-screen",
        help="OCR accuracy and screen-grounded retrieval on generated screens showing error messages",
        description="Generated desktops before and after an error message of the help center shows (toast, "
        "banner, dialog), with vague questions: the dedup decides the frames, the screen reader reads the "
        "changed region, and retrieval ranks the articles for the question alone and with the screen text "
        "(no Ray). The last line is JSON.",
    )
    es.add_argument("--help-center", type=Path, default=HELP_CENTER, help="help center to ingest (sample)")
    es.add_argument(
        "--errors", type=Path, help="JSONL of the help center's error messages: doc, title, text (sample's)"
    )
    es.add_argument("--per-error", type=int, default=2, help="cases (questions, screens) per error (2)")
    es.add_argument("--seed", type=int, default=1000, help="first screen seed (1000)")
    es.add_argument("--tenant", default="eval-screen", help="tenant the help center is ingested for")
    es.add_argument("--busy", action="store_true", help="busy desktops (chat sidebar, log, typing, clock)")
    es.add_argument(
        "--resolution", default="1280x720", metavar="WxH", help="screen size (1280x720; also 640x480)"
    )


def _cmd_eval_screen(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from serve_app.knowledge.factory import build_retriever
    from serve_app.knowledge.ingest import ingest_path
    from serve_app.screen import evaluate, screens
    from serve_app.screen.normalize import Vocabulary
    from serve_app.screen.ocr import OcrEngine
    from serve_app.screen.reader import ReaderLimits, ScreenReader
    from serve_app.screen.tenant_vocabulary import TenantVocabularies
    from serve_app.screen.vocabulary import vocabulary_texts

    settings = load_settings(args.config)
    cfg = settings.screen
    errors = screens.load_errors(args.errors) if args.errors else list(screens.ERRORS)
    reader = ScreenReader(
        limits=ReaderLimits(margin=cfg.margin, max_side=cfg.max_side),
        engine_factory=lambda: OcrEngine(device=cfg.device, threads=cfg.threads),
    )
    all_cases = evaluate.cases(errors, args.per_error, args.seed)
    from serve_app.frames.evaluate import parse_resolution

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


def _cmd_eval_dedup(args: argparse.Namespace) -> int:
    from rich.console import Console

    from serve_app.frames import evaluate

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


def _timestamp(text: str) -> datetime:
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time in range: {text!r}") from None


def _http_overrides(args: argparse.Namespace) -> dict[str, object]:
    http = {k: v for k, v in (("host", getattr(args, "host", None)), ("port", args.port)) if v is not None}
    return {"http": http} if http else {}


def _cmd_demo(args: argparse.Namespace) -> int:
    from serve_app.demo import run_demo

    if args.duration <= 0 or args.streams < 1:
        raise SystemExit("supportgraph demo: --duration must be > 0 and --streams >= 1")
    settings = load_settings(args.config, **_http_overrides(args))
    report = run_demo(settings, duration_s=args.duration, streams=args.streams)
    print(report.to_json())
    return 0 if report.ok else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    from serve_app.runtime import local_graph

    settings = load_settings(args.config, **_http_overrides(args))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with local_graph(settings) as graph:
        print(f"serving {graph.app_name} at {graph.base_url} (docs at {graph.base_url}/docs); Ctrl-C stops")
        stop.wait()
    return 0


async def _with_knowledge(
    settings: Settings, tenant: str, work: Callable[[Database, Embedder, TenantBill], Awaitable[T]]
) -> T:
    """Runs `work` with the database, the embedder and the tenant's bill: what billed knowledge calls
    (an API embedder, Cohere) cost goes to its cost ledger, flushed before the command ends."""
    from serve_app.costs.ledger import CostLedger
    from serve_app.costs.usage import TenantBill
    from serve_app.db.database import Database
    from serve_app.knowledge.factory import build_embedder

    async with Database.of(settings) as db:
        bill = TenantBill(CostLedger(db), settings.pricing.load(), tenant)
        try:
            return await work(db, build_embedder(settings.knowledge.embedder), bill)
        finally:
            await bill.ledger.close()


def _cmd_ingest(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from serve_app.knowledge.chunking import iter_files
    from serve_app.knowledge.ingest import ingest_path
    from serve_app.priority import lower_process_priority

    settings = load_settings(args.config)
    validate_tenant_id(args.tenant)
    lower_process_priority(settings.serve.background_niceness)  # the graph's requests go first
    total = len(iter_files(args.path.expanduser()))

    async def work(db: Database, embedder: Embedder, bill: TenantBill) -> tuple[IngestReport, float]:
        with Progress(transient=True) as bar:
            task = bar.add_task(f"ingesting {args.path}", total=total)
            report = await ingest_path(
                db,
                embedder,
                args.path,
                args.tenant,
                prune=args.prune,
                max_words=settings.knowledge.chunk_words,
                overlap=settings.knowledge.chunk_overlap,
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
            max_words=settings.knowledge.chunk_words,
            overlap=settings.knowledge.chunk_overlap,
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
    from serve_app.knowledge.evaluate import evaluate, inline_qrels, load_qrels, load_queries
    from serve_app.knowledge.factory import build_retriever

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

    from serve_app.experiments.offline import COMPARED, evaluate_arms
    from serve_app.knowledge.commands import default_arms, prepare_arms
    from serve_app.knowledge.factory import build_retriever

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
    from serve_app.knowledge.evaluate import judged_candidates, leave_one_out, load_qrels, load_queries
    from serve_app.knowledge.factory import build_retriever
    from serve_app.knowledge.rerankers.learned import FEATURES, fit_pairwise, save_weights

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


def _one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """numpy's BLAS/LAPACK on one thread (eval-router's many small solves are slower threaded)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def _cmd_eval_router(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from serve_app.routing.evaluate import (
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
        from serve_app.routing.evaluate import WEAK, precall_split_scores
        from serve_app.routing.precall import QueryScorer, background_model

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


def _cmd_costs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from serve_app.costs.ledger import cost_report
    from serve_app.db.database import Database

    settings = load_settings(args.config)
    validate_tenant_id(args.tenant)

    async def report() -> object:
        async with Database.of(settings) as db:
            return await cost_report(db, args.tenant, args.since, args.until)

    result = asyncio.run(report())
    table = Table(title=f"Costs of tenant {args.tenant}")
    for col in ("service", "provider", "attempts", "input tokens", "output tokens", "images", "chars", "USD"):
        table.add_column(col, justify="left" if col in ("service", "provider") else "right")
    for row in result.rows:
        table.add_row(
            str(row["service"]),
            str(row["provider"]),
            str(row["attempts"]),
            str(row["input_tokens"]),
            str(row["output_tokens"]),
            str(row["images"]),
            str(row["characters"]),
            f"{row['cost_usd']:.4f}",
        )
    console = Console(width=120)
    console.print(table)
    if result.tiers:
        tiers = Table(title="LLM attempts by tier")
        for col in ("tier", "model", "attempts", "accepted", "failed", "USD"):
            tiers.add_column(col, justify="left" if col in ("tier", "model") else "right")
        for row in result.tiers:
            tiers.add_row(
                *(str(row[k]) for k in ("tier", "model", "attempts", "accepted", "failed")),
                f"{row['cost_usd']:.4f}",
            )
        console.print(tiers)
        saved = result.saved_pct
        console.print(
            f"{result.requests} routed requests: ${result.llm_usd:.4f} vs ${result.baseline_usd:.4f}"
            " on the top tier alone" + (f" ({saved:.1f}% saved)" if saved is not None else "")
        )
    print(json.dumps({"costs": args.tenant, **result.to_dict()}, default=str))
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    from serve_app.auth import create_key, list_keys, revoke_key
    from serve_app.db.database import Database

    settings = load_settings(args.config)
    validate_tenant_id(args.tenant)
    if args.action == "revoke" and not args.prefix:
        raise ValueError("revoke needs --prefix (see `supportgraph keys list`)")

    async def act() -> object:
        async with Database.of(settings) as db:
            if args.action == "create":
                return await create_key(db, args.tenant, args.name, args.role)
            if args.action == "revoke":
                return await revoke_key(db, args.tenant, args.prefix)
            return await list_keys(db, args.tenant)

    result = asyncio.run(act())
    if args.action == "create":
        print(result)  # the only time the key is shown
    elif args.action == "revoke":
        if not result:
            raise ValueError(f"no live key with prefix {args.prefix!r} for tenant {args.tenant!r}")
        print(f"revoked {result} key(s)")
    else:
        print(json.dumps(result, default=str))
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    from serve_app.agent.tokens import mint_token

    key, secret = os.environ.get("LIVEKIT_API_KEY"), os.environ.get("LIVEKIT_API_SECRET")
    if not key or not secret:
        raise ValueError("set LIVEKIT_API_KEY and LIVEKIT_API_SECRET")
    print(mint_token(key, secret, args.tenant, args.room, args.identity, args.ttl))
    return 0


def _cmd_manifest(args: argparse.Namespace) -> int:
    from serve_app.manifest import render

    args.output.write_text(render(args.serve_config, args.rayservice, Path.cwd()))
    print(f"wrote {args.output}")
    return 0


def _cmd_ab_report(args: argparse.Namespace) -> int:
    from serve_app.db.database import Database
    from serve_app.experiments.backend import DbExperiments
    from serve_app.experiments.report import format_report

    settings = load_settings(args.config)
    if args.tenant:
        validate_tenant_id(args.tenant)

    async def report() -> dict[str, object] | None:
        async with Database.of(settings) as db:
            experiments = DbExperiments(db, settings.experiment_set())
            return await experiments.experiment_report(args.tenant, args.name)

    result = asyncio.run(report())
    if result is None:
        raise ValueError(f"no experiment {args.name!r} in the settings or the data")
    print(format_report(result))
    return 0


def _cmd_agent(args: argparse.Namespace) -> int:
    from serve_app.agent.worker import run_worker

    run_worker(list(args.args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from serve_app.answers.commands import COMMANDS as ANSWERS
    from serve_app.knowledge.commands import COMMANDS as KNOWLEDGE

    commands = {
        **ANSWERS,
        **KNOWLEDGE,
        "demo": _cmd_demo,
        "serve": _cmd_serve,
        "ingest": _cmd_ingest,
        "search": _cmd_search,
        "eval-retrieval": _cmd_eval_retrieval,
        "fit-reranker": _cmd_fit_reranker,
        "eval-router": _cmd_eval_router,
        "eval-dedup": _cmd_eval_dedup,
        "eval-screen": _cmd_eval_screen,
        "costs": _cmd_costs,
        "ab-report": _cmd_ab_report,
        "token": _cmd_token,
        "keys": _cmd_keys,
        "agent": _cmd_agent,
        "manifest": _cmd_manifest,
    }
    try:
        return commands[args.command](args)
    except (FileNotFoundError, ValueError) as exc:  # bad input or settings: say what is wrong, no traceback
        print(f"supportgraph {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
