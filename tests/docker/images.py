"""Images for the Docker tests on an engine with no registry: debootstrap bases, a host wheelhouse, the roles.

- base: Debian (the host's release, bookworm) ``--variant=minbase`` with python3, python3-venv and
  redis-server, from the mirror configured in the host's own apt sources (``/etc/apt/sources.list`` and
  ``sources.list.d``; ``$DIGITSTREAM_DEBIAN_MIRROR`` overrides), imported with ``docker import``, with a
  ``/data`` directory owned by uid 999 as in the official Redis image. It is the Dockerfile's
  ``BUILD_IMAGE`` and the compose file's ``REDIS_IMAGE``. The tag is a hash of the recipe: an image
  already in the engine is reused, and the root file system tarball is kept in the cache directory so
  a new engine only re-imports it.
- runtime: the base without redis-server and python3-venv (so without pip's and setuptools' wheels),
  flattened with ``docker export | docker import``: the Dockerfile's ``BASE_IMAGE``.
- wheelhouse: every pin of the lock files (requirements/) that applies to the base image's Python,
  downloaded on the host with ``pip download --require-hashes`` for that interpreter and machine,
  cached by a hash of those pins.
- role images: ``docker build --target api`` and ``--target worker`` of the repository's Dockerfile
  with the wheelhouse in docker/wheels/ (offline).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.docker import lockfile
from tests.docker.timing import Timings

REPO = Path(__file__).resolve().parents[2]
CONTEXT_WHEELS = REPO / "docker" / "wheels"
CACHE_ENV_VAR = "DIGITSTREAM_DOCKER_CACHE"
MIRROR_ENV_VAR = "DIGITSTREAM_DEBIAN_MIRROR"
SUITE = "bookworm"  # CPython 3.11, as the host's: wheels made on the host fit
BASE_PACKAGES = ("python3", "python3-venv", "redis-server", "ca-certificates", "binutils")
# What the runtime base leaves out: the build-only packages and Redis (they pull pip's and setuptools' wheels,
# jemalloc, lzf ... along, which apt's autoremove takes away with them).
BUILD_ONLY_PACKAGES = ("python3-venv", "redis-server", "redis-tools", "binutils")
BASE_REPOSITORY = "digitstream-base"
RUNTIME_REPOSITORY = "digitstream-runtime"
ROLE_TARGETS = ("api", "worker")  # Dockerfile targets, built in this order (the worker reuses the API's layers)
ROLE_IMAGE = "digitstream-{target}:compose-test"
REDIS_UID = 999  # the official Redis image's redis user, which docker-compose.yml runs redis-server as
# Bump when the base recipe changes in a way the hashed fields below do not capture.
BASE_RECIPE_VERSION = 2
RUNTIME_RECIPE_VERSION = 2
# As Debian's -slim images (which the python:3.11-slim base builds on) leave out: documentation and translations.
TRIMMED = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")
IMPORT_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
)


class HarnessUnavailable(RuntimeError):
    """Something the Docker harness needs is missing on this machine; the tests skip with this message."""


class CommandFailed(RuntimeError):
    """A harness command exited non-zero; the message holds the command and the end of its output."""


def run(
    args: Sequence[str | Path],
    *,
    timeout: float,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output (also appended to ``log``); raise CommandFailed with its tail."""
    argv = [str(a) for a in args]
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{' '.join(argv)} did not finish in {timeout:.0f} s") from exc
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:
            out.write(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}(exit {result.returncode})\n")
    if check and result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise CommandFailed(f"{' '.join(argv)} exited {result.returncode}:\n{tail}")
    return result


def cache_dir() -> Path:
    path = Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "digitstream" / "docker")
    path.mkdir(parents=True, exist_ok=True)
    return path


def short_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- the engine ---------------------------------------------------------------------------------------


def require_docker() -> None:
    """Raise HarnessUnavailable unless a Docker engine answers."""
    if shutil.which("docker") is None:
        raise HarnessUnavailable("the docker command is not installed")
    try:
        result = run(["docker", "info", "--format", "{{json .ServerVersion}}"], timeout=30, check=False)
    except CommandFailed as exc:
        raise HarnessUnavailable(f"the Docker engine does not answer: {exc}") from None
    if result.returncode != 0:
        raise HarnessUnavailable(f"the Docker engine does not answer (docker info: {result.stderr.strip()[-300:]})")


