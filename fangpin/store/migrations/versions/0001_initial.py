"""Initial warning store: warnings, feedback history, API keys, audit log, model runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "model_runs",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("quarter", sa.String(6), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("counties", sa.JSON(), nullable=False),
        sa.Column("n_warnings", sa.Integer(), nullable=False),
        sa.Column("n_inserted", sa.Integer(), nullable=False),
        sa.Column("n_updated", sa.Integer(), nullable=False),
        sa.Column("n_removed", sa.Integer(), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_model_runs"),
    )
    op.create_index("ix_model_runs_quarter", "model_runs", ["quarter"])

    op.create_table(
        "warnings",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("quarter", sa.String(6), nullable=False),
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("township", sa.String(64), nullable=False),
        sa.Column("village", sa.String(64), nullable=False),
        sa.Column("household_id", sa.String(64), nullable=False),
        sa.Column("head_name", sa.String(64), nullable=True),
        sa.Column("id_masked", sa.String(32), nullable=True),
        sa.Column("level", sa.String(2), nullable=False),
        sa.Column("level_rank", sa.SmallInteger(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("rule_hits", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("measures", sa.JSON(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("ruleset_version", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("deadline", sa.Date(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_warnings"),
        sa.UniqueConstraint("quarter", "household_id", "model_version", name="uq_warnings_key"),
    )
    op.create_index("ix_warnings_place", "warnings", ["county", "township", "village"])
    op.create_index("ix_warnings_order", "warnings", ["quarter", "level_rank", "deadline"])
    op.create_index("ix_warnings_status", "warnings", ["status"])
    op.create_index("ix_warnings_run_id", "warnings", ["run_id"])

    op.create_table(
        "warning_feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("warning_id", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=False),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("visited_at", TS, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("recorded_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["warning_id"], ["warnings.id"], ondelete="CASCADE",
                                name="fk_warning_feedback_warning_id_warnings"),
        sa.PrimaryKeyConstraint("id", name="pk_warning_feedback"),
    )
    op.create_index("ix_warning_feedback_warning_id", "warning_feedback", ["warning_id"])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("scope_county", sa.String(64), nullable=True),
        sa.Column("scope_township", sa.String(64), nullable=True),
        sa.Column("label", sa.String(128), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("endpoint", sa.String(128), nullable=False),
        sa.Column("household_hashes", sa.JSON(), nullable=False),
        sa.Column("n_households", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("levels", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_key_id", "audit_log", ["key_id"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("api_keys")
    op.drop_table("warning_feedback")
    op.drop_table("warnings")
    op.drop_table("model_runs")
