"""The answer model: which unit answers the question (the selector) and whether an answer is supported by
the passages (the verifier), with the verifier's thresholds for each tolerated wrong-answer rate.

Both are logistic regressions on standardised features (`serve_app.routing.confidence.standardized_
logistic`), fitted by `supportgraph fit-answers` (supportgraph_tools/answers/fit.py) and saved as one
JSON file;
the package ships one fitted on the sample help center (`answer_model.json`); a tenant gets its own,
fitted on its knowledge base (`routing.policy.tenant_answer_models`). The thresholds come from Learn then
Test on cross-fitted scores: at a threshold listed for `alpha`, the share of wrong answers among the
delivered ones is <= alpha with probability >= 1 - delta over the calibration draw (`fit.ltt_threshold`);
`empirical` lists the uncertified fallbacks for rates the examples are too few to certify.

Verification of an answer:
- extractive (it quotes units): the verifier's probability from the quoted unit's features, the
  runner-up's, and what the question asked for.
- generated (any LLM tier): every sentence's checkable claims (numbers, names, settings: rare terms)
  must occur in the passages or the screen text, and the answer must rest on a unit that answers the
  question: its score is that unit's verifier probability, times the share of supported sentences.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.answers.evidence import FEATURES as UNIT_FEATURES
from serve_app.answers.evidence import (
    Embed,
    Question,
    Scored,
    analyse,
    asked_quantity,
    states_quantity,
    terms,
    tokens,
    unit_features,
)
from serve_app.answers.units import Unit, units

ANSWER_FEATURES = (
    "p_best",
    "p_second",
    "margin",
    "sem",
    "sem_heading",
    "rare",
    "rare_in_unit",
    "lex_context",
    "number_for_number",
    "wants_number_missing",
    "best_heading_sem",
    "log_terms",
    "log_units",
    "confident_units",
    "rank",
    "same_passage_second",
    "kind_stated",
    "kind_missing",
)
BUNDLED = "answer_model.json"
# what the features mean: 2 scores a customer's message by its ask (evidence.ask_of); a model fitted on
# an earlier meaning is refused (same names, other values: its thresholds would not hold)
FEATURES_VERSION = 2
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CITATION = re.compile(r"\[\d+\]")
_STEP_NUMBER = re.compile(r"(?:^|(?<=\s))\d{1,2}\.(?=\s|$)")


def _listed(thresholds: dict[str, float], alpha: float) -> float:
    held = [(float(a), t) for a, t in thresholds.items() if float(a) <= alpha + 1e-12]
    return max(held)[1] if held else math.inf


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


@dataclass
class Logistic:
    """Standardised logistic regression: `mean`, `scale`, weights with the intercept last."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0)
        z = np.hstack([(x - self.mean) / self.scale, np.ones((len(x), 1))])
        return _sigmoid(z @ self.weights)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "weights": self.weights.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> Logistic:
        return cls(np.asarray(data["mean"]), np.asarray(data["scale"]), np.asarray(data["weights"]))

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, l2: float = 0.1) -> Logistic:
        from serve_app.routing.confidence import standardized_logistic

        return cls(*standardized_logistic(np.asarray(x, float), np.asarray(y, float), l2))


@dataclass(frozen=True)
class Evidence:
    """A question's passages read by the selector: units, their probabilities of carrying the answer."""

    question: Question
    scored: Scored
    p: np.ndarray  # per unit

    @property
    def units(self) -> list[Unit]:
        return self.scored.units

    def ranked(self) -> list[int]:
        return [int(i) for i in np.argsort(-self.p, kind="stable")]


@dataclass(frozen=True)
class Verdict:
    """The verifier's reading of one answer: its probability of being right, and what it rests on."""

    score: float
    kind: str  # extractive | generated | empty
    unit: Unit | None = None
    supported_sentences: float = 1.0


