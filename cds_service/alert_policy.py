"""Alert-fatigue controls driven by the audit log (issue #4 item 5, issue 15).

- Silent mode: a rule listed in ``CDS_SILENT_RULES`` is evaluated and logged ("silent") but its card is not
  returned; this is how a hospital trials a rule before go-live. It is configuration, so it applies even when
  the database is down.
- Suppression after an override (issue 15 item 4), for ``CDS_SUPPRESS_OVERRIDDEN_HOURS`` after this service
  received the override (never the EHR's ``outcomeTimestamp``, item 3), and only when ALL of these hold:
  the override gave a reason (one of the card's ``overrideReasons`` or a non-empty ``userComment``; a plain
  dismissal suppresses nothing); it came from the client whose call produced the card (item 2); it is the same
  user (the ``context.userId`` of that call; ``CDS_SUPPRESS_SCOPE=tenant``: anyone of the tenant); the card
  rests on the same evidence (same source resources and versions: a newer or corrected result shows it again at
  once) and is not at a higher indicator; and the card is not ``critical`` (never suppressed). The card is then
  logged as "suppressed".
- Order dedup: order-select fires on every edit of a draft. A repeat alert for the same rule, patient and
  draft order within ``CDS_ORDER_DEDUP_MINUTES`` is still shown (hiding it while the order is being
  edited would be unsafe) but recorded with ``repeat_of`` so the alert-burden stats count it once.
- Parenteral nutrition: at most one PN card per patient per 24 h (§8 C7).

Every log-driven control reads the caller's tenant only (issue 15 item 1: client + FHIR server); nothing crosses
tenants. They fail open: if the audit log is off or cannot answer, every card is shown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from cds_service.audit.overrides import OverrideSeen
from cds_service.audit.records import CardRecord
from cds_service.audit.store import AlertHistory, AuditUnavailable
from cds_service.config import Settings
from cds_service.evidence_fingerprint import (
    evidence_references,
    fingerprint,
    is_offered_reason,
    override_codes,
    resource_versions,
)
from cds_service.tenant import same_client

if TYPE_CHECKING:
    from cds_service.audit.store import AuditLog

logger = logging.getLogger(__name__)

ORDER_HOOKS = frozenset({"order-select", "order-sign"})
_NO_HISTORY = AlertHistory((), {})
# Issue 15 item 4: a card at a higher indicator than the overridden one is shown again; critical never waits.
INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}
NEVER_SUPPRESSED = "critical"


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


@dataclass(frozen=True)
class CallScope:
    """Whose alert state a call reads: its tenant (cds_service.tenant.Tenant.key) and its user."""

    tenant_key: str
    user_id: str | None


def has_reason(item: OverrideSeen) -> bool:
    """Issue 15 item 4: an override counts only with a reason the card offered or a non-empty comment."""
    if item.comment is not None and item.comment.strip():
        return True
    return is_offered_reason(item.code, item.system, item.override_codes or [])


def override_applies(item: OverrideSeen, rule_id: str, indicator: str, evidence: list[str],
                     user_id: str | None) -> bool:
    """Whether ``item`` covers a card of ``rule_id`` at ``indicator`` resting on ``evidence`` (a fingerprint).

    ``user_id`` None: any user (``CDS_SUPPRESS_SCOPE=tenant``, or the viewer, which names who overrode).
    The window and the tenant are the read's business (AuditLog.alert_history); ``critical`` is the caller's.
    """
    return (
        item.rule_id == rule_id
        and has_reason(item)
        and same_client(item.feedback_client_iss, item.feedback_client_tenant, item.card_client_iss,
                        item.card_client_tenant)
        and (user_id is None or item.card_user_id == user_id)
        and item.evidence_fingerprint is not None and item.evidence_fingerprint == evidence
        and INDICATOR_RANK.get(indicator, 0) <= INDICATOR_RANK.get(item.indicator, 0)
    )


def find_override(overrides: Iterable[OverrideSeen], rule_id: str, indicator: str, evidence: list[str],
                  user_id: str | None) -> OverrideSeen | None:
    """The most recently received override that covers the card, or None (see :func:`override_applies`)."""
    matching = [item for item in overrides if override_applies(item, rule_id, indicator, evidence, user_id)]
    return max(matching, key=lambda item: item.received_at) if matching else None


def card_fingerprints(cards: Sequence[AssessedCardLike], resources: Iterable[Any]) -> list[list[str]]:
    """Each card's evidence fingerprint, reading versions from the call's raw FHIR ``resources`` once."""
    wanted: set[str] = set()
    for assessed in cards:
        wanted |= evidence_references(assessed.evidence)
    versions = resource_versions(resources, wanted)
    return [fingerprint(assessed.evidence, versions) for assessed in cards]


def apply_alert_policy(
    cards: Sequence[AssessedCardLike], *, hook: str, patient_id: str | None, now: datetime,
    settings: Settings, audit: AuditLog | None, scope: CallScope | None = None, resources: Iterable[Any] = (),
) -> tuple[list[dict[str, Any]], list[CardRecord]]:
    """Decide which cards to show; returns (card JSON to return, card records for the audit log).

    ``now`` is this server's receive time of the call; ``scope`` the caller's tenant and user (None: no
    log-driven control applies, every non-silent card is shown); ``resources`` the call's raw FHIR resources,
    for the evidence fingerprints.
    """
    shown: list[dict[str, Any]] = []
    records: list[CardRecord] = []
    silent_rules = set(settings.silent_rules)
    fingerprints = card_fingerprints(cards, resources)
    history = _alert_history(cards, hook, patient_id, now, settings, audit, silent_rules, scope)
    pn_shown = _parenteral_nutrition_shown(cards, patient_id, now, audit, scope)
    user_scope = None if settings.suppress_scope == "tenant" or scope is None else scope.user_id
    for assessed, evidence in zip(cards, fingerprints, strict=True):
        disposition = "shown"
        repeat_of: str | None = None
        if assessed.rule_id in silent_rules:
            disposition = "silent"
        elif assessed.indicator != NEVER_SUPPRESSED and _overridden(history, assessed, evidence, settings,
                                                                     user_scope):
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
            evidence_fingerprint=evidence,
            override_codes=override_codes(assessed.card),
        ))
    return shown, records


def _overridden(history: AlertHistory, assessed: AssessedCardLike, evidence: list[str], settings: Settings,
                user_id: str | None) -> bool:
    if settings.suppress_scope != "tenant" and user_id is None:
        return False  # user scope, but the call names no user: nobody's override can be "the same user's"
    return find_override(history.overrides, assessed.rule_id, assessed.indicator, evidence, user_id) is not None


PN_ORDER_KEY = "parenteral-nutrition"   # the engine's dedup key for parenteral-nutrition cards (§8 C7)
PN_WINDOW = timedelta(hours=24)          # §8 C7: at most once per 24 h per patient


def _parenteral_nutrition_shown(cards: Sequence[AssessedCardLike], patient_id: str | None, now: datetime,
                                audit: AuditLog | None, scope: CallScope | None) -> dict[tuple[str, str], str]:
    """(rule, PN key) -> the PN card already shown to this patient of this tenant in the last 24 h (§8 C7);
    fails open."""
    wanted = [(c.rule_id, PN_ORDER_KEY) for c in cards if c.order_key == PN_ORDER_KEY]
    if not wanted or audit is None or patient_id is None or scope is None:
        return {}
    try:
        return audit.alert_history(scope.tenant_key, patient_id, [], None, wanted, now - PN_WINDOW).first_alerts
    except AuditUnavailable:
        logger.warning("parenteral-nutrition once-per-24 h check skipped: audit log unavailable")
        return {}


def _alert_history(cards: Sequence[AssessedCardLike], hook: str, patient_id: str | None, now: datetime,
                   settings: Settings, audit: AuditLog | None, silent_rules: set[str],
                   scope: CallScope | None) -> AlertHistory:
    """One read of the audit log for every card of the call (was one query per card; issue #7)."""
    if audit is None or patient_id is None or scope is None:
        return _NO_HISTORY
    candidates = [c for c in cards if c.rule_id not in silent_rules]
    overridden_since = None
    overridable = [c.rule_id for c in candidates if c.indicator != NEVER_SUPPRESSED]
    if settings.suppress_overridden_hours > 0:
        overridden_since = now - timedelta(hours=settings.suppress_overridden_hours)
    orders_since = None
    order_alerts: list[tuple[str, str]] = []
    if hook in ORDER_HOOKS and settings.order_dedup_minutes > 0:
        orders_since = now - timedelta(minutes=settings.order_dedup_minutes)
        order_alerts = [(c.rule_id, c.order_key) for c in candidates if c.order_key is not None]
    try:
        return audit.alert_history(scope.tenant_key, patient_id, overridable, overridden_since, order_alerts,
                                   orders_since)
    except AuditUnavailable:
        # Fail open: without the log we cannot know it was overridden, and a missed alert is the worse error.
        logger.warning("alert suppression and order dedup skipped: audit log unavailable")
        return _NO_HISTORY
