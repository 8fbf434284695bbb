-- infragraph store, PostgreSQL flavour. Append-only: never edit an applied migration.
-- Times are unix epoch milliseconds (BIGINT); JSON is TEXT. Both backends share
-- one code path through sqlx::Any, which only carries int/float/text/blob.

CREATE TABLE resources (
    id          TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    labels      TEXT NOT NULL DEFAULT '{}',
    attributes  TEXT NOT NULL DEFAULT 'null',
    status      TEXT NOT NULL CHECK (status IN ('present', 'gone')),
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    gone_at     BIGINT,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX resources_kind ON resources (kind);

CREATE TABLE resource_sources (
    resource_id TEXT NOT NULL REFERENCES resources (id),
    source      TEXT NOT NULL,
    name        TEXT,
    labels      TEXT NOT NULL DEFAULT '{}',
    attributes  TEXT NOT NULL DEFAULT 'null',
    status      TEXT NOT NULL CHECK (status IN ('present', 'gone')),
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    gone_at     BIGINT,
    run_id      BIGINT,
    PRIMARY KEY (resource_id, source)
);
CREATE INDEX resource_sources_source ON resource_sources (source, status);

CREATE TABLE relations (
    from_id     TEXT NOT NULL REFERENCES resources (id),
    to_id       TEXT NOT NULL REFERENCES resources (id),
    kind        TEXT NOT NULL,
    attributes  TEXT NOT NULL DEFAULT 'null',
    status      TEXT NOT NULL CHECK (status IN ('present', 'gone')),
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    gone_at     BIGINT,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (from_id, to_id, kind)
);
CREATE INDEX relations_to ON relations (to_id);

CREATE TABLE relation_sources (
    from_id     TEXT NOT NULL,
    to_id       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    source      TEXT NOT NULL,
    attributes  TEXT NOT NULL DEFAULT 'null',
    status      TEXT NOT NULL CHECK (status IN ('present', 'gone')),
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    gone_at     BIGINT,
    run_id      BIGINT,
    PRIMARY KEY (from_id, to_id, kind, source)
);
CREATE INDEX relation_sources_source ON relation_sources (source, status);

CREATE TABLE runs (
    id              BIGSERIAL PRIMARY KEY,
    collector       TEXT NOT NULL,
    scope           TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('ok', 'partial', 'failed')),
    resources_seen  BIGINT NOT NULL DEFAULT 0,
    relations_seen  BIGINT NOT NULL DEFAULT 0,
    created         BIGINT NOT NULL DEFAULT 0,
    updated         BIGINT NOT NULL DEFAULT 0,
    retired         BIGINT NOT NULL DEFAULT 0,
    error           TEXT,
    warnings        TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX runs_collector ON runs (collector, started_at);

-- The change log: one row per create, update (with the diff), retire or revive.
CREATE TABLE changes (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    run_id      BIGINT,
    source      TEXT NOT NULL,
    entity      TEXT NOT NULL CHECK (entity IN ('resource', 'relation')),
    resource_id TEXT NOT NULL,
    to_id       TEXT,
    kind        TEXT,
    op          TEXT NOT NULL CHECK (op IN ('create', 'update', 'retire', 'revive')),
    diff        TEXT NOT NULL DEFAULT 'null'
);
CREATE INDEX changes_resource ON changes (resource_id, at);
CREATE INDEX changes_to ON changes (to_id, at);
CREATE INDEX changes_at ON changes (at);
