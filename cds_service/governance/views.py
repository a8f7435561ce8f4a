"""The governance dashboard at ``/admin/dashboard`` (issue 19 item 1): server-rendered, one period and tenant.

Exists only when ``CDS_ADMIN_TOKEN`` is configured (404 otherwise, like the admin API). A browser signs in with
the token through the login form (session cookie); automation sends ``Authorization: Bearer``. Pages carry the
SMART viewer's CSP (no script at all). URLs hold dates, a rule id and an opaque tenant digest, never a patient id;
the drill-down shows keyed pseudonyms.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for
from sqlalchemy.exc import SQLAlchemyError

from cds_service.audit.store import AuditLog
from cds_service.config import Settings
from cds_service.governance import access, queries, svg
from cds_service.governance.period import Period
from cds_service.governance.whatif import PARAMETERS, simulate

DEFAULT_DAYS = 28
# The SMART viewer's policy (no script at all, styles and images from this origin only), but never framed: an
# admin page has no business inside an EHR frame. Kept here rather than imported from the viewer so the two
# packages do not depend on each other (the viewer reaches the engine, which records this package's values).
PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
MAX_DAYS = 366


class _BadRequest(ValueError):
    pass


def _date(name: str, default: datetime) -> datetime:
    raw = request.args.get(name) or ""
    if not raw:
        return default
    try:
        return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise _BadRequest(f"{name} must be a date (YYYY-MM-DD)") from None


def _period() -> Period:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = _date("end", today + timedelta(days=1))
    start = _date("start", end - timedelta(days=DEFAULT_DAYS))
    if not start < end or end - start > timedelta(days=MAX_DAYS):
        raise _BadRequest(f"the period must run forwards and last at most {MAX_DAYS} days")
    return Period(start, end, request.args.get("tenant") or None)


def _csv(header: list[str], rows: list[list[Any]], name: str) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    response = Response(buffer.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return response


def create_governance_blueprint(settings: Settings, get_audit: Callable[[], AuditLog | None]) -> Blueprint:
    """The dashboard blueprint; ``get_audit`` returns the app's AuditLog (None when auditing is off)."""
    bp = Blueprint("governance", __name__, url_prefix="/admin/dashboard", template_folder="templates",
                   static_folder="static")
    token = settings.admin_token.encode("utf-8")

    def _page(html: str, status: int = 200) -> Response:
        response = Response(html, status=status, mimetype="text/html")
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def _login_page(error: str = "", status: int = 200) -> Response:
        csrf = access.new_csrf()
        response = _page(render_template("governance_login.html", csrf=csrf, error=error), status)
        response.set_cookie(access.CSRF_COOKIE, csrf, secure=True, httponly=True, samesite="Strict",
                            path="/admin/dashboard")
        return response

    @bp.before_request
    def _authorise() -> Response | None:
        if not token:
            return Response("not found", status=404)  # the dashboard is off and must look absent
        if request.endpoint in ("governance.login", "governance.static"):
            return None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme:
            if scheme.lower() == "bearer" and access.token_matches(given, token):
                return None
            response = Response("a valid admin bearer token is required", status=401)
            response.headers["WWW-Authenticate"] = 'Bearer realm="calcinosis-cds-admin"'
            return response
        if access.session_valid(request.cookies.get(access.SESSION_COOKIE), token):
            return None
        return _login_page()

    @bp.route("/login", methods=["GET", "POST"])
    def login() -> Response:
        """The sign-in form; POST checks the CSRF token, then the admin token, and sets the session cookie."""
        if request.method == "GET":
            return _login_page()
        form_csrf = request.form.get("csrf", "")
        cookie_csrf = request.cookies.get(access.CSRF_COOKIE, "")
        if not form_csrf or not cookie_csrf or not access.token_matches(form_csrf, cookie_csrf.encode("utf-8")):
            return _page("the form expired or did not come from this site; reload the sign-in page", 403)
        if not access.token_matches(request.form.get("token", ""), token):
            return _login_page("That token is not valid.", 401)
        response = redirect(url_for("governance.dashboard"), 303)
        response.set_cookie(access.SESSION_COOKIE, access.new_session(token), secure=True, httponly=True,
                            samesite="Strict", path="/admin/dashboard", max_age=access.SESSION_SECONDS)
        response.delete_cookie(access.CSRF_COOKIE, path="/admin/dashboard")
        response.headers["Cache-Control"] = "no-store"
        return response  # type: ignore[return-value]

    def _run(handler: Callable[[AuditLog, Period], Response]) -> Response:
        audit = get_audit()
        if audit is None:
            return Response("the audit log is disabled on this instance", status=503)
        try:
            return handler(audit, _period())
        except _BadRequest as exc:
            return Response(str(exc), status=400, mimetype="text/plain")
        except SQLAlchemyError:
            return Response("the audit database is unavailable; retry later", status=503)

    @bp.get("")
    def dashboard() -> Response:
        """The dashboard page: ?start&end&tenant (&parameter&candidate for the what-if simulator)."""
        def handler(audit: AuditLog, period: Period) -> Response:
            engine = audit.engine
            rules = queries.rule_rows(engine, period)
            overrides = queries.override_reasons(engine, period)
            by_reason: dict[str, int] = {}
            for _, reason, n in overrides:
                by_reason[reason] = by_reason.get(reason, 0) + n
            trend = queries.weekly_trend(engine, period)
            charts = [(rule_id, svg.line_chart(f"{rule_id}: shown, accepted, overridden per week",
                                     [p[0].strftime("%m-%d") for p in points],
                                     [("shown", [p[1] for p in points]), ("accepted", [p[2] for p in points]),
                                      ("overridden", [p[3] for p in points])]))
                      for rule_id, points in sorted(trend.items())]
            whatif = None
            name = request.args.get("parameter")
            if name:
                if name not in PARAMETERS:
                    raise _BadRequest("unknown what-if parameter")
                try:
                    candidate = float(request.args.get("candidate", ""))
                except ValueError:
                    raise _BadRequest("the candidate threshold must be a number") from None
                whatif = simulate(engine, period, PARAMETERS[name], candidate)
            html = render_template(
                "governance_dashboard.html", params=period.as_params(), tenants=queries.tenants(engine),
                hook_calls=queries.hook_calls(engine, period), rules=rules, overrides=overrides,
                reason_chart=svg.bar_chart("Override reasons", sorted(by_reason.items(), key=lambda i: -i[1])),
                suppressed=queries.suppressed_reasons(engine, period), trend_charts=charts,
                services=queries.service_rows(engine, period), parameters=list(PARAMETERS.values()),
                whatif=whatif)
            return _page(html)
        return _run(handler)

    @bp.get("/rule/<rule_id>")
    def rule(rule_id: str) -> Response:
        """One rule's cards in the period, patient ids as keyed pseudonyms."""
        def handler(audit: AuditLog, period: Period) -> Response:
            cards = queries.rule_cards(audit.engine, period, rule_id, access.pseudonym_key(token))
            reasons = [(reason, n) for _, reason, n in queries.override_reasons(audit.engine, period, rule_id)]
            return _page(render_template("governance_rule.html", rule_id=rule_id, params=period.as_params(),
                                         cards=cards, reason_chart=svg.bar_chart("Override reasons", reasons)))
        return _run(handler)

    @bp.get("/csv/<table>")
    def csv(table: str) -> Response:
        """Every table of the dashboard as CSV: rules, overrides, suppressed, trend, services, cards (?rule)."""
        def handler(audit: AuditLog, period: Period) -> Response:
            engine = audit.engine
            if table == "rules":
                return _csv(["rule", "shown", "patients", "per_100_calls", "accepted", "overridden", "no_response",
                             "suppressed", "silent", "change_vs_previous"],
                            [[r.rule_id, r.shown, r.patients, r.per_100_calls, r.accepted, r.overridden,
                              r.no_response, r.suppressed, r.silent, r.change]
                             for r in queries.rule_rows(engine, period)], table)
            if table in ("overrides", "suppressed"):
                rows = (queries.override_reasons if table == "overrides" else queries.suppressed_reasons)(
                    engine, period)
                return _csv(["rule", "reason", "cards"], [list(row) for row in rows], table)
            if table == "trend":
                return _csv(["rule", "week_start", "shown", "accepted", "overridden"],
                            [[rule_id, p[0].date().isoformat(), p[1], p[2], p[3]]
                             for rule_id, points in sorted(queries.weekly_trend(engine, period).items())
                             for p in points], table)
            if table == "services":
                return _csv(["service", "calls", "p50_ms", "p95_ms", "rate_412_pct", "prefetch_pct", "fetched_pct"],
                            [[s.service_id, s.calls, s.p50_ms, s.p95_ms, s.rate_412, s.prefetch_share,
                              s.fetched_share] for s in queries.service_rows(engine, period)], table)
            if table == "cards" and request.args.get("rule"):
                found = queries.rule_cards(engine, period, request.args["rule"], access.pseudonym_key(token))
                keys = ["received_at", "patient", "service", "indicator", "disposition", "response"]
                return _csv(keys, [[row[k] for k in keys] for row in found], table)
            return Response("unknown table", status=404)
        return _run(handler)

    return bp
