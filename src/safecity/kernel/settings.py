"""Settings from the environment (`SAFECITY_...`, nested with `__`) and a TOML file; unknown keys are errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_core import to_json
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from safecity.kernel.dispatch_settings import DispatchSettings

Role = Literal["community", "town", "district"]

# Development-only key so the embedded demo runs with no set-up; `safecity serve` warns when it is in use.
DEV_PSEUDONYM_KEY = "safecity-dev-pseudonym-key-change-me"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    """Where state lives."""

    url: str = Field(
        "sqlite+aiosqlite:///./var/safecity.db",
        description="SQLAlchemy async URL (SQLite or PostgreSQL). Unset: SQLite at `<data_dir>/safecity.db`.",
    )
    commit_interval_ms: int = Field(100, ge=1, le=1000, description="Group-commit: longest wait before a commit.")
    commit_interval_max_ms: int = Field(
        100,
        ge=1,
        le=5000,
        description="Group-commit: what the wait may grow to while the store is busy (commits taking over half of "
        "it), for bigger, cheaper commits; at most `commit_interval_ms` (the default) keeps it fixed. A longer wait "
        "raises a store-bound SQLite node's sustained rate but delays events and other writes in bursts "
        "(docs/benchmarks.md); raise `commit_max_rows` with it.",
    )
    commit_max_rows: int = Field(2000, ge=1, le=50_000, description="Group-commit: most rows in one commit.")


class BusSettings(_Section):
    """Which bus carries messages."""

    kind: Literal["memory", "nats"] = Field("memory", description="In-process bus, or NATS JetStream.")
    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server URL when kind is 'nats'.")
    stream: str = Field("SAFECITY", description="JetStream stream name.")
    subject_prefix: str | None = Field(
        None, description="Prefix for every NATS subject (several nodes or tenants on one server)."
    )
    queue_size: int = Field(10_000, ge=10, description="Bounded queue per subscriber (in-process bus).")


class MqttSettings(_Section):
    """The device broker."""

    enabled: bool = Field(False, description="Subscribe to device topics on the broker.")
    host: str = Field("127.0.0.1", description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    topic_prefix: str = Field("safecity", description="Device topics are <prefix>/<community>/<kind>/<device>.")
    shared_group: str | None = Field(
        None, description="MQTT 5 shared-subscription group, to spread load over several workers."
    )
    client_id: str = Field("safecity-ingest", description="Client id (persistent session).")
    qos: Literal[0, 1] = Field(1, description="Subscription QoS.")
    protocol: Literal["3.1.1", "5"] = Field(
        "5",
        description="MQTT protocol version. 5 lets us tell the broker how many unacknowledged messages we take "
        "(`receive_maximum`); with 3.1.1 Mosquitto allows `max_inflight_messages` (20 by default: raise it, or QoS 1 "
        "ingest is held to 20 messages a commit). Mosquitto serves shared subscriptions ($share/...) to both.",
    )
    ack: Literal["durable", "received"] = Field(
        "durable",
        description="When a QoS 1 message is acknowledged: `durable`, once its events are committed (or held by "
        "JetStream) and its dead letters written, so a crash loses nothing acknowledged; `received`, on receipt "
        "(faster, but a crash loses what was received and not yet stored).",
    )
    receive_maximum: int = Field(
        10_000,
        ge=1,
        le=65_535,
        description="MQTT 5: unacknowledged QoS 1 messages the broker may send us at once (bounds our memory).",
    )
    max_pending: int = Field(
        20_000,
        ge=100,
        description="Received messages waiting to be handled before we stop reading from the broker (back-pressure).",
    )
    frigate: bool = Field(True, description="Also subscribe to frigate/events and frigate/reviews.")


class IngestSettings(_Section):
    """Limits at the edge."""

    max_payload_bytes: int = Field(65_536, ge=256, description="Larger messages are dead-lettered.")
    max_future_s: float = Field(300.0, ge=0, description="Events dated further ahead than this are rejected.")
    max_past_s: float = Field(7 * 86_400.0, ge=0, description="Events older than this are rejected.")
    dead_letter_raw_bytes: int = Field(4096, ge=0, description="Raw bytes kept with a dead letter.")
    heartbeat_timeout_s: float = Field(300.0, gt=0, description="Default: a device is offline after this silence.")


class WarningSettings(_Section):
    """The rule engine."""

    enabled: bool = Field(True, description="Run the rule engine on this node.")
    rules: Path | None = Field(None, description="Rule pack (YAML); unset: the built-in default pack.")
    snapshot: Path | None = Field(
        None, description="Where open windows are saved on stop and restored on start (unset: not kept)."
    )
    allowed_lateness_s: float = Field(
        10.0,
        ge=0,
        description="Event-time timers (absence, dwell, hold) wait this long behind the newest event of their source.",
    )


class NotifySettings(_Section):
    """Alert delivery through the durable outbox."""

    durable: str = Field("notify", description="Durable bus consumer name of the delivery service.")
    max_attempts: int = Field(8, ge=1, le=100, description="Attempts before a delivery is dead-lettered.")
    backoff_base_s: float = Field(1.0, gt=0, description="First retry delay; doubles per attempt.")
    backoff_max_s: float = Field(300.0, gt=0, description="Longest retry delay.")
    backoff_jitter: float = Field(0.5, ge=0, le=1, description="Random share of each retry delay.")
    attempt_timeout_s: float = Field(
        10.0, gt=0, description="Time limit of a first delivery attempt; doubles after each timeout."
    )
    attempt_timeout_max_s: float = Field(
        120.0, gt=0, description="Longest time limit of one attempt (a slower endpoint is treated as down)."
    )
    lane_batch: int = Field(20, ge=1, description="Deliveries one endpoint's lane takes at a time.")
    lane_in_flight: int = Field(
        4,
        ge=1,
        le=64,
        description=(
            "Deliveries of one endpoint's lane in flight at once (each alert's in order); chat and e-mail send one "
            "at a time."
        ),
    )
    poll_interval_s: float = Field(1.0, gt=0, description="How often due retries are looked for.")
    commit_interval_ms: int = Field(
        50,
        ge=0,
        le=1000,
        description="Alert path group commit: longest wait before alert and outbox rows are committed together.",
    )
    refresh_s: float = Field(30.0, gt=0, description="Reload subscriptions (other nodes may change them).")
    webhook_allow_hosts: list[str] = Field(
        default_factory=list, description="Webhook hosts allowed: exact names or `.suffix` entries."
    )
    allow_loopback: bool = Field(False, description="Let webhooks reach 127.0.0.1/localhost (tests, demo).")
    mqtt_host: str = Field("127.0.0.1", description="Broker for the MQTT alert channel.")
    mqtt_port: int = Field(1883, ge=1, le=65535, description="Port of that broker.")
    mqtt_prefix: str = Field("safecity/alerts", description="Alert topics: <prefix>/<severity>/<community>.")


class HttpSettings(_Section):
    """The HTTP API."""

    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8700, ge=0, le=65535, description="Bind port.")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest accepted request body.")


class RoadSettings(_Section):
    """The road network used for travel times, nearest units, isochrones and road tiles."""

    graph: Path | None = Field(
        None, description="Road graph artifact to load at start (`safecity import-osm FILE -o graph.npz`)."
    )
    tiles: Path | None = Field(None, description="MBTiles file of road vector tiles (`safecity road bake-tiles`).")
    max_snap_m: float = Field(
        500.0, gt=0, le=10_000, description="Points farther than this from every road are refused (road.snap_too_far)."
    )
    synthetic: bool = Field(
        False, description="With no graph: generate a synthetic network around `synthetic_center` (demo, tests)."
    )
    synthetic_nodes: int = Field(
        20_000, ge=100, le=2_000_000, description="Size of the synthetic network (nodes) when `synthetic` is true."
    )
    synthetic_center: tuple[float, float] = Field(
        (121.25, 31.37), description="(lon, lat) centre of the synthetic network (the synthetic Jiading district)."
    )
    synthetic_spacing_m: float = Field(
        165.0, gt=10, le=2000, description="Grid spacing of the synthetic network in metres (sets its extent)."
    )
    max_matrix_cells: int = Field(
        250_000, ge=1, le=10_000_000, description="Largest origins x targets matrix one request may ask for."
    )


class PlacesSettings(_Section):
    """The place boundaries (district, town, community, building) that tag events and name places."""

    boundaries: Path | None = Field(
        None,
        description=(
            "GeoJSON (WGS84) of the places: a hierarchy (properties `id`, `level`, `name`, `name_en`, `parent`) or a "
            "flat boundary file such as DataV's `*_wgs84.json` (one level, ids from `adcode`)."
        ),
    )
    level: Literal["district", "town", "community", "building"] = Field(
        "district", description="Level of the places of a flat boundary file."
    )


class SecuritySettings(_Section):
    """Secrets."""

    pseudonym_key: SecretStr = Field(
        SecretStr(DEV_PSEUDONYM_KEY), description="HMAC key that pseudonymizes personal fields (plates)."
    )
    bootstrap_admin_key: SecretStr | None = Field(
        None, description="If set, an admin API key with this value is ensured at start-up."
    )


class Settings(BaseSettings):
    """All settings of one SafeCity node."""

    model_config = SettingsConfigDict(
        env_prefix="SAFECITY_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    role: Role = Field("district", description="Tier of this node: community, town or district.")
    node_id: str = Field("jiading-hub", description="Name of this node, stamped as the source of its messages.")
    locale: Literal["zh-CN", "en"] = Field("zh-CN", description="Default language of messages.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_json: bool = Field(True, description="JSON logs (false: console renderer).")
    data_dir: Path = Field(
        Path("var"),
        description="This node's local files: the SQLite database when `database.url` is unset, the demo's "
        "snapshot and road tiles. Relative to the working directory.",
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    warning: WarningSettings = Field(default_factory=WarningSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    roads: RoadSettings = Field(default_factory=RoadSettings)
    places: PlacesSettings = Field(default_factory=PlacesSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)

    @model_validator(mode="after")
    def _database_in_data_dir(self) -> Settings:
        # One place decides where the data lives: every command (demo, serve, keys, rules, db) reads
        # `database.url`, which follows `data_dir` unless a URL is given explicitly.
        if "url" not in self.database.model_fields_set:
            self.database.url = default_database_url(self.data_dir)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: explicit arguments, then environment, then the TOML file (`load_settings` or SAFECITY_CONFIG)."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = settings_cls.model_config.get("toml_file") or os.environ.get("SAFECITY_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(str(toml_path))))
        return tuple(sources)


def default_database_url(data_dir: Path) -> str:
    """The SQLite URL of the database kept in `data_dir` (an absolute path, so messages show where it is)."""
    return f"sqlite+aiosqlite:///{data_dir.expanduser().resolve() / 'safecity.db'}"


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Load settings, optionally from a TOML file; raises pydantic's ValidationError on unknown or bad keys."""
    if config_file is None:
        return Settings(**overrides)  # type: ignore[arg-type]
    if not config_file.is_file():
        raise FileNotFoundError(f"settings file {config_file} does not exist")
    # A subclass bound to this file, so loading one file never changes the process environment.
    bound = type("Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": config_file}})
    return bound(**overrides)  # type: ignore[no-any-return]


