-- Each resource and relation row carries a JSON summary of its provenance
-- ([[source, status, first_seen, last_seen, gone_at], ...]), kept by the
-- reconciler next to resource_sources/relation_sources, so that loading the
-- graph reads one row per resource and per relation.
ALTER TABLE resources ADD COLUMN provenance TEXT NOT NULL DEFAULT '[]';
ALTER TABLE relations ADD COLUMN provenance TEXT NOT NULL DEFAULT '[]';
UPDATE resources r SET provenance = COALESCE((
    SELECT json_agg(json_build_array(s.source, s.status, s.first_seen, s.last_seen, s.gone_at) ORDER BY s.source)::text
    FROM resource_sources s WHERE s.resource_id = r.id), '[]');
UPDATE relations r SET provenance = COALESCE((
    SELECT json_agg(json_build_array(s.source, s.status, s.first_seen, s.last_seen, s.gone_at) ORDER BY s.source)::text
    FROM relation_sources s
    WHERE s.from_id = r.from_id AND s.to_id = r.to_id AND s.kind = r.kind), '[]');
