"""On PostgreSQL the ledger refuses UPDATE and DELETE, and its text search gets a GIN index.

On SQLite, where no such trigger is installed, text search gets an FTS5 index kept by triggers.
"""

from django.db import migrations

LEDGER_TABLES = ("assistant_auditrecord", "assistant_auditreference", "assistant_auditflag")

INSTALL = """
CREATE OR REPLACE FUNCTION assistant_audit_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit ledger is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""

SEARCH_INDEX = (
    "CREATE INDEX audit_search_text_idx ON assistant_auditrecord "
    "USING gin (to_tsvector('english'::regconfig, search_text))"
)

SQLITE_SEARCH = (
    "CREATE VIRTUAL TABLE assistant_auditsearch "
    "USING fts5(search_text, tokenize='porter unicode61')",
    "CREATE TRIGGER assistant_auditsearch_insert AFTER INSERT ON assistant_auditrecord "
    "WHEN new.search_text <> '' BEGIN "
    "INSERT OR REPLACE INTO assistant_auditsearch(rowid, search_text) "
    "VALUES (new.sequence, new.search_text); END",
    "CREATE TRIGGER assistant_auditsearch_delete AFTER DELETE ON assistant_auditrecord BEGIN "
    "DELETE FROM assistant_auditsearch WHERE rowid = old.sequence; END",
)


def install(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        for statement in SQLITE_SEARCH:
            schema_editor.execute(statement, params=None)
        return
    if vendor != "postgresql":
        return
    schema_editor.execute(INSTALL, params=None)
    for table in LEDGER_TABLES:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION assistant_audit_refuse_change()"
        )
    # The head moves forward on every append; it may never disappear.
    schema_editor.execute(
        "CREATE TRIGGER assistant_audithead_kept BEFORE DELETE ON assistant_audithead "
        "FOR EACH ROW EXECUTE FUNCTION assistant_audit_refuse_change()"
    )
    schema_editor.execute(SEARCH_INDEX)


def uninstall(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS assistant_auditsearch_delete")
        schema_editor.execute("DROP TRIGGER IF EXISTS assistant_auditsearch_insert")
        schema_editor.execute("DROP TABLE IF EXISTS assistant_auditsearch")
        return
    if vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS audit_search_text_idx")
    schema_editor.execute("DROP TRIGGER IF EXISTS assistant_audithead_kept ON assistant_audithead")
    for table in LEDGER_TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS assistant_audit_refuse_change()")


class Migration(migrations.Migration):
    dependencies = [("assistant", "0002_audit_ledger")]

    operations = [migrations.RunPython(install, uninstall)]
