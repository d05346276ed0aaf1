"""The `safecity` command: demo | serve | db upgrade | keys | simulate."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from safecity.geo.road.commands import import_osm_command, road_app
from safecity.kernel import logging as sc_logging
from safecity.kernel.settings import Settings, load_settings
from safecity.warning.commands import rules_app

if TYPE_CHECKING:
    from safecity.sharing.keys import KeyService

T = TypeVar("T")

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


def require_database(settings: Settings, config: Path | None) -> None:
    """Exit 1 with what to run next when the settings' database does not exist (nothing is created)."""
    from safecity.kernel.errors import SafeCityError
    from safecity.store.locate import require_database as check

    try:
        asyncio.run(check(settings.database.url, config=config))
    except SafeCityError as err:
        console.print(f"[red]{err.render(settings.locale)}[/red]", soft_wrap=True)
        raise typer.Exit(1) from err


def _key_service_run(settings: Settings, work: Callable[[KeyService], Awaitable[T]]) -> T:
    """Run `work` on a key service over the settings' database (no node is started)."""
    from safecity.sharing.keys import KeyService
    from safecity.store.engine import create_engine

    async def run() -> T:
        engine = create_engine(settings.database.url, null_pool=True)
        try:
            return await work(KeyService(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who the key is for.")],
    role: Annotated[str, typer.Option(help="admin, operator, dispatcher, responder, reader, ingest or citizen.")],
    config: ConfigOption = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from safecity.sharing.keys import Role

    try:
        key_role = Role(role)
    except ValueError as err:
        console.print(f"[red]Unknown role {role!r}.[/red] Use one of: {', '.join(r.value for r in Role)}.")
        raise typer.Exit(2) from err
    settings = _settings(config)
    require_database(settings, config)
    created = _key_service_run(settings, lambda keys: keys.create(name=name, role=key_role))
    typer.echo(created.key)


@keys_app.command("list")
def keys_list(
    config: ConfigOption = None,
    active: Annotated[bool, typer.Option("--active", help="Only keys that are not revoked.")] = False,
) -> None:
    """List API keys (id, name, role, prefix, created, revoked, last used); never the keys themselves."""
    settings = _settings(config)
    require_database(settings, config)
    infos = _key_service_run(settings, lambda keys: keys.list(include_revoked=not active))
    table = Table(title=f"API keys ({len(infos)})")
    for column in ("id", "name", "role", "prefix", "created", "revoked", "last used"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info.id,
            info.name,
            str(info.role),
            info.prefix + "…",
            info.created_at.isoformat(timespec="seconds"),
            info.revoked_at.isoformat(timespec="seconds") if info.revoked_at else "-",
            info.last_used_at.isoformat(timespec="seconds") if info.last_used_at else "-",
        )
    Console(soft_wrap=True).print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see `safecity keys list`).")],
    config: ConfigOption = None,
) -> None:
    """Revoke an API key: it stops working at once on this node (other running nodes: within 10 s)."""
    from safecity.sharing.keys import ApiKeyNotFound

    settings = _settings(config)
    require_database(settings, config)
    try:
        info = _key_service_run(settings, lambda keys: keys.revoke(key_id))
    except ApiKeyNotFound as err:
        console.print(f"[red]{err.render(settings.locale)}[/red] See `safecity keys list`.")
        raise typer.Exit(1) from err
    console.print(f"Revoked {info.id} ({info.name}, {info.role}).")


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run this node (API, ingest, bus, store) as the settings describe."""
    import uvicorn

    from safecity.api.app import create_app
    from safecity.runtime import Runtime
    from safecity.web.static import install_ui

    settings = _settings(config)
    sc_logging.configure(settings.log_level, settings.log_json)
    _build_ui()
    runtime = Runtime(settings)
    app = create_app(runtime.api_services())
    install_ui(app)
    uvicorn.run(app, host=settings.http.host, port=settings.http.port, log_config=None)


def _build_ui() -> None:
    """Build the command-centre UI when missing or stale; exit 2 with what to do when it cannot be built."""
    from safecity.web.build import UiBuildError, ensure_built

    try:
        ensure_built(console)
    except UiBuildError as err:
        console.print(f"[red]{err}[/red]", soft_wrap=True)
        raise typer.Exit(2) from err


@app.command()
def demo(
    rate: Annotated[float, typer.Option(help="Simulated device messages per second.")] = 200.0,
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8700,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0: run until Ctrl-C).")] = 0.0,
    devices: Annotated[int, typer.Option(help="Synthetic devices.")] = 5000,
    mqtt: Annotated[
        str | None, typer.Option(help="Send the simulated traffic over this MQTT broker (host:port) instead.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default: the settings' data_dir, `var`).")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the earlier run's data and admin key (default: start clean).")
    ] = False,
    osm: Annotated[
        Path | None,
        typer.Option(help="Route on this OSM extract (.osm, .osm.bz2, .osm.pbf) instead of synthetic roads."),
    ] = None,
    places: Annotated[
        Path | None, typer.Option(help="Tag with these real boundaries (GeoJSON, e.g. *_wgs84.json), not synthetic.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Start the embedded hub (SQLite + in-process bus) on a synthetic district with simulated sensors."""
    from safecity.sim.demo import DemoDataError, run_demo

    settings = _settings(config, **({"data_dir": data_dir} if data_dir is not None else {}))
    _build_ui()
    try:
        asyncio.run(
            run_demo(
                rate=rate,
                port=port,
                duration=duration,
                devices=devices,
                mqtt=mqtt,
                settings=settings,
                keep=keep,
                console=console,
                osm=osm,
                places=places,
            )
        )
    except DemoDataError as err:
        console.print(f"[red]{err}[/red]", soft_wrap=True)
        raise typer.Exit(2) from err


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


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="Calls-for-service CSV (DataSF 'Fire Department Calls for Service').")],
    config: ConfigOption = None,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Also serve the same calls on our district and compare the KPIs.")
    ] = False,
    units: Annotated[int, typer.Option(help="Simulated units (0: as many as the file's first-dispatched units).")] = 0,
    zone: Annotated[str, typer.Option(help="Time zone of the file's local times.")] = "America/Los_Angeles",
    store: Annotated[bool, typer.Option("--store/--no-store", help="Import the calls as closed incidents.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the simulated placement.")] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON line last.")] = False,
) -> None:
    """Import real calls for service as closed incidents and report their stage KPIs (and ours, with --simulate)."""
    from safecity.dispatch.commands import print_outcome, run_replay

    if not file.is_file():
        console.print(f"[red]{file} does not exist[/red]; pass a calls-for-service CSV.", soft_wrap=True)
        raise typer.Exit(2)
    settings = _settings(config)
    if store:
        require_database(settings, config)
    outcome = run_replay(
        settings, file, zone=zone, store=store, simulated=simulate, units=units, seed=seed, console=console
    )
    print_outcome(outcome, Console(), as_json=as_json)


if __name__ == "__main__":  # pragma: no cover
    app()
