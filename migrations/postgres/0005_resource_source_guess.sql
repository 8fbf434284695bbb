-- Whether a source only guessed this resource (a placeholder: a service an
-- EC2 tag or an agent's listener names, with the kind `service` assumed).
-- A source that declares the id as another kind replaces a guess; it is
-- refused only where another source reported that kind for real.
-- (A constant default: no table rewrite on PostgreSQL 11 and later.)
ALTER TABLE resource_sources ADD COLUMN guess INTEGER NOT NULL DEFAULT 0;
