"""Where a hook call's time goes under load, in the server as production runs it (issue #7: the profile that
explains the gap between a target and the measured figure).

    python benchmarks/profile_load.py                    # typical record, audit SQLite, 16 connections, 10 s
    python benchmarks/profile_load.py --audit off --record large --seconds 20
    python benchmarks/profile_load.py --audit postgres   # also PostgreSQL's own CPU per request

It starts the floor (``benchmarks/floor_app.py``) and the service (``calcinosis-cds serve``: granian, 2 workers x
2 app threads, dev mode, audit as chosen) exactly as ``benchmarks/run.py`` does, and then:

1. drives each with wrk (``benchmarks/post.lua``, the same body) without a profiler and reads the workers' CPU
   time from ``/proc``: server CPU per request for the floor and for the service, which is what bounds the
   ratio of their throughputs on the same cores;
2. drives the service again while ``py-spy record --gil`` samples both workers (only the thread holding the
   GIL, i.e. the Python work that the two workers' GILs serialise), and prints each component's share of the
   samples and its milliseconds per request. A sample is charged to the innermost frame that matches a
   component of ``benchmarks/stack_components.py``, so a component's figure excludes what it calls in other
   components.

py-spy needs ptrace rights over the workers (root, or ``kernel.yama.ptrace_scope=0``). The sampler costs the
server some throughput, so the profiled run's req/s is lower than the unprofiled one; the shares are what count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.run import (  # noqa: E402
    PATIENT_VIEW,
    Server,
    build_record,
    floor_process,
    fresh_postgres_database,
    hook_body,
    run_wrk,
    service,
    service_env,
)
from benchmarks.stack_components import component_shares  # noqa: E402

RECORD_SIZES = {"small": 20, "typical": 150, "large": 5000}
SAMPLE_RATE = 200  # per second; py-spy's own cost grows with it


@dataclass(frozen=True)
class LoadRun:
    """One wrk run: requests answered and the server's worker CPU seconds spent on them."""

    requests: int
    seconds: float
    cpu_s: float
    errors: int
    database_cpu_s: float = 0.0  # PostgreSQL's own processes (audit on PostgreSQL on the same cores)

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        """Worker CPU milliseconds (user + system) per answered request."""
        return self.cpu_s * 1000.0 / self.requests if self.requests else 0.0

    @property
    def database_cpu_ms_per_request(self) -> float:
        """PostgreSQL server CPU milliseconds per answered request."""
        return self.database_cpu_s * 1000.0 / self.requests if self.requests else 0.0


def worker_cpu_seconds(master_pid: int) -> float:
    """User + system CPU seconds of the server master's children (its workers) so far (Linux ``/proc``)."""
    return _cpu_seconds(lambda _name, parent: parent == master_pid)


def postgres_cpu_seconds() -> float:
    """User + system CPU seconds of this machine's PostgreSQL server processes so far."""
    return _cpu_seconds(lambda name, _parent: name == "postgres")


