"""Versioned SQL migrations (serve_app/db/migrations/NNN_name.sql), applied once each, in order.

Run as the schema owner (the embedded server's superuser, or an owner DSN in production). Each file runs in
its own transaction and is recorded with its sha256 in `schema_migrations`; an applied file that changed
is an error. Afterwards the app role gets DML rights only: it owns nothing, is no superuser and cannot
bypass row-level security, which `check_app_role` verifies before the app uses it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from serve_app.errors import MigrationError

MIGRATIONS = "serve_app.db.migrations"
ROLE_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
TENANT_TABLES = (
    "tenants",
    "knowledge_documents",
    "knowledge_chunks",
    "knowledge_postings",
    "knowledge_terms",
    "knowledge_corpus_stats",
    "sessions",
    "messages",
    "cost_events",
    "api_keys",
    "request_arms",
    "outcomes",
    "handoffs",
)
MIGRATION_LOCK = 0x5EED_6A  # pg_advisory_lock key held while migrating (released with the connection)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    found = []
    for entry in resources.files(MIGRATIONS).iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(version), name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    if len({m.version for m in found}) != len(found):
        raise MigrationError("two migration files share a version number")
    return found


async def apply_migrations(admin_dsn: str, app_role: str) -> list[Migration]:
    """Apply pending migrations and grant the app role; returns what was applied now."""
    if not ROLE_RE.fullmatch(app_role):
        raise MigrationError(f"invalid app role name {app_role!r}")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)  # replicas may start together
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        applied = []
        for migration in available():
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version}_{migration.name} changed after it was applied"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied.append(migration)
        await _grant(conn, app_role)
        return applied
    finally:
        await conn.close()


async def _grant(conn: asyncpg.Connection, role: str) -> None:
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    ident = '"' + role + '"'
    if not exists:
        await conn.execute(f"CREATE ROLE {ident} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE")
    await conn.execute(f"GRANT USAGE ON SCHEMA public TO {ident}")
    await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(TENANT_TABLES)} TO {ident}")
    await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ident}")
    # VACUUM/ANALYZE after bulk ingest keeps BM25's index-only scans index-only (PostgreSQL 17+)
    await conn.execute(f"GRANT MAINTAIN ON knowledge_chunks, knowledge_postings, knowledge_terms TO {ident}")
    await conn.execute(f"REVOKE ALL ON schema_migrations FROM {ident}")


async def check_app_role(conn: asyncpg.Connection) -> None:
    """Refuse to serve tenants over a connection that would bypass row-level security."""
    row = await conn.fetchrow(
        "SELECT rolsuper, rolbypassrls, current_user AS name FROM pg_roles WHERE rolname = current_user"
    )
    owns = await conn.fetchval(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user"
    )
    if row["rolsuper"] or row["rolbypassrls"] or owns:
        raise MigrationError(
            f"database role {row['name']!r} bypasses row-level security"
            " (superuser, BYPASSRLS or table owner); connect the app as the non-owner app role"
        )
