"""What one billed call cost a tenant (`CostEvent`): the record the cost ledger writes. A leaf: whoever
bills (the router, the knowledge backends' `Usage`) makes events without importing the database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from serve_app.tenancy import validate_tenant_id


@dataclass(frozen=True)
class CostEvent:
    tenant_id: str
    service: str  # frames, embeddings, rerank, llm ...
    provider: str
    model: str = ""
    attempt: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    characters: int = 0  # vision: characters read off the screen (not tokens)
    cost_usd: float = 0.0
    latency_ms: float | None = None
    session_id: uuid.UUID | None = None
    request_id: uuid.UUID | None = None  # one routed request's attempts share it
    tier: str | None = None
    outcome: str | None = None  # llm: accepted | escalated | final | failed | skipped
    confidence: float | None = None
    baseline_usd: float | None = None  # the request on the top tier alone (on its last attempt)

    def __post_init__(self) -> None:
        validate_tenant_id(self.tenant_id)
        if (
            min(self.input_tokens, self.output_tokens, self.images, self.characters) < 0
            or self.cost_usd < 0
            or self.attempt < 1
        ):
            raise ValueError(f"cost event has negative counts, cost or attempt: {self}")
