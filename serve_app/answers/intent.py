"""What a chat turn is, before anything is retrieved: a help question, a greeting, thanks, a request for a
person, or chatter the support assistant should decline.

A softmax regression over the bundled MiniLM's sentence embedding of the turn (plus two cues: its length
and a question mark), fitted on labelled examples (`supportgraph fit-intents`: the project's own written
turns and banking77's real support questions) and shipped as `intent_model.json`. Requests for a person
in plain words ("agent", "human", "representative", "talk to someone") are caught by a pattern too, so the
handoff never depends on the model alone. A turn is treated as anything but a question only when the
model is sure (`min_confidence`); when in doubt it is a question and goes to retrieval and the ladder.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from serve_app.answers.evidence import Embed

LABELS = ("question", "greeting", "thanks", "human", "chatter")
BUNDLED = "intent_model.json"
SHORT_TURN = 12  # words: longer turns are questions unless they ask for a person
# plain requests for a person; "agent" alone is common in questions about software agents, so it needs a
# verb of asking or to be (nearly) the whole turn
_PERSON = re.compile(
    r"\b(talk|speak|chat|connect|transfer|put|get)\b[\w\s,']{0,30}\b(human|person|people|someone|somebody|"
    r"agent|representative|rep|operator|manager|supervisor|staff|support team|real one)\b|"
    r"\b(human|live|real)\s+(agent|person|being|support|help|rep)\b|\brepresentative\b",
    re.I,
)
# the word alone: the whole turn, or its last sentence ("this bot is useless. agent. AGENT.")
_PERSON_ALONE = re.compile(
    r"^\W*(agent|human|operator|representative|a person)\W*(please|pls|now)?\W*$", re.I
)
_SENTENCES = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s+")


def asks_for_person(text: str) -> bool:
    """A plain request for a person: in so many words anywhere in the turn, or the bare word ("agent",
    "human please") as the whole turn or its last sentence (not a role named in a list: "Our roles are
    Admin. Agent. Viewer. Which one can export?")."""
    if _PERSON.search(text) or _PERSON_ALONE.search(text):
        return True
    parts = [p for p in _SENTENCES.split(text.strip()) if p.strip()]
    return len(parts) > 1 and bool(_PERSON_ALONE.search(parts[-1]))


# the model alone (no plain request in the words) must be this sure of "human": a question about calls,
# requests or agents ("how many API calls per minute are allowed") must not go to a person
HUMAN_BY_MODEL = 0.7


def cues(texts: list[str]) -> np.ndarray:
    return np.array([[math.log1p(len(t.split())), float("?" in t)] for t in texts])


@dataclass(frozen=True)
class Intent:
    label: str
    confidence: float
    # the turn's sentence embedding the label was read from (retrieval reuses it: one embedding a turn)
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)