def image_exists(tag: str) -> bool:
    return run(["docker", "image", "inspect", tag], timeout=30, check=False).returncode == 0


# -- the debootstrap base image ---------------------------------------------------------------------


def _sources_entries() -> list[tuple[str, list[str]]]:
    """(URI, suites) of every enabled ``deb`` source in the host's apt configuration."""
    entries: list[tuple[str, list[str]]] = []
    apt = Path("/etc/apt")
    one_line_files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in one_line_files:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], [words[2]]))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                entries.append((uri, fields.get("suites", "").split()))
    return entries


def debian_mirror() -> str:
    """The Debian mirror for debootstrap: $DIGITSTREAM_DEBIAN_MIRROR, else the host's apt source for SUITE."""
    explicit = os.environ.get(MIRROR_ENV_VAR)
    if explicit:
        return explicit
    for uri, suites in _sources_entries():
        if SUITE in suites and uri.startswith(("http://", "https://", "file:/")):
            return uri.rstrip("/")
    raise HarnessUnavailable(
        f"no apt source for Debian {SUITE} in /etc/apt/sources.list(.d); set {MIRROR_ENV_VAR} to a Debian mirror"
    )


def ensure_debootstrap(log: Path) -> str:
    """Path of debootstrap, installing Debian's package when missing (root with apt-get only)."""
    found = shutil.which("debootstrap") or next(
        (p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if Path(p).is_file()), None
    )
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise HarnessUnavailable("debootstrap is not installed and cannot be (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", "update", "-qq"], timeout=300, log=log, env=env)
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"]
        run(install, timeout=300, log=log, env=env)
    except CommandFailed as exc:
        raise HarnessUnavailable(f"debootstrap could not be installed: {exc}") from None
    found = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(found).is_file():
        raise HarnessUnavailable("apt-get installed debootstrap but it is not on the PATH")
    return found


