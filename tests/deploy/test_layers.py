"""The layer contracts (issue 17 item 6): import-linter checks them in CI; this test runs the same check, and
proves the checker would notice a violation, so a silently weakened contract cannot pass unnoticed.

The contracts live in pyproject.toml ``[tool.importlinter]``; docs/architecture.md explains each one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
SOURCE_PACKAGES = ("cds_service", "fhir_mappings", "cards", "synth", "findings")


def _contracts() -> list[dict[str, object]]:
    with (REPO / "pyproject.toml").open("rb") as handle:
        config = tomllib.load(handle)["tool"]["importlinter"]
    assert set(config["root_packages"]) == set(SOURCE_PACKAGES)
    return list(config["contracts"])


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False, env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(cwd)})


@pytest.fixture(scope="module")
def report() -> str:
    done = _lint(REPO)
    assert "Contracts:" in done.stdout, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("name", [str(contract["name"]) for contract in _contracts()])
def test_each_layer_contract_is_kept(report: str, name: str) -> None:
    verdict = re.search(rf"^{re.escape(name)} (KEPT|BROKEN)( \(\d+ ignored imports?\))?$", report, re.MULTILINE)
    assert verdict is not None, report
    assert verdict.group(1) == "KEPT", report[report.find("Broken contracts"):]


def test_the_contracts_say_what_the_architecture_promises() -> None:
    by_type: dict[str, list[dict[str, object]]] = {}
    for contract in _contracts():
        by_type.setdefault(str(contract["type"]), []).append(contract)
    forbidden = {(source, target) for contract in by_type["forbidden"]
                 for source in contract["source_modules"] for target in contract["forbidden_modules"]}
    assert {("fhir_mappings", "cds_service"), ("cards", "cds_service"), ("findings", "cds_service")} <= forbidden
    assert {("cds_service.rules", "flask"), ("cds_service.rules", "cds_service.audit"),
            ("cds_service.rules", "cards")} <= forbidden
    for contract in by_type["forbidden"]:
        assert not contract.get("allow_indirect_imports"), contract  # indirect imports count too
        # No exceptions at all, the rules included (issue 17 item 1: rules name wording by key, cards word it).
        assert "ignore_imports" not in contract, contract
    (protected,) = by_type["protected"]
    assert set(protected["protected_modules"]) >= {"flask", "werkzeug"}
    assert not any(str(module).startswith(("cds_service.rules", "cds_service.engine", "cds_service.audit.store"))
                   for module in protected["allowed_importers"])
    (acyclic,) = by_type["acyclic_siblings"]
    assert set(acyclic["ancestors"]) == set(SOURCE_PACKAGES)


def test_the_checker_notices_a_rule_that_imports_flask(tmp_path: Path) -> None:
    # A copy of the sources with one forbidden import added: the same configuration must report it broken.
    for package in SOURCE_PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "cds_service" / "rules" / "_probe.py").write_text("import flask\n", encoding="utf-8")
    (tmp_path / "fhir_mappings" / "_probe.py").write_text("import cds_service.engine\n", encoding="utf-8")
    # The cycle issue 17 removed: the audit store records failures in metrics; a metrics route read the runtime.
    with (tmp_path / "cds_service" / "metrics.py").open("a", encoding="utf-8") as metrics:
        metrics.write("\nfrom cds_service.runtime import get_runtime  # noqa: E402\n")
    done = _lint(tmp_path)
    assert done.returncode != 0
    assert "cds_service.rules._probe -> flask" in done.stdout, done.stdout
    assert "fhir_mappings._probe -> cds_service.engine" in done.stdout, done.stdout
    assert re.search(r"No cycles are allowed in cds_service\.[\s\S]*\.metrics -> \.runtime", done.stdout), done.stdout


def test_no_private_pyjwt_attributes() -> None:
    # Issue 17 item 5: only PyJWT's public API (private attributes change without notice between releases).
    private = re.compile(r"\bjwt\.[\w.]*\._\w|_jwk_data|\bPyJWK\b[^\n]*\._\w")
    offenders = [f"{path.relative_to(REPO)}:{number}" for package in SOURCE_PACKAGES
                 for path in (REPO / package).rglob("*.py")
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if private.search(line)]
    assert offenders == []


def test_the_service_and_its_cli_load_without_the_cohort_generator() -> None:
    # Issue 17 item 5: synth/ is its own package; `calcinosis-cds synth` imports it only when that command runs.
    probe = ("import sys; import cds_service.cli; from cds_service import create_app; "
             "assert not [m for m in sys.modules if m == 'synth' or m.startswith('synth.')], sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
