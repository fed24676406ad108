-- Webhook endpoints (their signing secrets only ever stored sealed) and the outbox of
-- lifecycle events: an event and one delivery row per subscribed endpoint are written
-- before anything is sent, so that a restart loses none. Scheduling times are Unix
-- milliseconds, which compare the same way on every backend.

CREATE TABLE webhooks (
    id                TEXT PRIMARY KEY,
    url               TEXT NOT NULL,
    events            TEXT NOT NULL,
    description       TEXT NOT NULL,
    secret_key_id     TEXT NOT NULL,
    secret_ciphertext BLOB NOT NULL,
    created_at        TEXT NOT NULL
);

CREATE TABLE webhook_events (
    id         TEXT PRIMARY KEY,
    type       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    webhook_id       TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL,
    last_status_code INTEGER,
    next_attempt_ms  INTEGER,
    leased_until_ms  INTEGER,
    updated_ms       INTEGER NOT NULL,
    UNIQUE (event_id, webhook_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_ms);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, updated_ms);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
