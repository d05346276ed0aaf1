"""docs/deployment.md stays true to the code: its TOML examples load, and the settings, metrics and commands exist."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.main import get_command

from safecity.cli import app
from safecity.kernel.metrics import Metrics
from safecity.kernel.settings import load_settings, settings_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
TEXT = DOC.read_text(encoding="utf-8")
TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", TEXT, re.DOTALL)


def test_doc_has_toml_examples() -> None:
    assert len(TOML_BLOCKS) >= 2


@pytest.mark.parametrize("block", TOML_BLOCKS)
def test_toml_examples_are_valid_settings(block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("SAFECITY_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "node.toml"
    path.write_text(block, encoding="utf-8")
    settings = load_settings(path)
    assert settings.role in {"community", "town", "district"}


def test_environment_variables_named_in_the_doc_exist() -> None:
    documented = set(re.findall(r"`(SAFECITY_[A-Z_]+)`", settings_reference()))
    named = set(re.findall(r"\b(SAFECITY_[A-Z]+(?:__?[A-Z]+)*)\b", TEXT)) - {"SAFECITY_CONFIG"}
    assert named, "the doc names no environment variable"
    assert named <= documented, named - documented


def test_setting_keys_named_in_the_doc_exist() -> None:
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", settings_reference(), re.MULTILINE))
    sections = {key.split(".", 1)[0] for key in documented if "." in key}
    named = {k for k in re.findall(r"`([a-z_]+\.[a-z_]+)`", TEXT) if k.split(".", 1)[0] in sections}
    assert {"bus.subject_prefix", "mqtt.shared_group", "database.url"} <= named
    assert named <= documented, named - documented


def test_metrics_named_in_the_doc_exist() -> None:
    families = list(Metrics().registry.collect())
    # Counters are exposed with a `_total` suffix (labelled ones have no sample until first used).
    exported = {f.name for f in families} | {f"{f.name}_total" for f in families if f.type == "counter"}
    named = set(re.findall(r"`(safecity_[a-z_]+)", TEXT))
    assert named, "the doc names no metric"
    assert named <= exported, named - exported


def test_commands_named_in_the_doc_exist() -> None:
    root = get_command(app)
    named = set(re.findall(r"`safecity ([a-z][a-z-]*(?: [a-z][a-z-]*)?)", TEXT))
    assert {"serve", "db upgrade", "keys create", "demo"} <= named, named
    for phrase in named:
        words = phrase.split()
        command = root.commands.get(words[0])  # type: ignore[attr-defined]
        assert command is not None, f"safecity {words[0]} does not exist"
        if len(words) > 1 and hasattr(command, "commands"):
            assert words[1] in command.commands, f"safecity {phrase} does not exist"
