-- Every change to a tenant or a caller key is announced on the channel
-- tokenvend_changes, so that every replica applies it at once, whoever wrote it.
CREATE FUNCTION tokenvend_notify_change() RETURNS trigger AS $$
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
        json_build_object('table', TG_TABLE_NAME, 'id', changed ->> TG_ARGV[0])::text
    );
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tokenvend_notify_change('id');

CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION tokenvend_notify_change('id');
