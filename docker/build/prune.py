"""Leaves a Python installation with only what runs: no pip, setuptools or wheel, no test suites, no debug info.

    python prune.py --in-image --build-tools     # this interpreter's pip/setuptools/wheel, Debian's ensurepip wheels
    python prune.py --in-image --libraries DIR   # the test suites below DIR (site-packages), its libraries' debug info

It deletes files of the interpreter that runs it: ``--in-image`` is required, so that it only ever
runs where it is meant to (a stage of the Dockerfile), never on a developer's machine.

Run in the Dockerfile's stages: the images must hold no pip; the bundled test suites of numpy, scipy,
numba and llvmlite are tens of megabytes that nothing imports at run time; and some wheels ship their
extension modules with debug info (uvloop's is 13.8 MB, 2.4 MB without), which ``strip --strip-debug``
removes (only the debug sections: the code and its symbols are untouched) when binutils is there. The
Dockerfile imports every compiled part afterwards.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
from pathlib import Path

TOOLS = ("pip", "setuptools", "wheel")


def remove_tools() -> list[str]:
    removed = []
    for name in TOOLS:
        # Several copies can be visible (a venv's own and the base interpreter's): remove each.
        for dist in importlib.metadata.distributions(name=name):
            removed.append(f"{name} {dist.version}")
            base = Path(str(dist.locate_file("")))
            packages = set()
            for file in dist.files or ():
                parts = Path(file).parts
                if len(parts) > 1 and parts[0] != "..":
                    packages.add(base / parts[0])  # a package or .dist-info directory: removed whole below
                    continue
                path = Path(str(dist.locate_file(file)))  # a module, .pth file or console script
                if path.is_file() or path.is_symlink():
                    path.unlink()
            for package in packages:
                shutil.rmtree(package, ignore_errors=True)
    for wheel in Path("/usr/share/python-wheels").glob("*.whl"):  # Debian's ensurepip wheels
        if wheel.name.split("-")[0] in TOOLS:
            wheel.unlink()
            removed.append(wheel.name)
    return removed


def remove_tests(root: Path) -> int:
    """Delete every ``tests`` package directory below ``root``; returns the bytes freed."""
    freed = 0
    for tests in sorted(root.rglob("tests"), key=lambda p: len(p.parts)):
        if tests.is_dir() and (tests.parent / "__init__.py").exists():
            freed += sum(f.stat().st_size for f in tests.rglob("*") if f.is_file())
            shutil.rmtree(tests)
    return freed


def strip_debug(root: Path) -> int | None:
    """``strip --strip-debug`` the libraries of the distributions below ``root``; bytes freed, or None without strip.

    Distributions that carry grafted libraries (a ``*.libs`` directory: numpy, scipy, pillow) are left
    alone: auditwheel rewrote their files with patchelf, and strip can leave those unloadable ("ELF load
    command address/offset not page-aligned").
    """
    strip = shutil.which("strip")
    if strip is None:
        return None
    libraries = []
    for site in root.rglob("site-packages"):
        for dist in importlib.metadata.distributions(path=[str(site)]):
            files = [Path(file) for file in dist.files or ()]
            if any(file.parts and file.parts[0].endswith(".libs") for file in files):
                continue
            for file in files:
                path = site / file
                if ".so" in path.suffixes and path.is_file() and not path.is_symlink() and _is_elf(path):
                    libraries.append(path)
    before = sum(p.stat().st_size for p in libraries)
    for start in range(0, len(libraries), 200):
        subprocess.run([strip, "--strip-debug", *map(str, libraries[start : start + 200])], check=True)
    return before - sum(p.stat().st_size for p in libraries)


def _is_elf(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(4) == b"\x7fELF"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-image", action="store_true", help="confirm: this runs in an image being built")
    parser.add_argument("--build-tools", action="store_true", help="remove pip, setuptools and wheel")
    parser.add_argument("--libraries", type=Path, metavar="DIR",
                        help="remove the test suites below DIR and strip its libraries' debug info")  # fmt: skip
    args = parser.parse_args()
    if not args.in_image:
        parser.error("refusing to delete files without --in-image (only for the Dockerfile's stages)")
    done = []
    if args.build_tools:
        done.append(f"removed {', '.join(remove_tools()) or 'no build tools'}")
    if args.libraries:
        done.append(f"test suites: {remove_tests(args.libraries) / 1e6:.1f} MB")
        freed = strip_debug(args.libraries)
        done.append("no strip (binutils) here" if freed is None else f"debug info: {freed / 1e6:.1f} MB")
    print("; ".join(done) or "nothing asked")


if __name__ == "__main__":
    main()
