-- Held tokens belong to one set of credentials: a token fetched with credentials that
-- have changed since must not be stored.
ALTER TABLE tenants ADD COLUMN credentials_version BIGINT NOT NULL DEFAULT 1;
