"""The alert audit log (issue #4): every hook call, card and clinician response, durable and tamper-evident.

The HTTP layer builds :class:`HookCallRecord` / :class:`FeedbackRecord` values and hands them to
:class:`AuditLog`; the ``calcinosis-cds audit`` and ``db`` commands and the admin API read the same database.
"""

from cds_service.audit.db import AuditSchemaError
from cds_service.audit.records import CardRecord, FeedbackRecord, HookCallRecord
from cds_service.audit.store import AuditLog, AuditUnavailable

__all__ = [
    "AuditLog",
    "AuditSchemaError",
    "AuditUnavailable",
    "CardRecord",
    "FeedbackRecord",
    "HookCallRecord",
]
