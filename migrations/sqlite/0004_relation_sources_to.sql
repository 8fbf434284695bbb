-- When a resource goes or comes back, a run reads every source's assertion
-- of the relations that end at it (relations follow their ends, whoever
-- asserted them): by to_id, which the primary key (from_id first) cannot
-- serve.
CREATE INDEX relation_sources_to ON relation_sources (to_id);
