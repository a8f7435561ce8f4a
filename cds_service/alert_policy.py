"""Alert-fatigue controls driven by the audit log (issue #4 item 5).

- Silent mode: a rule listed in ``CDS_SILENT_RULES`` is evaluated and logged ("silent") but its card is not
  returned; this is how a hospital trials a rule before go-live. It is configuration, so it applies even when
  the database is down.
- Suppression of repeats: the same rule for the same patient is not shown again for
  ``CDS_SUPPRESS_OVERRIDDEN_HOURS`` after a clinician overrode it; the card is logged as "suppressed".
- Order dedup: order-select fires on every edit of a draft. A repeat alert for the same rule, patient and
  draft order within ``CDS_ORDER_DEDUP_MINUTES`` is still shown (hiding it while the order is being
  edited would be unsafe) but recorded with ``repeat_of`` so the alert-burden stats count it once.

The two log-driven controls fail open: if the audit log is off or cannot answer, every card is shown.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from cds_service.audit.records import CardRecord
from cds_service.audit.store import AlertHistory, AuditUnavailable
from cds_service.config import Settings

if TYPE_CHECKING:
    from cds_service.audit.store import AuditLog

logger = logging.getLogger(__name__)

ORDER_HOOKS = frozenset({"order-select", "order-sign"})
_NO_HISTORY = AlertHistory(frozenset(), {})


class AssessedCardLike(Protocol):
    """The attributes of ``cds_service.engine.AssessedCard`` this module reads."""

    @property
    def card(self) -> dict[str, Any]: ...
    @property
    def rule_id(self) -> str: ...
    @property
    def rule_version(self) -> str: ...
    @property
    def indicator(self) -> str: ...
    @property
    def evidence(self) -> list[dict[str, Any]]: ...
    @property
    def suggestion_uuids(self) -> list[str]: ...
    @property
    def order_key(self) -> str | None: ...


def apply_alert_policy(
    cards: Sequence[AssessedCardLike], *, hook: str, patient_id: str | None, now: datetime,
    settings: Settings, audit: AuditLog | None,
) -> tuple[list[dict[str, Any]], list[CardRecord]]:
    """Decide which cards to show; returns (card JSON to return, card records for the audit log)."""
    shown: list[dict[str, Any]] = []
    records: list[CardRecord] = []
    silent_rules = set(settings.silent_rules)
    history = _alert_history(cards, hook, patient_id, now, settings, audit, silent_rules)
    pn_shown = _parenteral_nutrition_shown(cards, patient_id, now, audit)
    for assessed in cards:
        disposition = "shown"
        repeat_of: str | None = None
        if assessed.rule_id in silent_rules:
            disposition = "silent"
        elif assessed.rule_id in history.overridden:
            disposition = "suppressed"
        elif (assessed.rule_id, assessed.order_key) in pn_shown:
            disposition, repeat_of = "suppressed", pn_shown[assessed.rule_id, str(assessed.order_key)]
        elif hook in ORDER_HOOKS and assessed.order_key is not None:
            repeat_of = history.first_alerts.get((assessed.rule_id, assessed.order_key))
        if disposition == "shown":
            shown.append(assessed.card)
        records.append(CardRecord(
            card_uuid=str(assessed.card.get("uuid", "")),
            rule_id=assessed.rule_id,
            rule_version=assessed.rule_version,
            indicator=assessed.indicator,
            summary=str(assessed.card.get("summary", "")),
            evidence=list(assessed.evidence),
            suggestion_uuids=list(assessed.suggestion_uuids),
            disposition=disposition,
            order_key=assessed.order_key,
            repeat_of=repeat_of,
        ))
    return shown, records


PN_ORDER_KEY = "parenteral-nutrition"   # the engine's dedup key for parenteral-nutrition cards (§8 C7)
PN_WINDOW = timedelta(hours=24)          # §8 C7: at most once per 24 h per patient


def _parenteral_nutrition_shown(cards: Sequence[AssessedCardLike], patient_id: str | None, now: datetime,
                                audit: AuditLog | None) -> dict[tuple[str, str], str]:
    """(rule, PN key) -> the PN card already shown to this patient in the last 24 h (§8 C7); fails open."""
    wanted = [(c.rule_id, PN_ORDER_KEY) for c in cards if c.order_key == PN_ORDER_KEY]
    if not wanted or audit is None or patient_id is None:
        return {}
    try:
        return audit.alert_history(patient_id, [], None, wanted, now - PN_WINDOW).first_alerts
    except AuditUnavailable:
        logger.warning("parenteral-nutrition once-per-24 h check skipped: audit log unavailable")
        return {}


def _alert_history(cards: Sequence[AssessedCardLike], hook: str, patient_id: str | None, now: datetime,
                   settings: Settings, audit: AuditLog | None, silent_rules: set[str]) -> AlertHistory:
    """One read of the audit log for every card of the call (was one query per card; issue #7)."""
    if audit is None or patient_id is None:
        return _NO_HISTORY
    candidates = [c for c in cards if c.rule_id not in silent_rules]
    overridden_since = None
    if settings.suppress_overridden_hours > 0:
        overridden_since = now - timedelta(hours=settings.suppress_overridden_hours)
    orders_since = None
    order_alerts: list[tuple[str, str]] = []
    if hook in ORDER_HOOKS and settings.order_dedup_minutes > 0:
        orders_since = now - timedelta(minutes=settings.order_dedup_minutes)
        order_alerts = [(c.rule_id, c.order_key) for c in candidates if c.order_key is not None]
    try:
        return audit.alert_history(patient_id, [c.rule_id for c in candidates], overridden_since,
                                   order_alerts, orders_since)
    except AuditUnavailable:
        # Fail open: without the log we cannot know it was overridden, and a missed alert is the worse error.
        logger.warning("alert suppression and order dedup skipped: audit log unavailable")
        return _NO_HISTORY
