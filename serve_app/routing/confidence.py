"""Confidence scorers: how likely an answer is right, from the prompt, the answer and its context.

Each scorer is one small class with `score(prompt, response, context="") -> float in [0, 1]`:
- SelfReportedScorer: a confidence the model states ("confidence: 0.8", {"confidence": 0.8}), read by
  `confidence_line`.
- GroundingScorer: share of the answer's figures and content words found in the prompt, the context or
  the answer's own worked steps.
- ShapeScorer: response shape: a final answer present, not truncated, no hedging.
- CalculationScorer: inline calculations ("9 * 2 = 18", "<<9*2=18>>") re-done exactly.
- LearnedScorer: logistic regression over all of the above features, fitted on labelled answers
  (FrugalGPT-style), saved as JSON.

`ConfidenceScorer` combines them for the router: a weighted mean, weights from the live policy.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from serve_app.routing.confidence_line import self_reported

if TYPE_CHECKING:
    from serve_app.routing.providers.base import Prompt
    from serve_app.settings import RoutingPolicySettings

NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?%?"
_NUM_RE = re.compile(NUMBER)
_CALC_RE = re.compile(rf"(?:<<)?\s*({NUMBER}(?:\s*[-+*/x×÷]\s*{NUMBER})+)\s*=\s*({NUMBER})(?:>>)?")
_FINAL_RE = re.compile(r"(####\s*\S+|the (final )?answer is|answer:\s*\S+|\\boxed\{)", re.I)
_HEDGES = (
    "not sure",
    "i think",
    "maybe",
    "might be",
    "unclear",
    "cannot determine",
    "can't determine",
    "i'm unsure",
    "approximately",
    "assum",
    "it seems",
    "probably",
    "unfortunately",
    "i apologize",
)
# an answer that argues with itself ("However, it's not possible to have half a cup...") often went wrong
_REVISIONS = (
    "however",
    "but since",
    "not possible",
    "wait",
    "actually",
    "mistake",
    "let me",
    "re-evaluate",
    "must be",
    "either",
    "cannot",
    "can't have",
    "doesn't make sense",
    "does not make sense",
    "let's denote",
    "let x",
    "assume",
)
_WORD_RE = re.compile(r"[a-z]{4,}")


class Scorer(Protocol):
    name: str

    def score(self, prompt: str, response: str, context: str = "") -> float: ...


def _number(text: str) -> Fraction | None:
    cleaned = text.replace("$", "").replace(",", "").rstrip("%")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def _evaluate(expression: str) -> Fraction | None:
    """Exact value of `a op b op c ...` with * and / before + and - (no parentheses)."""
    tokens = re.findall(r"\$?\d[\d,]*(?:\.\d+)?%?|[-+*/x×÷]", expression.replace(" ", ""))
    values: list[Fraction] = []
    ops: list[str] = []
    expect_number, negate = True, False
    for token in tokens:
        if expect_number and token == "-":  # unary minus
            negate = not negate
            continue
        if expect_number:
            value = _number(token)
            if value is None:
                return None
            values.append(-value if negate else value)
            negate = False
        else:
            ops.append({"x": "*", "×": "*", "÷": "/"}.get(token, token))
        expect_number = not expect_number
    if not values or len(ops) != len(values) - 1:
        return None
    terms, signs = [values[0]], []
    for op, value in zip(ops, values[1:], strict=True):
        if op in "*/":
            if op == "/" and value == 0:
                return None
            terms[-1] = terms[-1] * value if op == "*" else terms[-1] / value
        else:
            signs.append(op)
            terms.append(value)
    total = terms[0]
    for sign, term in zip(signs, terms[1:], strict=True):
        total = total + term if sign == "+" else total - term
    return total


def calculations(response: str) -> tuple[int, int]:
    """(inline calculations found, how many are wrong)."""
    found = wrong = 0
    for expression, result in _CALC_RE.findall(response):
        value, stated = _evaluate(expression), _number(result)
        if value is None or stated is None:
            continue
        found += 1
        if abs(float(value - stated)) > max(1e-6, 0.005 * abs(float(stated))):
            wrong += 1
    return found, wrong


def grounding(prompt: str, response: str, context: str = "") -> float:
    """Share of the response's numbers and content words that appear in the prompt, the context, or as
    results of the response's own calculations (1.0 when it states nothing checkable)."""
    source = f"{prompt}\n{context}".lower()
    known_numbers = {_number(n) for n in _NUM_RE.findall(source)}
    known_numbers |= {_number(r) for _, r in _CALC_RE.findall(response)}
    numbers = [_number(n) for n in _NUM_RE.findall(response)]
    numbers = [n for n in numbers if n is not None]
    words = set(_WORD_RE.findall(response.lower()))
    source_words = set(_WORD_RE.findall(source))
    checks = [n in known_numbers for n in numbers] + (
        [len(words & source_words) / len(words)] if words else []
    )
    return float(np.mean(checks)) if checks else 1.0


