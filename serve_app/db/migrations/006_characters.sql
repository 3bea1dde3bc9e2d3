-- Screen reads (service 'vision', self-hosted OCR) count the characters they read in a column of their
-- own: they were kept in output_tokens, which mixed them into the token totals. Earlier vision rows move
-- over. The owner is subject to the forced row-level security, so it is lifted for the move alone
-- (inside this migration's transaction).
ALTER TABLE cost_events ADD COLUMN characters bigint NOT NULL DEFAULT 0 CHECK (characters >= 0);
ALTER TABLE cost_events NO FORCE ROW LEVEL SECURITY;
UPDATE cost_events SET characters = output_tokens, output_tokens = 0 WHERE service = 'vision';
ALTER TABLE cost_events FORCE ROW LEVEL SECURITY;
