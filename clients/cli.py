"""The ``digitstream`` command line: one entry point, one sub-command per task.

Sub-commands are loaded lazily by name, and listing them loads none. The client commands live in
``digitstream.clients.commands``; the ``worker``, ``serve`` and ``bench`` commands belong to the
worker and service roles and to the benchmarks, and are found through the ``digitstream.commands``
entry points, so this package never imports them. A role whose extra is not installed answers with
the ``pip install 'digitstream[extra]'`` line that adds it.

Exit codes: 0 success, 1 runtime failure (e.g. unreachable service), 2 usage or input error.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points

import click

from digitstream import __version__

# name -> (module:attribute, the one-line summary `digitstream --help` lists without importing it).
# tests/test_cli_basics.py checks that each summary is the command's own first docstring line.
COMMANDS = {
    "publish": (
        "publish:publish",
        "Publish labelled samples from SOURCE to the stream the worker learns from.",
    ),
    "predict": (
        "predict:predict",
        "Print the digit in each IMAGE (PNG or JPEG) and its probabilities as a bar chart.",
    ),
    "status": (
        "model:status",
        "Show the served model: version, samples learned, accuracy, worker and lag.",
    ),
    "versions": (
        "model:versions",
        "List the kept model versions (oldest first) and which one is served.",
    ),
    "pin": (
        "model:pin",
        "Serve VERSION until `digitstream unpin` (a rollback); the worker keeps learning meanwhile.",
    ),
    "unpin": (
        "model:unpin",
        "Serve the latest version again.",
    ),
    "models": (
        "models:models",
        "Create, list, show and delete the registered models (many models on one Redis or cluster).",
    ),
    "reproduce-seed": (
        "seed:reproduce_seed",
        "Train the post's single-layer network (the `seed` rule) and print its figures.",
    ),
    "data": (
        "data:data",
        "The MNIST data: download it, or show which directory will be used.",
    ),
    "demo": (
        "demo:demo",
        "Run everything on this machine and watch the model learn MNIST live.",
    ),
    "completion": (
        "completion:completion",
        "Print the shell completion script for bash, zsh or fish.",
    ),
}
COMMANDS_PACKAGE = "digitstream.clients.commands."
ENTRY_POINT_GROUP = "digitstream.commands"
# Summaries of the role commands registered as entry points by this package (others are imported to list them).
ROLE_SUMMARIES = {
    "worker": "Learn from the model's Redis stream, one sample at a time, writing versioned snapshots.",
    "serve": "Serve predictions from the newest model snapshot in Redis (hot-reloaded), never learning.",
    "bench": "Run every benchmark side by side (learners, worker, publisher, service) and write BENCHMARKS.md + plots.",
}


class LazyGroup(click.Group):
    """A group whose commands are imported only when run (listing them imports nothing)."""

    def _targets(self) -> dict[str, str]:
        targets = {name: COMMANDS_PACKAGE + target for name, (target, _) in COMMANDS.items()}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            targets[ep.name] = ep.value
        return targets

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._targets())

    def summary(self, ctx: click.Context, name: str) -> str | None:
        """The command's one-line help, from the tables above when known (no import)."""
        if name in COMMANDS:
            return COMMANDS[name][1]
        target = self._targets().get(name)
        if name in ROLE_SUMMARIES and target is not None and target.startswith("digitstream."):
            return ROLE_SUMMARIES[name]
        command = self.get_command(ctx, name)
        return None if command is None else command.get_short_help_str(limit=200)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, summary) for name in self.list_commands(ctx) if (summary := self.summary(ctx, name)) is not None]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._targets().get(cmd_name)
        if target is None:
            return None
        missing = next((m for m in NEEDS.get(cmd_name, ()) if importlib.util.find_spec(m) is None), None)
        if missing is not None:
            return _missing_extra(cmd_name, missing)
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return None  # a command not built yet
            return _missing_extra(cmd_name, exc.name or "a module")
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command


EXTRAS = {"worker": "worker", "serve": "serve", "bench": "bench", "demo": "demo"}
# What each of those commands needs beyond the base install, looked up (find_spec imports nothing) before
# the command is loaded: a command may import it only once it runs, and must name its extra, not fail
# half-way with a traceback.
NEEDS = {
    "worker": ("numba", "river"),
    "serve": ("fastapi", "uvicorn"),
    "demo": ("numba", "river", "fastapi", "uvicorn"),
    "bench": ("matplotlib", "numba", "fastapi"),
}


def _missing_extra(name: str, module: str) -> click.Command:
    """A stand-in for a command whose role is not installed: it says which extra to install."""
    extra = EXTRAS.get(name, "all")

    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def unavailable() -> None:
        raise click.ClickException(
            f"`digitstream {name}` needs {module!r}, which is not installed: pip install 'digitstream[{extra}]'"
        )

    unavailable.help = f"(not installed: pip install 'digitstream[{extra}]')"
    return unavailable


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="digitstream")
def cli() -> None:
    """digitstream: handwritten digits recognised by a model that keeps learning from a Redis stream."""


def main() -> None:
    cli(prog_name="digitstream")


if __name__ == "__main__":
    main()
