"""Per-tenant thresholds calibrated online from outcomes that arrive later, under the same bound as
`eval-router`'s guaranteed threshold (`risk`: Learn then Test, exact binomial, fixed sequence).

An outcome is one cheap-tier answer that was later judged: its tenant, the tier, the confidence the
router gave it and whether it was right (a user's feedback, a resolved ticket, or a judged sample). The
loss is an accepted wrong answer: at threshold t a wrong answer with confidence >= t would have been
sent. For each tenant and tier the calibrator picks the lowest threshold whose rate of accepted wrong
answers is <= `max_accepted_wrong` with probability >= 1 - delta. The sample must be of all the tier's
answers, escalated ones included (the router holds the cheap answer before it escalates), so that the
rate is over requests; a tenant (or tier) with fewer than `min_outcomes` outcomes, or whose data
certify no threshold, keeps the global one.

The result goes to the Router deployment as `user_config` (`tenant_thresholds`), no redeploy needed.
Ray-free.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve_app.routing.risk import Bound, Calibrated, calibrate


@dataclass(frozen=True)
class Outcome:
    tenant_id: str
    tier: str
    confidence: float  # what the router's scorer gave the answer
    correct: bool


@dataclass
class TenantCalibrator:
    max_accepted_wrong: float = 0.05
    delta: float = 0.1
    min_outcomes: int = 100
    bound: Bound = "binomial"
    max_outcomes: int = 5000  # the most recent ones per tenant and tier (traffic drifts)

    def __post_init__(self) -> None:
        if not 0 < self.max_accepted_wrong < 1 or not 0 < self.delta < 1:
            raise ValueError("max_accepted_wrong and delta must be in (0, 1)")
        self._seen: dict[tuple[str, str], list[tuple[float, bool]]] = defaultdict(list)

    def add(self, outcomes: Iterable[Outcome]) -> None:
        for o in outcomes:
            if not 0 <= o.confidence <= 1:
                raise ValueError(f"confidence {o.confidence} is not in [0, 1]")
            seen = self._seen[o.tenant_id, o.tier]
            seen.append((o.confidence, o.correct))
            del seen[: -self.max_outcomes]

    def count(self, tenant_id: str, tier: str) -> int:
        return len(self._seen.get((tenant_id, tier), ()))

    def _calibrated(self, seen: list[tuple[float, bool]]) -> Calibrated:
        scores = np.array([s for s, _ in seen], dtype=float)
        wrong = np.array([not ok for _, ok in seen])
        return calibrate(
            scores, wrong, np.zeros(len(seen), bool), self.max_accepted_wrong, self.delta, self.bound
        )

    def calibrated(self, tenant_id: str, tier: str) -> Calibrated | None:
        """The tenant's calibration for the tier, or None below `min_outcomes` (the global threshold)."""
        seen = self._seen.get((tenant_id, tier), [])
        return self._calibrated(seen) if len(seen) >= self.min_outcomes else None

    def pooled(self, tier: str) -> Calibrated | None:
        """All tenants' outcomes of the tier together: a global threshold under the same bound."""
        seen = [x for (_, t), xs in self._seen.items() if t == tier for x in xs]
        return self._calibrated(seen) if len(seen) >= self.min_outcomes else None

    def thresholds(self) -> dict[str, dict[str, float]]:
        """tenant -> tier -> threshold, for tenants with enough outcomes that certify a threshold."""
        out: dict[str, dict[str, float]] = defaultdict(dict)
        for tenant, tier in sorted(self._seen):
            chosen = self.calibrated(tenant, tier)
            if chosen is not None and np.isfinite(chosen.threshold):
                out[tenant][tier] = round(chosen.threshold, 6)
        return dict(out)

    def user_config(self, policy: dict[str, Any]) -> dict[str, Any]:
        """The Router's `user_config` (`routing.policy`) with these per-tenant thresholds in it."""
        return {**policy, "tenant_thresholds": self.thresholds()}
