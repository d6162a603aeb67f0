"""The ``digitstream`` command line: one entry point, one sub-command per task.

Sub-commands are loaded lazily by name. The client commands live in ``clients.commands``; the
``worker``, ``serve`` and ``bench`` commands belong to the worker and service roles and to the
benchmarks, and are found through the ``digitstream.commands`` entry points, so this package never
imports them.

Exit codes: 0 success, 1 runtime failure (e.g. unreachable service), 2 usage or input error.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import click

CLIENT_COMMANDS = {
    "publish": "clients.commands.publish:publish",
    "predict": "clients.commands.predict:predict",
    "status": "clients.commands.model:status",
    "versions": "clients.commands.model:versions",
    "pin": "clients.commands.model:pin",
    "unpin": "clients.commands.model:unpin",
    "reproduce-seed": "clients.commands.seed:reproduce_seed",
    "data": "clients.commands.data:data",
    "demo": "clients.commands.demo:demo",
}
ENTRY_POINT_GROUP = "digitstream.commands"


class LazyGroup(click.Group):
    """A group whose commands are imported only when listed or run."""

    def _targets(self) -> dict[str, str]:
        targets = dict(CLIENT_COMMANDS)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            targets[ep.name] = ep.value
        return targets

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._targets())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._targets().get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return None  # a command not built yet, or a role not installed
            raise
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="digitstream")
def cli() -> None:
    """digitstream: handwritten digits recognised by a model that keeps learning from a Redis stream."""


def main() -> None:
    cli(prog_name="digitstream")


if __name__ == "__main__":
    main()
