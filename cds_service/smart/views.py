"""HTTP routes of the SMART on FHIR viewer: ``/smart/launch``, ``/smart/callback``, ``/smart/app``.

SMART App Launch 2.0, public client, authorization code + PKCE S256. The browser only ever holds a random
session id cookie; the PKCE verifier, ``state`` and the access token live in the server-side session store.
Every failure becomes a plain HTML page with a 4xx/502 status that says what happened and what to do.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from cds_service.config import Settings
from cds_service.runtime import EXTENSION_KEY, Runtime, get_runtime
from cds_service.smart.discovery import discover
from cds_service.smart.errors import (
    AuthorizationDenied,
    NotLaunched,
    SessionExpired,
    SmartError,
    StateMismatch,
    UnknownIssuer,
)
from cds_service.smart.oauth import authorize_url, exchange_code, safe_error_code
from cds_service.smart.pkce import code_challenge_s256, new_code_verifier, new_state, same_secret
from cds_service.smart.scopes import missing_read_grants, requested_scopes
from cds_service.smart.session_store import SessionStore, default_store_path
from cds_service.url_policy import FhirServerNotAllowed, UnsafeUrl, check_server_allowed, normalise

log = logging.getLogger(__name__)

bp = Blueprint("smart", __name__, template_folder="templates", static_folder="static",
               static_url_path="/smart/static")

COOKIE = "calcinosis_smart"
STORE_KEY = "calcinosis_smart_sessions"
PENDING_TTL_S = 600.0      # a launch must come back from the authorization server within 10 minutes
MAX_PENDING = 5            # launches in flight per browser session (several tabs)
EXPIRED_GRACE_S = 3600.0   # keep an expired session an hour so the page can say "expired", not "not launched"
_MAX_PARAM = 2048

# Pages: no script at all; styles and images from this service only. Not frameable by default (the EHR opens
# the app in a tab or window); CDS_SMART_FRAME_ANCESTORS lists EHR origins that may embed it in a side panel.
_PAGE_CSP_BASE = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; "


def page_csp(settings: Settings) -> str:
    """The viewer's Content-Security-Policy, with frame-ancestors from configuration."""
    ancestors = " ".join(o.rstrip("/") for o in settings.smart_frame_ancestors) or "'none'"
    return _PAGE_CSP_BASE + f"frame-ancestors {ancestors}"


@bp.record_once
def _open_store(state: BlueprintSetupState) -> None:
    app = state.app
    runtime: Runtime = app.extensions[EXTENSION_KEY]  # built by create_app before blueprints are registered
    app.extensions[STORE_KEY] = SessionStore(default_store_path(runtime.settings.data_dir))


def _store() -> SessionStore:
    store: SessionStore = current_app.extensions[STORE_KEY]
    return store


def _secure_cookie(runtime: Runtime) -> bool:
    return request.is_secure or runtime.settings.public_base_url.startswith("https://")


def _set_cookie(response: BaseResponse, session_id: str, runtime: Runtime) -> None:
    if runtime.settings.smart_frame_ancestors:
        # A cross-site iframe only receives SameSite=None cookies, which browsers accept only when Secure.
        response.set_cookie(COOKIE, session_id, httponly=True, samesite="None", secure=True, path="/smart")
        return
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="Lax", secure=_secure_cookie(runtime),
                        path="/smart")


def page(template: str, status: int = 200, **context: Any) -> Response:
    """Render an HTML page with the viewer's own CSP (the JSON API's ``default-src 'none'`` forbids CSS)."""
    response = current_app.response_class(render_template(template, status=status, **context), status=status,
                                          mimetype="text/html")
    settings = current_app.extensions[EXTENSION_KEY].settings
    response.headers["Content-Security-Policy"] = page_csp(settings)
    response.headers["Cache-Control"] = "no-store"  # patient data
    return response


@bp.errorhandler(SmartError)
def _smart_error(exc: SmartError) -> Response:
    log.info("smart_error_page", extra={"status": exc.status, "error_type": type(exc).__name__})
    return page("error.html", exc.status, title=exc.title, message=exc.message)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 400
    return page("error.html", status, title=exc.name, message=exc.description or exc.name)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    # Never a stack trace in the page; the log has it (without clinical values: only the exception type).
    log.exception("smart_unhandled_error", extra={"error_type": type(exc).__name__})
    return page("error.html", 500, title="Something went wrong",
                message="The viewer hit an unexpected problem. Launch it again; if it persists, give the time "
                        "of the problem to the service operator.")


