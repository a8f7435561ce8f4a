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


def _dialysis_between(ca: LabResult, p: LabResult, sorted_times: Sequence[datetime]) -> bool:
    """A session start strictly between the two draws: one bisection over the sorted session times."""
    lo, hi = sorted((ca.time, p.time))
    i = bisect_right(sorted_times, lo)
    return i < len(sorted_times) and sorted_times[i] < hi


def best_pair(
    calcium: Sequence[LabResult],
    phosphate: Sequence[LabResult],
    dialysis_times: Sequence[datetime] = (),
    max_gap: timedelta = MAX_GAP,
) -> CaPPair | None:
    """The most recent eligible pair (by the later draw), ties -> same specimen, then smaller gap.

    Candidates are found by time window (bisect) and by specimen, so long histories stay cheap.
    """
    sessions = sorted(dialysis_times)
    phos = sorted(phosphate, key=lambda r: r.time)
    phos_times = [r.time for r in phos]
    by_specimen: dict[str, list[LabResult]] = {}
    for p in phos:
        if p.specimen:
            by_specimen.setdefault(p.specimen, []).append(p)
    best: CaPPair | None = None
    best_key: tuple[datetime, int, float] | None = None
    for ca in sorted(calcium, key=lambda r: r.time, reverse=True):
        if best_key is not None and ca.time + max_gap < best_key[0]:
            break  # every later candidate pair would be older than the best one
        lo = bisect_left(phos_times, ca.time - max_gap)
        hi = bisect_right(phos_times, ca.time + max_gap)
        candidates = list(phos[lo:hi])
        if ca.specimen:
            candidates.extend(by_specimen.get(ca.specimen, ()))
        if ca.reports:
            candidates.extend(p for p in phos if p.reports & ca.reports)
        for p in candidates:
            same = _same_specimen(ca, p)
            if not same:
                if abs(ca.time - p.time) > max_gap:
                    continue
                if _dialysis_between(ca, p, sessions):
                    continue  # pre- and post-dialysis values are not comparable (section 2.5.3, D)
            pair = CaPPair(ca, p, same)
            key = (pair.time, 1 if same else 0, -pair.gap.total_seconds())
            if best_key is None or key > best_key:
                best, best_key = pair, key
    return best
