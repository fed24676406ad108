-- An invalidated token (a caller got a 401 with it) is dropped by every replica: each
-- invalidation is recorded here, by the tenant identity and the token's fingerprint, and
-- announced. Replicas also read the recent rows every second, so that a lost
-- announcement still drops the token within the fleet's bound. Rows are pruned after a
-- day (longer than any token edX hands out lives).
CREATE TABLE token_invalidations (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    tenant_uid  TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX token_invalidations_recorded_at ON token_invalidations (recorded_at);
CREATE INDEX token_invalidations_tenant_id ON token_invalidations (tenant_id);

CREATE TRIGGER token_invalidations_changed AFTER INSERT ON token_invalidations
    FOR EACH ROW EXECUTE FUNCTION tokenvend_notify_change('tenant_id', 'tenant_uid');
