"""``AuditLog``: the write side the HTTP layer calls, plus the reads the alert-fatigue policy needs.

Failure policy (issue #4 item 2, after CQL Services' card-logger): a hook call's records never block decision
support; when the database is unavailable they go to the durable spool and are replayed later. Feedback that
cannot be stored raises :class:`AuditUnavailable` so the HTTP layer answers 503 and the EHR retries.

Logs name only exception classes: SQLAlchemy error messages embed the statement parameters, which carry
patient ids and clinical values.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, exists, select, text
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from cds_service.audit.chain import canonical_json, canonical_time, json_safe
from cds_service.audit.db import AuditSchemaError, check_schema, create_audit_engine, upgrade_schema
from cds_service.audit.group_commit import GroupCommit
from cds_service.audit.hotpath import CallRows, HotPath
from cds_service.audit.keys import Keyring, load_keyring
from cds_service.audit.overrides import OverrideSeen
from cds_service.audit.records import FeedbackRecord, HookCallRecord, SpooledCall, as_utc
from cds_service.audit.schema import calls, cards, feedback
from cds_service.audit.spool import Spool
from cds_service.audit.writer import ChainTransaction, chain_transaction
from cds_service.config import ConfigError, Settings
from cds_service.metrics import record_audit_failure
from cds_service.tenant import same_client

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

# After a failed write, go straight to the spool for this long instead of waiting on a dead database
# in every request; then try again.
RETRY_AFTER_S = 2.0
# How often (at most) a successful write looks at the spool to start a background replay.
SPOOL_CHECK_INTERVAL_S = 5.0
REPLAY_BATCH = 500
# How long a hook call waits for the group commit holding its record before it spools the record instead
# (as long as SQLite's busy timeout: a writer that waited that long has failed anyway).
GROUP_COMMIT_TIMEOUT_S = 10.0
JTI_CLEANUP_EVERY = 256


class AuditUnavailable(Exception):
    """The audit database cannot answer now (down, locked, or at the wrong schema revision)."""


@dataclass(frozen=True)
class AlertHistory:
    """Earlier alerts relevant to one hook call (see ``AuditLog.alert_history``)."""

    overrides: tuple[OverrideSeen, ...]
    first_alerts: dict[tuple[str, str], str]

    @property
    def overridden(self) -> frozenset[str]:
        """The rule ids with any override in the window (before the policy weighs reason, user and evidence)."""
        return frozenset(item.rule_id for item in self.overrides)


def _is_transient(exc: BaseException) -> bool:
    """True for errors a retry can fix (connection lost, locked); False for a record the DB refuses."""
    if isinstance(exc, OperationalError | AuditSchemaError | OSError):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    return False


class AuditLog:
    """The alert audit log on one database (SQLite file or PostgreSQL), with its local spool."""

    def __init__(self, settings: Settings, engine: Engine, *, create_schema: bool,
                 keyring: Keyring | None = None) -> None:
        self._settings = settings
        self._engine = engine
        # The chain key (issue 15 item 6): CDS_AUDIT_CHAIN_KEY, or the generated --dev key; ConfigError if none.
        self._keyring = keyring or load_keyring(settings)
        self._hot = HotPath(engine, self._keyring.current)
        self._group: GroupCommit[CallRows] = GroupCommit(self._hot.append, _is_transient, GROUP_COMMIT_TIMEOUT_S)
        self._create_schema = create_schema
        self._spool = Spool(settings.spool_dir)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._replay_lock = threading.Lock()
        self._down_until = 0.0
        self._next_spool_check = 0.0
        self._jti_calls = 0
        self._closed = False
        # A forked child (gunicorn with preload) must not share the parent's pooled database connections.
        reference = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_after_fork(reference))

    # ----------------------------------------------------------------------------------------- lifecycle
    @classmethod
    def open(cls, settings: Settings, *, create_schema: bool) -> AuditLog:
        """Open the audit log and replay any spooled records.

        ``create_schema=True`` (embedded SQLite under ``serve``) runs the migrations itself; for a shared
        PostgreSQL ``calcinosis-cds db upgrade`` does (issue #8) and this only checks the schema is at head,
        raising AuditSchemaError with the fix otherwise. An unreachable database is not an error here:
        decision support must not stop, records are spooled until it answers.
        """
        keyring = load_keyring(settings)  # start-up stops here without a chain key (ConfigError names the fix)
        engine = create_audit_engine(settings.effective_database_url)
        audit = cls(settings, engine, create_schema=create_schema, keyring=keyring)
        try:
            audit._ensure_schema()
        except (AuditSchemaError, ConfigError):  # ConfigError: migration 0005 found no chain key
            engine.dispose()
            raise
        except (SQLAlchemyError, OSError) as exc:
            audit._mark_down(exc, "open")
            return audit
        audit.replay_spool()
        return audit

    def close(self) -> None:
        """Release database connections (waits for a running replay to finish)."""
        self._closed = True
        with self._replay_lock:
            self._engine.dispose()

    @property
    def keyring(self) -> Keyring:
        """The audit chain keys this log signs with (current) and verifies with (current and retired)."""
        return self._keyring

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for the query, export and maintenance modules)."""
        return self._engine

    def ping(self) -> bool:
        """True when the database answers and has the expected schema (for /readyz)."""
        def select_one() -> None:
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        try:
            self._ensure_schema()
            _once_more_if_stale(select_one)
        except (SQLAlchemyError, AuditSchemaError, OSError):
            return False
        return True

    def spool_depth(self) -> int:
        """How many hook-call records wait in the spool (for metrics)."""
        return self._spool.depth()

    # ----------------------------------------------------------------------------------------- hook calls
    def record_hook_call(self, record: HookCallRecord) -> None:
        """Store one hook call and its cards, committed before returning; never raises.

        When the database is unavailable the record is written durably (fsync) to the spool instead.
        """
        spooled = SpooledCall(record_uuid=str(uuid.uuid4()), record=record)
        if time.monotonic() >= self._down_until:
            try:
                self._store_call(spooled, fresh=True)
            except Exception as exc:  # nothing may stop decision support; the spool keeps it
                self._mark_down(exc, "hook call; record spooled")
            else:
                self._after_successful_write()
                return
        try:
            self._spool.put(spooled)
        except Exception as exc:  # last resort: say so loudly, without record contents
            logger.critical("audit record LOST: database and spool both failed (%s)", type(exc).__name__)

    def replay_spool(self) -> int:
        """Move spooled records into the database; returns how many were stored now.

        Safe to run from several workers at once: a record already stored (same record uuid) is skipped.
        Drains the whole spool, batch by batch; stops at the first transient failure; a record the database
        refuses is quarantined, not lost. (The opportunistic background replay does one batch at a time.)
        """
        total = 0
        with self._replay_lock:
            while True:
                before = self._spool.depth()
                stored = self._replay_locked()
                total += stored
                if not self._spool.has_pending() or self._spool.depth() >= before:
                    return total

    def _replay_locked(self) -> int:
        if self._closed:
            return 0
        self._spool.remove_stale_temporaries()
        stored = 0
        for path in self._spool.pending()[:REPLAY_BATCH]:
            spooled = self._spool.read(path)
            if spooled is None:
                continue
            try:
                inserted = self._store_call(spooled)
            except Exception as exc:  # classify, then keep or quarantine the file
                if _is_transient(exc):
                    self._mark_down(exc, "spool replay")
                    break
                logger.error("audit spool record refused by the database (%s)", type(exc).__name__)
                self._spool.quarantine_file(path, type(exc).__name__)
                continue
            self._spool.remove(path)
            stored += int(inserted)
        if stored:
            logger.info("audit spool replayed: %d record(s) stored", stored)
        return stored

    def _store_call(self, spooled: SpooledCall, *, fresh: bool = False) -> bool:
        """Insert a call and its cards as the next links of the chain, committed; False if already stored.

        ``fresh``: the record uuid was just generated, so it cannot be stored yet: no idempotency lookup
        (needed for spool replays; the unique constraint on record_uuid still guards it), and the record joins
        this process's group commit. Both run on the hot path (prepared SQL on the DB-API connection; issue #7).
        """
        self._ensure_schema()
        rows = _call_rows(spooled)
        if fresh:
            self._group.submit(rows)
            return True
        return bool(self._hot.append(lambda: [rows], skip_stored=True))

    # ----------------------------------------------------------------------------------------- feedback
    def record_feedback(self, items: list[FeedbackRecord]) -> None:
        """Store feedback items idempotently (the same item twice is stored once).

        Raises AuditUnavailable when they cannot be stored, so the EHR gets a 5xx and retries.
        """
        if self._spool.has_pending():
            # Cards still in the spool would otherwise make their feedback look like it is for unknown cards.
            self.replay_spool()
        try:
            self._ensure_schema()
            # Idempotent by item key, so running it again after a stale pooled connection is safe.
            _once_more_if_stale(lambda: self._store_feedback(items))
        except (SQLAlchemyError, AuditSchemaError, OSError) as exc:
            self._mark_down(exc, "feedback")
            raise AuditUnavailable("the audit database cannot store feedback now") from exc
        self._after_successful_write()

    def _store_feedback(self, items: list[FeedbackRecord]) -> None:
        with self._write_transaction() as (connection, chain):
            for item in items:
                key = feedback_item_key(item)
                if connection.execute(select(feedback.c.id).where(feedback.c.item_key == key)).first():
                    continue
                card_known = connection.execute(
                    select(exists().where(cards.c.card_uuid == item.card_uuid))
                ).scalar_one()
                received_at = as_utc(item.received_at or datetime.now(UTC))
                chain.append("feedback", {
                    "item_key": key,
                    "service_id": item.service_id,
                    "card_uuid": item.card_uuid,
                    "card_known": bool(card_known),
                    "outcome": item.outcome,
                    "accepted_suggestions": json_safe(item.accepted_suggestions),
                    "override_code": item.override_code,
                    "override_system": item.override_system,
                    "override_display": item.override_display,
                    "override_comment": item.override_comment,
                    "outcome_timestamp": as_utc(item.outcome_timestamp),
                    "client_iss": item.client_iss,
                    "client_tenant": item.client_tenant,
                    "received_at": received_at,
                    # Issue 15 item 3: stored as sent, flagged when well ahead of this server's clock.
                    "timestamp_in_future": as_utc(item.outcome_timestamp) > received_at + FUTURE_TOLERANCE,
                    "match": "matched" if card_known and _card_client_matches(connection, item) else "unmatched",
                })

    # ----------------------------------------------------------------------------------------- policy reads
    def alert_history(self, tenant_key: str, patient_id: str, rule_ids: Collection[str],
                      overridden_since: datetime | None, order_alerts: Collection[tuple[str, str]],
                      orders_since: datetime | None) -> AlertHistory:
        """What the alert policy needs to know about earlier alerts, for all cards of one hook call at once.

        Only the tenant's own state (issue 15 item 1: ``tenant_key`` of cds_service.tenant.Tenant):
        - ``overrides``: the ``overridden`` feedback on cards of ``rule_ids`` for this patient, received by this
          service at or after ``overridden_since`` (None: do not ask), with what the policy weighs (reason,
          clients, user, evidence, indicator);
        - ``first_alerts``: for each (rule id, order key) in ``order_alerts``, the card uuid that started the
          series of alerts shown for that draft order since ``orders_since`` (None: do not ask).

        One pooled connection and at most two queries per hook call, however many cards, on the hot path's
        prepared SQL (issue #7).
        """
        ask_overridden = overridden_since is not None and bool(rule_ids)
        ask_orders = orders_since is not None and bool(order_alerts)
        if not ask_overridden and not ask_orders:
            return AlertHistory((), {})
        self._fail_fast_while_down()
        try:
            self._ensure_schema()
            overrides, first_alerts = self._hot.alert_history(
                tenant_key, patient_id, rule_ids, overridden_since if ask_overridden else None,
                order_alerts, orders_since if ask_orders else None)
        except (SQLAlchemyError, AuditSchemaError, OSError) as exc:
            self._mark_down(exc, "read")
            raise AuditUnavailable("the audit database cannot answer now") from exc
        return AlertHistory(tuple(overrides), first_alerts)

    # ----------------------------------------------------------------------------------------- jti cache
    def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """Record a client JWT id; False when (iss, jti) was already seen, i.e. a replay.

        Atomic in the database, so it holds across workers and instances. Raises AuditUnavailable if the
        database cannot answer (the caller then falls back to a per-process cache).
        """
        self._fail_fast_while_down()
        try:
            self._ensure_schema()
            self._jti_calls += 1
            # Expired ids can no longer be replayed (the token is rejected on exp), so drop them now and then.
            forget_before = (datetime.now(UTC) - timedelta(hours=1)
                             if self._jti_calls % JTI_CLEANUP_EVERY == 0 else None)
            # A stale pooled connection is retried inside. Repeating is safe but for one corner: a commit
            # whose acknowledgement was lost with the connection makes the retry see the jti as a replay, and
            # the EHR retries that call with a new token.
            return self._hot.claim_jti(iss, jti, expires_at, forget_before)
        except (SQLAlchemyError, AuditSchemaError, OSError) as exc:
            self._mark_down(exc, "jti cache")
            raise AuditUnavailable("the jti replay cache in the audit database is unavailable") from exc

    # ----------------------------------------------------------------------------------------- internals
    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            if self._create_schema:
                upgrade_schema(self._engine, keyring=self._keyring)
            else:
                check_schema(self._engine)
            self._schema_ready = True

    @contextmanager
    def _write_transaction(self) -> Iterator[tuple[Connection, ChainTransaction]]:
        """A transaction holding the chain lock, with the chain writer positioned at the chain head.

        Reads go through the SQLAlchemy connection; appends through the chain's one writer on the same DB-API
        connection, hence in the same transaction (issue 15 item 6).
        """
        with chain_transaction(self._engine, self._keyring.current) as (connection, chain):
            yield connection, chain

    def _fail_fast_while_down(self) -> None:
        # Within the back-off after a failure, do not make every request wait on a dead database again
        # (a black-holed host costs the full connect timeout per query).
        if time.monotonic() < self._down_until:
            raise AuditUnavailable("the audit database is unavailable (retrying shortly)")

    def _mark_down(self, exc: BaseException, during: str) -> None:
        record_audit_failure(during)
        if _is_transient(exc):
            self._down_until = time.monotonic() + RETRY_AFTER_S
        # Class name only: the message of a database error can contain the statement's parameters (PHI).
        logger.warning("audit database unavailable during %s (%s)", during, type(exc).__name__)

    def _after_successful_write(self) -> None:
        now = time.monotonic()
        if now < self._next_spool_check:
            return
        self._next_spool_check = now + SPOOL_CHECK_INTERVAL_S
        if self._spool.has_pending() and not self._replay_lock.locked():
            threading.Thread(target=self._background_replay, name="audit-spool-replay", daemon=True).start()

    def _background_replay(self) -> None:
        if not self._replay_lock.acquire(blocking=False):
            return
        try:
            self._replay_locked()
        except Exception as exc:  # a background thread must not die loudly; retried later
            logger.warning("audit spool replay failed (%s)", type(exc).__name__)
        finally:
            self._replay_lock.release()


def _call_rows(spooled: SpooledCall) -> CallRows:
    """The column values of a hook call and its cards (JSON values made ``json_safe``)."""
    record = spooled.record
    call = {
        "record_uuid": spooled.record_uuid,
        "hook_instance": record.hook_instance,
        "service_id": record.service_id,
        "hook": record.hook,
        "patient_id": record.patient_id,
        "user_id": record.user_id,
        "encounter_id": record.encounter_id,
        "client_iss": record.client_iss,
        "client_tenant": record.client_tenant,
        "client_jti": record.client_jti,
        "received_at": as_utc(record.received_at),
        "duration_ms": float(record.duration_ms),
        "http_status": int(record.http_status),
        "data_sources": json_safe(record.data_sources),
        "skipped_resources": json_safe(record.skipped_resources),
        "rules_evaluated": json_safe(record.rules_evaluated),
        "error": record.error,
        "fhir_server": record.fhir_server,
        "tenant_key": record.tenant_key,
        "request_ms": None if record.request_ms is None else float(record.request_ms),
        "governance_values": None if record.governance_values is None else json_safe(record.governance_values),
    }
    card_rows = [{
        "card_uuid": card.card_uuid,
        "rule_id": card.rule_id,
        "rule_version": card.rule_version,
        "indicator": card.indicator,
        "summary": card.summary,
        "evidence": json_safe(card.evidence),
        "suggestion_uuids": json_safe(card.suggestion_uuids),
        "disposition": card.disposition,
        "order_key": card.order_key,
        "repeat_of": card.repeat_of,
        "evidence_fingerprint": None if card.evidence_fingerprint is None else json_safe(card.evidence_fingerprint),
        "override_codes": None if card.override_codes is None else json_safe(card.override_codes),
    } for card in record.cards]
    return CallRows(spooled.record_uuid, call, card_rows)


def _once_more_if_stale(operation: Callable[[], _T]) -> _T:
    """Run ``operation``; once more if it failed on a dead pooled connection (the database restarted).

    Without ``pool_pre_ping`` (one round trip per checkout, issue #7) a connection left over from before a
    restart fails on first use; SQLAlchemy then invalidates every older pooled connection, so the second run
    gets a fresh one. Only for operations that are safe to repeat.
    """
    try:
        return operation()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return operation()


def _reset_after_fork(reference: weakref.ref[AuditLog]) -> None:
    audit = reference()
    if audit is None:
        return
    audit._engine.dispose(close=False)  # drop the parent's connections without closing them under it
    audit._schema_lock = threading.Lock()
    audit._replay_lock = threading.Lock()
    audit._group.reset_after_fork()


def feedback_item_key(item: FeedbackRecord) -> str:
    """The identity of a feedback item: every field the EHR sent, so a resend is recognised exactly."""
    identity: dict[str, Any] = {
        "service_id": item.service_id,
        "card_uuid": item.card_uuid,
        "outcome": item.outcome,
        "accepted_suggestions": sorted(item.accepted_suggestions),
        "override_code": item.override_code,
        "override_system": item.override_system,
        "override_display": item.override_display,
        "override_comment": item.override_comment,
        "outcome_timestamp": canonical_time(item.outcome_timestamp),
    }
    if item.client_iss is not None:
        # Issue 15 item 2: the same item from another client is another item (it must not pass for a resend of
        # the card's own client's feedback). Without a client (--dev, no JWT) the key is as before.
        identity["client"] = [item.client_iss, item.client_tenant]
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()


# Issue 15 item 3: an outcomeTimestamp further ahead of this server's receive time than this is flagged.
FUTURE_TOLERANCE = timedelta(minutes=5)


def _card_client_matches(connection: Connection, item: FeedbackRecord) -> bool:
    """Whether the feedback's client is the client of the call that produced the card (issue 15 item 2)."""
    row = connection.execute(
        select(calls.c.client_iss, calls.c.client_tenant)
        .select_from(cards.join(calls, calls.c.id == cards.c.call_id))
        .where(cards.c.card_uuid == item.card_uuid)
    ).first()
    return row is not None and same_client(item.client_iss, item.client_tenant, row[0], row[1])
