"""Alembic environment for the audit schema: always run programmatically with a connection.

``cds_service.audit.db.upgrade_schema`` (used by ``serve`` on SQLite and ``calcinosis-cds db upgrade``) passes
its connection in ``config.attributes``; there is no alembic.ini and no URL here.
"""

from __future__ import annotations

from alembic import context

from cds_service.audit.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("audit migrations run through `calcinosis-cds db upgrade`, not the alembic CLI")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
