"""The ``digitstream`` entry point: help on every client command, and the ``data`` commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from digitstream.clients.embedded_redis import free_port
from tests.cli_support import cli_env, run_cli

CLIENT_COMMANDS = ["publish", "predict", "status", "versions", "pin", "unpin", "data", "demo"]


def test_the_top_level_help_lists_the_client_commands() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    listed = {line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert set(CLIENT_COMMANDS) <= listed


@pytest.mark.parametrize("command", [*CLIENT_COMMANDS, "data download", "data path"])
def test_every_command_has_help(command: str) -> None:
    done = run_cli(*command.split(), "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: digitstream {command} ")
    assert "-h, --help" in done.stdout


def test_the_listed_summaries_are_each_commands_own_first_help_line() -> None:
    import click

    from digitstream.clients import cli

    group = cli.cli
    assert isinstance(group, cli.LazyGroup)
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None and command.help is not None, name
        assert group.summary(ctx, name) == command.help.strip().splitlines()[0], name


HEAVY = ("numba", "llvmlite", "river", "scipy", "fastapi", "uvicorn", "starlette", "matplotlib")


@pytest.mark.parametrize("args", ["--help", "publish --help", "predict --help", "status --help", "--version"])
def test_client_commands_load_none_of_the_learner_or_the_http_stack(args: str) -> None:
    """The base install (client + CLI) must start fast and work without the [worker]/[serve] extras."""
    command = [sys.executable, "-X", "importtime", "-m", "digitstream", *args.split()]
    done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not {name for name in imported if name.split(".")[0] in HEAVY}


def test_an_unknown_command_is_a_usage_error() -> None:
    done = run_cli("publsh")
    assert done.returncode == 2
    assert "No such command 'publsh'" in done.stderr


def test_data_path_follows_the_option_then_the_environment(mnist_dir: Path, tmp_path: Path) -> None:
    env = cli_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    by_option = run_cli("data", "path", "--data", str(mnist_dir), env=env)
    assert (by_option.returncode, by_option.stdout.strip()) == (0, str(mnist_dir))
    by_env = run_cli("data", "path", env={**env, "DIGITSTREAM_DATA_DIR": str(mnist_dir)})
    assert (by_env.returncode, by_env.stdout.strip()) == (0, str(mnist_dir))


def test_data_path_with_nothing_found_says_exactly_what_to_pass(tmp_path: Path) -> None:
    done = run_cli("data", "path", env=cli_env(XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert done.returncode == 2
    assert "pass --data DIR" in done.stderr
    assert "DIGITSTREAM_DATA_DIR=DIR" in done.stderr
    assert "digitstream data download" in done.stderr
    assert "Traceback" not in done.stderr


def test_data_download_from_an_unreachable_mirror_exits_1_naming_it(tmp_path: Path) -> None:
    mirror = f"http://127.0.0.1:{free_port()}/"
    done = run_cli("data", "download", "--dir", str(tmp_path / "mnist"), "--mirror", mirror, "--timeout", "2")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: Could not download train-images-idx3-ubyte.gz")
    assert f"{mirror}: cannot connect" in done.stderr
    assert done.stderr.count("Error:") == 1  # the library's own warnings are not repeated


def test_docs_settings_md_lists_every_setting_with_its_meaning() -> None:
    from digitstream.settings import Settings, reference_markdown

    assert all(info.description for info in Settings.model_fields.values()), "every setting says what it is for"
    documented = (Path(__file__).resolve().parent.parent / "docs" / "settings.md").read_text(encoding="utf-8")
    assert documented == reference_markdown(), "regenerate docs/settings.md (the command is in its header)"
