"""Cost of the `adapted` reranker per query: one cross-encoder call over k candidates (one batch), CPU.

    python benchmarks/rerank_bench.py [--model DIR] [--k 5 10 20 30] [--queries 30] [--threads 2]

The model is a tenant's adapted reranker folder (`STATE_DIR/models/TENANT/reranker`) or, by default,
an untrained one made from the bundled MiniLM (the same architecture and cost: a trained model differs
only in its weights). Candidates are real help-center passages (the bundled sample, repeated to k)
truncated like the served model (its `max_length`, default 192 tokens). Prints a table (p50 / p95 ms
per query for each k, ms per candidate, CPU ms per query over all threads) and ends with one JSON
line. Add these figures to the search latency of retrieval_bench.py (database stages at 100k chunks)
for a search with this arm.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from serve_app import samples
from serve_app.knowledge.chunking import chunk_document, iter_files, load_document
from serve_app.knowledge.rerankers import Candidate
from serve_app.knowledge.rerankers.cross_encoder import CrossEncoderReranker
from serve_app.stats import percentile

QUESTIONS = [
    "my export keeps failing because the file is too big",
    "how long do deleted notes stay in the trash before they are gone",
    "the app says my session expired every few minutes",
    "can i get a refund on the yearly plan",
    "sync stopped working on my phone, shows access denied",
]


def passages() -> list[str]:
    root = samples.HELP_CENTER
    return [
        f"{c.heading}\n{c.content}"
        for path in iter_files(root)
        for c in chunk_document(load_document(path, root))
    ]


def untrained_model(folder: Path) -> Path:
    """A cross-encoder straight from the bundled MiniLM (random head): the served architecture."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from serve_app.knowledge.embedders.local import resolve_model

    source = resolve_model("all-MiniLM-L6-v2")
    AutoModelForSequenceClassification.from_pretrained(source, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="an adapted reranker folder (default: untrained MiniLM)")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--queries", type=int, default=30, help="timed queries per k (30)")
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or untrained_model(Path(tmp) / "ce")
        reranker = CrossEncoderReranker(str(folder), max_length=args.max_length, batch_size=max(args.k))
        texts = passages()
        rows = {}
        for k in args.k:
            candidates = [Candidate(texts[i % len(texts)]) for i in range(k)]
            reranker.rerank(QUESTIONS[0], candidates, k)  # warm-up
            took, cpu = [], []
            for n in range(args.queries):
                started, cpu_started = time.perf_counter(), time.process_time()
                reranker.rerank(QUESTIONS[n % len(QUESTIONS)], candidates, k)
                took.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - cpu_started) * 1000)
            rows[k] = {"p50_ms": percentile(took, 0.5), "p95_ms": percentile(took, 0.95)}
            rows[k]["ms_per_candidate"] = rows[k]["p50_ms"] / k
            rows[k]["cpu_ms_per_query"] = percentile(cpu, 0.5)  # all threads: the cost on a busy host
    print(f"{'k':>4} {'p50 ms':>9} {'p95 ms':>9} {'ms/candidate':>13} {'CPU ms/query':>13}")
    for k, r in rows.items():
        print(
            f"{k:>4} {r['p50_ms']:>9.1f} {r['p95_ms']:>9.1f} {r['ms_per_candidate']:>13.1f}"
            f" {r['cpu_ms_per_query']:>13.1f}"
        )
    result = {k: {n: round(v, 2) for n, v in r.items()} for k, r in rows.items()}
    print(
        json.dumps(
            {
                "bench": "rerank",
                "model": str(args.model or "untrained MiniLM cross-encoder"),
                "max_length": args.max_length,
                "threads": args.threads,
                "cpus": os.cpu_count(),
                "per_k": result,
            }
        )
    )


if __name__ == "__main__":
    main()
