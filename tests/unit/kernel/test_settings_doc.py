"""docs/settings.md lists every setting (datasette-style: undocumented settings fail the build)."""

from pathlib import Path

from safecity.kernel.settings import settings_reference

DOC = Path(__file__).resolve().parents[3] / "docs" / "settings.md"


def test_settings_doc_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == settings_reference(), (
        "docs/settings.md is stale: regenerate with `uv run python -m safecity.kernel.settings > docs/settings.md`"
    )


def test_every_setting_has_a_description() -> None:
    rows = [line for line in settings_reference().splitlines() if line.startswith("| `")]
    assert len(rows) > 20
    assert all(not line.rstrip().endswith("|  |") for line in rows), "a setting lacks a description"
