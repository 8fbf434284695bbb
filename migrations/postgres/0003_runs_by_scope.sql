-- The latest run of one collector and scope (an agent's host), read inside
-- each agent report's transaction to refuse reports that arrive out of
-- order.
CREATE INDEX runs_scope ON runs (collector, scope, started_at);
