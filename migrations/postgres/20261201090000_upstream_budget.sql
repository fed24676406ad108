-- The fleet's upstream budget: one token bucket per edX token-endpoint host, shared by
-- every replica (see src/store/budget.rs). A row is created on the first request to a host.
CREATE TABLE upstream_budget (
    host       TEXT PRIMARY KEY,
    tokens     DOUBLE PRECISION NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
