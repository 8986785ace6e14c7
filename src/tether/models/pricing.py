"""USD prices per million tokens, turning usage into cost.

The defaults are list prices at the time of writing, for estimates only: set your own
with `PriceTable({...})` or `TETHER_PRICES` (a JSON file of the same shape). A model
missing from the table is never free: it is charged at `unpriced`, a deliberately high
price, and reported, or refused when `fail_closed` is set.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable", "UnpricedModel"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def __post_init__(self) -> None:
        for name in ("input_per_mtok", "output_per_mtok"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                # A negative price would credit the budget ledger with every call.
                raise UsageError(f"price {name} must be a finite number ≥ 0, got {value!r}")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


DEFAULT_PRICES: dict[str, Price] = {
    # The scripted model is priced like a small real model so demo costs are realistic.
    "scripted": Price(input_per_mtok=0.15, output_per_mtok=0.60),
    "gpt-4o-mini": Price(input_per_mtok=0.15, output_per_mtok=0.60),
    "gpt-4o": Price(input_per_mtok=2.50, output_per_mtok=10.00),
    "gpt-4.1": Price(input_per_mtok=2.00, output_per_mtok=8.00),
    "gpt-4.1-mini": Price(input_per_mtok=0.40, output_per_mtok=1.60),
    "claude-3-5-haiku-latest": Price(input_per_mtok=0.80, output_per_mtok=4.00),
    "claude-sonnet-4-5": Price(input_per_mtok=3.00, output_per_mtok=15.00),
    "claude-haiku-4-5": Price(input_per_mtok=1.00, output_per_mtok=5.00),
    "local": Price(input_per_mtok=0.0, output_per_mtok=0.0),
}

CONSERVATIVE_UNPRICED = Price(input_per_mtok=15.0, output_per_mtok=75.0)
"""What an unknown model is charged: as much as the most expensive common models."""


class UnpricedModel(UsageError):
    """A model with no price while the table fails closed."""


class PriceTable:
    def __init__(
        self,
        prices: dict[str, Price] | None = None,
        *,
        unpriced: Price = CONSERVATIVE_UNPRICED,
        fail_closed: bool = False,
    ) -> None:
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)
        self.unpriced = unpriced
        self.fail_closed = fail_closed

    @classmethod
    def from_env(cls) -> PriceTable:
        table = cls()
        path = os.environ.get("TETHER_PRICES")
        if path:
            table.prices.update(load_prices(Path(path)))
        return table

    def is_priced(self, model: str) -> bool:
        return model in self.prices

    def price(self, model: str) -> Price:
        found = self.prices.get(model)
        if found is not None:
            return found
        if self.fail_closed:
            raise UnpricedModel(
                f"model {model!r} has no price and the price table fails closed: "
                "add it to TETHER_PRICES"
            )
        return self.unpriced

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        return self.price(model).cost(input_tokens, output_tokens)


def load_prices(path: Path) -> dict[str, Price]:
    try:
        data = json.loads(path.read_text())
        return {
            name: Price(
                input_per_mtok=float(p["input_per_mtok"]),
                output_per_mtok=float(p["output_per_mtok"]),
            )
            for name, p in data.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"cannot read prices from {path}: {exc} "
            '(expected {"model": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}})'
        ) from None