def _check_iss(iss: str, runtime: Runtime) -> str:
    if not iss:
        raise UnknownIssuer("The launch did not say which FHIR server to use (no iss parameter), and no default "
                            "is configured (CDS_SMART_DEFAULT_ISS). Launch the app from your EHR.",
                            status=400, title="The launch is incomplete")
    try:
        parts = urlsplit(iss)
        parts.port  # noqa: B018 - raises ValueError for a bad port; found by tests/security/test_fuzz.py
    except ValueError:
        parts = urlsplit("")
    if len(iss) > _MAX_PARAM or parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
            or parts.fragment or parts.username is not None or parts.password is not None:
        raise UnknownIssuer("The iss parameter is not an absolute FHIR base URL.", status=400,
                            title="The launch is incomplete")
    try:
        # Normalised before it is trusted (issue 16 item 3): "/fhir/../admin" is "/admin" to the HTTP library.
        normalise(iss)
    except UnsafeUrl as exc:
        raise UnknownIssuer(f"The iss parameter is refused: {exc}. Launch the app from your EHR; if the EHR sent "
                            "this address, tell its administrator.", status=400,
                            title="The FHIR server address is not in normal form") from None
    try:
        check_server_allowed(iss, runtime.settings)
    except FhirServerNotAllowed as exc:
        raise UnknownIssuer(f"{exc}. This app only connects to the FHIR servers its operator configured.") from None
    return iss.rstrip("/")


@bp.get("/smart/launch")
def launch() -> BaseResponse:
    """Start an EHR launch (``iss`` + ``launch``) or a standalone launch (``iss`` only, or the default)."""
    runtime = get_runtime()
    iss = _check_iss(request.args.get("iss") or runtime.settings.smart_default_iss, runtime)
    launch_token = request.args.get("launch", "")
    if len(launch_token) > _MAX_PARAM:
        raise SmartError("The launch parameter is too long.", status=400, title="The launch is incomplete")
    endpoints = discover(iss, runtime.settings, runtime.fhir_session)
    verifier, state = new_code_verifier(), new_state()
    redirect_uri = runtime.public_url("/smart/callback", request.host_url)
    store = _store()
    session_id = request.cookies.get(COOKIE, "")
    document = store.get(session_id)
    if document is None:
        session_id, document = store.new_id(), {}
    now = time.time()
    pending = {k: v for k, v in document.get("pending", {}).items() if now - v["created"] < PENDING_TTL_S}
    while len(pending) >= MAX_PENDING:
        pending.pop(min(pending, key=lambda k: pending[k]["created"]))
    pending[state] = {"iss": iss, "verifier": verifier, "token_endpoint": endpoints.token_endpoint,
                      "redirect_uri": redirect_uri, "created": now}
    document["pending"] = pending
    store.put(session_id, document, ttl_s=_ttl(document))
    params = {
        "response_type": "code",
        "client_id": runtime.settings.smart_client_id,
        "redirect_uri": redirect_uri,
        "scope": requested_scopes(ehr_launch=bool(launch_token), v1=endpoints.v1_only),
        "state": state,
        "aud": iss,
        "code_challenge": code_challenge_s256(verifier),
        "code_challenge_method": "S256",
    }
    if launch_token:
        params["launch"] = launch_token
    log.info("smart_launch", extra={"ehr_launch": bool(launch_token), "discovery": endpoints.source})
    response = redirect(authorize_url(endpoints.authorization_endpoint, params), code=302)
    _set_cookie(response, session_id, runtime)
    return response


def _ttl(document: dict[str, Any]) -> float:
    """How long the stored session must live: its pending launches and its token (plus the grace period)."""
    auth = document.get("auth")
    token_left = auth["expires_at"] - time.time() + EXPIRED_GRACE_S if auth else 0.0
    return max(PENDING_TTL_S, token_left)