def shape(response: str) -> tuple[bool, bool, int]:
    """(has a final answer, looks truncated, hedge count)."""
    text = response.strip()
    truncated = not text or (text[-1] not in ".!?)]}>\"'`*" and not text[-1].isdigit() and len(text) > 200)
    hedges = sum(text.lower().count(h) for h in _HEDGES)
    return bool(_FINAL_RE.search(text)), truncated, hedges


def revisions(response: str) -> int:
    """Self-corrections, case splits and algebraic detours in the answer."""
    text = response.lower()
    return sum(text.count(marker) for marker in _REVISIONS)


def coverage(prompt: str, response: str) -> float:
    """Share of the prompt's figures that the response uses (an answer that ignores givens is suspect)."""
    given = {_number(n) for n in _NUM_RE.findall(prompt)} - {None}
    used = {_number(n) for n in _NUM_RE.findall(response)}
    return len(given & used) / len(given) if given else 1.0


def final_value(response: str) -> Fraction | None:
    """The last figure of the response (where answers usually end)."""
    numbers = _NUM_RE.findall(response)
    return _number(numbers[-1]) if numbers else None


def final_consistent(response: str) -> bool:
    """The final figure was also reached earlier (a computed result or a stated value), not only asserted."""
    numbers = [_number(n) for n in _NUM_RE.findall(response)]
    return len(numbers) > 1 and numbers[-1] is not None and numbers[-1] in numbers[:-1]


FEATURES = (
    "final",
    "truncated",
    "hedges",
    "log_len",
    "calcs",
    "calc_wrong",
    "calc_ok_share",
    "grounding",
    "self_reported",
    "has_self_report",
    "coverage",
    "prompt_log_len",
    "final_is_whole",
    "lines",
    "final_consistent",
    "relative_length",
    "revisions",
)


def features(prompt: str, response: str, context: str = "") -> np.ndarray:
    """The answer's features (`FEATURES`); the same texts are scored many times in evaluations, so
    their values are kept (a small LRU cache)."""
    return np.array(_features(prompt, response, context))


@functools.lru_cache(maxsize=8192)
def _features(prompt: str, response: str, context: str) -> tuple[float, ...]:
    final, truncated, hedges = shape(response)
    found, wrong = calculations(response)
    reported = self_reported(response)
    return tuple(
        [
            float(final),
            float(truncated),
            float(min(hedges, 5)),
            math.log1p(len(response)),
            float(min(found, 20)),
            float(min(wrong, 5)),
            (found - wrong) / found if found else 0.5,
            grounding(prompt, response, context),
            reported if reported is not None else 0.5,
            float(reported is not None),
            coverage(prompt, response),
            math.log1p(len(prompt)),
            float((value := final_value(response)) is not None and value.denominator == 1),
            float(min(response.count("\n") + 1, 30)),
            float(final_consistent(response)),
            math.log1p(len(response)) - math.log1p(len(prompt)),
            float(min(revisions(response), 5)),
        ]
    )


@dataclass(frozen=True)
class SelfReportedScorer:
    name: str = "self_reported"
    default: float = 0.5

    def score(self, prompt: str, response: str, context: str = "") -> float:
        value = self_reported(response)
        return self.default if value is None else value


@dataclass(frozen=True)
class GroundingScorer:
    name: str = "grounding"

    def score(self, prompt: str, response: str, context: str = "") -> float:
        return grounding(prompt, response, context)


@dataclass(frozen=True)
class ShapeScorer:
    """Truncation and hedging; with `require_final` (worked problems) also a stated final answer."""

    name: str = "shape"
    require_final: bool = True

    def score(self, prompt: str, response: str, context: str = "") -> float:
        final, truncated, hedges = shape(response)
        missing_final = self.require_final and not final
        value = 1.0 - (0.4 if missing_final else 0.0) - (0.4 if truncated else 0.0) - 0.1 * min(hedges, 3)
        return max(0.0, value)


