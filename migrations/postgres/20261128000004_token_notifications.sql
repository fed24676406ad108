-- A token stored by one replica is announced too, so that the others serve it without
-- asking edX for one of their own.
CREATE TRIGGER tokens_changed AFTER INSERT OR UPDATE ON tokens
    FOR EACH ROW EXECUTE FUNCTION tokenvend_notify_change('tenant_id');
