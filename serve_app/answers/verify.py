"""The verifier as the router and the extractive tier use it: one `AnswerChecker` per process.

It reads a question's passages once (`Evidence`, kept in a small LRU for the request's attempts), quotes
the answering unit for the extractive tier, scores any tier's answer (`Verdict`), and says which score a
tenant's answers need: the answer model's Learn-then-Test threshold for the tenant's tolerated share of
wrong answers among delivered ones (`alpha`, default 5%) at the model's risk level delta.
A question about the user's screen ("what does this error mean?") is read together with the screen lines
that ground the turn, so an error code on screen counts as part of what is asked.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from serve_app.answers.compose import compose
from serve_app.answers.evidence import Embed
from serve_app.answers.model import AnswerModel, Evidence, Verdict
from serve_app.lru import LRU
from serve_app.screen.context import grounded_query

log = logging.getLogger(__name__)
NOT_FOUND = "I could not find this in the help center."


@dataclass
class AnswerChecker:
    model: AnswerModel
    embed: Embed | None
    alpha: float = 0.05
    tenant_alpha: Mapping[str, float] = field(default_factory=dict)
    # tenants verified by a model fitted on their own knowledge base (the others: `model`)
    tenant_models: dict[str, AnswerModel] = field(default_factory=dict)
    uncertified: bool = True  # a target the model cannot certify uses its empirical threshold
    cache_size: int = 256
    _cache: LRU[str, Evidence] = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._cache = LRU(self.cache_size)

    @staticmethod
    def question_text(question: str, screen_lines: tuple[str, ...] | list[str] = ()) -> str:
        """What is asked: the question, and the screen lines when it points at the screen ("what does
        this error mean?"); a question that names its subject is read alone, so the rest of a busy
        screen cannot dilute it."""
        return grounded_query(question, list(screen_lines))  # the text retrieval searched for

    def model_for(self, tenant_id: str | None) -> AnswerModel:
        return self.tenant_models.get(tenant_id or "", self.model)

    def evidence(
        self,
        question: str,
        passages: tuple[str, ...] | list[str],
        screen_lines: tuple[str, ...] = (),
        tenant_id: str | None = None,
    ) -> Evidence:
        """The passages read against the question (blocking: embeddings; call it from a thread)."""
        asked = self.question_text(question, screen_lines)
        model = self.model_for(tenant_id)
        key = hashlib.sha256("\x1f".join([str(id(model)), asked, *passages]).encode()).hexdigest()
        with self._lock:
            if (cached := self._cache.lookup(key)) is not None:
                return cached
        ev = model.evidence(asked, passages, self.embed)
        with self._lock:
            self._cache.put(key, ev)
        return ev

    def extractive(
        self,
        question: str,
        passages: tuple[str, ...] | list[str],
        screen_lines: tuple[str, ...] = (),
        tenant_id: str | None = None,
    ) -> tuple[str, float]:
        """(the quoted answer, its verifier score); NOT_FOUND at 0 when the passages have no unit."""
        ev = self.evidence(question, passages, screen_lines, tenant_id)
        text, chosen = compose(ev)
        if chosen is None:
            return NOT_FOUND, 0.0
        return text, self.model_for(tenant_id).unit_verdict(ev, chosen)

    def verify(
        self,
        question: str,
        passages: tuple[str, ...] | list[str],
        answer: str,
        screen_lines: tuple[str, ...] = (),
        tenant_id: str | None = None,
    ) -> Verdict:
        ev = self.evidence(question, passages, screen_lines, tenant_id)
        return self.model_for(tenant_id).verify(ev, answer, tuple(screen_lines))

    def target(self, tenant_id: str | None) -> float:
        """The tenant's tolerated share of wrong answers among delivered ones."""
        return self.tenant_alpha.get(tenant_id, self.alpha) if tenant_id else self.alpha

    def threshold(self, tenant_id: str | None) -> float:
        return self.model_for(tenant_id).threshold(self.target(tenant_id), self.uncertified)

    def certified(self, tenant_id: str | None) -> bool:
        """The tenant's threshold holds its target with the model's guarantee (not a fallback)."""
        return self.model_for(tenant_id).certified(self.target(tenant_id))


def _model(path: Path | None) -> AnswerModel:
    """The model at `path`, loaded once per version of the file: a refit written to the same path (a
    reconfigure after `fit-answers --out` over it) is read again, not served from the cache."""
    if path is None:
        return _load(None, None)
    try:
        stat = path.stat()
    except OSError:
        return _load(path, None)  # AnswerModel.load reports the missing file
    return _load(path, (stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _load(path: Path | None, version: tuple[int, int] | None) -> AnswerModel:
    return AnswerModel.load(path)


def shared_checker(
    path: Path | None = None,
    alpha: float = 0.05,
    tenant_alpha: Mapping[str, float] | None = None,
    tenant_models: Mapping[str, Path] | None = None,
    uncertified: bool = True,
) -> AnswerChecker:
    """A checker on the model at `path` (default: the bundled one), and each tenant's own model where
    one is given, with the process's MiniLM."""
    from serve_app.answers.embedding import local_embed

    embed, _ = local_embed()
    own = {tenant: _model(Path(p)) for tenant, p in (tenant_models or {}).items()}
    checker = AnswerChecker(_model(path), embed, alpha, dict(tenant_alpha or {}), own, uncertified)
    for tenant in [None, *own, *(tenant_alpha or {})]:
        if not checker.certified(tenant):
            log.warning(
                "the answer model for %s cannot certify a %.0f%% wrong-answer target (too few calibration "
                "examples): %s; fit-answers on the tenant's knowledge base",
                f"tenant {tenant}" if tenant else "the other tenants",
                100 * checker.target(tenant),
                "its empirical threshold is used, without the guarantee"
                if uncertified
                else "every answer is declined",
            )
    return checker
