"""Levels by risk and 保障缺口 tasks: warnings gain the figures' base rate, 其他因素, reference
period and the capacity deferral; level cut-offs per township and quarter (what the API needs to
give the batch's level); tasks routed to departments.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("warnings") as b:
        b.add_column(sa.Column("base_rate", sa.Float(), nullable=True))
        b.add_column(sa.Column("other_pp", sa.Float(), nullable=True))
        b.add_column(sa.Column("reference_period", sa.String(32), nullable=True))
        b.add_column(sa.Column("deferred", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("warnings") as b:  # the default only filled existing rows
        b.alter_column("deferred", server_default=None)

    op.create_table(
        "level_thresholds",
        sa.Column("quarter", sa.String(6), nullable=False),
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("township", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("t_red", sa.Float(), nullable=True),
        sa.Column("t_yellow", sa.Float(), nullable=True),
        sa.Column("t_blue", sa.Float(), nullable=True),
        sa.Column("t_capacity", sa.Float(), nullable=True),
        sa.Column("n_in_scope", sa.Integer(), nullable=False),
        sa.Column("n_red_wanted", sa.Integer(), nullable=False),
        sa.Column("n_red", sa.Integer(), nullable=False),
        sa.Column("n_yellow", sa.Integer(), nullable=False),
        sa.Column("n_blue", sa.Integer(), nullable=False),
        sa.Column("shortfall", sa.Integer(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("computed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("quarter", "county", "township", "model_version", name="pk_level_thresholds"),
    )

    op.create_table(
        "tasks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("quarter", sa.String(6), nullable=False),
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("township", sa.String(64), nullable=False),
        sa.Column("village", sa.String(64), nullable=False),
        sa.Column("household_id", sa.String(64), nullable=False),
        sa.Column("head_name", sa.String(64), nullable=True),
        sa.Column("id_masked", sa.String(32), nullable=True),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("gap", sa.String(32), nullable=False),
        sa.Column("department", sa.String(32), nullable=False),
        sa.Column("measure", sa.String(128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("ruleset_version", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("deadline", sa.Date(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.UniqueConstraint("quarter", "household_id", "rule_id", name="uq_tasks_key"),
    )
    op.create_index("ix_tasks_place", "tasks", ["county", "township", "village"])
    op.create_index("ix_tasks_order", "tasks", ["quarter", "deadline"])
    op.create_index("ix_tasks_department", "tasks", ["department"])
    op.create_index("ix_tasks_status", "tasks", ["status"])
    op.create_index("ix_tasks_run_id", "tasks", ["run_id"])


def downgrade() -> None:
    op.drop_table("tasks")
    op.drop_table("level_thresholds")
    with op.batch_alter_table("warnings") as b:
        b.drop_column("deferred")
        b.drop_column("reference_period")
        b.drop_column("other_pp")
        b.drop_column("base_rate")
