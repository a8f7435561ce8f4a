"""The one FHIR date/dateTime/instant parser (issue 17 item 5): every caller in the project uses ``parse_datetime``.

FHIR R4 "Primitive Types": ``date`` is ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``; ``dateTime`` adds a time with an
offset (``Z`` or ``+hh:mm``) when a time is given; ``instant`` always has seconds and a zone. We are lenient where
EHRs are sloppy (a time without a zone is taken as UTC, surrounding whitespace is ignored), and the answer is
always an aware UTC datetime, a partial date meaning the start of its period.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_GENERAL = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def parse_datetime(value: object) -> datetime | None:
    """Parse a FHIR date/dateTime/instant to aware UTC; partial dates -> start of period, no zone -> UTC.

    None for anything that is not a string or not a FHIR timestamp (including impossible dates such as Feb 30
    and instants that leave the datetime range once converted to UTC: unusable, never fatal, §8 C6).
    """
    if not isinstance(value, str):
        return None
    # Fast path: the three shapes nearly every record uses (a typical record has ~300 timestamps; BENCHMARKS.md,
    # issue #7) parsed in C by ``datetime.fromisoformat`` (Python >= 3.11, strict digits), which for exactly
    # these shapes gives the same instant as the general parser below. value[4::3] picks the separator
    # positions 4, 7, 10, 13, 16, 19 (and 22): one slice, one comparison. Anything it rejects falls through.
    size = len(value)
    if size == 20 and value[4::3] == "--T::Z":
        try:
            return datetime.fromisoformat(value)  # "Z" gives tzinfo UTC itself: no conversion needed
        except ValueError:
            pass
    elif (size == 10 and value[4::3] == "--") or (size == 25 and value[4::3] in ("--T::+:", "--T::-:")):
        try:
            parsed = datetime.fromisoformat(value)
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except (ValueError, OverflowError):  # e.g. 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
            pass
    return _general(value)


def _general(value: str) -> datetime | None:
    """Every FHIR precision (year .. fractional seconds), any offset, stray whitespace: the reference answer."""
    m = _GENERAL.match(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, zone = m.groups()
    try:
        dt = datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        try:
            dt = dt - sign * offset  # the wall time was local; convert to UTC
        except OverflowError:  # 9999-12-31T23:59:59-14:00 and the like: unusable, never fatal (§8 C6)
            return None
    return dt
