"""The hashed lock files in requirements/ (written by scripts/lock): parsed into pins, filtered by target.

A lock file is pip's requirements format with one pin per entry, ``name==version [; marker]`` followed by
``--hash=sha256:...`` continuation lines. Markers are kept (universal resolution), so whether a pin
applies depends on the interpreter: :meth:`Pin.applies` evaluates it for a CPython 3.11 Linux target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCK_DIR = REPO / "requirements"
LOCK_FILES = ("runtime.txt", "api.txt", "worker.txt", "build.txt")
# The ends of the 3.11 series: a marker comparing python_full_version with a 3.11 release holds at one of them
# (Debian bookworm ships 3.11.2, the python:3.11 images 3.11.9 or later).
PYTHON_3_11 = ("3.11.0", "3.11.99")


@dataclass(frozen=True)
class Pin:
    name: str  # canonical (PEP 503)
    version: Version
    marker: Marker | None
    hashes: frozenset[str]  # sha256 hex digests of the files this pin accepts

    def applies(self, machine: str, python_full_version: str) -> bool:
        """Whether pip installs this pin on CPython ``python_full_version`` on Linux ``machine``."""
        if self.marker is None:
            return True
        major_minor = ".".join(python_full_version.split(".")[:2])
        env = {
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "os_name": "posix",
            "platform_machine": machine,
            "python_version": major_minor,
            "python_full_version": python_full_version,
            "implementation_version": python_full_version,
        }
        return self.marker.evaluate(env)

    def applies_to_3_11(self, machine: str) -> bool:
        return any(self.applies(machine, version) for version in PYTHON_3_11)

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def parse_lock(path: Path) -> list[Pin]:
    """Every pin of one lock file; ValueError if a pin is not ``==`` or carries no hash."""
    entries: list[str] = []
    current: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        current.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            entries.append(" ".join(current))
            current = []
    if current:
        entries.append(" ".join(current))
    pins = []
    for entry in entries:
        hashes = frozenset(_HASH.findall(entry))
        requirement = Requirement(_HASH.sub("", entry).strip())
        specs = list(requirement.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise ValueError(f"{path.name}: {requirement} is not pinned with ==")
        if not hashes:
            raise ValueError(f"{path.name}: {requirement} has no --hash")
        pins.append(Pin(canonicalize_name(requirement.name), Version(specs[0].version), requirement.marker, hashes))
    return pins


def lock_pins(names: tuple[str, ...] = LOCK_FILES) -> dict[str, list[Pin]]:
    return {name: parse_lock(LOCK_DIR / name) for name in names}
