"""What CI requires that a developer's machine may lack: PostgreSQL (issue 17 item 8).

Locally a test marked ``postgres`` is skipped with a message when no server answers; with
``CALCINOSIS_REQUIRE_POSTGRES=1`` (set by .ci/run) the same situation is a failure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import postgres

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PostgreSQL answers and none can be started."""
    monkeypatch.setattr(postgres, "_postgres_up", lambda: False)
    monkeypatch.setattr(postgres, "_start_local_cluster", lambda: None)


@pytest.mark.usefixtures("server_down")
def test_a_missing_server_skips_locally_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(postgres.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"127\.0\.0\.1:5432.*setup-postgres"):
        postgres.require_postgres()


@pytest.mark.usefixtures("server_down")
def test_a_missing_server_fails_when_postgres_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(postgres.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="CALCINOSIS_REQUIRE_POSTGRES=1"):
        postgres.require_postgres()


def test_ci_requires_postgres_and_runs_the_readme_command() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "export CALCINOSIS_REQUIRE_POSTGRES=1" in ci
    lines = [line.strip() for line in ci.splitlines()]
    assert lines.index("export CALCINOSIS_REQUIRE_POSTGRES=1") < lines.index("./scripts/test -p no:cacheprovider")
    assert "./scripts/test-container" in lines


def test_postgres_cases_of_the_audit_fixture_carry_the_mark() -> None:
    # The root conftest enforces the requirement through the mark, so an unmarked PostgreSQL case would escape it.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/audit/test_chain.py", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-m", "not postgres"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[sqlite" in done.stdout
    assert "[postgres" not in done.stdout
