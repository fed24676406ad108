-- Where the proxy sends a tenant's edX API calls; NULL means the origin of its token URL.
ALTER TABLE tenants ADD COLUMN api_base_url TEXT;
