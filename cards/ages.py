"""How old a value is, in one wording for cards and the SMART viewer (clinical-rules.md §8 C13).

Under 48 hours the age is given in whole hours ("22 h ago"), never as calendar words such as "today" or
"1 day ago" that hide whether a value is 2 or 40 hours old; from 48 hours on it is given in whole days
("3 days ago"). Times in the future (clock skew, or a value the extractor let through within its 24 h
tolerance, §8 C6) read "just now" rather than a negative age.
"""

from __future__ import annotations

from datetime import datetime

HOURS_LIMIT = 48  # §8 C13: "Data ages under 48 h are given in hours"


def age_hours(now: datetime, when: datetime) -> float:
    """Hours from ``when`` to ``now`` (negative when ``when`` is in the future)."""
    return (now - when).total_seconds() / 3600.0


def age_text(now: datetime, when: datetime) -> str:
    """``just now`` / ``under 1 h ago`` / ``22 h ago`` (under 48 h) / ``3 days ago`` (48 h and more).

    Whole units are truncated, never rounded up, so an age never crosses a recency window early: a value
    47 h 59 min old reads "47 h ago", and one 71 h old reads "2 days ago".
    """
    hours = age_hours(now, when)
    if hours < 0:
        return "just now"
    if hours < 1:
        return "under 1 h ago"
    if hours < HOURS_LIMIT:
        return f"{int(hours)} h ago"
    return f"{int(hours // 24)} days ago"


def patient_age_text(years: float | None) -> str:
    """A patient's age for banners: ``58 y``; under 2 years in whole months (``7 mo``), since the rules band
    infants by months (§8 C11) and "0 y" says nothing; ``age unknown`` without a birth date."""
    if years is None or years < 0:
        return "age unknown"
    if years < 2:
        return f"{int(years * 12)} mo"
    return f"{int(years)} y"
