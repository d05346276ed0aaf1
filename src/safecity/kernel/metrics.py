"""Prometheus metrics of one node, in a registry of its own (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Every metric the platform exports; one instance per running node."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "safecity_events_in", "Raw messages received, by source and kind.", ["source", "kind"], registry=r
        )
        self.events_out = Counter(
            "safecity_events_out", "Tagged events published on the bus, by kind.", ["kind"], registry=r
        )
        self.dead_letters = Counter(
            "safecity_dead_letters",
            "Inputs dead-lettered, by reason and kind.",
            ["reason", "kind"],
            registry=r,
        )
        self.discarded = Counter(
            "safecity_discarded",
            "Inputs dropped on purpose (e.g. biometrics), by reason.",
            ["reason"],
            registry=r,
        )
        self.stored = Counter("safecity_events_stored", "Events committed to the event store.", registry=r)
        self.bus_lag = Gauge("safecity_bus_lag", "Messages waiting per bus subscription.", ["subscription"], registry=r)
        self.commit_rows = Histogram(
            "safecity_writer_commit_rows",
            "Rows per group commit.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "safecity_writer_commit_seconds",
            "Latency of one group commit.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.devices_offline = Counter("safecity_devices_offline", "device.offline events raised.", registry=r)
        self.task_failures = Counter(
            "safecity_task_failures", "Background loops that failed (then restarted), by task.", ["task"], registry=r
        )
        self.task_up = Gauge(
            "safecity_task_up", "1 while a supervised background loop runs, 0 while it is down.", ["task"], registry=r
        )
        self.intake_refused = Counter(
            "safecity_intake_refused",
            "HTTP ingest batches answered 503 under back-pressure, by cause.",
            ["cause"],
            registry=r,
        )

    @staticmethod
    def total(counter: Counter) -> float:
        """Sum of a labelled counter over all its label values."""
        return float(sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total")))

    def render(self) -> bytes:
        """Return the text exposition format."""
        return generate_latest(self.registry)
