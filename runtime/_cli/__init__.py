"""The ``forge`` command: one module per group of subcommands, loaded on demand."""

from __future__ import annotations

import importlib
from typing import Any

import click

from ..__version__ import DISTRIBUTION

# Command name -> "module:function". Modules load only when their command runs,
# so `forge migrate` does not import the web stack, nor `forge run` Alembic's
# autogenerate.
COMMANDS = {
    "run": "run:run",
    "serve": "run:run",
    "dev": "dev:dev",
    "new": "new:new",
    "vendor": "new:vendor",
    "build": "build:build",
    "migrate": "migrate:migrate",
    "migrate:status": "migrate:migrate_status",
    "migrate:rollback": "migrate:migrate_rollback",
    "migrate:fresh": "migrate:migrate_fresh",
    "migrate:new": "migrate:migrate_new",
    "migrate:accept": "migrate:migrate_accept",
    "db:seed": "seed:db_seed",
    "console": "console:console",
    "nodes": "nodes:nodes",
    "prune": "prune:prune_command",
    "schedule:list": "schedule:schedule_list",
    "schedule:run": "schedule:schedule_run",
    "schedule:work": "schedule:schedule_work",
    "jobs:list": "jobs:jobs_list",
    "jobs:retry": "jobs:jobs_retry",
    "jobs:discard": "jobs:jobs_discard",
    "jobs:work": "jobs:jobs_work",
    "workflows:list": "workflows:workflows_list",
    "workflows:show": "workflows:workflows_show",
    "workflows:start": "workflows:workflows_start",
    "workflows:signal": "workflows:workflows_signal",
    "workflows:cancel": "workflows:workflows_cancel",
    "workflows:retry": "workflows:workflows_retry",
    "check": "inspect:check",
    "routes": "inspect:routes",
    "config": "inspect:config_command",
    "deploy:docker": "deploy:deploy_docker",
    "deploy:k8s": "deploy:deploy_k8s",
}

# Commands that work on the project's sources, which a built executable does
# not have; it leaves them out of its help and refuses them.
SOURCE_ONLY = {"build", "migrate:new", "deploy:docker", "deploy:k8s", "new", "vendor", "dev"}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when used (Click's documented pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _available(cmd_name):
            return None
        module_name, attribute = target.split(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        command: Any = getattr(module, attribute)
        return command


def _available(name: str) -> bool:
    if name not in SOURCE_ONLY:
        return True
    # Imported when needed: the configuration package is the heaviest import of
    # the CLI, and `forge run` loads it once the collector is off (see run.py).
    from .._config.bundle import bundled_app

    return bundled_app() is None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DISTRIBUTION, prog_name="forge")
def main() -> None:
    """Forge: forge.toml + handlers/ -> a production web service."""


__all__ = ["main"]
