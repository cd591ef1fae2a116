"""What the figures were measured on: machine, versions, date."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import greenstalk

import queue_beanstalk

__all__ = ["describe", "load_average", "server_version"]

ROOT = Path(__file__).resolve().parent.parent


def describe(beanstalkd: str, allowed: frozenset[int]) -> dict[str, str]:
    """Return the machine and versions, as label to text, in report order.

    :param beanstalkd: the server's version.
    :param allowed: the CPUs the benchmark was allowed before it pinned itself.
    """
    return {
        "CPU": _cpu_model(),
        "cores": f"{os.cpu_count()} online, {len(allowed)} allowed to the benchmark",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "beanstalkd": beanstalkd,
        "greenstalk": importlib.metadata.version("greenstalk"),
        "queue_beanstalk": f"{queue_beanstalk.__version__} ({_git_revision()})",
        "OS": f"{platform.system()} {platform.release()}",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def server_version(host: str, port: int) -> str:
    """Return the version a running beanstalkd reports."""
    with greenstalk.Client((host, port), encoding=None) as conn:
        return str(conn.stats()["version"])


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages, for a note on how busy the machine was."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_revision() -> str:
    try:
        revision = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return f"git {revision}"
