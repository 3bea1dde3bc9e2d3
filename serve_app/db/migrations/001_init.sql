-- Schema after the seed. Every tenant-scoped table has row-level security (ENABLE + FORCE) keyed on
-- the transaction-local setting app.current_tenant_id; the app role is granted rights in migrate.py.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE FUNCTION current_tenant() RETURNS text LANGUAGE sql STABLE AS
$$ SELECT nullif(current_setting('app.current_tenant_id', true), '') $$;

CREATE TABLE tenants (
    id         text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE knowledge_documents (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    source       text NOT NULL,  -- path relative to the ingested folder, or a URL
    title        text NOT NULL DEFAULT '',
    content_hash text NOT NULL,  -- sha256 of the normalised text: unchanged documents are skipped
    chunk_count  integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, source)
);

CREATE TABLE knowledge_chunks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    document_id bigint NOT NULL REFERENCES knowledge_documents (id) ON DELETE CASCADE,
    ordinal     integer NOT NULL,
    heading     text NOT NULL DEFAULT '',
    content     text NOT NULL,
    embedding   vector(384) NOT NULL,
    tsv         tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('english', heading), 'A') ||
                    setweight(to_tsvector('english', content), 'B')) STORED,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX knowledge_chunks_embedding_hnsw ON knowledge_chunks
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX knowledge_chunks_tsv_gin ON knowledge_chunks USING gin (tsv);
CREATE INDEX knowledge_chunks_tenant ON knowledge_chunks (tenant_id);

CREATE TABLE sessions (
    id         uuid PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    room       text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at   timestamptz
);

CREATE TABLE messages (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cost_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    session_id    uuid,
    service       text NOT NULL,  -- frames, embeddings, rerank, llm ...
    provider      text NOT NULL,
    model         text NOT NULL DEFAULT '',
    attempt       integer NOT NULL DEFAULT 1,
    input_tokens  bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    images        integer NOT NULL DEFAULT 0,
    cost_usd      numeric(14, 8) NOT NULL DEFAULT 0,
    latency_ms    double precision,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cost_events_tenant_time ON cost_events (tenant_id, created_at);

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = current_tenant()) WITH CHECK (id = current_tenant());

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['knowledge_documents', 'knowledge_chunks', 'sessions', 'messages', 'cost_events'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_tenant()) '
                       'WITH CHECK (tenant_id = current_tenant())', t);
    END LOOP;
END $$;
