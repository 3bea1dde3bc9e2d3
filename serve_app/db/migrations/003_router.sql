-- Router attempts in the cost ledger: which request an attempt belongs to, its tier, how it ended, the
-- scorer's confidence, and (on a request's last attempt) what the request would cost on the top tier alone.
ALTER TABLE cost_events
    ADD COLUMN request_id   uuid,
    ADD COLUMN tier         text,
    ADD COLUMN outcome      text,
    ADD COLUMN confidence   real,
    ADD COLUMN baseline_usd numeric(14, 8);
CREATE INDEX cost_events_request ON cost_events (tenant_id, request_id) WHERE request_id IS NOT NULL;
