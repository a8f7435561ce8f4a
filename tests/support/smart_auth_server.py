"""A small SMART App Launch 2.0 authorization server for tests, fronting the real FHIR test server.

It plays the EHR's side of the launch so the viewer's client code runs for real:

- ``GET /fhir/.well-known/smart-configuration`` (or, with ``well_known=False``, only the STU1 ``oauth-uris``
  extension in ``/fhir/metadata``);
- ``GET /authorize``: checks client_id, redirect_uri, scope, state, aud and the PKCE S256 challenge, then
  auto-approves (redirect with ``code``) or denies (``error=access_denied``) when told to;
- ``POST /token``: verifies ``code_verifier`` against the stored challenge (RFC 7636 4.6), single-use codes,
  and returns ``access_token``, ``patient``, ``expires_in``, ``scope`` (and ``appContext`` when the launch had one);
- ``/fhir/...``: proxies to the upstream FHIR test server, passing the app's ``Authorization`` header through, so
  with ``FhirTestServer.start(require_token=...)`` the app must really present the issued token.

It binds 127.0.0.1 on a free port and runs in a thread; ``stop()`` shuts it down.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests
from flask import Flask, Response, jsonify, redirect, request
from werkzeug.serving import BaseWSGIServer, make_server

from cds_service.smart.scopes import READ_TYPES

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
# Every type the viewer reads (cds_service.smart.scopes.READ_TYPES) plus the Patient.
REQUIRED_DATA_SCOPES = (*READ_TYPES, "Patient")


def s256(verifier: str) -> str:
    """RFC 7636 S256 transform, computed independently of the code under test."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


@dataclass
class Behaviour:
    """Switches a test flips to provoke each failure path."""

    deny: bool = False                    # answer /authorize with error=access_denied
    issue_token: str | None = None        # hand out this token instead of the one the FHIR server accepts
    expires_in: int = 3600
    grant_v1_scopes: bool = False         # grant ``patient/X.read`` whatever was asked
    fhir_status: int | None = None        # proxy answers every FHIR data request with this status
    well_known: bool = True               # serve .well-known/smart-configuration (else metadata fallback)


@dataclass
class Launch:
    """An EHR launch context registered by the test."""

    patient: str
    app_context: str | None = None


@dataclass
class _Code:
    challenge: str
    client_id: str
    redirect_uri: str
    patient: str
    scope: str
    app_context: str | None


