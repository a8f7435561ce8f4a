"""Daemonless OCI builds for the container test (issue #14): a Debian base image, buildah bud, buildah run.

No Docker engine runs on the CI machines, but Debian's ``buildah`` builds a Dockerfile and runs an image as
root without a daemon (``--isolation chroot --storage-driver vfs``). The project's Dockerfile expects a
``python:3.11-slim-bookworm``-like base; a stand-in is made from Debian's own packages with ``debootstrap``
and passed as the ``PYTHON_IMAGE`` build argument. The base image is cached between runs: in buildah's
storage under the cache directory, and as a root-filesystem tarball keyed by a hash of the recipe, so a new
machine with a warm cache skips debootstrap and an unchanged recipe skips everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What the base image is made of. Changing anything here changes the cache key.
BASE_RECIPE: dict[str, Any] = {
    "suite": "bookworm",
    "variant": "minbase",
    "mirror": "http://deb.debian.org/debian",
    "packages": ["python3", "python3-venv", "ca-certificates"],
    "links": {"/usr/bin/python": "python3"},  # the Dockerfile runs `python -m venv`, as in the python images
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
    "revision": 1,
}
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def cache_dir() -> Path:
    """Where the base-image tarball and buildah's storage live between runs."""
    configured = os.environ.get("CALCINOSIS_CONTAINER_CACHE")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/cache/calcinosis-cds/container")
    return Path.home() / ".cache" / "calcinosis-cds" / "container"


def recipe_key() -> str:
    """Short hash of BASE_RECIPE: the base image's tag and the tarball's name."""
    return hashlib.sha256(json.dumps(BASE_RECIPE, sort_keys=True).encode()).hexdigest()[:16]


def missing_tools() -> list[str]:
    """The host programs the container test needs that are not installed."""
    return [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]


@dataclass(frozen=True)
class Buildah:
    """buildah with its own storage (vfs) under the cache directory, so it never touches other images."""

    root: Path

    def argv(self, *args: str) -> list[str]:
        """The full command line for ``buildah ARGS``."""
        return ["buildah", "--root", str(self.root / "storage"), "--runroot", str(self.root / "run"),
                "--storage-driver", "vfs", *args]

    def run(self, *args: str, timeout_s: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``buildah ARGS`` and return its captured output; raises with the output on failure."""
        result = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout_s, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"buildah {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def image_exists(self, name: str) -> bool:
        """Whether ``name`` is in this storage."""
        return self.run("inspect", "--type", "image", name, check=False).returncode == 0

    def inspect_image(self, name: str) -> dict[str, Any]:
        """``buildah inspect`` of an image, parsed."""
        return dict(json.loads(self.run("inspect", "--type", "image", name).stdout))

    def image_size_bytes(self, name: str) -> int:
        """Sum of the image's layer sizes as buildah reports it."""
        out = self.run("images", "--noheading", "--format", "{{.Size}}", name).stdout.strip()
        return parse_size(out.splitlines()[0])


def parse_size(text: str) -> int:
    """``'312 MB'`` / ``'1.2 GB'`` / ``'950 kB'`` -> bytes (decimal units, as buildah prints them)."""
    number, unit = text.split()
    factor = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9}[unit]
    return int(float(number) * factor)


def _make_rootfs_tarball(target: Path) -> None:
    """debootstrap the recipe into a temporary directory and tar it to ``target``."""
    with tempfile.TemporaryDirectory(prefix="calcinosis-rootfs-") as work:
        rootfs = Path(work) / "rootfs"
        subprocess.run(["debootstrap", f"--variant={BASE_RECIPE['variant']}",
                        "--include=" + ",".join(BASE_RECIPE["packages"]),
                        BASE_RECIPE["suite"], str(rootfs), BASE_RECIPE["mirror"]],
                       check=True, capture_output=True, timeout=900)
        for link, points_to in BASE_RECIPE["links"].items():
            (rootfs / link.lstrip("/")).symlink_to(points_to)
        # Package lists and the .deb cache are not needed at run time (the slim images drop them too).
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = target.with_suffix(".partial")
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
                       check=True, timeout=600)
        partial.rename(target)


def ensure_base_image(buildah: Buildah, cache: Path) -> tuple[str, str]:
    """The base image's name, made if needed; and how it was obtained ('cached image' / 'cached rootfs' /
    'debootstrap')."""
    name = f"localhost/calcinosis-cds-base:{recipe_key()}"
    if buildah.image_exists(name):
        return name, "cached image"
    tarball = cache / f"base-rootfs-{recipe_key()}.tar"
    how = "cached rootfs"
    if not tarball.exists():
        cache.mkdir(parents=True, exist_ok=True)
        _make_rootfs_tarball(tarball)
        how = "debootstrap"
    container = buildah.run("from", "scratch").stdout.strip()
    try:
        mountpoint = buildah.run("mount", container).stdout.strip()
        subprocess.run(["tar", "--numeric-owner", "-C", mountpoint, "-xf", str(tarball)], check=True, timeout=600)
        buildah.run("umount", container)
        env_flags = [flag for value in BASE_RECIPE["env"] for flag in ("--env", value)]
        buildah.run("config", *env_flags, "--cmd", "python3", container)
        buildah.run("commit", "--rm", container, name, timeout_s=900)
    except BaseException:
        buildah.run("rm", container, check=False)
        raise
    return name, how


def pip_config_for_build(directory: Path) -> Path:
    """A pip config that makes pip inside the build trust the machine's CA bundle (mounted read-only at the
    same path). Only mounted into RUN steps: its content never enters a layer (buildah leaves an empty file
    where it made the mount point)."""
    path = directory / "pip.conf"
    path.write_text(f"[global]\ncert = {HOST_CA_BUNDLE}\n", encoding="utf-8")
    return path


def build_image(buildah: Buildah, context: Path, base: str, tag: str,
                workdir: Path) -> subprocess.CompletedProcess[str]:
    """``buildah bud`` of the project's Dockerfile with the base image as PYTHON_IMAGE."""
    pip_conf = pip_config_for_build(workdir)
    # --format docker keeps the HEALTHCHECK (the OCI image format has no field for it).
    return buildah.run("bud", "--isolation", "chroot", "--pull-never", "--format", "docker",
                       "--build-arg", f"PYTHON_IMAGE={base}",
                       "--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro",
                       "--volume", f"{pip_conf}:/etc/pip.conf:ro",
                       "--tag", tag, "--file", str(context / "Dockerfile"), str(context), timeout_s=900)