def _unmount_below(root: Path) -> None:
    """Unmount anything a failed debootstrap left mounted inside ``root`` (proc, sys) before deleting it."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if len(line.split()) > 1]
    for mount in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def _remove_tree(root: Path) -> None:
    if root.exists():
        _unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)


def base_image_tag(mirror: str) -> str:
    recipe = (BASE_RECIPE_VERSION, SUITE, "minbase", sorted(BASE_PACKAGES), mirror, platform.machine(), TRIMMED)
    return f"{BASE_REPOSITORY}:{short_hash(*recipe)}"


def build_base_image(timings: Timings, log_dir: Path) -> str:
    """The base image's tag, building it only when the engine lacks it (and debootstrap only without a tarball)."""
    mirror = debian_mirror()
    tag = base_image_tag(mirror)
    if image_exists(tag):
        timings.note(f"base image {tag}: already in the engine")
        return tag
    tarball = cache_dir() / f"{tag.replace(':', '-')}.tar"
    log = log_dir / "base-image.log"
    if not tarball.exists():
        debootstrap = ensure_debootstrap(log)
        with timings.step(f"debootstrap {SUITE} from {mirror}"):
            work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir()))
            root = work / "root"
            try:
                run(
                    [debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, root, mirror],
                    timeout=900,
                    log=log,
                )
                for relative in TRIMMED:
                    shutil.rmtree(root / relative, ignore_errors=True)
                # As in the official Redis image: the data directory belongs to its redis user.
                (root / "data").mkdir(exist_ok=True)
                os.chown(root / "data", REDIS_UID, REDIS_UID)
                (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
                (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
                partial = tarball.with_suffix(".tar.part")
                run(["tar", "--numeric-owner", "-C", root, "-cf", partial, "."], timeout=300, log=log)
                partial.rename(tarball)
            finally:
                _remove_tree(work)
    else:
        timings.note(f"base root file system: cached in {tarball}")
    with timings.step(f"docker import {tag}"):
        _import(tarball, tag, log)
    return tag


def _import(tarball: Path, tag: str, log: Path) -> None:
    changes = [a for change in IMPORT_CHANGES for a in ("--change", change)]
    run(["docker", "import", *changes, tarball, tag], timeout=600, log=log)


def build_runtime_image(base: str, timings: Timings, log_dir: Path) -> str:
    """The base without its build-only packages, flattened into one layer (cached like the base)."""
    tag = f"{RUNTIME_REPOSITORY}:{short_hash(base, BUILD_ONLY_PACKAGES, RUNTIME_RECIPE_VERSION)}"
    if image_exists(tag):
        timings.note(f"runtime image {tag}: already in the engine")
        return tag
    tarball = cache_dir() / f"{tag.replace(':', '-')}.tar"
    log = log_dir / "base-image.log"
    if not tarball.exists():
        with timings.step(f"runtime base: {base} without {' '.join(BUILD_ONLY_PACKAGES)}"):
            name = f"digitstream-runtime-{os.getpid()}"
            # debootstrap marks every package it installs as manual, so apt's autoremove would keep the
            # build-only packages' dependencies: mark all automatic but the required and essential ones,
            # apt, python3 and ca-certificates (a minbase with python3), then purge.
            keep = (
                "$(dpkg-query -Wf '${Package} ${Priority} ${Essential}\\n'"
                " | awk '$2==\"required\" || $3==\"yes\" {print $1}')"
            )
            purge = (
                "apt-mark auto $(apt-mark showmanual) >/dev/null"
                f" && apt-mark manual {keep} apt python3 ca-certificates >/dev/null"
                f" && DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq --auto-remove {' '.join(BUILD_ONLY_PACKAGES)}"
                " && rm -rf /data /var/lib/redis /var/log/redis /etc/redis /usr/share/python-wheels"
                " /var/cache/apt/* /var/lib/apt/lists/* /var/log/*.log /var/log/apt/*"
                " && mkdir -p /var/cache/apt/archives/partial /var/lib/apt/lists/partial"
            )
            try:
                argv = ["docker", "run", "--name", name, "--network", "none", base, "sh", "-c", purge]
                run(argv, timeout=300, log=log)
                partial = tarball.with_suffix(".tar.part")
                run(["docker", "export", "--output", partial, name], timeout=300, log=log)
                partial.rename(tarball)
            finally:
                run(["docker", "rm", "-f", name], timeout=60, log=log, check=False)
    with timings.step(f"docker import {tag}"):
        _import(tarball, tag, log)
    return tag


# -- the wheelhouse ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetPython:
    """The interpreter in the base image: wheels are chosen for it, not for the host's Python."""

    version: str  # e.g. "3.11.2"
    glibc: tuple[int, int]
    machine: str

    @classmethod
    def of_image(cls, image: str) -> TargetPython:
        code = (
            "import json, platform; "
            "print(json.dumps([platform.python_version(), platform.libc_ver()[1], platform.machine()]))"
        )
        out = run(["docker", "run", "--rm", "--network", "none", image, "python3", "-c", code], timeout=120).stdout
        version, libc, machine = json.loads(out.strip().splitlines()[-1])
        major, minor = (int(part) for part in libc.split(".")[:2])
        return cls(version, (major, minor), machine)

    def pip_flags(self) -> list[str]:
        """``pip download`` flags selecting binary wheels that this interpreter can install."""
        cp = "cp" + "".join(self.version.split(".")[:2])
        flags = ["--only-binary=:all:", "--python-version", self.version, "--implementation", "cp"]
        for abi in (cp, "abi3", "none"):
            flags += ["--abi", abi]
        major, minor = self.glibc
        platforms = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 4, -1)]
        platforms += [f"manylinux{tag}_{self.machine}" for tag in ("2014", "2010", "1")] + [f"linux_{self.machine}"]
        for name in platforms:
            flags += ["--platform", name]
        return flags


def locked_requirements(target: TargetPython) -> list[str]:
    """``name==version --hash=...`` of every pin of the lock files that the target interpreter installs.

    Markers are evaluated here for the target (pip would evaluate them for the host's Python, and e.g.
    ``python_full_version < "3.11.3"`` differs between the host's 3.11 and Debian's 3.11.2).
    """
    pins = {}
    for pin in (p for pins in lockfile.lock_pins().values() for p in pins):
        if pin.applies(target.machine, target.version):
            pins[str(pin)] = pin
    return [
        f"{name} " + " ".join(f"--hash=sha256:{h}" for h in sorted(pin.hashes)) for name, pin in sorted(pins.items())
    ]