@dataclass
class AnswerModel:
    selector: Logistic
    verifier: Logistic
    thresholds: dict[str, float] = field(default_factory=dict)  # str(alpha) -> threshold at delta
    delta: float = 0.1
    embedder: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    # str(alpha) -> the lowest threshold whose cross-fitted wrong share is <= alpha: no guarantee, the
    # fallback for a rate the calibration examples are too few to certify (routing.policy.
    # uncertified_thresholds)
    empirical: dict[str, float] = field(default_factory=dict)

    # --- the selector -------------------------------------------------------------------------------
    def evidence(self, question: str, passages: tuple[str, ...] | list[str], embed: Embed | None) -> Evidence:
        q = analyse(question)
        scored = unit_features(q, units(passages), embed)
        return Evidence(q, scored, self.selector.predict(scored.x))

    # --- the verifier -------------------------------------------------------------------------------
    def answer_features(self, ev: Evidence, chosen: int) -> np.ndarray:
        return answer_features(ev, chosen)

    def unit_verdict(self, ev: Evidence, chosen: int) -> float:
        return float(self.verifier.predict(self.answer_features(ev, chosen)[None, :])[0])

    def verify(self, ev: Evidence, answer: str, extra: tuple[str, ...] = ()) -> Verdict:
        """How likely `answer` is a right answer, resting on `ev`'s passages (and `extra` text, e.g. the
        screen). An answer that quotes a unit word for word is read as that unit's quote."""
        body = _CITATION.sub("", answer).strip()
        if not body or not ev.units:
            return Verdict(0.0, "empty")
        quoted = [i for i, u in enumerate(ev.units) if u.text in body]
        if not quoted:
            return self._generated(ev, body, extra)
        best = max(quoted, key=lambda i: ev.p[i])
        rest = body
        for i in quoted:
            rest = rest.replace(ev.units[i].text, " ")
        rest = _STEP_NUMBER.sub(" ", rest)  # "1. ... 2. ...": the numbers compose() gave the steps
        if len(rest.split()) >= 3:  # text beside the quotes must be supported like a generated answer's
            beside = self._generated(ev, rest, extra)
            if beside.supported_sentences < 1.0:
                return Verdict(0.0, "extractive", ev.units[best], beside.supported_sentences)
        return Verdict(self.unit_verdict(ev, best), "extractive", ev.units[best])

    def _generated(self, ev: Evidence, body: str, extra: tuple[str, ...]) -> Verdict:
        sentences = [s for s in _SENTENCE.split(body) if len(s.split()) >= 3] or [body]
        source = " ".join([*(f"{u.heading} {u.text}" for u in ev.units), *extra])
        known_tokens = set(tokens(source))
        known_terms = set(terms(source))
        supported = [_supported(s, known_tokens, known_terms, ev.question) for s in sentences]
        share = sum(supported) / len(supported)
        if share < 1.0:
            return Verdict(0.0, "generated", None, share)
        # the unit the answer rests on: the one sharing most of the answer's content (numbers weigh most)
        answer_terms = set(terms(body))
        numbers = {t for t in answer_terms if t[0].isdigit()}
        overlap = [
            len(answer_terms & set(terms(u.text))) + 3 * len(numbers & set(terms(u.text))) for u in ev.units
        ]
        best = int(np.argmax(overlap))
        if overlap[best] == 0:
            return Verdict(0.0, "generated", None, share)
        return Verdict(self.unit_verdict(ev, best), "generated", ev.units[best], share)

    def threshold(self, alpha: float, uncertified: bool = False) -> float:
        """The calibrated threshold for a tolerated wrong-answer rate: the one listed for the largest
        alpha not above it (inf: nothing is delivered at that rate). With `uncertified`, a rate the
        model cannot certify falls back to its empirical threshold."""
        certified = _listed(self.thresholds, alpha)
        if math.isfinite(certified) or not uncertified:
            return certified
        # never below a bar certified for a looser rate: the nearest one that holds
        looser = [
            t for a, t in sorted(self.thresholds.items(), key=lambda x: float(x[0])) if float(a) > alpha
        ]
        floor = next((t for t in looser if math.isfinite(t)), 0.0)
        return max(_listed(self.empirical, alpha), floor)

    def certified(self, alpha: float) -> bool:
        return math.isfinite(_listed(self.thresholds, alpha))

    # --- storage ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "features_version": FEATURES_VERSION,
            "unit_features": list(UNIT_FEATURES),
            "answer_features": list(ANSWER_FEATURES),
            "selector": self.selector.to_dict(),
            "verifier": self.verifier.to_dict(),
            "thresholds": self.thresholds,
            "empirical": self.empirical,
            "delta": self.delta,
            "embedder": self.embedder,
            "meta": self.meta,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnswerModel:
        if (
            tuple(data["unit_features"]) != UNIT_FEATURES
            or tuple(data["answer_features"]) != ANSWER_FEATURES
            or data.get("features_version", 1) != FEATURES_VERSION
        ):
            raise ValueError(
                "the answer model was fitted on other features: refit it (supportgraph fit-answers)"
            )
        return cls(
            Logistic.from_dict(data["selector"]),
            Logistic.from_dict(data["verifier"]),
            {str(k): float(v) for k, v in data.get("thresholds", {}).items()},
            float(data.get("delta", 0.1)),
            data.get("embedder", ""),
            data.get("meta", {}),
            {str(k): float(v) for k, v in data.get("empirical", {}).items()},
        )

    @classmethod
    def load(cls, path: Path | None = None) -> AnswerModel:
        """From `path`, else the bundled model."""
        if path is None:
            text = resources.files("serve_app.answers").joinpath(BUNDLED).read_text()
        else:
            text = Path(path).read_text()
        return cls.from_dict(json.loads(text))


