-- Per-tenant API keys for the HTTP API, stored as SHA-256 of the key (keys are 256-bit random, so a fast
-- hash is enough); the prefix identifies a key in listings. Tenant-scoped under the same RLS as the rest:
-- the key itself names its tenant (sgk_<tenant>_<secret>), so verification runs inside that tenant.
CREATE TABLE api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix      text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, prefix);
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = current_tenant()) WITH CHECK (tenant_id = current_tenant());
