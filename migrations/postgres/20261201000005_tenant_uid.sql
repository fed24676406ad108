-- Every tenant row gets an identity of its own that a later tenant re-created under the
-- same id never shares. Stored tokens name the identity they were fetched for, so that a
-- token fetched for a deleted tenant can never be stored for, or served to, its successor.
ALTER TABLE tenants ADD COLUMN uid TEXT NOT NULL DEFAULT '';
UPDATE tenants SET uid = gen_random_uuid()::text;
ALTER TABLE tenants ALTER COLUMN uid DROP DEFAULT;
CREATE UNIQUE INDEX tenants_uid ON tenants (uid);

ALTER TABLE tokens ADD COLUMN tenant_uid TEXT NOT NULL DEFAULT '';
UPDATE tokens SET tenant_uid = tenants.uid FROM tenants WHERE tenants.id = tokens.tenant_id;
ALTER TABLE tokens ALTER COLUMN tenant_uid DROP DEFAULT;

-- Change announcements carry the identity too: {"table", "id", "uid"}.
CREATE OR REPLACE FUNCTION tokenvend_notify_change() RETURNS trigger AS $$
DECLARE
    changed jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := to_jsonb(OLD);
    ELSE
        changed := to_jsonb(NEW);
    END IF;
    PERFORM pg_notify(
        'tokenvend_changes',
        json_build_object(
            'table', TG_TABLE_NAME,
            'id', changed ->> TG_ARGV[0],
            'uid', CASE WHEN TG_NARGS > 1 THEN changed ->> TG_ARGV[1] END
        )::text
    );
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

DROP TRIGGER tenants_changed ON tenants;
CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tokenvend_notify_change('id', 'uid');

DROP TRIGGER tokens_changed ON tokens;
CREATE TRIGGER tokens_changed AFTER INSERT OR UPDATE ON tokens
    FOR EACH ROW EXECUTE FUNCTION tokenvend_notify_change('tenant_id', 'tenant_uid');
