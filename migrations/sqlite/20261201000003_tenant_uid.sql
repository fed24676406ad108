-- Every tenant row gets an identity of its own that a later tenant re-created under the
-- same id never shares. Stored tokens name the identity they were fetched for, so that a
-- token fetched for a deleted tenant can never be stored for, or served to, its successor.
ALTER TABLE tenants ADD COLUMN uid TEXT NOT NULL DEFAULT '';
UPDATE tenants SET uid = lower(hex(randomblob(16)));
CREATE UNIQUE INDEX tenants_uid ON tenants (uid);

ALTER TABLE tokens ADD COLUMN tenant_uid TEXT NOT NULL DEFAULT '';
UPDATE tokens SET tenant_uid = (SELECT uid FROM tenants WHERE tenants.id = tokens.tenant_id);
