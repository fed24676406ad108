-- Workload identity: the identity providers whose JWTs are trusted, and the mappings of
-- their tokens' claims to scopes.

CREATE TABLE identity_providers (
    id                   TEXT PRIMARY KEY,
    issuer               TEXT NOT NULL UNIQUE,
    audience             TEXT NOT NULL,
    jwks_url             TEXT,
    jwks                 TEXT,
    max_lifetime_seconds INTEGER NOT NULL,
    subject_claim        TEXT NOT NULL,
    created_at           TEXT NOT NULL,
    CHECK ((jwks_url IS NULL) <> (jwks IS NULL))
);

CREATE TABLE identity_mappings (
    id         TEXT PRIMARY KEY,
    provider   TEXT NOT NULL REFERENCES identity_providers (id) ON DELETE CASCADE,
    claims     TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    cidrs      TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE INDEX identity_mappings_by_provider ON identity_mappings (provider);