@dataclass(frozen=True)
class CalculationScorer:
    name: str = "calculation"

    def score(self, prompt: str, response: str, context: str = "") -> float:
        found, wrong = calculations(response)
        return 0.5 if not found else (found - wrong) / found


Embed = Callable[[list[str]], np.ndarray]
RESPONSE_TAIL = 1500  # characters of the answer that are embedded (where it concludes)


def _project(vectors: np.ndarray, center: np.ndarray, components: np.ndarray) -> np.ndarray:
    return (vectors - center) @ components.T


def _principal(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(center, the top k principal directions): the scatter matrix's top eigenvectors (only those are
    computed; resplits redo this hundreds of times), each signed so its largest entry is positive."""
    from scipy.linalg import eigh

    center = vectors.mean(axis=0)
    centered = vectors - center
    d = centered.shape[1]
    k = min(k, d)
    _, vectors_k = eigh(centered.T @ centered, subset_by_index=[d - k, d - 1])
    components = vectors_k[:, ::-1].T  # largest first
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    return center, components * signs[:, None]


def logistic(z: np.ndarray, y: np.ndarray, l2: float, weights: np.ndarray | None = None) -> np.ndarray:
    """Weights minimising the mean log loss + l2/2 |w|^2 (the last column, the intercept, unpenalised),
    by Newton's method with step halving (the objective is strictly convex: a few steps)."""
    n, d = z.shape
    penalty = np.r_[np.full(d - 1, l2), 0.0]
    w = np.zeros(d) if weights is None else weights.copy()

    def objective(w: np.ndarray) -> float:
        m = z @ w
        return float(np.mean(np.logaddexp(0, m) - y * m) + 0.5 * np.sum(penalty * w * w))

    current = objective(w)
    for _ in range(100):
        p = 1 / (1 + np.exp(-(z @ w)))
        grad = z.T @ (p - y) / n + penalty * w
        hessian = (z * (p * (1 - p))[:, None]).T @ z / n + np.diag(penalty + 1e-12)
        step = np.linalg.solve(hessian, grad)
        scale = 1.0
        while (trial := objective(w - scale * step)) > current + 1e-15 and scale > 1e-6:
            scale /= 2
        w, current = w - scale * step, trial
        if np.max(np.abs(scale * step)) < 1e-10:
            break
    return w


def standardized_logistic(
    x: np.ndarray, y: np.ndarray, l2: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, weights): `logistic` on the standardised columns of x plus an intercept."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    return mean, scale, logistic(z, np.asarray(y, dtype=float), l2)


