"""Settings come from the environment and a TOML file; unknown keys and bad values are errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from safecity.kernel.settings import DEV_PSEUDONYM_KEY, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No SAFECITY_* variable from the machine leaks in; SAFECITY_CONFIG (set by load_settings) is restored."""
    for name in list(os.environ):
        if name.startswith("SAFECITY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SAFECITY_CONFIG", "")
    yield


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "safecity.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = Settings()
    assert settings.bus.kind == "memory"
    assert settings.role == "district"
    assert settings.database.url.startswith("sqlite+aiosqlite://")
    assert settings.security.pseudonym_key.get_secret_value() == DEV_PSEUDONYM_KEY


def test_env_nested_bus_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFECITY_BUS__KIND", "nats")
    monkeypatch.setenv("SAFECITY_BUS__NATS_URL", "nats://10.0.0.5:4222")
    monkeypatch.setenv("SAFECITY_ROLE", "town")
    settings = Settings()
    assert settings.bus.kind == "nats"
    assert settings.bus.nats_url == "nats://10.0.0.5:4222"
    assert settings.role == "town"


def test_env_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFECITY_BUS__KIND", "kafka")
    with pytest.raises(ValidationError, match="kind"):
        Settings()


def test_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
role = "community"
node_id = "anting-c1"

[bus]
kind = "nats"
stream = "TIER_C1"

[mqtt]
enabled = true
port = 1884
shared_group = "ingest"

[database]
commit_interval_ms = 50
""",
    )
    settings = load_settings(path)
    assert settings.role == "community"
    assert settings.node_id == "anting-c1"
    assert settings.bus.kind == "nats"
    assert settings.bus.stream == "TIER_C1"
    assert settings.mqtt.enabled is True
    assert settings.mqtt.port == 1884
    assert settings.mqtt.shared_group == "ingest"
    assert settings.database.commit_interval_ms == 50
    assert settings.http.port == 8700  # untouched sections keep their defaults


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[bus]\nkind = "nats"\nstream = "FROM_FILE"\n')
    monkeypatch.setenv("SAFECITY_BUS__STREAM", "FROM_ENV")
    settings = load_settings(path)
    assert settings.bus.stream == "FROM_ENV"
    assert settings.bus.kind == "nats"


def test_explicit_overrides_win(tmp_path: Path) -> None:
    path = write(tmp_path, 'role = "town"\n')
    assert load_settings(path, role="community").role == "community"


@pytest.mark.parametrize(
    "text",
    [
        'rol = "town"\n',  # typo at the top level
        '[bus]\nknd = "nats"\n',  # typo inside a section
        "[buss]\nkind = 'nats'\n",  # unknown section
    ],
)
def test_unknown_keys_in_toml_are_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValidationError):
        load_settings(write(tmp_path, text))


@pytest.mark.parametrize(
    "text",
    [
        '[bus]\nkind = "kafka"\n',
        "[mqtt]\nport = 70000\n",
        "[database]\ncommit_interval_ms = 0\n",
        'role = "province"\n',
        "[mqtt]\nqos = 2\n",
        '[bus]\nqueue_size = "lots"\n',
    ],
)
def test_bad_values_in_toml_are_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValidationError):
        load_settings(write(tmp_path, text))


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "absent.toml")


def test_secrets_do_not_print() -> None:
    settings = Settings(security={"pseudonym_key": "s3cret-key"})  # type: ignore[arg-type]
    assert "s3cret-key" not in repr(settings)
    assert "s3cret-key" not in settings.model_dump_json()


def test_database_follows_the_data_dir_unless_a_url_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(None, data_dir=tmp_path).database.url == f"sqlite+aiosqlite:///{tmp_path / 'safecity.db'}"
    monkeypatch.setenv("SAFECITY_DATA_DIR", str(tmp_path / "env"))
    assert load_settings().database.url == f"sqlite+aiosqlite:///{tmp_path / 'env' / 'safecity.db'}"
    config = tmp_path / "node.toml"
    config.write_text('[database]\nurl = "postgresql+asyncpg://db/x"\n', encoding="utf-8")
    assert load_settings(config).database.url == "postgresql+asyncpg://db/x"