def _shown(default: object) -> str:
    """A default as the reader would write it: structured defaults (tables of models) as compact JSON."""

    def plain(value: object) -> object:
        return value.model_dump(mode="json", exclude_defaults=True) if isinstance(value, BaseModel) else value

    if isinstance(default, dict) and default:
        return to_json({key: plain(value) for key, value in default.items()}).decode()
    if isinstance(default, list) and default:
        return to_json([plain(value) for value in default]).decode()
    return repr(default)


def settings_reference() -> str:
    """Render every setting (TOML key, environment variable, default, description) as Markdown."""
    lines = [
        "# Settings",
        "",
        "Generated from `safecity.kernel.settings` (a test fails when this file is out of date). TOML keys nest by",
        "section; the environment variable is `SAFECITY_<SECTION>__<KEY>`; the environment wins over the file.",
        "",
        "| key | environment | default | description |",
        "|---|---|---|---|",
    ]

    def add(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                add(annotation, f"{prefix}{name}.")
                continue
            key = f"{prefix}{name}"
            env = "SAFECITY_" + key.replace(".", "__").upper()
            default = field.get_default(call_default_factory=True)
            shown = "(secret)" if isinstance(default, SecretStr) else f"`{_shown(default)}`"
            lines.append(f"| `{key}` | `{env}` | {shown} | {field.description or ''} |")

    add(Settings, "")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - `python -m safecity.kernel.settings > docs/settings.md`
    print(settings_reference(), end="")  # noqa: T201
