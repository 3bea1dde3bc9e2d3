"""The pre-call (query-only) scorer: how likely the cheapest tier is to answer a prompt right, from the
prompt alone, before any tier is called. The Router sends a prompt it scores below
`routing.policy.precall_threshold` straight to the next tier, so the cheap attempt is not paid for a
question it will most likely get wrong (and cannot be wrongly accepted).

The model is two stacked L2 logistic regressions (`confidence.logistic`, no ML dependency):
- background: the prompt's sentence embedding (the bundled MiniLM) and a few text features, fitted on
  many labelled prompts of other kinds (RouteLLM's MMLU logs: prompt and per-model correctness only);
- head: the background's logit, the top principal components of the in-domain prompts' embeddings and
  the text features, fitted on the in-domain prompts (the fit file's). Only the head is refitted when
  the in-domain rows change (cross-fitting, resplits).

Saved as JSON; the embedder's name is recorded and checked, like the learned post-hoc scorer.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.routing.confidence import Embed, _principal, standardized_logistic

QUERY_FEATURES = (
    "log_len",
    "words",
    "numbers",
    "log_max_number",
    "decimals",
    "percents",
    "sentences",
    "choices",
)
_NUMBER_RE = re.compile(r"\d[\d,]*(?:\.\d+)?")
_CHOICE_RE = re.compile(r"^[A-D]\.\s", re.M)
# MMLU's prompt file whose strong-model labels are a grading artefact (strong 0.03; datasets README)
EXCLUDED_BACKGROUND = ("mmlu_high_school_mathematics.csv",)


def query_features(prompt: str) -> np.ndarray:
    numbers = [float(n.replace(",", "")) for n in _NUMBER_RE.findall(prompt)]
    return np.array(
        [
            math.log1p(len(prompt)),
            math.log1p(len(prompt.split())),
            float(min(len(numbers), 20)),
            math.log1p(min(max(numbers, default=0.0), 1e15)),  # a 400-digit figure is not inf
            float(sum(1 for n in numbers if math.isfinite(n) and n != math.floor(n))),
            float(prompt.count("%")),
            float(min(len(re.findall(r"[.!?](?:\s|$)", prompt)), 20)),
            float(len(_CHOICE_RE.findall(prompt))),
        ]
    )


@dataclass(frozen=True)
class Linear:
    """A standardised logistic regression: sigmoid(((x - mean) / scale) . w + b)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # the last one is the intercept

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, l2: float) -> Linear:
        if len(set(np.asarray(y, bool).tolist())) < 2:
            raise ValueError("fitting needs prompts the cheap tier got right and wrong")
        return cls(*standardized_logistic(x, np.asarray(y, float), l2))

    def logit(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weights[:-1] + self.weights[-1]

    def to_json(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in ("mean", "scale", "weights")}

    @classmethod
    def from_json(cls, data: dict[str, list[float]]) -> Linear:
        return cls(*(np.asarray(data[k], float) for k in ("mean", "scale", "weights")))


# the head's: by 5-fold cross-validation (3 repeats) on the GSM8K fit file's prompts, head alone: AUC
# 0.643 at 4 components and L2 0.2 (0.617 with text features only; 0.62-0.64 from 8 to 32 components and
# L2 0.05-1); the background's L2 was set, not searched
BACKGROUND_L2 = 0.01
HEAD_L2 = 0.2
HEAD_COMPONENTS = 4


@dataclass
class QueryScorer:
    """P(the cheapest tier answers right | prompt)."""

    head: Linear
    background: Linear | None
    center: np.ndarray
    components: np.ndarray
    embed: Embed | None = None
    embedder_name: str | None = None
    name: str = "precall"

    @staticmethod
    def background_design(vectors: np.ndarray, prompts: list[str]) -> np.ndarray:
        return np.hstack([vectors, np.stack([query_features(p) for p in prompts])])

    @staticmethod
    def fit_background(vectors: np.ndarray, prompts: list[str], labels: np.ndarray) -> Linear:
        return Linear.fit(QueryScorer.background_design(vectors, prompts), labels, BACKGROUND_L2)

    def _head_design(self, vectors: np.ndarray, prompts: list[str]) -> np.ndarray:
        return head_design(vectors, prompts, self.background, self.center, self.components)

    @classmethod
    def fit(
        cls,
        prompts: list[str],
        labels: Iterable[bool],
        embed: Embed,
        embedder_name: str | None,
        background: Linear | None = None,
    ) -> QueryScorer:
        """The head on in-domain prompts (with the background's logit when one is given)."""
        vectors = np.asarray(embed(prompts), float)
        center, components = _principal(vectors, HEAD_COMPONENTS)
        x = head_design(vectors, prompts, background, center, components)
        head = Linear.fit(x, np.fromiter(labels, bool), HEAD_L2)
        return cls(head, background, center, components, embed, embedder_name)

    def scores(self, prompts: list[str]) -> np.ndarray:
        if self.embed is None:
            raise RuntimeError("the pre-call scorer needs its embedder")
        vectors = np.asarray(self.embed(prompts), float)
        return 1 / (1 + np.exp(-self.head.logit(self._head_design(vectors, prompts))))

    def score(self, prompt: str) -> float:
        return float(self.scores([prompt])[0])

    def save(self, path: Path) -> None:
        data: dict[str, Any] = {
            "kind": "precall",
            "features": QUERY_FEATURES,
            "embedder": self.embedder_name,
            "head": self.head.to_json(),
            "background": self.background.to_json() if self.background else None,
            "center": self.center.tolist(),
            "components": self.components.tolist(),
        }
        path.write_text(json.dumps(data))

    @classmethod
    def load(cls, path: Path, embed: Embed | None = None, embedder_name: str | None = None) -> QueryScorer:
        """Load a saved scorer with the embedder it was fitted with (default: the bundled MiniLM)."""
        data = json.loads(path.read_text())
        if data.get("kind") != "precall" or tuple(data["features"]) != QUERY_FEATURES:
            raise ValueError(f"{path}: not a pre-call scorer of these features")
        if embed is None:
            from serve_app.knowledge.factory import build_embedder
            from serve_app.settings import EmbedderSettings

            embedder = build_embedder(EmbedderSettings())
            embed, embedder_name = (lambda texts: embedder.embed(texts)[0]), embedder.name
        if embedder_name != data["embedder"]:
            raise ValueError(f"{path}: fitted with embedder {data['embedder']!r}, given {embedder_name!r}")
        background = Linear.from_json(data["background"]) if data["background"] else None
        return cls(
            Linear.from_json(data["head"]),
            background,
            np.asarray(data["center"], float),
            np.asarray(data["components"], float),
            embed,
            embedder_name,
        )


def head_design(
    vectors: np.ndarray,
    prompts: list[str],
    background: Linear | None,
    center: np.ndarray,
    components: np.ndarray,
    fixed: np.ndarray | None = None,
) -> np.ndarray:
    """The head's columns: [background logit], principal components of the embedding, text features.
    `fixed`: this function's output for the same rows with no components (the parts that do not
    depend on the in-domain rows), computed once."""
    if fixed is None:
        text = np.stack([query_features(p) for p in prompts])
        logit = [] if background is None else [background.logit(np.hstack([vectors, text]))[:, None]]
        fixed = np.hstack([*logit, text])
    k = 0 if background is None else 1
    return np.hstack([fixed[:, :k], (vectors - center) @ components.T, fixed[:, k:]])


def load_background(
    directory: Path,
    weak_column: str,
    exclude: tuple[str, ...] = EXCLUDED_BACKGROUND,
    rows: int = 0,
    seed: int = 0,
) -> tuple[list[str], np.ndarray]:
    """(prompts, weak model right) from every `*.csv` of a directory of RouteLLM-style logs with
    correctness only (MMLU's), the grading-artefact files left out; `rows` > 0: a random sample of that
    many (seeded), all otherwise."""
    prompts, labels = [], []
    files = sorted(p for p in directory.glob("*.csv") if p.name not in exclude)
    if not files:
        raise ValueError(f"{directory}: no CSV files of prompts and correctness")
    for path in files:
        with path.open(newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), 2):
                try:
                    prompts.append(row["prompt"])
                    labels.append(row[weak_column] == "True")
                except KeyError as exc:
                    raise ValueError(f"{path}:{n}: missing column {exc}") from None
    if 0 < rows < len(prompts):
        keep = np.sort(np.random.default_rng(seed).choice(len(prompts), rows, replace=False))
        return [prompts[i] for i in keep], np.array(labels, bool)[keep]
    return prompts, np.array(labels, bool)


def background_model(
    directory: Path,
    weak_column: str,
    embed: Embed,
    embedder_name: str,
    cache_dir: Path | None = None,
    rows: int = 0,
) -> Linear:
    """The background model fitted on a directory of prompt/correctness logs (`load_background`). With
    `cache_dir`, kept there as JSON under a key of the files' contents, the column, the embedder and
    the model's settings (embedding ~14,000 prompts takes minutes on two cores; the fit is the same)."""
    files = sorted(p for p in directory.glob("*.csv") if p.name not in EXCLUDED_BACKGROUND)
    key = hashlib.sha256(
        json.dumps([weak_column, embedder_name, BACKGROUND_L2, QUERY_FEATURES, rows]).encode()
        + b"".join(p.name.encode() + hashlib.sha256(p.read_bytes()).digest() for p in files)
    ).hexdigest()[:16]
    cached = cache_dir / f"precall-background-{key}.json" if cache_dir else None
    if cached is not None and cached.exists():
        return Linear.from_json(json.loads(cached.read_text()))
    prompts, labels = load_background(directory, weak_column, rows=rows)
    model = QueryScorer.fit_background(np.asarray(embed(prompts), float), prompts, labels)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(model.to_json()))
    return model
