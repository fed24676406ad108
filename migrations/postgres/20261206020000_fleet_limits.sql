-- Fleet-wide limits (see src/store/fleet.rs). Each replica's heartbeat: the replicas
-- heard from within the heartbeat window are the live ones, and each keeps its share
-- of the per-key, failed-authentication and caller fetch rates.
CREATE TABLE replicas (
    id        TEXT PRIMARY KEY,
    last_seen TIMESTAMPTZ NOT NULL
);

-- Verify cool-downs: a client id (at its token URL) that edX refused at a verify is not
-- verified again, by any replica, before `until`.
CREATE TABLE verify_refusals (
    refusal TEXT PRIMARY KEY,
    until   TIMESTAMPTZ NOT NULL
);
