"""The `safecity` command: demo | serve | db upgrade | keys | simulate."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from safecity.geo.road.commands import import_osm_command, road_app
from safecity.kernel import logging as sc_logging
from safecity.kernel.settings import Settings, load_settings
from safecity.warning.commands import rules_app

app = typer.Typer(help="SafeCity: public-safety operations platform.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(road_app, name="road")
app.add_typer(rules_app, name="rules")
app.command("import-osm", help="Import an OSM extract (.osm, .osm.bz2, .osm.pbf) into a road graph artifact.")(
    import_osm_command
)
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (environment SAFECITY_... overrides it).")
]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        settings = load_settings(config, **overrides)
    except ValidationError as err:
        console.print(f"[red]Invalid settings:[/red]\n{err}")
        console.print("Fix the keys above in your TOML file or SAFECITY_... environment variables.")
        raise typer.Exit(2) from err
    except FileNotFoundError as err:
        # soft_wrap: a path stays on one line, whole and copyable, whatever the terminal width.
        console.print(f"[red]{err}[/red]. Pass an existing file to --config.", soft_wrap=True)
        raise typer.Exit(2) from err
    # Logs go to stderr, so stdout carries only a command's result (`KEY=$(safecity keys create ...)`).
    sc_logging.configure(settings.log_level, settings.log_json)
    return settings


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None, revision: str = "head") -> None:
    """Apply database migrations up to REVISION (default: head)."""
    from safecity.store.engine import current_revision, upgrade

    settings = _settings(config)
    asyncio.run(upgrade(settings.database.url, revision))
    rev = asyncio.run(current_revision(settings.database.url))
    console.print(f"[green]Database at revision {rev}[/green] ({settings.database.url.split('@')[-1]})")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who the key is for.")],
    role: Annotated[str, typer.Option(help="admin, operator, dispatcher, responder, reader, ingest or citizen.")],
    config: ConfigOption = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from safecity.runtime import Runtime
    from safecity.sharing.keys import Role

    settings = _settings(config)
    try:
        key_role = Role(role)
    except ValueError as err:
        console.print(f"[red]Unknown role {role!r}.[/red] Use one of: {', '.join(r.value for r in Role)}.")
        raise typer.Exit(2) from err

    async def run() -> str:
        runtime = Runtime(settings)
        try:
            from safecity.store.engine import upgrade

            await upgrade(settings.database.url)
            created = await runtime.keys.create(name=name, role=key_role)
        finally:
            await runtime.stop()
        return str(created.key)

    key = asyncio.run(run())
    typer.echo(key)


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run this node (API, ingest, bus, store) as the settings describe."""
    import uvicorn

    from safecity.api.app import create_app
    from safecity.runtime import Runtime

    settings = _settings(config)
    sc_logging.configure(settings.log_level, settings.log_json)
    runtime = Runtime(settings)
    uvicorn.run(create_app(runtime), host=settings.http.host, port=settings.http.port, log_config=None)


@app.command()
def demo(
    rate: Annotated[float, typer.Option(help="Simulated device messages per second.")] = 200.0,
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8700,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0: run until Ctrl-C).")] = 0.0,
    devices: Annotated[int, typer.Option(help="Synthetic devices.")] = 5000,
    mqtt: Annotated[
        str | None, typer.Option(help="Send the simulated traffic over this MQTT broker (host:port) instead.")
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its SQLite database.")] = Path("var/demo"),
    osm: Annotated[
        Path | None,
        typer.Option(help="Route on this OSM extract (.osm, .osm.bz2, .osm.pbf) instead of synthetic roads."),
    ] = None,
    places: Annotated[
        Path | None, typer.Option(help="Tag with these real boundaries (GeoJSON, e.g. *_wgs84.json), not synthetic.")
    ] = None,
) -> None:
    """Start the embedded hub (SQLite + in-process bus) on a synthetic district with simulated sensors."""
    from safecity.sim.demo import run_demo

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(
        run_demo(
            rate=rate,
            port=port,
            duration=duration,
            devices=devices,
            mqtt=mqtt,
            data_dir=data_dir,
            console=console,
            osm=osm,
            places=places,
        )
    )


@app.command()
def simulate(
    mqtt: Annotated[str, typer.Option(help="Broker host:port.")] = "127.0.0.1:1883",
    rate: Annotated[float, typer.Option(help="Messages per second.")] = 500.0,
    count: Annotated[int, typer.Option(help="Messages to send.")] = 10_000,
    devices: Annotated[int, typer.Option(help="Synthetic devices (same seed as the demo).")] = 5000,
) -> None:
    """Publish synthetic device traffic to an MQTT broker (labelled synthetic)."""
    from safecity.sim.demo import publish_mqtt

    host, _, port_text = mqtt.partition(":")
    sent = asyncio.run(
        publish_mqtt(host, int(port_text or 1883), rate=rate, count=count, devices=devices, console=console)
    )
    console.print(f"[green]sent {sent} messages[/green]")


def summary_table(counts: dict[str, int], title: str) -> Table:
    """A two-column table of counts."""
    table = Table(title=title)
    table.add_column("kind")
    table.add_column("count", justify="right")
    for kind, n in sorted(counts.items()):
        table.add_row(kind, str(n))
    return table


def new_demo_key() -> str:
    """A fresh admin key for one demo run."""
    return "sc_demo_" + secrets.token_urlsafe(24)


def banner(url: str, key: str) -> Panel:
    """Where to look, printed when the demo starts."""
    lines = [
        f"[bold]SafeCity demo[/bold] — synthetic district (合成数据 / synthetic), {time.strftime('%H:%M:%S')}",
        f"API docs (OpenAPI):  {url}/docs",
        f"Event counts:        {url}/api/v1/events/counts",
        f"Latest events:       {url}/api/v1/events?limit=20",
        f"Dead letters:        {url}/api/v1/dead-letters",
        f"Devices:             {url}/api/v1/devices",
        f"Metrics:             {url}/metrics      Health: {url}/readyz",
        f"Routing:             {url}/api/v1/routing/info   Road tiles: {url}/tiles/roads.json",
        f"Admin API key:       [bold yellow]{key}[/bold yellow]",
        f'Try: curl -H "X-API-Key: {key}" {url}/api/v1/events/counts',
    ]
    return Panel("\n".join(lines), title="安全城市 SafeCity", expand=False)


if __name__ == "__main__":  # pragma: no cover
    app()
