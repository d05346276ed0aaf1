"""`safecity rules ...`: check a rule file (line-numbered errors) and backtest it over stored events."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from safecity.kernel.settings import Settings, load_settings
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.warning.rules import RuleError, RulePack, load_pack

if TYPE_CHECKING:
    from safecity.kernel.settings import Settings
    from safecity.warning.backtest import BacktestReport

rules_app = typer.Typer(help="Rule packs: check and backtest.", no_args_is_help=True)
console = Console()


ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (environment SAFECITY_... overrides it).")
]


def _settings(config: Path | None) -> Settings:
    """The node's settings (the same resolution as every `safecity` command); exit 2 when they are invalid."""
    try:
        return load_settings(config)
    except ValidationError as err:
        typer.echo(f"Invalid settings:\n{err}", err=True)
        raise typer.Exit(2) from err
    except FileNotFoundError as err:
        typer.echo(f"{err}. Pass an existing file to --config.", err=True)
        raise typer.Exit(2) from err


def _load(file: Path, settings: Settings) -> RulePack:
    try:
        return load_pack(file, pseudonymize=Pseudonymizer.of(settings))
    except RuleError as err:
        for line in err.lines():
            typer.echo(line, err=True)
        raise typer.Exit(1) from err
    except OSError as err:
        typer.echo(f"{file}: {err.strerror}", err=True)
        raise typer.Exit(2) from err


@rules_app.command("check")
def check(file: Annotated[Path, typer.Argument(help="YAML rule pack.")], config: ConfigOption = None) -> None:
    """Validate a rule pack; print `file:line: reason` for every problem (exit 1)."""
    pack = _load(file, _settings(config))
    kinds = sorted({r.kind for r in pack.rules})
    typer.echo(f"{file}: ok, {len(pack.spec.rules)} rules ({', '.join(kinds)})")


@rules_app.command("test")
def test(
    file: Annotated[Path, typer.Argument(help="YAML rule pack.")],
    since: Annotated[str, typer.Option(help="How far back: 24h, 90m, 7d, or an ISO 8601 instant.")] = "24h",
    until: Annotated[
        str | None, typer.Option(help="End of the period (exclusive): 1h (ago), an ISO 8601 instant; default now.")
    ] = None,
    db: Annotated[str | None, typer.Option(help="Database URL (default: the settings').")] = None,
    config: ConfigOption = None,
) -> None:
    """Backtest a rule pack over stored events: what would have fired, how often, for which groups and events."""
    from safecity.kernel import clock
    from safecity.kernel.errors import SafeCityError
    from safecity.store.locate import require_database

    settings = _settings(config)
    pseudonymize = Pseudonymizer.of(settings)
    pack = _load(file, settings)
    url = db or settings.database.url
    try:
        # A missing database is reported, never created empty (a backtest only reads).
        asyncio.run(require_database(url, config=config))
    except SafeCityError as err:
        typer.echo(err.render(settings.locale), err=True)
        raise typer.Exit(1) from err
    now = clock.now()
    try:
        start = parse_instant(since, now)
        end = parse_instant(until, now) if until is not None else now
    except ValueError as err:
        typer.echo(f"--since/--until: {err}", err=True)
        raise typer.Exit(2) from err
    if end <= start:
        typer.echo(f"--until ({end.isoformat()}) must be later than --since ({start.isoformat()})", err=True)
        raise typer.Exit(2)
    report = asyncio.run(run_backtest(pack, url, start, end, pseudonymize))
    print_report(report, file)


def parse_instant(text: str, now: datetime | None = None) -> datetime:
    """`24h` (ago) or an ISO 8601 instant, with a clear message for anything else."""
    from safecity.warning.backtest import parse_since

    try:
        return parse_since(text, now)
    except ValueError as err:
        raise ValueError(f"{text!r} is neither a duration ago (24h, 90m, 7d) nor an ISO 8601 instant") from err


async def run_backtest(
    pack: RulePack, url: str, since: datetime, until: datetime, pseudonymize: Pseudonymizer
) -> BacktestReport:
    """Backtest `pack` over the events stored at `url` in [since, until)."""
    from safecity.store.engine import create_engine
    from safecity.store.events import EventRepo
    from safecity.warning.backtest import backtest

    engine = create_engine(url)
    try:
        return await backtest(pack, EventRepo(engine), since, until, pseudonymize=pseudonymize)
    finally:
        await engine.dispose()


def print_report(report: BacktestReport, file: Path) -> None:
    """The per-rule table, example groups with their trigger events, and the pseudonym key warning."""
    period = f"{report.since.isoformat()} .. {report.until.isoformat()}"
    table = Table(title=f"Backtest of {file} over {report.events} events, {period}")
    for col in ("rule", "raised", "updated", "suppressed", "first", "last"):
        table.add_column(col)
    for out in report.rules.values():
        table.add_row(
            out.rule_id,
            str(out.raised),
            str(out.updated),
            ", ".join(f"{reason} {n}" for reason, n in sorted(out.suppressed.items())) or "0",
            out.first_at.isoformat() if out.first_at else "-",
            out.last_at.isoformat() if out.last_at else "-",
        )
    console.print(table)
    for out in report.rules.values():
        if out.examples:
            typer.echo(f"{out.rule_id}: first {len(out.examples)} of {out.raised} alerts")
        for ex in out.examples:
            typer.echo(f"  group {ex.group_key} at {ex.at.isoformat()}: events {', '.join(ex.trigger_event_ids)}")
    suppressed = report.engine.get("suppressed", 0)
    typer.echo(f"raised={report.raised} updated={report.updated} events={report.events} suppressed={suppressed}")
    warning = report.key.warning
    if warning is not None:
        # On stderr too, so it is seen even when stdout goes to a file.
        typer.echo(f"WARNING: {warning}", err=True)
        console.print(Panel(warning, title="[bold red]WARNING: development pseudonym key[/bold red]", style="red"))
