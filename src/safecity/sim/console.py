"""The demo's console output: the start banner, live figures and the summary tables it prints on exit."""

from __future__ import annotations

import time
from typing import Any

from rich.panel import Panel
from rich.table import Table


def summary_table(counts: dict[str, int], title: str) -> Table:
    """A two-column table of counts."""
    table = Table(title=title)
    table.add_column("kind")
    table.add_column("count", justify="right")
    for kind, n in sorted(counts.items()):
        table.add_row(kind, str(n))
    return table


def banner(url: str, key: str) -> Panel:
    """Where to look, printed when the demo starts."""
    lines = [
        f"[bold]SafeCity demo[/bold] — synthetic district (合成数据 / synthetic), {time.strftime('%H:%M:%S')}",
        f"Command centre:      [bold]{url}/#key={key}[/bold]  (the key stays in this browser tab only)",
        f"API docs (OpenAPI):  {url}/docs",
        f"Event counts:        {url}/api/v1/events/counts",
        f"Latest events:       {url}/api/v1/events?limit=20",
        f"Dead letters:        {url}/api/v1/dead-letters",
        f"Devices:             {url}/api/v1/devices",
        f"Incidents:           {url}/api/v1/incidents?open=true   KPIs: {url}/api/v1/kpis?group=type",
        f"Open311:             {url}/open311/v2/requests.json",
        f"Metrics:             {url}/metrics      Health: {url}/readyz",
        f"Routing:             {url}/api/v1/routing/info   Road tiles: {url}/tiles/roads.json",
        f"Admin API key:       [bold yellow]{key}[/bold yellow]",
        f'Try: curl -H "X-API-Key: {key}" {url}/api/v1/events/counts',
    ]
    return Panel("\n".join(lines), title="安全城市 SafeCity", expand=False)


def stats_table(runtime: Any, sent: int, started: float) -> Table:
    """The live figures the demo shows while it runs: messages sent, events, dead letters, offline devices, alerts."""
    elapsed = max(time.monotonic() - started, 1e-6)
    metrics = runtime.metrics
    table = Table(title="SafeCity demo — live (合成数据 / synthetic)", expand=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("messages sent by simulator", f"{sent:,} ({sent / elapsed:,.0f}/s)")
    table.add_row("events published", f"{int(metrics.total(metrics.events_out)):,}")
    table.add_row("events stored", f"{runtime.writer.stats.rows_written:,}")
    table.add_row("dead letters", f"{int(metrics.total(metrics.dead_letters)):,}")
    table.add_row("devices offline raised", f"{runtime.health.raised:,}")
    warning = runtime.warning
    if warning is not None:
        status = warning.status()
        table.add_row("alerts raised / updated", f"{status.get('raised', 0):,} / {status.get('updated', 0):,}")
    return table


def alerts_table(alerts: list[Any]) -> Table:
    """The latest alerts: rule, severity, place, repeats and the perceive -> warn latency."""
    table = Table(title="Latest alerts (最新预警)")
    for column in ("rule", "headline", "severity", "community", "count", "occurred→fired ms"):
        table.add_column(column)
    for alert in alerts:
        latency = alert.latency_ms.get("occurred_to_fired")
        table.add_row(
            alert.rule_id,
            alert.headline.get("zh", ""),
            str(alert.severity),
            alert.community or "-",
            str(alert.count),
            f"{latency:.1f}" if latency is not None else "-",
        )
    return table
