"""``digitstream completion SHELL``: the shell completion script (click's own), to source or install."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    \b
    bash:  eval "$(digitstream completion bash)"        (or add that line to ~/.bashrc)
    zsh:   eval "$(digitstream completion zsh)"         (or add that line to ~/.zshrc)
    fish:  digitstream completion fish > ~/.config/fish/completions/digitstream.fish
    """
    root = ctx.find_root()
    cls = get_completion_class(shell)
    assert cls is not None  # every name in SHELLS is one of click's own
    prog = root.info_name or "digitstream"
    complete_var = "_" + prog.replace("-", "_").upper() + "_COMPLETE"
    click.echo(cls(root.command, {}, prog, complete_var).source())
