"""External tools the deployment tests run (promtool, systemd-analyze, a
Docker Compose client). `.ci/run` installs them; on a developer machine
without one the test is skipped with the reason, in CI it fails."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

# what provides each tool on Debian/Ubuntu
PACKAGES = {
    "promtool": "prometheus",
    "systemd-analyze": "systemd",
    "docker-compose": "docker-compose (or the Docker Compose v2 plugin)",
}


def missing(name: str, why: str = "") -> None:
    msg = f"{name} not found{(': ' + why) if why else ''}; install it with apt-get install {PACKAGES.get(name, name)} (.ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(name)
    return path


def compose() -> list[str]:
    """The Compose command: `docker compose` (v2 plugin) when the docker
    client has it, else a `docker-compose` binary (v2, or Debian's 1.29)."""
    docker = shutil.which("docker")
    if docker:
        r = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
        if r.returncode == 0:
            return [docker, "compose"]
    dc = shutil.which("docker-compose")
    if dc:
        return [dc]
    missing("docker-compose", "the docker client here has no compose plugin")
    raise AssertionError("unreachable")
