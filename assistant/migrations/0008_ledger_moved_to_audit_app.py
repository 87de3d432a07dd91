# The ledger's models now belong to the audit app (audit 0001); the tables stay as they are.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("assistant", "0007_audit_event_sign_on"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name="auditflag",
                    name="record",
                ),
                migrations.RemoveField(
                    model_name="auditflag",
                    name="target",
                ),
                migrations.DeleteModel(
                    name="AuditHead",
                ),
                migrations.RemoveField(
                    model_name="auditrecord",
                    name="actor",
                ),
                migrations.RemoveField(
                    model_name="auditrecord",
                    name="answer",
                ),
                migrations.RemoveField(
                    model_name="auditreference",
                    name="record",
                ),
                migrations.DeleteModel(
                    name="AuditFlag",
                ),
                migrations.DeleteModel(
                    name="AuditRecord",
                ),
                migrations.DeleteModel(
                    name="AuditReference",
                ),
            ],
            database_operations=[],
        )
    ]
