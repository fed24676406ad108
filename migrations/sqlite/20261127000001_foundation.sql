-- Tenants, caller keys, tokens and the audit trail. Secrets and tokens are only ever
-- stored sealed (AES-256-GCM) next to the id of the master key that sealed them.

CREATE TABLE tenants (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    client_id         TEXT NOT NULL,
    secret_key_id     TEXT NOT NULL,
    secret_ciphertext BLOB NOT NULL,
    token_url         TEXT,
    scope             TEXT,
    token_type        TEXT NOT NULL CHECK (token_type IN ('jwt', 'bearer')),
    asymmetric_jwt    BOOLEAN NOT NULL DEFAULT FALSE,
    jwks_url          TEXT,
    version           INTEGER NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    key_hash   BLOB NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE tokens (
    tenant_id  TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    key_id     TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    token_type TEXT NOT NULL,
    scope      TEXT,
    fetched_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    request_id TEXT,
    details    TEXT NOT NULL
);
