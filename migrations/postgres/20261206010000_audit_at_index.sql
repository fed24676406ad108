-- The retention prune (TOKENVEND_AUDIT_RETENTION_DAYS) looks events up by time: without
-- this index each hourly pass walks the whole trail when nothing is old enough.
CREATE INDEX audit_events_at_idx ON audit_events (at);