@dataclass
class SmartAuthServer:
    """The running server; ``fhir_base`` is the ``iss`` the app launches with."""

    upstream_fhir: str
    access_token: str
    client_id: str = "calcinosis-cds"
    redirect_uris: list[str] = field(default_factory=list)
    standalone_patient: str | None = None
    behaviour: Behaviour = field(default_factory=Behaviour)
    errors: list[str] = field(default_factory=list)          # why /authorize or /token refused a request
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: int = 0
    _launches: dict[str, Launch] = field(default_factory=dict)
    _codes: dict[str, _Code] = field(default_factory=dict)
    _server: BaseWSGIServer | None = None
    _thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``."""
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def fhir_base(self) -> str:
        """The FHIR base URL the app treats as ``iss`` (proxied to the upstream FHIR server)."""
        return f"{self.origin}/fhir"

    def new_launch(self, patient: str, app_context: str | None = None) -> str:
        """Register an EHR launch for ``patient``; returns the opaque ``launch`` value."""
        token = secrets.token_urlsafe(12)
        self._launches[token] = Launch(patient, app_context)
        return token

    def start(self) -> SmartAuthServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        self._server = make_server("127.0.0.1", 0, self._app(), threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="smart-auth", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down (safe to call twice)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # --- the endpoints -------------------------------------------------------------------------------------
    def _app(self) -> Flask:
        app = Flask("smart_auth_server")
        session = requests.Session()

        @app.get("/fhir/.well-known/smart-configuration")
        def well_known() -> Any:
            if not self.behaviour.well_known:
                return jsonify({"error": "not found"}), 404
            return jsonify({
                "issuer": self.origin,
                "authorization_endpoint": f"{self.origin}/authorize",
                "token_endpoint": f"{self.origin}/token",
                "capabilities": ["launch-ehr", "launch-standalone", "client-public", "context-ehr-patient",
                                 "context-standalone-patient", "permission-patient", "permission-v2",
                                 "sso-openid-connect"],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code"],
                "response_types_supported": ["code"],
                "scopes_supported": ["launch", "launch/patient", "openid", "fhirUser", "patient/*.rs"],
            })

        @app.get("/fhir/metadata")
        def metadata() -> Any:
            upstream = session.get(f"{self.upstream_fhir}/metadata", timeout=10,
                                   headers={"Authorization": f"Bearer {self.access_token}"})
            statement = upstream.json()
            if not self.behaviour.well_known:
                statement["rest"][0].setdefault("security", {})["extension"] = [{"url": OAUTH_URIS, "extension": [
                    {"url": "authorize", "valueUri": f"{self.origin}/authorize"},
                    {"url": "token", "valueUri": f"{self.origin}/token"}]}]
            return jsonify(statement)

        @app.route("/fhir/<path:rest>", methods=["GET", "POST"])
        def proxy(rest: str) -> Response:
            if self.behaviour.fhir_status is not None:
                return Response('{"resourceType":"OperationOutcome","issue":[{"severity":"error",'
                                '"code":"exception"}]}', status=self.behaviour.fhir_status,
                                content_type="application/fhir+json")
            headers = {"Accept": request.headers.get("Accept", "application/fhir+json")}
            if "Authorization" in request.headers:
                headers["Authorization"] = request.headers["Authorization"]
            query = request.query_string.decode()
            url = f"{self.upstream_fhir}/{rest}" + (f"?{query}" if query else "")
            upstream = session.request(request.method, url, headers=headers, data=request.get_data(), timeout=30)
            return Response(upstream.content, status=upstream.status_code,
                            content_type=upstream.headers.get("Content-Type", "application/fhir+json"))

        @app.get("/authorize")
        def authorize() -> Any:
            args = request.args.to_dict()
            self.authorize_requests.append(args)
            problem = self._check_authorize(args)
            if problem:
                self.errors.append(problem)
                return problem, 400
            target = args["redirect_uri"]
            if self.behaviour.deny:
                return redirect(f"{target}?{urlencode({'error': 'access_denied', 'state': args['state']})}")
            launch = self._launches.get(args.get("launch", "")) if "launch" in args else None
            patient = launch.patient if launch else self.standalone_patient
            if patient is None:
                self.errors.append("no patient for this launch")
                return "no patient", 400
            code = secrets.token_urlsafe(16)
            self._codes[code] = _Code(args["code_challenge"], args["client_id"], target, patient,
                                      args["scope"], launch.app_context if launch else None)
            return redirect(f"{target}?{urlencode({'code': code, 'state': args['state']})}")

        @app.post("/token")
        def token() -> Any:
            self.token_requests += 1
            form = request.form
            grant = self._codes.pop(form.get("code", ""), None)  # single use
            problem = self._check_token(form, grant)
            if problem or grant is None:
                self.errors.append(problem or "unknown code")
                return jsonify({"error": "invalid_grant", "error_description": problem}), 400
            granted = [s for s in grant.scope.split() if s not in ("launch", "launch/patient")]
            if self.behaviour.grant_v1_scopes:
                granted = [f"patient/{t}.read" for t in REQUIRED_DATA_SCOPES] + ["openid", "fhirUser"]
            body: dict[str, Any] = {
                "access_token": self.behaviour.issue_token or self.access_token,
                "token_type": "Bearer",
                "expires_in": self.behaviour.expires_in,
                "scope": " ".join(granted),
                "patient": grant.patient,
            }
            if grant.app_context is not None:
                body["appContext"] = grant.app_context
            return jsonify(body)

        return app

    def _check_authorize(self, args: dict[str, str]) -> str | None:
        """Why an authorize request is invalid (SMART App Launch 2.0 'Obtain authorization code'), or None."""
        if args.get("response_type") != "code":
            return "response_type must be code"
        if args.get("client_id") != self.client_id:
            return "unknown client_id"
        if args.get("redirect_uri") not in self.redirect_uris:
            return "redirect_uri not registered"
        if len(args.get("state", "")) < 22:
            return "state missing or too short (SMART: >= 122 bits)"
        if args.get("aud", "").rstrip("/") != self.fhir_base:
            return "aud must be the FHIR base URL"
        if args.get("code_challenge_method") != "S256" or len(args.get("code_challenge", "")) != 43:
            return "PKCE S256 code_challenge required"
        scopes = set(args.get("scope", "").split())
        if "launch" in args and "launch" not in scopes:
            return "EHR launch requires the launch scope"
        if "launch" not in args and "launch/patient" not in scopes:
            return "standalone launch requires launch/patient"
        if "launch" in args and args["launch"] not in self._launches:
            return "unknown launch"
        for resource_type in REQUIRED_DATA_SCOPES:
            if not any(s.startswith(f"patient/{resource_type}.") for s in scopes):
                return f"scope lacks patient/{resource_type} access"
        return None

    def _check_token(self, form: Any, grant: _Code | None) -> str | None:
        """Why a token request is invalid (RFC 6749 4.1.3, RFC 7636 4.6), or None."""
        if grant is None:
            return "unknown or already used code"
        if form.get("grant_type") != "authorization_code":
            return "grant_type must be authorization_code"
        if form.get("client_id") != grant.client_id:
            return "client_id does not match the code"
        if form.get("redirect_uri") != grant.redirect_uri:
            return "redirect_uri does not match the authorize request"
        if s256(form.get("code_verifier", "")) != grant.challenge:
            return "code_verifier does not match the code_challenge"
        return None