def build_wheelhouse(base_image: str, timings: Timings, log_dir: Path) -> Path:
    """A directory of wheels holding every locked dependency for the base image's Python (cached)."""
    target = TargetPython.of_image(base_image)
    requirements = locked_requirements(target)
    wheelhouse = cache_dir() / f"wheels-{short_hash(requirements, target.pip_flags())}"
    complete = wheelhouse / ".complete"
    if complete.exists():
        timings.note(f"wheelhouse: cached in {wheelhouse}")
        return wheelhouse
    log = log_dir / "wheelhouse.log"
    with timings.step(f"wheelhouse for Python {target.version} {target.machine} ({len(requirements)} locked pins)"):
        shutil.rmtree(wheelhouse, ignore_errors=True)
        wheelhouse.mkdir(parents=True)
        (wheelhouse / "requirements.txt").write_text("\n".join(requirements) + "\n")
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "-d", wheelhouse]
        flags = ["--no-deps", "--require-hashes", *target.pip_flags()]
        run([*pip, *flags, "-r", wheelhouse / "requirements.txt"], timeout=900, log=log)
        complete.write_text(target.version + "\n")
    return wheelhouse


def fill_context_wheelhouse(wheelhouse: Path) -> int:
    """Put the wheels into docker/wheels/ (the Dockerfile's offline source); returns how many."""
    for old in CONTEXT_WHEELS.glob("*.whl"):
        old.unlink()
    wheels = sorted(wheelhouse.glob("*.whl"))
    for wheel in wheels:
        try:
            os.link(wheel, CONTEXT_WHEELS / wheel.name)
        except OSError:
            shutil.copy2(wheel, CONTEXT_WHEELS / wheel.name)
    return len(wheels)


# -- the project image ------------------------------------------------------------------------------


def build_role_images(base_image: str, runtime_image: str, timings: Timings, log_dir: Path) -> dict[str, str]:
    """``docker build --target`` of each role (api, worker) on the two bases, offline; target -> tag."""
    wheelhouse = build_wheelhouse(base_image, timings, log_dir)
    count = fill_context_wheelhouse(wheelhouse)
    tags = {}
    try:
        for target in ROLE_TARGETS:
            tag = ROLE_IMAGE.format(target=target)
            with timings.step(f"docker build --target {target} {tag} ({count} wheels, offline)"):
                args = ["--build-arg", f"BASE_IMAGE={runtime_image}", "--build-arg", f"BUILD_IMAGE={base_image}"]
                argv = ["docker", "build", "--force-rm", *args, "--target", target, "--tag", tag, REPO]
                slowest = docker_build(argv, timeout=1800, log=log_dir / f"{target}-image.log")
            timings.note(f"slowest steps of {target}: " + "; ".join(f"{s:.0f} s {step}" for s, step in slowest))
            tags[target] = tag
    finally:
        for wheel in CONTEXT_WHEELS.glob("*.whl"):
            wheel.unlink()
    return tags


def docker_build(argv: list[str | Path], *, timeout: float, log: Path) -> list[tuple[float, str]]:
    """Run ``docker build``, logging each line with the seconds since the start; the 3 slowest steps."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    steps: list[tuple[float, str]] = []  # (start, "Step n/m : ...")
    with log.open("a") as out, subprocess.Popen(
        [str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL
    ) as process:
        out.write(f"$ {' '.join(map(str, argv))}\n")
        assert process.stdout is not None
        tail: list[str] = []
        for line in process.stdout:
            elapsed = time.monotonic() - started
            out.write(f"[{elapsed:7.1f}] {line}")
            tail = [*tail[-60:], line]
            if line.startswith("Step "):
                steps.append((elapsed, line.strip()[:100]))
            if elapsed > timeout:
                process.kill()
                raise CommandFailed(f"{' '.join(map(str, argv))} did not finish in {timeout:.0f} s")
        code = process.wait()
    if code != 0:
        raise CommandFailed(f"{' '.join(map(str, argv))} exited {code}:\n{''.join(tail)[-3000:]}")
    ends = [start for start, _ in steps[1:]] + [time.monotonic() - started]
    durations = [(end - start, step) for (start, step), end in zip(steps, ends, strict=True)]
    return sorted(durations, reverse=True)[:3]


def image_size_mb(tag: str) -> float:
    out = run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], timeout=30).stdout
    return int(out.strip()) / 1e6
