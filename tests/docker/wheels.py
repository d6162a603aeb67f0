"""Check that every pin of the lock files installs from a wheel on Linux x86_64 and aarch64 (CPython 3.11).

No pinned dependency may need a compiler on linux/arm64 (or amd64): for each pin that applies to CPython
3.11 on Linux, the package index must hold a manylinux wheel (or a pure-Python one) that CPython 3.11
on glibc 2.36 (Debian bookworm, the images' base) can install, and the lock must carry that wheel's
sha256, so ``pip install --require-hashes --only-binary=:all:`` takes it. The index is asked through
its JSON simple API (PEP 691): ``$PIP_INDEX_URL``, else PyPI; TLS trusts ``$PIP_CERT`` when set.

    python -m tests.docker.wheels            # prints one line per pin and architecture; exit 1 if any lacks a wheel
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from tests.docker.lockfile import Pin, lock_pins

MACHINES = ("x86_64", "aarch64")
GLIBC_MINOR = 36  # Debian bookworm
DEFAULT_INDEX = "https://pypi.org/simple"


def target_tags(machine: str) -> frozenset[Tag]:
    """Wheel tags CPython 3.11 on glibc 2.36 ``machine`` installs (what pip would accept there)."""
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 16, -1)]
    platforms += [f"manylinux2014_{machine}"]
    if machine == "x86_64":
        platforms += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    abis = ["cp311", "abi3", "none"]
    tags = set(cpython_tags((3, 11), abis=abis, platforms=platforms))
    tags |= set(compatible_tags((3, 11), "cp311", platforms))
    return frozenset(tags)


@dataclass(frozen=True)
class Verdict:
    pin: Pin
    machine: str
    wheel: str | None  # the file that would be installed, or None
    problem: str = ""


def _ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    for variable in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        path = os.environ.get(variable)
        if path and os.path.isfile(path):
            context.load_verify_locations(cafile=path)
    return context


def index_files(name: str, index: str, context: ssl.SSLContext) -> list[dict[str, object]]:
    """The files the index lists for project ``name`` (PEP 691 JSON)."""
    request = urllib.request.Request(
        f"{index.rstrip('/')}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60, context=context) as response:
        files: list[dict[str, object]] = json.load(response)["files"]
    return files


def judge(pin: Pin, machine: str, files: Iterable[dict[str, object]]) -> Verdict:
    tags = target_tags(machine)
    sdist_only = True
    for entry in files:
        filename = str(entry["filename"])
        try:
            name, version, _, wheel_tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            continue
        if name != pin.name or version != pin.version:
            continue
        sdist_only = False
        if not wheel_tags & tags:
            continue
        digest = entry.get("hashes", {}).get("sha256") if isinstance(entry.get("hashes"), dict) else None  # type: ignore[union-attr]
        if digest in pin.hashes:
            return Verdict(pin, machine, filename)
        return Verdict(pin, machine, None, f"{filename} fits but its sha256 is not in the lock")
    problem = "no wheel at all (sdist only)" if sdist_only else f"no wheel for CPython 3.11 manylinux {machine}"
    return Verdict(pin, machine, None, problem)


def check(index: str | None = None) -> list[Verdict]:
    """One verdict per pin (of every lock file) and machine where the pin applies."""
    index = index or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX
    pins = {(pin.name, pin.version): pin for pins in lock_pins().values() for pin in pins}
    wanted = [pin for pin in pins.values() if any(pin.applies_to_3_11(m) for m in MACHINES)]
    context = _ssl_context()
    with ThreadPoolExecutor(8) as pool:
        listings = dict(zip(wanted, pool.map(lambda p: index_files(p.name, index, context), wanted), strict=True))
    verdicts = []
    for pin in sorted(wanted, key=str):
        for machine in MACHINES:
            if pin.applies_to_3_11(machine):
                verdicts.append(judge(pin, machine, listings[pin]))
    return verdicts


def main() -> int:
    verdicts = check()
    width = max(len(str(v.pin)) for v in verdicts)
    for verdict in verdicts:
        outcome = verdict.wheel or f"MISSING: {verdict.problem}"
        print(f"{verdict.pin!s:<{width}}  {verdict.machine:<7}  {outcome}")
    missing = [v for v in verdicts if v.wheel is None]
    pins = {v.pin for v in verdicts}
    print(
        f"{len(pins)} pins, {len(verdicts)} (pin, machine) pairs: {len(verdicts) - len(missing)} with a wheel, "
        f"{len(missing)} missing"
    )
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
