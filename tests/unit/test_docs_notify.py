"""docs/notify.md's channel list is what `safecity.docs_gen notify-channels` generates from the channel registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from safecity import docs_gen
from safecity.warning.notify.channels import CHANNELS

DOC = Path(__file__).resolve().parents[2] / "docs" / "notify.md"


def test_notify_channels_doc_is_current() -> None:
    page = DOC.read_text(encoding="utf-8")
    assert docs_gen.fill_block(page, "notify-channels", docs_gen.notify_channels()) == page, (
        "docs/notify.md's channel list is stale: uv run python -m safecity.docs_gen --write notify-channels"
    )


def test_every_registered_channel_is_listed() -> None:
    page = DOC.read_text(encoding="utf-8")
    assert {"websocket", "webhook", "mqtt", "chat", "email"} <= set(CHANNELS)
    for key in CHANNELS:
        assert f"- **`{key}`**: " in page, key


def test_a_page_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="notify-channels"):
        docs_gen.fill_block("# Alert delivery\n", "notify-channels", docs_gen.notify_channels())


def test_write_puts_the_block_into_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    begin, end = "<!-- generated:notify-channels -->\n", "<!-- /generated:notify-channels -->"
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notify.md").write_text(f"# Notify\n{begin}- stale\n{end}\nafter\n", encoding="utf-8")
    monkeypatch.setattr(docs_gen, "ROOT", tmp_path)
    assert docs_gen.main(["--write", "notify-channels"]) == 0
    written = (tmp_path / "docs" / "notify.md").read_text(encoding="utf-8")
    assert written == f"# Notify\n{begin}{docs_gen.notify_channels()}{end}\nafter\n"
    assert docs_gen.main(["--write", "events"]) == 2  # a whole page is printed, not filled in
