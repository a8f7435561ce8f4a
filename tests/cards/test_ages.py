"""One age wording for cards and viewer (clinical-rules.md §8 C13): hours under 48 h, whole days after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cards.ages import age_text, patient_age_text
from cards.blocks import to_markdown
from cds_service.rules.base import drawn_text

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("age", "expected"), [
    (timedelta(minutes=-5), "just now"),              # future (clock skew): never a negative age
    (timedelta(hours=-23), "just now"),
    (timedelta(0), "under 1 h ago"),
    (timedelta(minutes=59), "under 1 h ago"),
    (timedelta(hours=1), "1 h ago"),
    (timedelta(hours=22, minutes=40), "22 h ago"),    # truncated, never rounded up
    (timedelta(hours=24), "24 h ago"),                # "today"/"1 day ago" never appear
    (timedelta(hours=47, minutes=59), "47 h ago"),    # last hour-worded age
    (timedelta(hours=48), "2 days ago"),              # first day-worded age
    (timedelta(hours=71, minutes=59), "2 days ago"),
    (timedelta(hours=72), "3 days ago"),
    (timedelta(days=365), "365 days ago"),
])
def test_age_text_boundaries(age: timedelta, expected: str) -> None:
    assert age_text(NOW, NOW - age) == expected


def test_one_day_never_appears() -> None:
    texts = {age_text(NOW, NOW - timedelta(minutes=m)) for m in range(0, 60 * 24 * 5, 7)}
    assert not any(t.startswith("1 day") for t in texts)
    assert not any("today" in t or "yesterday" in t for t in texts)


def test_cards_use_the_same_wording() -> None:
    """The rules' ``drawn`` text is the shared function's, not a second formatter (cards word the rules' ``Age``)."""
    assert to_markdown(drawn_text(NOW, NOW - timedelta(hours=22))) == "drawn 22 h ago"
    assert to_markdown(drawn_text(NOW, NOW - timedelta(days=3, hours=1))) == "drawn 3 days ago"


@pytest.mark.parametrize(("years", "expected"), [
    (None, "age unknown"), (0.05, "0 mo"), (0.6, "7 mo"), (1.99, "23 mo"), (2.0, "2 y"), (58.7, "58 y"),
])
def test_patient_age_text(years: float | None, expected: str) -> None:
    assert patient_age_text(years) == expected


def test_viewer_notes_use_the_same_wording() -> None:
    """The SMART viewer's "last ... (age)" notes read like the cards: hours under 48 h, then days."""
    from types import SimpleNamespace

    from cds_service.smart.freshness import lab_notes

    labs = [SimpleNamespace(kind="lab-calcium-total", time=NOW - timedelta(hours=22)),
            SimpleNamespace(kind="lab-phosphate", time=NOW - timedelta(days=3, hours=2))]
    notes = {n.label: n.text for n in lab_notes(SimpleNamespace(labs=labs), NOW)}  # type: ignore[arg-type]
    assert notes["Total calcium"] == "last 2025-06-14 (22 h ago)"
    assert notes["Phosphate"] == "last 2025-06-12 (3 days ago)"
