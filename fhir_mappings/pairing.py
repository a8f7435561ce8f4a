"""Calcium x phosphate pairing and product (clinical-rules.md section 2.5).

Only measured total calcium (serum/plasma; the blood LOINC as a fallback) is paired, never ionized
or corrected calcium. Pairs: same specimen / same DiagnosticReport, else <= 24 h apart, else <= 48 h
(the fallback, which may never drive a critical card), and never across a dialysis session.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from fhir_mappings.facts import LabResult

PREFERRED_GAP = timedelta(hours=24)  # section 2.5.3 (D)
MAX_GAP = timedelta(hours=48)        # section 2.5.3 fallback (D)


@dataclass(frozen=True)
class CaPPair:
    """A calcium and a phosphate result judged comparable, with their product in mg2/dL2."""

    calcium: LabResult
    phosphate: LabResult
    same_specimen: bool

    @property
    def product(self) -> float:
        """Ca (mg/dL) x P (mg/dL), full precision (round only for display)."""
        return self.calcium.value * self.phosphate.value

    @property
    def gap(self) -> timedelta:
        """Absolute time between the two draws."""
        return abs(self.calcium.time - self.phosphate.time)

    @property
    def gap_hours(self) -> float:
        """The draw gap in hours (0 for a same-specimen pair)."""
        return 0.0 if self.same_specimen else self.gap.total_seconds() / 3600.0

    @property
    def time(self) -> datetime:
        """The pair's time: the later draw (section 2.5.4)."""
        return max(self.calcium.time, self.phosphate.time)

    @property
    def is_fallback(self) -> bool:
        """Drawn more than 24 h apart (allowed up to 48 h; never drives a critical card)."""
        return not self.same_specimen and self.gap > PREFERRED_GAP

    @property
    def is_lower_bound(self) -> bool:
        """A ``>``/``>=`` comparator on either value makes the product a lower bound."""
        return self.calcium.is_lower_bound or self.phosphate.is_lower_bound

    @property
    def is_upper_bound(self) -> bool:
        """A ``<``/``<=`` comparator: the product is at most this and never counts as exceeding."""
        return self.calcium.is_upper_bound or self.phosphate.is_upper_bound

    def exceeds(self, threshold: float, inclusive: bool = False) -> bool:
        """Product above ``threshold`` (``>=`` when inclusive), honouring comparators (section 2.1)."""
        if self.is_upper_bound:
            return False
        return self.product >= threshold if inclusive else self.product > threshold

    def age(self, now: datetime) -> timedelta:
        """How old the pair is at ``now``."""
        return now - self.time


def _same_specimen(ca: LabResult, p: LabResult) -> bool:
    if ca.specimen and ca.specimen == p.specimen:
        return True
    return bool(ca.reports & p.reports)


@dataclass
class PairStats:
    """Operation counts of one pairing (a unit test holds the search to O((Ca + P) log n), issue 16 item 1)."""

    candidates: int = 0


