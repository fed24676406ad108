-- A caller key may have a rate limit of its own (requests per second); NULL means the
-- default, TOKENVEND_KEY_RATE.
ALTER TABLE api_keys ADD COLUMN rate_limit INTEGER;
