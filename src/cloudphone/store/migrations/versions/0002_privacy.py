"""privacy: audit trail, subject keys and sealed fields, requests, holds, notices, disclosures

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 22:47:08.419183
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloudphone.store.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Append-only on PostgreSQL: UPDATE is always refused; DELETE only for rows older than the
# cut-off the retention purge announces with SET LOCAL in its own transaction.
_AUDIT_GUARD = (
    """
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$
DECLARE
    cutoff text := current_setting('cloudphone.audit_purge_before', true);
BEGIN
    IF TG_OP = 'DELETE' AND cutoff IS NOT NULL AND cutoff <> ''
       AND OLD.at < cutoff::timestamptz THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP;
END
$$ LANGUAGE plpgsql
""",
    """
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()
""",
)


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=True),
        sa.Column("object_type", sa.String(length=64), nullable=False),
        sa.Column("object_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_object_id"), ["object_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_tenant_id"), ["tenant_id"], unique=False)
    op.create_table(
        "subject_keys",
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("wrapped_key", sa.Text(), nullable=False),
        sa.Column("created_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject_id", name=op.f("pk_subject_keys")),
    )
    with op.batch_alter_table("subject_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subject_keys_tenant_id"), ["tenant_id"], unique=False)

    # Personal fields become sealed under the subject key (longer, opaque text); lookups and
    # per-tenant uniqueness of the address of record move to keyed blind indexes. Sealing
    # needs the master key, so rows written before this revision are not converted here.
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_accounts_tenant_id", type_="unique")
        batch_op.alter_column("address_of_record", type_=sa.Text(), existing_nullable=False)
        batch_op.alter_column("display_name", type_=sa.Text(), existing_nullable=False)
        batch_op.add_column(
            sa.Column("aor_index", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("notice_email", sa.Text(), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_accounts_tenant_id"), ["tenant_id", "aor_index"]
        )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.alter_column("call_push_token", type_=sa.Text(), existing_nullable=True)
        batch_op.alter_column("notice_push_token", type_=sa.Text(), existing_nullable=True)
        batch_op.add_column(sa.Column("call_push_token_index", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("notice_push_token_index", sa.String(length=64), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_devices_call_push_token_index"), ["call_push_token_index"]
        )
        batch_op.create_index(
            batch_op.f("ix_devices_notice_push_token_index"), ["notice_push_token_index"]
        )

    # Data-subject requests, exports, legal holds, post-mortem directives, policy
    # versions, notices and the disclosure log.
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("placed_by", sa.String(length=64), nullable=False),
        sa.Column("placed_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("released_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_holds")),
    )
    with op.batch_alter_table("legal_holds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_legal_holds_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_legal_holds_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "subject_exports",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subject_exports")),
    )
    with op.batch_alter_table("subject_exports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subject_exports_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_subject_exports_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_subject_exports_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "subject_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("received_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("due_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("verified_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("refusal_reason", sa.String(length=500), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subject_requests")),
    )
    with op.batch_alter_table("subject_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subject_requests_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_subject_requests_due_at"), ["due_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_subject_requests_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "disclosures",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("authority", sa.String(length=200), nullable=False),
        sa.Column("legal_basis", sa.String(length=500), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("account_ids", sa.JSON(), nullable=False),
        sa.Column("disclosed_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.Column("notified_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_disclosures_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disclosures")),
    )
    with op.batch_alter_table("disclosures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_disclosures_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "policy_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("changes_data_use", sa.Boolean(), nullable=False),
        sa.Column("effective_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("published_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_policy_versions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_versions")),
    )
    with op.batch_alter_table("policy_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_policy_versions_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "notices",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("topic", sa.String(length=16), nullable=False),
        sa.Column("ref_id", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("failure", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_notices_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_notices_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
    )
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notices_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_notices_ref_id"), ["ref_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_notices_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "post_mortem_directives",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("designated_contact", sa.Text(), nullable=True),
        sa.Column("updated_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "death_recorded_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_post_mortem_directives_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_post_mortem_directives")),
    )
    with op.batch_alter_table("post_mortem_directives", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_post_mortem_directives_tenant_id"), ["tenant_id"], unique=False
        )

    if op.get_bind().dialect.name == "postgresql":
        for statement in _AUDIT_GUARD:  # asyncpg runs one statement per call
            op.execute(statement)


def downgrade() -> None:
    with op.batch_alter_table("post_mortem_directives", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_post_mortem_directives_tenant_id"))

    op.drop_table("post_mortem_directives")
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notices_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_notices_ref_id"))
        batch_op.drop_index(batch_op.f("ix_notices_account_id"))

    op.drop_table("notices")
    with op.batch_alter_table("policy_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_policy_versions_tenant_id"))

    op.drop_table("policy_versions")
    with op.batch_alter_table("disclosures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_disclosures_tenant_id"))

    op.drop_table("disclosures")
    with op.batch_alter_table("subject_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subject_requests_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_subject_requests_due_at"))
        batch_op.drop_index(batch_op.f("ix_subject_requests_account_id"))

    op.drop_table("subject_requests")
    with op.batch_alter_table("subject_exports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subject_exports_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_subject_exports_expires_at"))
        batch_op.drop_index(batch_op.f("ix_subject_exports_account_id"))

    op.drop_table("subject_exports")
    with op.batch_alter_table("legal_holds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_legal_holds_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_legal_holds_account_id"))

    op.drop_table("legal_holds")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_notice_push_token_index"))
        batch_op.drop_index(batch_op.f("ix_devices_call_push_token_index"))
        batch_op.drop_column("notice_push_token_index")
        batch_op.drop_column("call_push_token_index")
        batch_op.alter_column("notice_push_token", type_=sa.String(4096))
        batch_op.alter_column("call_push_token", type_=sa.String(4096))
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_accounts_tenant_id", type_="unique")
        batch_op.drop_column("notice_email")
        batch_op.drop_column("aor_index")
        batch_op.alter_column("display_name", type_=sa.String(200))
        batch_op.alter_column("address_of_record", type_=sa.String(255))
        batch_op.create_unique_constraint(
            "uq_accounts_tenant_id", ["tenant_id", "address_of_record"]
        )
    with op.batch_alter_table("subject_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subject_keys_tenant_id"))
    op.drop_table("subject_keys")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_audit_events_object_id"))
        batch_op.drop_index(batch_op.f("ix_audit_events_at"))
    op.drop_table("audit_events")