class PairIndex:
    """Phosphate results and dialysis session starts, sorted once, so each calcium finds its best phosphate with
    a few bisections instead of a scan (section 2.5.3-2.5.4; issue 16 item 1: 500 Ca x 500 P x 2,000 sessions
    took 19 s of CPU with nested scans).

    For one calcium the best pair is decided like this. A later phosphate makes the pair's time its own draw time,
    so the latest usable later phosphate wins outright; "usable" means within 48 h and before the first session
    that starts after the calcium (a session strictly between the draws forbids the pair, and every phosphate
    after that session has it between as well). Without one, every earlier (or simultaneous) phosphate gives the
    pair the calcium's time, and the closest usable one wins (ties: same specimen, then the smaller gap). A
    same-specimen or same-report phosphate is paired whatever its distance and sessions.
    """

    def __init__(self, phosphate: Sequence[LabResult], session_starts: Sequence[datetime],
                 max_gap: timedelta = MAX_GAP, stats: PairStats | None = None) -> None:
        self.phos = sorted(phosphate, key=lambda r: r.time)
        self.times = [r.time for r in self.phos]
        self.sessions = sorted(session_starts)
        self.max_gap = max_gap
        self.stats = stats if stats is not None else PairStats()
        self.by_specimen: dict[str, list[LabResult]] = {}
        self.by_report: dict[str, list[LabResult]] = {}
        for p in self.phos:
            if p.specimen:
                self.by_specimen.setdefault(p.specimen, []).append(p)
            for report in p.reports:
                self.by_report.setdefault(report, []).append(p)

    def linked(self, ca: LabResult) -> list[LabResult]:
        """Phosphates from the same specimen or DiagnosticReport (paired whatever their distance)."""
        found = list(self.by_specimen.get(ca.specimen, ())) if ca.specimen else []
        for report in ca.reports:
            found.extend(self.by_report.get(report, ()))
        return found

    def best_for(self, ca: LabResult) -> CaPPair | None:
        """The best pair for one calcium (same ranking as section 2.5.4), or None."""
        best: CaPPair | None = None
        best_key: tuple[datetime, int, float] | None = None

        def consider(p: LabResult, same: bool) -> None:
            nonlocal best, best_key
            self.stats.candidates += 1
            pair = CaPPair(ca, p, same)
            key = (pair.time, 1 if same else 0, -pair.gap.total_seconds())
            if best_key is None or key > best_key:
                best, best_key = pair, key

        for p in self.linked(ca):
            consider(p, True)
        # Sessions strictly between the draws forbid a pair: the usable window is (previous start, next start).
        i = bisect_right(self.sessions, ca.time)
        next_start = self.sessions[i] if i < len(self.sessions) else None
        j = bisect_left(self.sessions, ca.time)
        previous_start = self.sessions[j - 1] if j > 0 else None
        # Later phosphates (t > ca): the latest one before both ca + 48 h and the next session start (inclusive).
        upper = ca.time + self.max_gap
        if next_start is not None and next_start < upper:
            upper = next_start
        hi = bisect_right(self.times, upper)
        lo_later = bisect_right(self.times, ca.time)
        if hi > lo_later:
            latest = self.times[hi - 1]
            for k in range(bisect_left(self.times, latest), hi):   # every phosphate at that same instant
                consider(self.phos[k], _same_specimen(ca, self.phos[k]))
            return best
        # Earlier or simultaneous phosphates (t <= ca): the closest one after both ca - 48 h and the previous start.
        lower = ca.time - self.max_gap
        if previous_start is not None and previous_start > lower:
            lower = previous_start
        lo = bisect_left(self.times, lower)
        if lo_later > lo:
            closest = self.times[lo_later - 1]
            for k in range(bisect_left(self.times, closest), lo_later):
                consider(self.phos[k], _same_specimen(ca, self.phos[k]))
        return best


def best_pair(
    calcium: Sequence[LabResult],
    phosphate: Sequence[LabResult],
    dialysis_times: Sequence[datetime] = (),
    max_gap: timedelta = MAX_GAP,
    stats: PairStats | None = None,
) -> CaPPair | None:
    """The most recent eligible pair (by the later draw), ties -> same specimen, then smaller gap.

    O((Ca + P) log(P + sessions)): the index answers each calcium with bisections, and calcium results are
    visited newest first until none can beat the best pair found (issue 16 item 1).
    """
    index = PairIndex(phosphate, dialysis_times, max_gap, stats)
    best: CaPPair | None = None
    best_key: tuple[datetime, int, float] | None = None
    ordered = sorted(calcium, key=lambda r: r.time, reverse=True)
    for n, ca in enumerate(ordered):
        if best_key is not None and ca.time + max_gap < best_key[0]:
            # No window pair of an older calcium can beat the best one; only a same-specimen (or same-report)
            # pair can, since it may span any distance: those are looked up directly.
            for older in ordered[n:]:
                for p in index.linked(older):
                    index.stats.candidates += 1
                    pair = CaPPair(older, p, True)
                    key = (pair.time, 1, -pair.gap.total_seconds())
                    if key > best_key:
                        best, best_key = pair, key
            break
        found = index.best_for(ca)
        if found is None:
            continue
        key = (found.time, 1 if found.same_specimen else 0, -found.gap.total_seconds())
        if best_key is None or key > best_key:
            best, best_key = found, key
    return best
