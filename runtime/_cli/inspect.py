"""``forge check``, ``forge routes`` and ``forge config``: look at an app without serving it."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import _config as config
from .._introspect.check import Check, CheckRun
from .._introspect.config_report import effective_config
from .._introspect.routes import Inventory, inventory
from .common import config_option, reports_errors

_COLOURS = {"ok": "green", "warn": "yellow", "FAIL": "red"}

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")


@click.command("check")
@config_option
@click.option("--strict", is_flag=True, help="Count warnings as problems (exit 1).")
@reports_errors
def check(config_file: str | None, strict: bool) -> None:
    """Check the app without serving it: config, handlers, routes, crons, jobs, migrations.

    One line per check, then a summary. Exit code 0 when nothing failed, 1 when
    something did, 2 when the configuration itself does not load.
    """
    run = CheckRun(config_file)
    for result in run:
        _echo_check(result)
    counts = {status: sum(r.status == status for r in run.results) for status in _COLOURS}
    failed, warned = counts["FAIL"], counts["warn"]
    summary = f"{counts['ok']} ok, {warned} warning(s), {failed} failed"
    if failed or (strict and warned):
        click.secho(f"check: {summary}", fg="red")
        sys.exit(2 if run.config_failed else 1)
    click.secho(f"check: {summary}", fg="yellow" if warned else "green")


def _echo_check(result: Check) -> None:
    status = click.style(f"{result.status:<4}", fg=_COLOURS[result.status])
    click.echo(f"{status}  {result.subject}: {result.detail}")
    for line in result.more:
        click.echo(f"        {line}")


@click.command("routes")
@config_option
@json_option
@reports_errors
def routes(config_file: str | None, as_json: bool) -> None:
    """List every route (method, path, handler file:function), cron, daemon and job."""
    from .._project.discovery import discover_app

    settings = config.load(config_file)
    found = discover_app(settings)
    listed = inventory(settings, found)
    if as_json:
        click.echo(json.dumps(listed.as_json(), indent=2))
        return
    _echo_inventory(listed)


def _echo_inventory(listed: Inventory) -> None:
    _table(
        ["METHOD", "PATH", "HANDLER"],
        [
            [
                route.method,
                route.path,
                str(route.handler) if route.handler else f"built-in ({route.note})",
            ]
            for route in listed.routes
        ],
    )
    sections: list[tuple[str, list[str], list[list[str]]]] = [
        (
            "crons",
            ["NAME", "EXPRESSION", "TIMEZONE", "HANDLER"],
            [[c["name"], c["expression"], c["timezone"], c["handler"]] for c in listed.crons],
        ),
        ("daemons", ["NAME", "HANDLER"], [[d["name"], d["handler"]] for d in listed.daemons]),
        (
            "jobs",
            ["NAME", "QUEUE", "RETRIES", "TIMEOUT", "HANDLER"],
            [
                [
                    j["name"],
                    j["queue"],
                    str(j["retries"]),
                    f"{j['timeout']:g}s" if j["timeout"] else "-",
                    j["handler"],
                ]
                for j in listed.jobs
            ],
        ),
        (
            "workflows",
            ["NAME", "VERSION", "QUEUE", "HANDLER"],
            [[w["name"], str(w["version"]), w["queue"], w["handler"]] for w in listed.workflows],
        ),
    ]
    for title, header, rows in sections:
        click.echo()
        if rows:
            click.echo(f"{title}:")
            _table(header, rows)
        else:
            click.echo(f"{title}: none")


@click.command("config")
@config_option
@json_option
@reports_errors
def config_command(config_file: str | None, as_json: bool) -> None:
    """Show the effective configuration, each value's source, secrets redacted."""
    settings = config.load(config_file)
    values = effective_config(settings)
    if as_json:
        document: dict[str, Any] = {
            "file": str(settings.source_file),
            "values": {item.key: {"value": item.value, "source": item.source} for item in values},
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"# {settings.source_file} (APP_ENV={settings.app.env})")
    _table(
        ["KEY", "VALUE", "SOURCE"],
        [[item.key, _display(item.value), item.source] for item in values],
    )


def _display(value: Any) -> str:
    # TOML's spelling, so a line can be pasted into forge.toml; None is "unset".
    if value is None:
        return "(unset)"
    return json.dumps(value)


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo(line.rstrip())
