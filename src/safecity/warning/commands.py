"""`safecity rules ...`: check a rule file (line-numbered errors) and backtest it over stored events."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from safecity.kernel.settings import Settings, load_settings
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.warning.rules import RuleError, RulePack, load_pack

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


def _pseudonymizer(settings: Settings) -> Pseudonymizer:
    return Pseudonymizer(settings.security.pseudonym_key.get_secret_value().encode())


def _load(file: Path, settings: Settings) -> RulePack:
    try:
        return load_pack(file, pseudonymize=_pseudonymizer(settings))
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
    db: Annotated[str | None, typer.Option(help="Database URL (default: the settings').")] = None,
    config: ConfigOption = None,
) -> None:
    """Backtest a rule pack over stored events: what would have fired, and how often."""
    from safecity.kernel.errors import SafeCityError
    from safecity.store.engine import create_engine
    from safecity.store.events import EventRepo
    from safecity.store.locate import require_database
    from safecity.warning.backtest import BacktestReport, backtest, parse_since

    settings = _settings(config)
    pack = _load(file, settings)
    start = parse_since(since)
    url = db or settings.database.url
    try:
        # A missing database is reported, never created empty (a backtest only reads).
        asyncio.run(require_database(url, config=config))
    except SafeCityError as err:
        typer.echo(err.render(settings.locale), err=True)
        raise typer.Exit(1) from err

    async def run() -> BacktestReport:
        engine = create_engine(url)
        try:
            return await backtest(pack, EventRepo(engine), start)
        finally:
            await engine.dispose()

    report = asyncio.run(run())
    table = Table(title=f"Backtest of {file} over {report.events} events since {start.isoformat()}")
    for col in ("rule", "raised", "updated", "first", "last"):
        table.add_column(col)
    for out in report.rules.values():
        table.add_row(
            out.rule_id,
            str(out.raised),
            str(out.updated),
            out.first_at.isoformat() if out.first_at else "-",
            out.last_at.isoformat() if out.last_at else "-",
        )
    console.print(table)
    typer.echo(f"raised={report.raised} updated={report.updated} events={report.events}")