def _supported(sentence: str, known_tokens: set[str], known_terms: set[str], question: Question) -> bool:
    """A sentence's checkable claims occur in the sources: its numbers and its rarer content terms (names,
    settings: terms of 6+ characters or with digits/dots) not already in the question."""
    said = tokens(sentence)
    numbers = [t for t in said if t[0].isdigit()]
    if any(n not in known_tokens for n in numbers):
        return False
    names = [t for t in terms(sentence) if (len(t) >= 6 or any(c.isdigit() for c in t))]
    names = [t for t in names if t not in question.term_set]
    if not names:
        return True
    return sum(t in known_terms for t in names) / len(names) >= 0.8


def answer_features(ev: Evidence, chosen: int) -> np.ndarray:
    """The verifier's features of the answer that quotes unit `chosen` (`ANSWER_FEATURES`)."""
    x, p, q = ev.scored.x, ev.p, ev.question
    col = {name: i for i, name in enumerate(UNIT_FEATURES)}
    others = np.delete(np.arange(len(p)), chosen)
    second = int(others[np.argmax(p[others])]) if len(others) else None
    p_second = float(p[second]) if second is not None else 0.0
    unit = ev.units[chosen]
    # the asked kind of quantity (a duration for "how long are they kept?") stated in the quote, or not
    kind = asked_quantity(q.ask or q.text)
    stated = kind is not None and states_quantity(unit.text, kind)
    return np.array(
        [
            float(p[chosen]),
            p_second,
            float(p[chosen]) - p_second,
            x[chosen, col["sem"]],
            x[chosen, col["sem_heading"]],
            x[chosen, col["rare"]],
            x[chosen, col["rare_in_unit"]],
            x[chosen, col["lex_context"]],
            float(q.wants_number and x[chosen, col["number"]] > 0),
            x[chosen, col["wants_number_missing"]],
            float(x[:, col["sem_heading"]].max()),
            math.log1p(len(q.asked)),
            math.log1p(len(p)),
            float(np.sum(p > 0.5)),
            1.0 / unit.passage,
            float(second is not None and ev.units[second].passage == unit.passage),
            float(stated),
            float(kind is not None and not stated),
        ]
    )
