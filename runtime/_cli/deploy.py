"""``forge deploy:docker`` and ``forge deploy:k8s``: deployment files from forge.toml."""

from __future__ import annotations

from pathlib import Path

import click

from .. import _config as config
from .._config import Settings
from .common import config_option, reports_errors

force_option = click.option("--force", is_flag=True, help="Overwrite files that already exist.")
output_dir_option = click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the files (default: the project directory, beside forge.toml).",
)


def _write(settings: Settings, output_dir: Path | None, files: dict[str, str], force: bool) -> None:
    from .._deploy.files import shown, write_files

    directory = output_dir if output_dir is not None else settings.root
    existed = {relative for relative in files if (directory / relative).exists()}
    for relative, written in zip(files, write_files(directory, files, force=force), strict=True):
        click.echo(f"{'overwrote' if relative in existed else 'wrote'} {shown(written)}")


@click.command("deploy:docker")
@config_option
@force_option
@output_dir_option
@reports_errors
def deploy_docker(config_file: str | None, force: bool, output_dir: Path | None) -> None:
    """Write a Dockerfile, a .dockerignore and a compose.yaml (app + PostgreSQL)."""
    from .._deploy import docker

    settings = config.load(config_file)
    _write(settings, output_dir, docker.files(settings), force)


@click.command("deploy:k8s")
@config_option
@force_option
@output_dir_option
@click.option(
    "--image", default=None, help="The container image (default: <app.name>:<app.version>)."
)
@click.option(
    "--replicas", type=click.IntRange(min=1), default=2, show_default=True, help="Pods to run."
)
@reports_errors
def deploy_k8s(
    config_file: str | None, force: bool, output_dir: Path | None, image: str | None, replicas: int
) -> None:
    """Write k8s/<app.name>.yaml: a Deployment with probes and a safe rollout, and a Service."""
    from .._deploy import k8s

    settings = config.load(config_file)
    text = k8s.manifests(settings, image=image, replicas=replicas)
    _write(settings, output_dir, {k8s.path(settings): text}, force)
