"""`supportgraph eval-answers`, `fit-answers` and `fit-intents`: arguments, and the thin commands over
`evaluate`, `fit`, `harness` and `intent`. Each prints a table and ends with one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import pickle
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from serve_app.settings import Settings, load_settings

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ROOT / "evals" / "answers"


def add_arguments(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval-answers",
        help="correct, declined and wrong replies of the chat path on a dataset's questions",
        description="Runs questions through the chat service the HTTP API uses (intent step, retrieval, "
        "ladder, verifier, cost ledger) for a tenant whose knowledge base is the dataset's docs; withheld "
        "questions go to a copy without their documents. A reply is declined (abstained or handed off), "
        "correct (it carries the gold answer's content words) or wrong. The last line is JSON.",
    )
    _corpus_arguments(ev)
    ev.add_argument("--tier", help="pin one tier (no escalation); default: the ladder")
    ev.add_argument("--out", type=Path, help="write every graded reply here (JSONL)")
    ev.add_argument("--limit", type=int, help="at most this many questions per file (a quick look)")
    ev.add_argument(
        "--answer-model",
        type=Path,
        help="the evaluation tenants' own answer model (fit-answers --out); default: routing.policy's",
    )

    fa = sub.add_parser(
        "fit-answers",
        help="fit the answer model (unit selector, verifier, Learn-then-Test thresholds)",
        description="Fits on labelled dev questions and on cloze questions generated from the tenant's own "
        "documents (asked with and without their document); thresholds from cross-fitted scores. Never give "
        "it a test split. The last line is JSON.",
    )
    _corpus_arguments(fa)
    fa.add_argument("--generate", type=int, default=300, help="generated questions (300; 0: none)")
    fa.add_argument(
        "--no-headings",
        action="store_true",
        help="generate no questions from headings, only on figures (and drop them from --cache); for"
        " knowledge bases whose sections are split over several chunks, where a heading's answer is"
        " hard to grade",
    )
    fa.add_argument(
        "--customer-share",
        type=float,
        default=0.0,
        help="share of generated questions rewritten the way customers write (0: none; 0 to 1)",
    )
    fa.add_argument("--delta", type=float, default=0.1, help="risk level of the thresholds (0.1)")
    fa.add_argument("--seed", type=int, default=0)
    fa.add_argument(
        "--avoid",
        type=Path,
        action="append",
        default=[],
        help="JSONL/TSV whose documents give no generated question (reported sets)",
    )
    fa.add_argument("--out", type=Path, required=True, help="answer model JSON (routing.policy.answer_model)")
    fa.add_argument("--scores", type=Path, help="write the cross-fitted scores and labels here (JSONL)")
    fa.add_argument(
        "--cache", type=Path, help="keep the examples' features here and reuse them (a refit in seconds)"
    )
    fa.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="PATH[:WEIGHT]",
        help="another run's --cache to fit on as well (one model for several knowledge bases); :WEIGHT"
        " counts each of its examples that many times in the fit (not in the thresholds)",
    )

    fi = sub.add_parser(
        "fit-intents",
        help="fit the intent classifier on labelled turns (and banking77's support questions)",
        description="Softmax regression on MiniLM embeddings; reports accuracy per label on the test split. "
        "The last line is JSON.",
    )
    fi.add_argument("--turns", type=Path, default=QUESTIONS / "intents.jsonl", help="labelled turns (JSONL)")
    fi.add_argument("--banking77", type=Path, help="banking77 folder: its train.csv adds support questions")
    fi.add_argument("--questions", type=int, default=400, help="banking77 questions to add (400)")
    fi.add_argument("--out", type=Path, required=True, help="intent model JSON (routing.intents.model)")


def _corpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", type=Path, required=True, help="folder of documents, or with docs/ (aws_docs_qa)"
    )
    parser.add_argument(
        "--queries", type=Path, action="append", default=[], help="answerable questions (JSONL; repeatable)"
    )
    parser.add_argument(
        "--unanswerable",
        type=Path,
        action="append",
        default=[],
        help="unanswerable questions (JSONL; repeatable)",
    )
    parser.add_argument("--withheld", type=Path, help="corpus ids left out of the withheld questions' tenant")
    parser.add_argument(
        "--split", choices=["dev", "test", "all"], default="all", help="rows whose split is this"
    )
    parser.add_argument("--tenant", default="eval", help="evaluation tenant (eval)")


def _docs(dataset: Path) -> Path:
    """The documents of a dataset folder: its docs/ (aws_docs_qa's layout), else the folder itself."""
    return dataset / "docs" if (dataset / "docs").is_dir() else dataset


def _questions(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from supportgraph_tools.answers.evaluate import load_questions

    rows = [q for path in args.queries for q in load_questions(path)]
    rows += [q for path in args.unanswerable for q in load_questions(path)]
    if args.split != "all":
        rows = [q for q in rows if q.split in (None, args.split)]
    if not rows:
        raise ValueError("no questions: give --queries and/or --unanswerable")
    return rows


async def _with_db(settings: Settings, work: Callable[[Any, Any], Awaitable[T]]) -> T:
    from serve_app.db.database import Database
    from serve_app.knowledge.factory import build_embedder

    async with Database.of(settings) as db:
        return await work(db, build_embedder(settings.knowledge.embedder))


def cmd_eval_answers(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from supportgraph_tools.answers import evaluate
    from supportgraph_tools.answers.harness import local_chat, prepare_tenants, request_for

    settings = load_settings(args.config)
    if args.answer_model:  # as a deployment would set it for these tenants
        own = settings.routing.policy.tenant_answer_models
        own.update({args.tenant: args.answer_model, f"{args.tenant}-withheld"[:63]: args.answer_model})
    questions = _questions(args)
    if args.limit:
        questions = questions[: args.limit]

    async def work(db: Any, embedder: Any) -> list[evaluate.Row]:
        tenants = await prepare_tenants(
            db, embedder, settings, _docs(args.dataset), args.tenant, args.withheld
        )
        async with local_chat(db, embedder, settings) as service:

            async def ask(q: evaluate.EvalQuestion) -> tuple[dict[str, Any], str, str | None]:
                routed, _ = await service.answer(request_for(q, tenants, args.tier))
                return routed.to_dict(), routed.text, routed.candidate

            with Progress(transient=True) as bar:
                task = bar.add_task("asking", total=len(questions))
                return await evaluate.run(questions, ask, lambda: bar.advance(task))

    started = time.perf_counter()
    rows = asyncio.run(_with_db(settings, work))
    took = time.perf_counter() - started
    if args.out:
        evaluate.save_rows(rows, args.out)
    overall = evaluate.summarise(rows)
    tiers = evaluate.by_tier(rows)
    kinds = evaluate.by_kind(rows)
    table = Table(title=f"Answers on {args.dataset.name} ({len(rows)} questions, {took:.0f} s)")
    for col in ("kind", "questions", "correct", "wrong", "declined"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind, k in kinds.items():
        table.add_row(kind, *(str(k[c]) for c in ("questions", "correct", "wrong", "declined")))
    console = Console(width=120)
    console.print(table)
    tier_table = Table(title="By the tier that replied")
    for col in ("tier", "replies", "correct", "wrong", "precision", "p50 ms"):
        tier_table.add_column(col, justify="left" if col == "tier" else "right")
    for tier, t in tiers.items():
        precision = "-" if t["precision"] is None else f"{t['precision']:.3f}"
        tier_table.add_row(
            tier,
            str(t["replies"]),
            str(t["correct"]),
            str(t["wrong"]),
            precision,
            f"{t['latency_ms_p50']:.0f}",
        )
    console.print(tier_table)
    print(
        f"correct {overall['correct']} of answerable, declined {overall['declined_unanswerable']} of "
        f"unanswerable, delivered precision {overall['delivered_precision']}, AUROC {overall['auroc']}"
    )
    print(
        json.dumps(
            {
                "eval": "answers",
                "answerable": overall["answerable"],
                "unanswerable": overall["unanswerable"],
                "correct": overall["correct"],
                "declined_unanswerable": overall["declined_unanswerable"],
                "delivered_precision": overall["delivered_precision"],
                "auroc": overall["auroc"],
                "by_tier": tiers,
                "overall": overall,
                "by_kind": kinds,
                "tier": args.tier or "ladder",
                "split": args.split,
                "seconds": round(took, 1),
            }
        )
    )
    return 0


# what fixes a --cache's examples: reusing one made for other questions, documents or embedder would fit
# on examples that are not the ones asked for, silently
_CACHE_FIXED = ("dataset", "tenant", "queries", "unanswerable", "withheld", "split", "avoid")


def _cache_key(args: argparse.Namespace, embedder: str) -> dict[str, Any]:
    def value(v: Any) -> Any:
        if isinstance(v, list):
            return [value(x) for x in v]
        return str(Path(v).resolve()) if isinstance(v, Path) else v

    key = {name: value(getattr(args, name)) for name in _CACHE_FIXED}
    made = {"generate": args.generate, "seed": args.seed, "customer_share": args.customer_share}
    return key | {"embedder": embedder} | made


class _Unpickler(pickle.Unpickler):
    """Reads caches written before the fitting code moved from serve_app.answers to supportgraph_tools."""

    def find_class(self, module: str, name: str) -> Any:
        moved = ("serve_app.answers.fit", "serve_app.answers.evaluate", "serve_app.answers.harness")
        if module in moved:
            module = module.replace("serve_app.answers", "supportgraph_tools.answers", 1)
        return super().find_class(module, name)


def _read_cache(path: Path, made_with: dict[str, Any]) -> list[Any]:
    """A --cache's examples, refused (ValueError: the command exits 2 with the difference) when the
    arguments that fix them differ from this run's. --generate and --seed are reported, not refused: the
    cache is how a refit keeps one run's generated questions."""
    data = _Unpickler(io.BytesIO(path.read_bytes())).load()
    if isinstance(data, list):  # a cache written before the arguments were recorded
        print(f"note: {path} does not record what made it; reused as it is")
        return data
    theirs = data["made_with"]
    differ = [k for k in (*_CACHE_FIXED, "embedder") if k in made_with and theirs.get(k) != made_with[k]]
    if differ:
        shown = "; ".join(f"--{k}: cache {theirs.get(k)!r}, now {made_with[k]!r}" for k in differ)
        raise ValueError(f"{path} was made with other arguments ({shown}): delete it or pass the same")
    kept = [  # a cache from before --customer-share has none
        f"--{k.replace('_', '-')} {theirs.get(k, 0.0)}"
        for k in ("generate", "seed", "customer_share")
        if theirs.get(k, 0.0) != made_with.get(k, theirs.get(k, 0.0))
    ]
    if kept:
        print(f"note: {path} keeps the examples of {' '.join(kept)}")
    return data["prepared"]


def _avoided(paths: list[Path]) -> set[str]:
    """Corpus ids named by reported question sets (a `doc` field) or qrels files (corpus-id column)."""
    out: set[str] = set()
    for path in paths:
        for line in path.read_text().splitlines():
            if path.suffix == ".tsv":
                parts = line.split("\t")
                if len(parts) >= 2 and parts[1] != "corpus-id":
                    out.add(parts[1])
            elif line.strip():
                doc = json.loads(line).get("doc")
                if doc:
                    out.add(doc)
    return out


def cmd_fit_answers(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.progress import Progress

    from serve_app.answers.embedding import local_embed
    from serve_app.knowledge.factory import build_retriever
    from supportgraph_tools.answers import fit
    from supportgraph_tools.answers.evaluate import auroc
    from supportgraph_tools.answers.harness import (
        examples_for,
        generated_examples,
        local_chat,
        prepare_tenants,
    )

    settings = load_settings(args.config)
    if args.split == "test":
        raise ValueError("fit-answers never fits on a test split")
    if not 0.0 <= args.customer_share <= 1.0:
        raise ValueError(f"--customer-share must be between 0 and 1, not {args.customer_share}")
    questions = _questions(args)
    avoid = _avoided(args.avoid)

    async def work(db: Any, embedder: Any) -> list[fit.Example]:
        tenants = await prepare_tenants(
            db, embedder, settings, _docs(args.dataset), args.tenant, args.withheld
        )
        with Progress(transient=True) as bar:
            task = bar.add_task("examples", total=len(questions) + args.generate)
            async with local_chat(db, embedder, settings, verify=False) as service:
                labelled = await examples_for(service, questions, tenants, lambda: bar.advance(task))
            retriever = build_retriever(db, settings.knowledge, embedder)
            k = settings.routing.context_passages
            made = await generated_examples(
                db,
                retriever,
                tenants.full,
                args.generate,
                avoid,
                k,
                args.seed,
                lambda: bar.advance(task),
                headings=not args.no_headings,
                customer=args.customer_share,
            )
        return labelled + made

    started = time.perf_counter()
    embed, name = local_embed()
    made_with = _cache_key(args, name)
    if args.cache and args.cache.exists():
        prepared = _read_cache(args.cache, made_with)
    else:
        examples = asyncio.run(_with_db(settings, work))
        with Progress(transient=True) as bar:
            task = bar.add_task("features", total=len(examples))
            prepared = fit.prepare(examples, embed, lambda: bar.advance(task))
        if args.cache:
            args.cache.write_bytes(pickle.dumps({"made_with": made_with, "prepared": prepared}))
    prepared = [p for p in prepared if fit.plausible_cloze(p.example)]
    if args.no_headings:
        prepared = [p for p in prepared if getattr(p.example, "section", None) is None]
    seen = {(p.example.source, p.example.question) for p in prepared}
    for n, other in enumerate(args.also, 1):  # an example met twice (two runs' dev questions) counts once
        path, _, weight = other.rpartition(":") if other.rpartition(":")[2].isdigit() else (other, "", "1")
        for p in _read_cache(Path(path), {"embedder": name}):
            if fit.plausible_cloze(p.example) and (p.example.source, p.example.question) not in seen:
                seen.add((p.example.source, p.example.question))
                p.weight = int(weight)
                if p.example.group:  # its own groups: a twin is never matched across runs
                    p.example = dataclasses.replace(p.example, group=f"also{n}/{p.example.group}")
                prepared.append(p)
    prepared = fit.widen_sections(prepared)
    model, scores, labels, answers = fit.fit(prepared, delta=args.delta, seed=args.seed, embedder=name)
    sources = np.array([p.example.source for p in prepared])
    model.meta = {
        "examples": {s: int((sources == s).sum()) for s in sorted(set(sources))},
        "cross_fitted_auroc": auroc(scores, labels),
        "questions": [str(p) for p in args.queries + args.unanswerable],
        "split": args.split,
        "fitted": time.strftime("%Y-%m-%d"),
    }
    model.save(args.out)
    if args.scores:
        args.scores.write_text(
            "".join(
                json.dumps(
                    {
                        "source": p.example.source,
                        "score": round(float(sc), 5),
                        "correct": bool(ok),
                        "question": p.example.question,
                        "gold": p.example.gold,
                        "answer": text,
                    }
                )
                + "\n"
                for p, sc, ok, text in zip(prepared, scores, labels, answers, strict=True)
            )
        )
    print(f"{'alpha':>6} {'threshold':>10} {'delivered':>10} {'wrong':>6}")
    for alpha, t in model.thresholds.items():
        chosen = scores >= t
        print(f"{alpha:>6} {t:>10.4f} {int(chosen.sum()):>10} {int((chosen & ~labels).sum()):>6}")
    dev = sources == "dev"
    print(
        json.dumps(
            {
                "fit": "answers",
                "out": str(args.out),
                "examples": model.meta["examples"],
                "auroc_crossfit": model.meta["cross_fitted_auroc"],
                "auroc_crossfit_dev": auroc(scores[dev], labels[dev]),
                "thresholds": model.thresholds,
                "delta": args.delta,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )
    return 0


def cmd_fit_intents(args: argparse.Namespace) -> int:
    from serve_app.answers.intent import fit_and_report

    report = fit_and_report(args.turns, args.banking77, args.questions, args.out)
    for label, row in report["per_label"].items():
        print(f"{label:>10}  test {row['test']:>4}  accuracy {row['accuracy']:.3f}")
    print(json.dumps({"fit": "intents", **report}))
    return 0


COMMANDS = {"eval-answers": cmd_eval_answers, "fit-answers": cmd_fit_answers, "fit-intents": cmd_fit_intents}
