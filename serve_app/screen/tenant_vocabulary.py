"""Each tenant's OCR vocabulary: the base word list plus the words of the tenant's ingested help center.

Spacing is restored by segmenting glued runs into known words (`normalize.Vocabulary`); a product name
that only one tenant's help center uses ("Quuxboard") is a word for that tenant alone. The words come
from the tenant's knowledge chunks, read through a connection that row-level security scopes to the
tenant (`Database.tenant`), so a tenant's vocabulary never holds another tenant's words. Built on first
use (a read waits for it at most `wait_s`) and cached (least recently used tenants dropped); at most
every `refresh_s` a read checks the tenant's documents (how many, when last written) and rebuilds
after an ingest changed them. A database that cannot be reached gives the last vocabulary built, or
the base one: a read never fails for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from serve_app.db.database import Database
from serve_app.lru import LRU
from serve_app.screen.normalize import Vocabulary

log = logging.getLogger(__name__)

_VERSION = "SELECT count(*), max(updated_at) FROM knowledge_documents"
_TEXTS = "SELECT heading, content FROM knowledge_chunks ORDER BY id LIMIT $1"


@dataclass
class _Entry:
    version: tuple[Any, ...]
    vocabulary: Vocabulary
    checked: float


class TenantVocabularies:
    def __init__(
        self,
        db: Database | None,
        base: Vocabulary,
        refresh_s: float = 10.0,
        max_tenants: int = 256,
        max_chunks: int = 20_000,
    ):
        self.db, self.base = db, base
        self.refresh_s, self.max_tenants, self.max_chunks = refresh_s, max_tenants, max_chunks
        self._cache: LRU[str, _Entry] = LRU(max_tenants)
        self._tasks: dict[str, asyncio.Task] = {}  # builds or checks under way
        self.builds = 0

    def cached(self, tenant_id: str) -> Vocabulary:
        entry = self._cache.get(tenant_id)
        return entry.vocabulary if entry else self.base

    async def get(self, tenant_id: str | None, wait_s: float | None = None) -> Vocabulary:
        """The tenant's vocabulary (the base one for no tenant, no database, or a database error).

        A build or check that is due runs as a task of its own; `wait_s` bounds how long this call waits
        for it (a read is not held up by a database that is starting): past it, the last vocabulary
        built, or the base one, and the task carries on for the next read."""
        if self.db is None or not tenant_id:
            return self.base
        entry = self._cache.get(tenant_id)
        if entry is not None and time.monotonic() - entry.checked < self.refresh_s:
            self._cache.touch(tenant_id)
            return entry.vocabulary
        task = self._tasks.get(tenant_id)
        if task is None or task.done():
            task = self._tasks[tenant_id] = asyncio.get_running_loop().create_task(self._refresh(tenant_id))
        try:
            return await asyncio.wait_for(asyncio.shield(task), wait_s)
        except TimeoutError:
            return self.cached(tenant_id)

    async def _refresh(self, tenant_id: str) -> Vocabulary:
        try:
            entry = await self._load(tenant_id, self._cache.get(tenant_id))
        except Exception:
            log.warning("vocabulary of tenant %s unavailable", tenant_id, exc_info=True)
            return self.cached(tenant_id)
        finally:
            self._tasks.pop(tenant_id, None)
        self._cache.put(tenant_id, entry)
        return entry.vocabulary

    async def _load(self, tenant_id: str, entry: _Entry | None) -> _Entry:
        assert self.db is not None
        await self.db.ready()
        async with self.db.tenant(tenant_id) as conn:
            version = tuple(await conn.fetchrow(_VERSION))
            if entry is not None and entry.version == version:
                entry.checked = time.monotonic()
                return entry
            rows = await conn.fetch(_TEXTS, self.max_chunks)
        texts = (f"{row['heading']}\n{row['content']}" for row in rows)
        vocabulary = await asyncio.to_thread(lambda: Vocabulary(self.base.counts).add(texts))
        self.builds += 1
        return _Entry(version, vocabulary, time.monotonic())

    def forget(self, tenant_id: str) -> None:
        """Rebuilt at the next read (an ingest in this process)."""
        self._cache.pop(tenant_id, None)
