-- Experiments: every routed request's arm in each active experiment (its assignment unit with it), and
-- one outcome row per routed request: the implicit outcome the router knows when it answers (escalated,
-- final tier, confidence, cost, latency) and, once the caller says, the explicit one (resolved, rating,
-- comment; POST /v1/feedback updates the row). Tenant-scoped under the same RLS as the rest.
CREATE TABLE request_arms (
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    request_id  uuid NOT NULL,
    experiment  text NOT NULL,
    arm         text NOT NULL,
    unit        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, request_id, experiment)
);
CREATE INDEX request_arms_experiment ON request_arms (experiment, arm, created_at);
ALTER TABLE request_arms ENABLE ROW LEVEL SECURITY;
ALTER TABLE request_arms FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON request_arms
    USING (tenant_id = current_tenant()) WITH CHECK (tenant_id = current_tenant());

CREATE TABLE outcomes (
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    request_id   uuid NOT NULL,
    session_id   uuid,
    escalated    boolean,
    final_tier   text,
    confidence   real,
    cost_usd     numeric(14, 8),
    latency_ms   real,
    resolved     boolean,
    rating       smallint CHECK (rating BETWEEN 1 AND 5),
    comment      text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    feedback_at  timestamptz,
    PRIMARY KEY (tenant_id, request_id)
);
CREATE INDEX outcomes_session ON outcomes (tenant_id, session_id) WHERE session_id IS NOT NULL;
ALTER TABLE outcomes ENABLE ROW LEVEL SECURITY;
ALTER TABLE outcomes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outcomes
    USING (tenant_id = current_tenant()) WITH CHECK (tenant_id = current_tenant());
