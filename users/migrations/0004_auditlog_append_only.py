"""The audit log is append-only in the database: no UPDATE or DELETE of an entry, whatever the code does."""

from django.db import migrations

APPEND_ONLY = """
CREATE FUNCTION users_auditlog_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER users_auditlog_append_only BEFORE UPDATE OR DELETE ON users_auditlog
    FOR EACH ROW EXECUTE FUNCTION users_auditlog_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("users", "0003_auditlog")]

    operations = [
        migrations.RunSQL(
            APPEND_ONLY,
            """
            DROP TRIGGER users_auditlog_append_only ON users_auditlog;
            DROP FUNCTION users_auditlog_append_only();
            """,
        ),
    ]
