"""Validate the hand-written answer-evaluation sets in this folder.

Checks, for every *.jsonl here: valid JSON per line, ids unique across files, the fields each kind needs,
`split` in {dev, test} and about half/half per kind; for rows with a `doc`: the document exists under the
dataset's docs/, is not a gold document of the public qrels, its `evidence` (at most 12 words) occurs in that
document and the numbers of `answer` occur in it; withheld documents appear in no customer row and match
withheld.txt. Usage: python evals/answers/check.py [DATASET_DIR] (default ../shared/datasets/aws_docs_qa).
Exits 1 and lists the problems when any check fails.
"""

from __future__ import annotations

import collections
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIELDS = {
    "answerable": {"doc", "answer", "evidence"},
    "withheld": {"doc", "answer", "evidence"},
    "account": set(),
    "person": set(),
    "uncovered": set(),
}
LABELS = {"greeting", "thanks", "human", "chatter", "question"}


def normalize(text: str) -> str:
    text = re.sub(r"<a name=[^>]*></a>", " ", text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.replace("\\", "").replace("*", "").replace("`", "")
    return re.sub(r"\s+", " ", text).strip().lower()


def numbers(text: str) -> list[str]:
    return [n.replace(",", "") for n in re.findall(r"\d[\d,.]*\d|\d", text)]


def main() -> int:
    dataset = Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parents[1] / "../shared/datasets/aws_docs_qa")
    docs_dir = dataset / "docs"
    qrels = {
        line.split("\t")[1].strip() for line in (dataset / "qrels/test.tsv").read_text().splitlines()[1:]
    }
    problems: list[str] = []
    ids: set[str] = set()
    rows_by_file: dict[str, list[dict]] = {}
    for path in sorted(HERE.glob("*.jsonl")):
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path.name}:{n}: invalid JSON ({exc})")
                continue
            rows.append(row)
            where = f"{path.name}:{n} {row.get('_id')}"
            if row.get("_id") in ids or not row.get("_id"):
                problems.append(f"{where}: missing or duplicate _id")
            ids.add(row.get("_id"))
            if not str(row.get("text", "")).strip():
                problems.append(f"{where}: empty text")
            if row.get("split") not in ("dev", "test"):
                problems.append(f"{where}: split must be dev or test")
            if path.name == "intents.jsonl":
                if row.get("label") not in LABELS:
                    problems.append(f"{where}: label {row.get('label')!r} not in {sorted(LABELS)}")
                continue
            kind = row.get("kind")
            if kind not in FIELDS:
                problems.append(f"{where}: unknown kind {kind!r}")
                continue
            missing = FIELDS[kind] - {k for k, v in row.items() if str(v).strip()}
            if missing:
                problems.append(f"{where}: missing {sorted(missing)}")
                continue
            if "doc" in FIELDS[kind]:
                doc_path = docs_dir / f"{row['doc']}.md"
                if not doc_path.is_file():
                    problems.append(f"{where}: doc {row['doc']} not under docs/")
                    continue
                if row["doc"] in qrels:
                    problems.append(f"{where}: doc {row['doc']} is a public qrels gold document")
                body = normalize(doc_path.read_text())
                if len(row["evidence"].split()) > 12:
                    problems.append(f"{where}: evidence longer than 12 words")
                if normalize(row["evidence"]) not in body:
                    problems.append(f"{where}: evidence not found in {row['doc']}")
                plain = body.replace(",", "")
                for num in numbers(row["answer"]):
                    if num not in plain:
                        problems.append(f"{where}: answer number {num} not in {row['doc']}")
        rows_by_file[path.name] = rows
    for name, rows in rows_by_file.items():
        key = "label" if name == "intents.jsonl" else "kind"
        per = collections.defaultdict(collections.Counter)
        for row in rows:
            per[row.get(key)][row.get("split")] += 1
        for group, count in per.items():
            if abs(count["dev"] - count["test"]) > 1:
                problems.append(f"{name}: {key} {group} split {dict(count)} is not half/half")
    withheld = {r["doc"] for r in rows_by_file.get("withheld.jsonl", [])}
    customer = {r["doc"] for r in rows_by_file.get("customer.jsonl", [])}
    if withheld & customer:
        problems.append(f"withheld docs also used by customer.jsonl: {sorted(withheld & customer)}")
    if len(withheld) != len(rows_by_file.get("withheld.jsonl", [])):
        problems.append("withheld.jsonl: a document is used twice")
    listed = set((HERE / "withheld.txt").read_text().split()) if (HERE / "withheld.txt").exists() else set()
    if listed != withheld:
        problems.append(f"withheld.txt differs from withheld.jsonl docs: {sorted(listed ^ withheld)}")
    for name, rows in rows_by_file.items():
        counts = collections.Counter(r.get("label") or r.get("kind") for r in rows)
        print(f"{name}: {len(rows)} rows {dict(counts)}")
    for problem in problems:
        print("PROBLEM", problem)
    print(
        json.dumps(
            {
                "check": "answers",
                "files": len(rows_by_file),
                "rows": sum(map(len, rows_by_file.values())),
                "problems": len(problems),
            }
        )
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
