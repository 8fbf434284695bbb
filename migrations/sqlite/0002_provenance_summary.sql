-- Each resource and relation row carries a JSON summary of its provenance
-- ([[source, status, first_seen, last_seen, gone_at], ...]), kept by the
-- reconciler next to resource_sources/relation_sources, so that loading the
-- graph reads one row per resource and per relation.
ALTER TABLE resources ADD COLUMN provenance TEXT NOT NULL DEFAULT '[]';
ALTER TABLE relations ADD COLUMN provenance TEXT NOT NULL DEFAULT '[]';
UPDATE resources SET provenance = COALESCE((
    SELECT json_group_array(json_array(s.source, s.status, s.first_seen, s.last_seen, s.gone_at))
    FROM resource_sources s WHERE s.resource_id = resources.id), '[]');
UPDATE relations SET provenance = COALESCE((
    SELECT json_group_array(json_array(s.source, s.status, s.first_seen, s.last_seen, s.gone_at))
    FROM relation_sources s
    WHERE s.from_id = relations.from_id AND s.to_id = relations.to_id AND s.kind = relations.kind), '[]');