class LearnedScorer:
    """Logistic regression (L2, Newton's method, no ML dependency) on `features()` and, when fitted
    with an embedder, the top principal components of the question's and the answer's sentence embeddings
    (what kind of question, what kind of answer: FrugalGPT-style scoring of the weak model's reply).
    Saved as JSON; the embedder's name is recorded and checked."""

    name = "learned"

    def __init__(
        self,
        weights: np.ndarray | None = None,
        mean: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        projections: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        embed: Embed | None = None,
        embedder_name: str | None = None,
    ):
        self.weights, self.mean, self.scale = weights, mean, scale
        self.projections = projections or {}
        self.embed, self.embedder_name = embed, embedder_name

    def _features(self, rows: list[tuple[str, str, str]]) -> np.ndarray:
        return np.stack([features(*row) for row in rows])

    def _matrix(self, rows: list[tuple[str, str, str]]) -> np.ndarray:
        x = self._features(rows)
        if not self.projections:
            return x
        if self.embed is None:
            raise RuntimeError("this scorer was fitted with sentence embeddings: give it the embedder")
        texts = {"question": [r[0] for r in rows], "answer": [r[1][-RESPONSE_TAIL:] for r in rows]}
        parts = [x]
        for key, (center, components) in self.projections.items():
            parts.append(_project(np.asarray(self.embed(texts[key]), dtype=float), center, components))
        return np.hstack(parts)

    def fit(
        self,
        rows: list[tuple[str, str, str]],
        labels: list[bool],
        l2: float = 0.2,
        embed: Embed | None = None,
        embedder_name: str | None = None,
        dims: tuple[int, int] = (4, 4),
        projections: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> LearnedScorer:
        """`l2` and `dims` were chosen by 5-fold cross-validation on the GSM8K fit file (AUC 0.77 -> 0.80).
        `projections` (with `embed`): principal components computed elsewhere, e.g. once for all folds
        of a cross-fitting (they use no labels)."""
        y = np.asarray(labels, dtype=float)
        if len(set(labels)) < 2:
            raise ValueError("fitting needs both right and wrong answers")
        self.embed, self.embedder_name, self.projections = embed, embedder_name, {}
        if embed is not None and projections is not None:
            self.projections = projections
        elif embed is not None:
            questions = np.asarray(embed([r[0] for r in rows]), dtype=float)
            answers = np.asarray(embed([r[1][-RESPONSE_TAIL:] for r in rows]), dtype=float)
            self.projections = {
                key: _principal(vectors, k)
                for key, vectors, k in (("question", questions, dims[0]), ("answer", answers, dims[1]))
                if k > 0
            }
        self.mean, self.scale, self.weights = standardized_logistic(self._matrix(rows), y, l2)
        return self

    def scores(self, rows: list[tuple[str, str, str]]) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("LearnedScorer is not fitted")
        z = np.hstack([(self._matrix(rows) - self.mean) / self.scale, np.ones((len(rows), 1))])
        return 1 / (1 + np.exp(-(z @ self.weights)))

    def score(self, prompt: str, response: str, context: str = "") -> float:
        return float(self.scores([(prompt, response, context)])[0])

    def save(self, path: Path) -> None:
        data: dict[str, Any] = {
            "features": FEATURES,
            "weights": self.weights.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
        }
        if self.projections:
            data["embedder"] = self.embedder_name
            data["projections"] = {k: [c.tolist(), m.tolist()] for k, (c, m) in self.projections.items()}
        path.write_text(json.dumps(data))

    @classmethod
    def load(cls, path: Path, embed: Embed | None = None, embedder_name: str | None = None) -> LearnedScorer:
        """Load a saved scorer; one fitted with embeddings needs the same embedder (default: the bundled
        MiniLM, loaded here)."""
        data = json.loads(path.read_text())
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"{path}: fitted on other features {data['features']}")
        projections = {k: (np.asarray(c), np.asarray(m)) for k, (c, m) in data.get("projections", {}).items()}
        if projections and embed is None:
            from serve_app.knowledge.factory import build_embedder
            from serve_app.settings import EmbedderSettings

            embedder = build_embedder(EmbedderSettings())
            embed, embedder_name = (lambda texts: embedder.embed(texts)[0]), embedder.name
        if projections and embedder_name != data.get("embedder"):
            raise ValueError(
                f"{path}: fitted with embedder {data.get('embedder')!r}, given {embedder_name!r}"
            )
        return cls(
            np.asarray(data["weights"]),
            np.asarray(data["mean"]),
            np.asarray(data["scale"]),
            projections,
            embed,
            embedder_name,
        )


HEURISTIC_SCORERS: tuple[Scorer, ...] = (
    SelfReportedScorer(),
    GroundingScorer(),
    ShapeScorer(),
    CalculationScorer(),
)


class ConfidenceScorer:
    """Weighted mean of the configured scorers (weights from the live policy)."""

    def __init__(self, weights: dict[str, float], learned: LearnedScorer | None = None):
        available: dict[str, Scorer] = {
            "self_reported": SelfReportedScorer(),
            "grounding": GroundingScorer(),
            "shape": ShapeScorer(require_final=False),
            "calculation": CalculationScorer(),
        }
        if learned is not None:
            available["learned"] = learned
        self.parts = [(available[name], w) for name, w in weights.items() if w > 0 and name in available]
        if not self.parts:
            raise ValueError("no usable confidence scorer in the weights")

    def score(self, prompt: Prompt, text: str) -> float:
        asked = "\n".join(m.content for m in prompt.messages)
        context = prompt.context_text()
        total = sum(w for _, w in self.parts)
        return sum(w * s.score(asked, text, context) for s, w in self.parts) / total

    @classmethod
    def from_policy(cls, policy: RoutingPolicySettings) -> ConfidenceScorer:
        learned = LearnedScorer.load(policy.learned_scorer) if policy.learned_scorer else None
        return cls(dict(policy.scorer_weights), learned)
