"""``calcinosis-cds evaluate`` over a hook request and over a Bundle."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cds_service.cli import main

from .patients import tp01, tp10


def _write(tmp_path: Path, data: object, name: str = "req.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_bundle_patient_view(tmp_path: Path) -> None:
    case = tp01()
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": r} for r in [case["patient"], *case["resources"]]]}
    out = CliRunner().invoke(main, ["evaluate", str(_write(tmp_path, bundle)), "--now", "2025-06-15T12:00:00Z"])
    assert out.exit_code == 0, out.output
    cards = json.loads(out.stdout)["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["caxp-high"]


def test_hook_request_with_prefetch_and_draft_orders(tmp_path: Path) -> None:
    case = tp10()
    request = {
        "hook": "order-select", "hookInstance": "x",
        "context": {"patientId": "pt1", "selections": ["MedicationRequest/rx10"],
                    "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": d} for d in case["drafts"]]}},
        "prefetch": {"patient": case["patient"],
                     "labs": {"resourceType": "Bundle", "entry": [{"resource": r} for r in case["resources"]]},
                     "missing": None},
    }
    out = CliRunner().invoke(main, ["evaluate", str(_write(tmp_path, request)), "--now", "2025-06-15T12:00:00Z"])
    assert out.exit_code == 0, out.output
    cards = json.loads(out.stdout)["cards"]
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == [("iv-calcium-order", "critical")]


def test_unreadable_input_exits_2(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.json"
    bad.write_text("{nope", encoding="utf-8")
    for args in (["evaluate", str(bad)], ["evaluate", str(tmp_path / "absent.json")],
                 ["evaluate", str(_write(tmp_path, [1, 2]))], ["evaluate", str(_write(tmp_path, {"a": 1}, "o.json"))],
                 ["evaluate", str(_write(tmp_path, {"hook": "encounter-start"}, "h.json"))],
                 ["evaluate", str(_write(tmp_path, {"resourceType": "Bundle"}, "b.json")), "--now", "yesterday"]):
        out = runner.invoke(main, args)
        assert out.exit_code == 2, (args, out.output)
        assert "error:" in out.stderr

