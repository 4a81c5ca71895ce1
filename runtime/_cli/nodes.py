"""``forge nodes``: the cluster as the node registry sees it."""

from __future__ import annotations

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from .. import _config as config
from .._cluster.registry import list_nodes
from .._db.times import as_utc, utcnow
from .._observe.log import configure_logging
from .common import config_option, reports_errors, with_database


@click.command("nodes")
@config_option
@reports_errors
def nodes(config_file: str | None) -> None:
    """List the nodes of the cluster: id, host, status, age, last heartbeat, streams."""
    settings = config.load(config_file)
    configure_logging(settings)
    try:
        rows = with_database(settings, list_nodes)
    except (ProgrammingError, OperationalError) as exc:
        if "forge_nodes" not in str(exc):
            raise
        click.echo("no nodes: the runtime's tables do not exist yet (run forge migrate)")
        return
    if not rows:
        click.echo("no nodes are running")
        return
    current = utcnow()
    header = (
        f"{'id':40} {'address':22} {'pid':>7} {'status':9} {'age':>8} {'heartbeat':>10} "
        f"{'streams':>7}  leads"
    )
    click.echo(header)
    for row in rows:
        age = (current - as_utc(row.started_at)).total_seconds()
        beat = (current - as_utc(row.last_heartbeat)).total_seconds()
        click.echo(
            f"{row.id:40} {row.address + ':' + str(row.port):22} {row.pid:>7} {row.status:9} "
            f"{_span(age):>8} {_span(beat) + ' ago':>10} {row.subscribers:>7}  {row.leads or '-'}"
        )
    click.echo(f"{len(rows)} node(s)")


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"
