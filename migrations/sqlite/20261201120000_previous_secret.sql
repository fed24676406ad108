-- A changed client secret is kept sealed (under its own purpose) for a while, so that an
-- unverified rotation whose new secret edX refuses keeps working with the old one.
ALTER TABLE tenants ADD COLUMN previous_secret_key_id TEXT;
ALTER TABLE tenants ADD COLUMN previous_secret_ciphertext BLOB;
ALTER TABLE tenants ADD COLUMN previous_secret_until TEXT;
