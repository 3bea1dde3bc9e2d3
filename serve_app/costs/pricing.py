"""Model prices from pricing.yaml (or another file with the same shape) and the cost of one attempt or of
one billed knowledge call (embedding tokens, rerank searches)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml


@dataclass(frozen=True)
class ModelPrice:
    model: str
    provider: str
    input_per_mtok: float
    output_per_mtok: float
    per_image: float = 0.0
    per_search: float = 0.0  # rerank APIs bill per search unit (Cohere: one query over <= 100 documents)

    def cost(self, input_tokens: int, output_tokens: int, images: int = 0, searches: int = 0) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6 + (
            images * self.per_image + searches * self.per_search
        )


class PricingTable:
    def __init__(self, prices: dict[str, ModelPrice], image_usd: float = 0.0):
        self.prices = prices
        self.image_usd = image_usd

    @classmethod
    def load(cls, path: str | Path | None = None) -> PricingTable:
        text = (
            Path(path).read_text()
            if path
            else resources.files("serve_app.costs").joinpath("pricing.yaml").read_text()
        )
        data = yaml.safe_load(text) or {}
        models = data.get("models")
        if not isinstance(models, dict) or not models:
            raise ValueError("pricing table needs a non-empty 'models' mapping")
        prices = {}
        for name, row in models.items():
            try:
                prices[name] = ModelPrice(
                    name,
                    str(row["provider"]),
                    float(row["input_per_mtok"]),
                    float(row["output_per_mtok"]),
                    float(row.get("per_image", 0.0)),
                    float(row.get("per_search", 0.0)),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"pricing table entry {name!r} is malformed: {exc}") from None
            price = prices[name]
            if min(price.input_per_mtok, price.output_per_mtok, price.per_image, price.per_search) < 0:
                raise ValueError(f"pricing table entry {name!r} has a negative price")
        image_usd = float(data.get("image_usd", 0.0))
        if image_usd < 0:
            raise ValueError("pricing table image_usd is negative")
        return cls(prices, image_usd)

    def __getitem__(self, model: str) -> ModelPrice:
        if model not in self.prices:
            raise KeyError(f"no price for model {model!r}; known: {', '.join(sorted(self.prices))}")
        return self.prices[model]


@lru_cache(maxsize=1)
def default_pricing() -> PricingTable:
    return PricingTable.load()


def estimate_tokens(text: str) -> int:
    """Rough token count (about 4 characters a token), for simulations that only have text."""
    return max(1, (len(text) + 3) // 4)