class IntentClassifier:
    def __init__(self, weights: np.ndarray, embed: Embed | None = None, embedder: str = ""):
        self.weights = weights  # [features + 1, labels], the intercept row last
        self.embed, self.embedder = embed, embedder
        self.space: str | None = None  # its vectors' space, known when it embeds with `local_embed`

    def _vectors(self, texts: list[str]) -> np.ndarray:
        if self.embed is None:
            from serve_app.answers.embedding import local_embed, local_space

            self.embed, _ = local_embed()
            self.space = local_space()
        return np.asarray(self.embed(texts), dtype=np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Sentence embeddings in the space of the turn vectors it reads labels from."""
        return self._vectors(texts)

    @staticmethod
    def _features(texts: list[str], vectors: np.ndarray) -> np.ndarray:
        return np.hstack([vectors.astype(float), cues(texts), np.ones((len(texts), 1))])

    def _probabilities(self, texts: list[str], vectors: np.ndarray) -> np.ndarray:
        z = self._features(texts, vectors) @ self.weights
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return self._probabilities(texts, self._vectors(texts))

    def classify(self, text: str, min_confidence: float = 0.6) -> Intent:
        """The turn's intent; "question" unless another label is at least `min_confidence` likely (a plain
        request for a person is "human" whatever the model says)."""
        vector = self._vectors([text])
        p = self._probabilities([text], vector)[0]
        best = int(np.argmax(p))
        words = len(text.split())
        if asks_for_person(text) and words <= 25:
            return Intent("human", max(float(p[LABELS.index("human")]), min_confidence), vector[0])
        label = LABELS[best]
        bar = max(min_confidence, HUMAN_BY_MODEL) if label == "human" else min_confidence
        # a greeting, thanks or chatter is short: "hello, my lambda keeps timing out" is a question
        if label != "question" and (p[best] < bar or (label != "human" and words > SHORT_TURN)):
            return Intent("question", float(p[LABELS.index("question")]), vector[0])
        return Intent(label, float(p[best]), vector[0])

    @classmethod
    def fit(
        cls, texts: list[str], labels: list[str], embed: Embed, l2: float = 1e-4, steps: int = 400
    ) -> IntentClassifier:
        """Softmax regression by full-batch gradient descent with momentum (a few hundred small steps);
        `l2` chosen by 5-fold cross-validation on the training turns (1e-4 of 1e-4, 1e-3, 1e-2)."""
        model = cls(np.zeros((0, 0)), embed)
        x = model._features(texts, model._vectors(texts))
        y = np.zeros((len(texts), len(LABELS)))
        y[np.arange(len(texts)), [LABELS.index(label) for label in labels]] = 1
        counts = y.sum(axis=0)
        sample_weight = (y @ (len(texts) / (len(LABELS) * np.maximum(counts, 1))))[:, None]  # balanced
        w = np.zeros((x.shape[1], len(LABELS)))
        velocity = np.zeros_like(w)
        penalty = np.ones((x.shape[1], 1))
        penalty[-1] = 0
        for _ in range(steps):
            z = x @ w
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            grad = x.T @ ((p - y) * sample_weight) / len(texts) + l2 * penalty * w
            velocity = 0.9 * velocity - 0.5 * grad
            w += velocity
        model.weights = w
        return model

    def save(self, path: Path, embedder: str) -> None:
        path.write_text(
            json.dumps({"labels": LABELS, "embedder": embedder, "weights": self.weights.tolist()})
        )

    @classmethod
    def load(cls, path: Path | None = None, embed: Embed | None = None) -> IntentClassifier:
        if path is None:
            text = resources.files("serve_app.answers").joinpath(BUNDLED).read_text()
        else:
            text = Path(path).read_text()
        data = json.loads(text)
        if tuple(data["labels"]) != LABELS:
            raise ValueError(f"intent model has labels {data['labels']}, expected {LABELS}")
        return cls(np.asarray(data["weights"]), embed, data.get("embedder", ""))


def fit_and_report(turns: Path, banking77: Path | None, questions: int, out: Path) -> dict[str, object]:
    """Fit on the turns' dev split (plus `questions` banking77 training questions, labelled "question"),
    report accuracy per label on the turns' test split (plus as many banking77 test questions), save."""
    import csv
    import random

    from serve_app.answers.embedding import local_embed

    rows = [json.loads(line) for line in turns.read_text().splitlines() if line.strip()]
    train = [(r["text"], r["label"]) for r in rows if r.get("split") != "test"]
    test = [(r["text"], r["label"]) for r in rows if r.get("split") == "test"]
    if banking77 is not None and questions > 0:
        rng = random.Random(0)
        for name, target in (("train.csv", train), ("test.csv", test)):
            with (banking77 / name).open() as fh:
                texts = [row["text"] for row in csv.DictReader(fh)]
            target += [(t, "question") for t in rng.sample(texts, min(questions, len(texts)))]
    embed, embedder = local_embed()
    model = IntentClassifier.fit([t for t, _ in train], [label for _, label in train], embed)
    model.save(out, embedder)
    predicted = [model.classify(t).label for t, _ in test]
    per_label = {}
    for label in LABELS:
        mine = [p == y for p, (_, y) in zip(predicted, test, strict=True) if y == label]
        per_label[label] = {"test": len(mine), "accuracy": sum(mine) / len(mine) if mine else float("nan")}
    accuracy = sum(p == y for p, (_, y) in zip(predicted, test, strict=True)) / max(len(test), 1)
    return {"train": len(train), "test": len(test), "accuracy": round(accuracy, 3), "per_label": per_label}
