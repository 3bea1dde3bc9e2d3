-- Human handoff (serve_app/handoff): a conversation handed to a person, with what they need to take it
-- over (transcript, summary, what the AI tried), its place in the tenant's queue, who claimed it and
-- when. One open handoff (queued or claimed) per session. Tenant-scoped under the same forced row-level
-- security as the rest. API keys get a role: admin (what every key was so far), agent (a tenant's
-- human agents: the handoff queue), client (a widget: chat, and its own handoffs).
CREATE TABLE handoffs (
    id          uuid PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    session_id  uuid,
    room        text,  -- LiveKit room name (tenant_<id>_<room>); an HTTP conversation gets one at claim
    stream_id   text,
    reason      text NOT NULL CHECK (reason IN ('asked', 'abstained', 'repeated', 'frustrated', 'tool')),
    status      text NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'claimed', 'resolved', 'returned', 'expired')),
    transcript  jsonb NOT NULL DEFAULT '[]',  -- [{"role", "content"}], oldest first
    summary     text NOT NULL DEFAULT '',
    tried       jsonb NOT NULL DEFAULT '{}',  -- the AI's attempts, cited articles, screen text read
    in_hours    boolean NOT NULL DEFAULT true,  -- queued inside service hours
    created_by  text,  -- API key prefix of a client that handed off itself
    claimed_by  text,
    note        text,  -- the person's note when returning the conversation to the AI
    created_at  timestamptz NOT NULL DEFAULT now(),
    claimed_at  timestamptz,
    closed_at   timestamptz,
    CHECK (status = 'queued' OR status = 'expired' OR claimed_at IS NOT NULL)
);
CREATE INDEX handoffs_queue ON handoffs (tenant_id, status, created_at);
CREATE UNIQUE INDEX handoffs_open_session ON handoffs (tenant_id, session_id)
    WHERE status IN ('queued', 'claimed') AND session_id IS NOT NULL;
CREATE INDEX handoffs_session ON handoffs (tenant_id, session_id, closed_at) WHERE session_id IS NOT NULL;
ALTER TABLE handoffs ENABLE ROW LEVEL SECURITY;
ALTER TABLE handoffs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON handoffs
    USING (tenant_id = current_tenant()) WITH CHECK (tenant_id = current_tenant());

ALTER TABLE api_keys ADD COLUMN role text NOT NULL DEFAULT 'admin' CHECK (role IN ('admin', 'agent', 'client'));
