# The ledger's tables were created by the assistant app (0002, 0003, 0005-0007) and keep their
# names and the trigger that refuses edits; this only tells Django that the audit app owns them.
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('assistant', '0007_audit_event_sign_on'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AuditRecord',
                    fields=[
                        ('sequence', models.BigIntegerField(primary_key=True, serialize=False)),
                        ('created_at', models.DateTimeField(db_index=True)),
                        ('event', models.CharField(choices=[('answer', 'Answer'), ('document.uploaded', 'Document uploaded'), ('document.version_added', 'New document version'), ('document.deleted', 'Document deleted'), ('document.access_changed', 'Document readers changed'), ('document.purged', 'Document purged'), ('user.changed', 'User changed'), ('group.changed', 'Group changed'), ('settings.changed', 'Answer settings changed'), ('audit.viewed', 'Audit records viewed'), ('audit.exported', 'Audit records exported'), ('audit.flagged', 'Audit record flagged'), ('token.created', 'API token created'), ('token.revoked', 'API token revoked'), ('user.signed_in', 'Signed in'), ('user.signed_out', 'Signed out'), ('user.locked_out', 'Locked out after failed log-ins')], max_length=40)),
                        ('actor_username', models.CharField(blank=True, max_length=150)),
                        ('details', models.TextField()),
                        ('prev_hash', models.CharField(max_length=64)),
                        ('hash', models.CharField(max_length=64, unique=True)),
                        ('answer_id', models.BigIntegerField(blank=True, db_index=True, null=True)),
                        ('status', models.CharField(blank=True, max_length=12)),
                        ('model_name', models.CharField(blank=True, max_length=200)),
                        ('summary', models.CharField(blank=True, max_length=300)),
                        ('search_text', models.TextField(blank=True)),
                        ('actor', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'assistant_auditrecord',
                        'ordering': ['-sequence'],
                    },
                ),
                migrations.CreateModel(
                    name='AuditHead',
                    fields=[
                        ('id', models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                        ('sequence', models.BigIntegerField()),
                        ('hash', models.CharField(max_length=64)),
                    ],
                    options={
                        'db_table': 'assistant_audithead',
                    },
                ),
                migrations.CreateModel(
                    name='AuditReference',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('kind', models.CharField(choices=[('document.cited', 'Document cited in the answer'), ('document.subject', 'Document acted on'), ('group.acl', "Group in the reader's access filter"), ('group.subject', 'Group acted on'), ('user.subject', 'User acted on')], max_length=20)),
                        ('target_id', models.BigIntegerField()),
                        ('record', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='references', to='audit.auditrecord')),
                    ],
                    options={
                        'db_table': 'assistant_auditreference',
                    },
                ),
                migrations.CreateModel(
                    name='AuditFlag',
                    fields=[
                        ('record', models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, primary_key=True, related_name='flag', serialize=False, to='audit.auditrecord')),
                        ('target', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='flags', to='audit.auditrecord')),
                    ],
                    options={
                        'db_table': 'assistant_auditflag',
                    },
                ),
                migrations.AddIndex(
                    model_name='auditrecord',
                    index=models.Index(fields=['actor', 'sequence'], name='audit_actor_seq_idx'),
                ),
                migrations.AddIndex(
                    model_name='auditrecord',
                    index=models.Index(fields=['actor_username', 'sequence'], name='audit_username_seq_idx'),
                ),
                migrations.AddIndex(
                    model_name='auditrecord',
                    index=models.Index(fields=['event', 'sequence'], name='audit_event_seq_idx'),
                ),
                migrations.AddIndex(
                    model_name='auditrecord',
                    index=models.Index(fields=['status', 'sequence'], name='audit_status_seq_idx'),
                ),
                migrations.AddIndex(
                    model_name='auditrecord',
                    index=models.Index(fields=['model_name', 'sequence'], name='audit_model_seq_idx'),
                ),
                migrations.AddIndex(
                    model_name='auditreference',
                    index=models.Index(fields=['kind', 'target_id'], name='audit_reference_target_idx'),
                ),
            ],
            database_operations=[],
        )
    ]
