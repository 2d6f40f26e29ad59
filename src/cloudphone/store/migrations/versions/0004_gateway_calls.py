"""gateway: messages stored for a sleeping app

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 23:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloudphone.store.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_stored_messages",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("instance_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", cloudphone.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["instance_id"], ["push_instances.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_gateway_stored_messages_account_id"),
        "gateway_stored_messages",
        ["account_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_gateway_stored_messages_expires_at"),
        "gateway_stored_messages",
        ["expires_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_gateway_stored_messages_tenant_id"),
        "gateway_stored_messages",
        ["tenant_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_gateway_stored_messages_instance_id"),
        "gateway_stored_messages",
        ["instance_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_gateway_stored_messages_tenant_id"), table_name="gateway_stored_messages"
    )
    op.drop_index(
        op.f("ix_gateway_stored_messages_instance_id"), table_name="gateway_stored_messages"
    )
    op.drop_index(
        op.f("ix_gateway_stored_messages_expires_at"), table_name="gateway_stored_messages"
    )
    op.drop_index(
        op.f("ix_gateway_stored_messages_account_id"), table_name="gateway_stored_messages"
    )
    op.drop_table("gateway_stored_messages")