def _cpu_seconds(wanted: Callable[[str, int], bool]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, _, rest = stat.read_text().partition(" (")[2].rpartition(")")
        except OSError:
            continue  # a process that ended meanwhile
        fields = rest.split()
        if wanted(name, int(fields[1])):  # field 4 of stat: the parent pid
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime
    return total / ticks


def drive(server: Server, body_file: Path, seconds: int, connections: int) -> LoadRun:
    """One wrk run (``run_wrk``) against the patient-view service of ``server``; the workers' CPU read around it."""
    before, database_before = worker_cpu_seconds(server.process.pid), postgres_cpu_seconds()
    result = run_wrk(f"{server.origin}/cds-services/{PATIENT_VIEW}", body_file, connections, seconds)
    after, database_after = worker_cpu_seconds(server.process.pid), postgres_cpu_seconds()
    return LoadRun(requests=int(result["requests"]), seconds=result["duration_us"] / 1e6, cpu_s=after - before,
                   errors=int(result["status_errors"]) + int(result["socket_errors"]),
                   database_cpu_s=database_after - database_before)


def profile(server: Server, body_file: Path, seconds: int, connections: int, out: Path
            ) -> tuple[LoadRun, Counter[str], int]:
    """Drive ``server`` while py-spy samples its workers (GIL holder only); (the run, shares, sample count)."""
    spy = subprocess.Popen(  # noqa: S603 - fixed argument list
        [_py_spy(), "record", "--pid", str(server.process.pid), "--subprocesses", "--gil", "--nonblocking",
         "--rate", str(SAMPLE_RATE), "--duration", str(seconds + 1), "--format", "raw", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        run = drive(server, body_file, seconds, connections)
    finally:
        output, _ = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not out.exists():
        raise SystemExit(f"py-spy failed (it needs ptrace rights over the workers):\n{output[-2000:]}")
    with out.open(encoding="utf-8", errors="replace") as lines:
        shares, total = component_shares(lines)
    return run, shares, total


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed (it is in the dev extra: pip install -e '.[dev]')")
    return found


def report(record: str, audit: str, connections: int, floor: LoadRun, service: LoadRun, profiled: LoadRun,
           shares: Counter[str], total: int) -> str:
    """The printed report: the unprofiled comparison with the floor, then the component table."""
    gil_ms = total / SAMPLE_RATE * 1000.0 / profiled.requests if profiled.requests else 0.0
    lines = [
        f"patient-view {record} record ({RECORD_SIZES[record]:,} observations), audit {audit}, "
        f"{connections} connections",
        "",
        "| server | req/s | worker CPU ms per request | errors |",
        "|---|---:|---:|---:|",
        f"| floor (empty handler) | {floor.rate:,.0f} | {floor.cpu_ms_per_request:.2f} | {floor.errors} |",
        f"| service | {service.rate:,.0f} | {service.cpu_ms_per_request:.2f} | {service.errors} |",
        "",
        *([f"PostgreSQL's own processes (same cores): {service.database_cpu_ms_per_request:.2f} ms of CPU per "
           "request.", ""] if audit == "postgres" else []),
        f"Service throughput {service.rate / floor.rate:.0%} of the floor; its workers spend "
        f"{service.cpu_ms_per_request / floor.cpu_ms_per_request:.1f}x the floor's CPU per request.",
        "",
        f"Profiled run: {profiled.rate:,.0f} req/s under py-spy --gil at {SAMPLE_RATE} Hz, {total:,} samples, "
        f"{gil_ms:.2f} ms of GIL-held time per request.",
        "",
        "| component | share of GIL-held samples | ms per request |",
        "|---|---:|---:|",
    ]
    for name, count in shares.most_common():
        lines.append(f"| {name} | {count / total:.1%} | {count / total * gil_ms:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Start the floor and the service, measure both without a profiler, then profile the service."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", choices=sorted(RECORD_SIZES), default="typical")
    parser.add_argument("--audit", choices=["sqlite", "postgres", "off"], default="sqlite",
                        help="postgres: a fresh database on 127.0.0.1:5432, dropped afterwards")
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=16)
    options = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (./scripts/test installs it)", file=sys.stderr)
        return 2
    _py_spy()
    body = hook_body("patient-view", build_record(RECORD_SIZES[options.record]))
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="calcinosis-profile-load-")))
        body_file = work / "body.json"
        body_file.write_text(json.dumps(body), encoding="utf-8")
        database_url = ""
        if options.audit == "postgres":
            database_url = stack.enter_context(fresh_postgres_database(work)) or ""
            if not database_url:
                print("error: no PostgreSQL on 127.0.0.1:5432", file=sys.stderr)
                return 2
        env = service_env(work, "service", audit=options.audit != "off", database_url=database_url)
        warm_up = min(2, options.seconds)
        with floor_process("floor", work) as floor_server:
            drive(floor_server, body_file, warm_up, options.connections)
            floor = drive(floor_server, body_file, options.seconds, options.connections)
        with service("service", work, env) as server:
            drive(server, body_file, warm_up, options.connections)
            measured = drive(server, body_file, options.seconds, options.connections)
            profiled, shares, total = profile(server, body_file, options.seconds, options.connections,
                                              work / "py-spy.txt")
    if not total:
        print("error: py-spy recorded no samples", file=sys.stderr)
        return 1
    print(report(options.record, options.audit, options.connections, floor, measured, profiled, shares, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
