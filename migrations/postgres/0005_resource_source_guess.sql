-- Whether a source only guessed this resource (a placeholder: a service an
-- EC2 tag or an agent's listener names, with the kind `service` assumed).
-- A source that declares the id as another kind replaces a guess; it is
-- refused only where another source reported that kind for real.
-- (A constant default: no table rewrite on PostgreSQL 11 and later.)
ALTER TABLE resource_sources ADD COLUMN guess INTEGER NOT NULL DEFAULT 0;

-- Provenance written before this column: what agents report as a
-- `service` or an `external_endpoint`, and what EC2 reports as a `service`
-- (a service a tag names), was a placeholder's guess. (A kind an agent
-- took from a declaration reads as real until the agent reports again.)
UPDATE resource_sources SET guess = 1
WHERE (source LIKE 'agent:%'
       AND resource_id IN (SELECT id FROM resources WHERE kind IN ('service', 'external_endpoint')))
   OR (source LIKE 'aws-ec2:%'
       AND resource_id IN (SELECT id FROM resources WHERE kind = 'service'));
