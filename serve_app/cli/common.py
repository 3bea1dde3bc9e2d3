"""Helpers the command groups share: settings overrides, timestamps, a tenant's knowledge context."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from serve_app.inputs import as_utc
from serve_app.settings import Settings

if TYPE_CHECKING:
    from serve_app.costs.usage import TenantBill
    from serve_app.db.database import Database
    from serve_app.knowledge.embedders import Embedder


T = TypeVar("T")


def _timestamp(text: str) -> datetime:
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time in range: {text!r}") from None


def _http_overrides(args: argparse.Namespace) -> dict[str, object]:
    http = {k: v for k, v in (("host", getattr(args, "host", None)), ("port", args.port)) if v is not None}
    return {"http": http} if http else {}


async def _with_knowledge(
    settings: Settings, tenant: str, work: Callable[[Database, Embedder, TenantBill], Awaitable[T]]
) -> T:
    """Runs `work` with the database, the embedder and the tenant's bill: what billed knowledge calls
    (an API embedder, Cohere) cost goes to its cost ledger, flushed before the command ends."""
    from serve_app.costs.ledger import CostLedger
    from serve_app.costs.usage import TenantBill
    from serve_app.db.database import Database
    from serve_app.knowledge.factory import build_embedder

    async with Database.of(settings) as db:
        bill = TenantBill(CostLedger(db), settings.pricing.load(), tenant)
        try:
            return await work(db, build_embedder(settings.knowledge.embedder), bill)
        finally:
            await bill.ledger.close()


def _one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """numpy's BLAS/LAPACK on one thread (eval-router's many small solves are slower threaded)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)
