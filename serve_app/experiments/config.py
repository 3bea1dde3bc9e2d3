"""Experiments as configuration, and sticky assignment.

An experiment has a name, arms with weights, the unit it splits (tenant, session or request), a control
arm and an optional [start, stop) window. A unit's arm is a hash of the experiment's salt (its name) and
the unit id through `assign_arm`: the same unit always gets the same arm, and since each experiment hashes
with its own name, the arms of one experiment are independent of another's.

The experiments arrive in the `experiments` settings section and as the `experiments` key of the
KnowledgeBase and Router `user_config` (`live_config()`), so they change without a restart. The reranker
used for retrieval comes from the first active experiment whose arms are all reranker arms; without one,
`knowledge.ab_weights` / `ab_split_by` is the default experiment `reranker`, hashed with no salt so its
units keep the arm they had before experiments existed.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Unit = Literal["tenant", "session", "request"]
DEFAULT_RERANKER_EXPERIMENT = "reranker"


def assign_arm(arms: dict[str, float], unit: str) -> str:
    """Deterministic weighted split: the same unit (tenant id or request id) always gets the same arm."""
    if not arms:
        raise ValueError("at least one arm")
    total = sum(arms.values())
    if total <= 0 or any(w < 0 for w in arms.values()):
        raise ValueError("arm weights must be >= 0 and not all 0")
    point = int.from_bytes(hashlib.blake2b(unit.encode(), digest_size=8).digest(), "big") / 2**64 * total
    for name, weight in sorted(arms.items()):
        if point < weight:
            return name
        point -= weight
    return sorted(arms)[-1]


class ExperimentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="the experiment's name")
    arms: dict[str, float] = Field(..., description="arm -> weight (share of units)")
    unit: Unit = Field("tenant", description="what gets an arm: a tenant, a session or a request")
    control: str | None = Field(None, description="the arm others are compared to (default: the first)")
    start: datetime | None = Field(None, description="assign from (inclusive; naive: UTC)")
    stop: datetime | None = Field(None, description="assign until (exclusive; naive: UTC)")
    salt: str | None = Field(None, description="hash salt (default: the name; '' hashes the unit alone)")

    @model_validator(mode="after")
    def _check(self) -> ExperimentSettings:
        if not self.arms or any(w < 0 for w in self.arms.values()) or not sum(self.arms.values()) > 0:
            raise ValueError(f"experiment {self.name!r}: arm weights must be >= 0, not all 0")
        if self.control is not None and self.control not in self.arms:
            raise ValueError(f"experiment {self.name!r}: control {self.control!r} is not an arm")
        if self.start and self.stop and _utc(self.start) >= _utc(self.stop):
            raise ValueError(f"experiment {self.name!r}: start must be before stop")
        return self

    @property
    def control_arm(self) -> str:
        return self.control or next(iter(self.arms))

    def active(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        return (self.start is None or _utc(self.start) <= now) and (
            self.stop is None or now < _utc(self.stop)
        )

    def unit_id(self, tenant_id: str, session_id: str | None, request_id: str) -> str:
        """The id of the unit this experiment splits; a request without a session is its own unit."""
        if self.unit == "tenant":
            return tenant_id
        if self.unit == "session" and session_id:
            return session_id
        return request_id

    def arm_of(self, unit_id: str) -> str:
        salt = self.name if self.salt is None else self.salt
        return assign_arm(self.arms, f"{salt}:{unit_id}" if salt else unit_id)


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Assignment:
    experiment: str
    arm: str
    unit: str  # the unit's id (tenant, session or request id)

    def to_dict(self) -> dict[str, str]:
        return {"experiment": self.experiment, "arm": self.arm, "unit": self.unit}


def default_reranker_experiment(ab_weights: Mapping[str, float], split_by: str) -> ExperimentSettings | None:
    """`knowledge.ab_weights` as the experiment `reranker` (no salt: today's arms stay where they were)."""
    if not ab_weights or not sum(ab_weights.values()) > 0:
        return None
    return ExperimentSettings(name=DEFAULT_RERANKER_EXPERIMENT, arms=dict(ab_weights), unit=split_by, salt="")


class Experiments:
    """The configured experiments (live: `configure()` replaces them) and the reranker arms they know."""

    def __init__(
        self,
        experiments: Iterable[ExperimentSettings | Mapping[str, Any]] = (),
        rerankers: Iterable[str] = (),
        default: ExperimentSettings | None = None,
    ):
        self.rerankers = frozenset(rerankers)
        self.default = default
        self.configure(experiments)

    def configure(self, experiments: Iterable[ExperimentSettings | Mapping[str, Any]]) -> None:
        items = [e if isinstance(e, ExperimentSettings) else ExperimentSettings(**e) for e in experiments]
        names = [e.name for e in items]
        if len(set(names)) != len(names):
            raise ValueError("experiment names must be unique")
        self.items = {e.name: e for e in items}

    def all(self) -> dict[str, ExperimentSettings]:
        """The configured experiments, and the default reranker experiment unless one is configured."""
        found = dict(self.items)
        if self.default is not None and self._reranker_experiment(found.values()) is None:
            found.setdefault(self.default.name, self.default)
        return found

    def get(self, name: str) -> ExperimentSettings | None:
        return self.all().get(name)

    def _reranker_experiment(
        self, items: Iterable[ExperimentSettings], now: datetime | None = None
    ) -> ExperimentSettings | None:
        for e in items:
            if self.rerankers and set(e.arms) <= self.rerankers and e.active(now):
                return e
        return None

    def reranker(self, now: datetime | None = None) -> ExperimentSettings | None:
        """The experiment that decides the reranker: the first active one of reranker arms, else default."""
        return self._reranker_experiment(self.items.values(), now) or self.default

    def assign(
        self,
        tenant_id: str,
        session_id: str | uuid.UUID | None,
        request_id: str | uuid.UUID,
        now: datetime | None = None,
    ) -> list[Assignment]:
        """The request's arm in every active experiment (the reranker one included)."""
        session = str(session_id) if session_id else None
        out = []
        for e in self.all().values():
            if e.active(now):
                unit = e.unit_id(tenant_id, session, str(request_id))
                out.append(Assignment(e.name, e.arm_of(unit), unit))
        return out

    def reranker_arm(self, assignments: Iterable[Assignment], now: datetime | None = None) -> str | None:
        """The reranker arm among a request's assignments (None: no reranker experiment)."""
        chosen = self.reranker(now)
        return next((a.arm for a in assignments if chosen and a.experiment == chosen.name), None)


def live_config(experiments: Iterable[ExperimentSettings]) -> dict[str, Any]:
    """The `experiments` key of a deployment's user_config."""
    return {"experiments": [e.model_dump(mode="json") for e in experiments]}
