-- Workload identity: the identity providers whose JWTs are trusted, and the mappings of
-- their tokens' claims to scopes. Both are announced like caller keys, so that every
-- replica applies a change (above all a deletion) at once.

CREATE TABLE identity_providers (
    id                   TEXT PRIMARY KEY,
    issuer               TEXT NOT NULL UNIQUE,
    audience             TEXT NOT NULL,
    jwks_url             TEXT,
    jwks                 TEXT,
    max_lifetime_seconds INTEGER NOT NULL,
    subject_claim        TEXT NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    CHECK ((jwks_url IS NULL) <> (jwks IS NULL))
);

CREATE TABLE identity_mappings (
    id         TEXT PRIMARY KEY,
    provider   TEXT NOT NULL REFERENCES identity_providers (id) ON DELETE CASCADE,
    claims     TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    cidrs      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX identity_mappings_by_provider ON identity_mappings (provider);

CREATE TRIGGER identity_providers_changed AFTER INSERT OR UPDATE OR DELETE ON identity_providers
    FOR EACH ROW EXECUTE FUNCTION tokenvend_notify_change('id');

CREATE TRIGGER identity_mappings_changed AFTER INSERT OR UPDATE OR DELETE ON identity_mappings
    FOR EACH ROW EXECUTE FUNCTION tokenvend_notify_change('id');
