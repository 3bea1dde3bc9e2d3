"""What one billed knowledge call used (embedding tokens, rerank searches), before pricing. The backend
that made the call reports it; whoever served the tenant prices it and records it in the ledger."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serve_app.costs.events import CostEvent
from serve_app.costs.pricing import PricingTable

if TYPE_CHECKING:
    from serve_app.costs.ledger import CostLedger


@dataclass(frozen=True)
class Usage:
    service: str  # embeddings | rerank
    model: str  # a row of the pricing table
    input_tokens: int = 0
    searches: int = 0

    def __post_init__(self) -> None:
        if self.input_tokens < 0 or self.searches < 0:
            raise ValueError(f"usage has negative counts: {self}")

    def split(self, weights: list[int]) -> list[Usage]:
        """Shares in proportion to `weights` (largest remainders, so the shares add up exactly): one
        batched call's bill divided over the requests in the batch."""
        total = sum(weights)
        if not weights or total <= 0 or min(weights) < 0:
            raise ValueError("split needs non-negative weights with a positive sum")

        def shares(amount: int) -> list[int]:
            exact = [amount * w / total for w in weights]
            out = [int(x) for x in exact]
            by_remainder = sorted(range(len(weights)), key=lambda i: out[i] - exact[i])
            for i in by_remainder[: amount - sum(out)]:
                out[i] += 1
            return out

        return [
            Usage(self.service, self.model, t, s)
            for t, s in zip(shares(self.input_tokens), shares(self.searches), strict=True)
        ]

    def event(
        self,
        tenant_id: str,
        prices: PricingTable,
        *,
        request_id: uuid.UUID | None = None,
    ) -> CostEvent:
        price = prices[self.model]
        return CostEvent(
            tenant_id=tenant_id,
            service=self.service,
            provider=price.provider,
            model=self.model,
            input_tokens=self.input_tokens,
            cost_usd=price.cost(self.input_tokens, 0, searches=self.searches),
            request_id=request_id,
        )


class TenantBill:
    """Prices one tenant's billed knowledge calls and records them in a ledger; `usd` totals them."""

    def __init__(self, ledger: CostLedger, prices: PricingTable, tenant_id: str):
        self.ledger, self.prices, self.tenant_id = ledger, prices, tenant_id
        self.usd = 0.0
        self.calls = 0

    def __call__(self, usage: Usage) -> None:
        event = usage.event(self.tenant_id, self.prices)
        self.ledger.record(event)
        self.usd += event.cost_usd
        self.calls += 1
