"""A seeded audit history for the governance tests: known values, cards, feedback over three weeks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service.audit import AuditLog
from cds_service.governance.values import FORMAT
from tests.audit.factories import make_call, make_card, make_feedback

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
END = START + timedelta(days=21)
RULES = ("caxp-high", "caxp-above-target", "hyperphosphatemia")


def seed_history(audit: AuditLog, *, calls: int = 60, seed: int = 19) -> list[dict[str, Any]]:
    """Write ``calls`` patient-view calls over [START, END) plus some in the previous period; returns what was
    written (hook instance, values, cards with their feedback) for the test's own bookkeeping."""
    rng = random.Random(seed)
    written: list[dict[str, Any]] = []
    for index in range(calls + 10):
        at = (START - timedelta(days=rng.uniform(0.1, 20)) if index >= calls
              else START + timedelta(days=rng.uniform(0, 20.9)))
        caxp = round(rng.uniform(30, 90), 1)
        values = {"format": FORMAT, "caxp": caxp, "calcium": round(rng.uniform(8.5, 11.5), 2),
                  "calcium_basis": "measured",
                  "phosphate": round(caxp / 9.5, 2), "pth_multiple": round(rng.uniform(0.5, 12), 2),
                  "cofactors": rng.choice([None, 0, 1, 2, 3]), "warfarin": rng.random() < 0.1,
                  "r07_mineral": caxp > 70}
        card_list = []
        if caxp > 70:
            card_list.append(make_card("caxp-high", disposition=rng.choice(["shown", "shown", "silent",
                                                                             "suppressed"])))
        elif caxp >= 55:
            card_list.append(make_card("caxp-above-target"))
        if values["phosphate"] > 7:
            card_list.append(make_card("hyperphosphatemia"))
        call = make_call(f"pat-{rng.randrange(25)}", card_list, received_at=at, governance_values=values,
                         duration_ms=round(rng.uniform(2, 40), 2), request_ms=round(rng.uniform(5, 80), 2),
                         data_sources={"patient": "prefetch", "labs": rng.choice(["prefetch", "fetched"])})
        audit.record_hook_call(call)
        feedback = []
        for card in card_list:
            if card.disposition != "shown":
                continue
            roll = rng.random()
            if roll < 0.3:
                feedback.append(make_feedback(card.card_uuid, "accepted", when=at + timedelta(minutes=2)))
            elif roll < 0.7:
                feedback.append(make_feedback(card.card_uuid, "overridden", when=at + timedelta(minutes=3),
                                              code=rng.choice(["not-relevant", "managed", "not-relevant"])))
        if feedback:
            audit.record_feedback(feedback)
        written.append({"call": call, "values": values, "cards": card_list})
    # a 412 and an order-select call without values: counted as hook calls, never by the simulator
    audit.record_hook_call(make_call("pat-1", [], received_at=START + timedelta(days=1), http_status=412,
                                     error="prefetch-unavailable"))
    audit.record_hook_call(make_call("pat-2", [], received_at=START + timedelta(days=2), hook="order-select"))
    return written
