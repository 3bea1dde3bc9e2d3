"""Checks evals/retrieval/paraphrase.jsonl against the dataset: valid rows, unique ids, every `doc` present
under docs/, the gold document of a dev-split query and of no test-split query. Exits 1 listing problems.

    python evals/retrieval/check.py ../shared/datasets/aws_docs_qa
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def gold(dataset: Path, split: str) -> set[str]:
    ids = {json.loads(line)["_id"] for line in (dataset / f"queries.{split}.jsonl").open() if line.strip()}
    with (dataset / "qrels" / "test.tsv").open() as fh:
        return {r["corpus-id"] for r in csv.DictReader(fh, delimiter="\t") if r["query-id"] in ids}


def problems(dataset: Path, path: Path) -> list[str]:
    dev, test = gold(dataset, "dev"), gold(dataset, "test")
    out, seen = [], set()
    for n, line in enumerate(path.open(), 1):
        row = json.loads(line)
        if set(row) != {"_id", "text", "doc"} or not row["text"].strip():
            out.append(f"{n}: needs exactly _id, text, doc")
        if row["_id"] in seen:
            out.append(f"{n}: duplicate id {row['_id']}")
        seen.add(row["_id"])
        doc = row["doc"]
        if not (dataset / "docs" / f"{doc}.md").exists():
            out.append(f"{n}: no document {doc}")
        if doc not in dev:
            out.append(f"{n}: {doc} is not a dev-split gold document")
        if doc in test:
            out.append(f"{n}: {doc} is a test-split gold document")
    return out


if __name__ == "__main__":
    found = problems(Path(sys.argv[1]), HERE / "paraphrase.jsonl")
    print("\n".join(found) or "paraphrase.jsonl: ok")
    sys.exit(1 if found else 0)
