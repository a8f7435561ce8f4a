"""SMART on FHIR risk viewer (issue #6): SMART App Launch 2.0 public client, trend chart, findings, history.

``bp`` is registered by ``cds_service.create_app``; routes: ``/smart/launch``, ``/smart/callback``,
``/smart/app``, ``/rules/<rule_id>`` and the static assets under ``/smart/static/``.
"""

from __future__ import annotations

from cds_service.smart.views import bp

__all__ = ["bp"]
