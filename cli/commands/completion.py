"""`pvc completion`: print the shell completion script."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_PVC_COMPLETE"


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script.

    SHELL is bash (4.4+), zsh or fish.

    Completes commands, options, saved connection names and node names.

    \b
    Examples:
      eval "$(pvc completion bash)"                         # in ~/.bashrc
      eval "$(pvc completion zsh)"                          # in ~/.zshrc
      pvc completion fish > ~/.config/fish/completions/pvc.fish
    \b
    The same scripts come from click directly: _PVC_COMPLETE=bash_source pvc
    """
    from click.shell_completion import get_completion_class

    root = click.get_current_context().find_root().command
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - the Choice above prevents it
        raise click.BadParameter(shell)
    click.echo(cls(root, {}, "pvc", COMPLETE_VAR).source())