def _pop_pending(document: dict[str, Any] | None, state: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Remove and return the pending launch that ``state`` names (single use); raise StateMismatch if none."""
    if document is None:
        raise StateMismatch("This browser has no launch in progress (the launch started in another browser, the "
                            "cookie was blocked, or more than 10 minutes passed). Launch the app again.")
    pending: dict[str, Any] = document.get("pending", {})
    match = next((key for key in pending if state and same_secret(key, state)), None)
    if match is None or time.time() - pending[match]["created"] >= PENDING_TTL_S:
        raise StateMismatch("The answer from the authorization server does not belong to a launch started in "
                            "this browser (state mismatch or expired). Nothing was shared. Launch the app again.")
    entry: dict[str, Any] = pending.pop(match)  # single use
    return document, entry


@bp.get("/smart/callback")
def callback() -> BaseResponse:
    """The redirect_uri: check ``state``, handle denial, exchange the code, then open the viewer."""
    runtime = get_runtime()
    store = _store()
    session_id = request.cookies.get(COOKIE, "")
    document = store.get(session_id)
    document, entry = _pop_pending(document, request.args.get("state", ""))
    store.put(session_id, document, ttl_s=_ttl(document))
    error = request.args.get("error")
    if error is not None:
        code = safe_error_code(error)
        log.info("smart_authorization_error", extra={"oauth_error": code})
        if code == "access_denied":
            raise AuthorizationDenied("You, or the EHR on your behalf, declined to let this app read the patient's "
                                      "record. Nothing was shared. Launch the app again to retry.")
        raise AuthorizationDenied(f"The EHR's authorization server reported an error ({code}). Launch the app "
                                  "again; if it persists, tell the EHR administrator.", status=400)
    code_value = request.args.get("code", "")
    if not code_value or len(code_value) > _MAX_PARAM:
        raise StateMismatch("The authorization server sent no authorization code. Launch the app again.")
    grant = exchange_code(entry["token_endpoint"], code=code_value, redirect_uri=entry["redirect_uri"],
                          client_id=runtime.settings.smart_client_id, code_verifier=entry["verifier"],
                          settings=runtime.settings, session=runtime.fhir_session)
    # A new session id after sign-in (session fixation): the pre-launch id is discarded.
    store.delete(session_id)
    new_id = store.new_id()
    document["auth"] = {"iss": entry["iss"], "access_token": grant.access_token, "patient": grant.patient,
                        "scope": grant.scope, "expires_at": time.time() + grant.expires_in,
                        "rule": grant.app_context_rule}
    store.put(new_id, document, ttl_s=_ttl(document))
    log.info("smart_authorized", extra={"expires_in": grant.expires_in})
    response = redirect(url_for("smart.viewer"), code=303)
    _set_cookie(response, new_id, runtime)
    return response


def _authorized_session() -> dict[str, Any]:
    document = _store().get(request.cookies.get(COOKIE, ""))
    auth = document.get("auth") if document else None
    if not isinstance(auth, dict):
        raise NotLaunched("This page shows the patient chosen in a SMART launch, and this browser has not "
                          "completed one. Open the app from the patient's chart in your EHR.")
    if auth["expires_at"] <= time.time():
        raise SessionExpired("The EHR's permission for this app has expired. Launch the app again from the EHR.")
    return auth


@bp.get("/smart/app")
def viewer() -> Response:
    """The risk viewer for the launched patient."""
    from cds_service.smart.viewer_model import build_viewer_model

    runtime = get_runtime()
    auth = _authorized_session()
    model = build_viewer_model(runtime, auth, datetime.now(UTC), missing_read_grants(auth.get("scope", "")))
    return page("viewer.html", model=model)


@bp.get("/rules/<rule_id>")
def rule_page(rule_id: str) -> Response:
    """A plain explanation of one rule (linked from its cards as an ``absolute`` link)."""
    from cds_service.smart.rule_text import explain

    explanation = explain(rule_id) if len(rule_id) <= 64 else None
    if explanation is None:
        raise SmartError("There is no rule with this id. Rule ids are the card's source topic code, "
                         "for example caxp-high.", status=404, title="Unknown rule")
    return page("rule.html", rule=explanation)
