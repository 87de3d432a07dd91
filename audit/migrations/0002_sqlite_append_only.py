"""On SQLite too, the ledger refuses UPDATE and DELETE (PostgreSQL's trigger is assistant 0003).

The standalone default runs on SQLite; an edit made with the sqlite3 shell now fails the same
way it does on PostgreSQL, and what gets past it is caught by `audit_verify`.
"""

from django.db import migrations

LEDGER_TABLES = ("assistant_auditrecord", "assistant_auditreference", "assistant_auditflag")


def _refuse(table: str, operation: str) -> str:
    return (
        f"CREATE TRIGGER {table}_refuse_{operation.lower()} BEFORE {operation} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'the audit ledger is append-only: {operation} on {table} "
        "is refused'); END"
    )


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    for table in LEDGER_TABLES:
        for operation in ("UPDATE", "DELETE"):
            schema_editor.execute(_refuse(table, operation), params=None)
    # The head moves forward on every append; it may never disappear.
    schema_editor.execute(_refuse("assistant_audithead", "DELETE"), params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    for table in LEDGER_TABLES:
        for operation in ("update", "delete"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_refuse_{operation}")
    schema_editor.execute("DROP TRIGGER IF EXISTS assistant_audithead_refuse_delete")


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_ledger_tables_moved_here")]

    operations = [migrations.RunPython(install, uninstall)]
