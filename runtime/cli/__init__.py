"""The ``forge`` command: one module per group of subcommands."""

from __future__ import annotations

import click

from .migrate import migrate, migrate_fresh, migrate_new, migrate_rollback, migrate_status
from .nodes import nodes
from .run import run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="forge-runtime", prog_name="forge")
def main() -> None:
    """Forge: forge.toml + handlers/ -> a production web service."""


main.add_command(run)
main.add_command(run, "serve")
main.add_command(migrate)
main.add_command(migrate_status)
main.add_command(migrate_rollback)
main.add_command(migrate_fresh)
main.add_command(migrate_new)
main.add_command(nodes)

__all__ = ["main"]
