"""What every benchmark records about the machine it ran on, so that its figures can be read in context."""

import datetime
import os
import platform
from importlib.metadata import version
from pathlib import Path


def cpu_model() -> str:
    """The processor's name as the operating system reports it, e.g. 'Intel(R) Xeon(R) Processor'."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(*packages: str) -> dict:
    """Date, CPU, core count, load average now, Python's version and the installed version of each of `packages`."""
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        **{package: version(package) for package in packages},
    }
