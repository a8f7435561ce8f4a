"""The dashboard's selection: one period [start, end) and an optional tenant (all tenants by default)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_

from cds_service.audit.schema import calls


@dataclass(frozen=True)
class Period:
    """A half-open period of ``received_at`` and the tenant key to keep (None: every tenant)."""

    start: datetime
    end: datetime
    tenant_key: str | None = None

    def previous(self) -> Period:
        """The period of the same length just before this one (the "change vs previous period" baseline)."""
        length = self.end - self.start
        return Period(self.start - length, self.start, self.tenant_key)

    def weeks(self) -> list[tuple[datetime, datetime]]:
        """The period cut into 7-day buckets from its start (the last one may be shorter)."""
        buckets: list[tuple[datetime, datetime]] = []
        cursor = self.start
        while cursor < self.end:
            buckets.append((cursor, min(cursor + timedelta(days=7), self.end)))
            cursor += timedelta(days=7)
        return buckets

    def calls_where(self) -> ColumnElement[bool]:
        """The SQL condition selecting this period's calls (and tenant)."""
        condition = and_(calls.c.received_at >= self.start, calls.c.received_at < self.end)
        if self.tenant_key is not None:
            condition = and_(condition, calls.c.tenant_key == self.tenant_key)
        return condition

    def as_params(self) -> dict[str, Any]:
        """The period as query-string parameters (no PHI: dates and an opaque tenant digest)."""
        params: dict[str, Any] = {"start": self.start.date().isoformat(), "end": self.end.date().isoformat()}
        if self.tenant_key:
            params["tenant"] = self.tenant_key
        return params
