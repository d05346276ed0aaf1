"""docs/events.md is what `safecity.docs_gen` generates from the registered event keys, and covers all of them."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path

import msgspec
import pytest

from safecity import docs_gen
from safecity.kernel import envelope
from safecity.kernel.bus_nats import DEFAULT_SUBJECTS
from safecity.kernel.envelope import EventKey, Payload, registered_keys
from safecity.sensing.model import DEAD_LETTERED, SensorEvent
from safecity.warning.model import ALERT_RAISED

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def test_events_doc_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == docs_gen.events_reference(), (
        "docs/events.md is stale: uv run python -m safecity.docs_gen events > docs/events.md"
    )


def test_every_slice_key_is_listed_with_its_payload() -> None:
    text = docs_gen.events_reference()
    slice_keys = {k for k, t in registered_keys().items() if t.__module__.startswith("safecity.")}
    assert {DEAD_LETTERED.name, ALERT_RAISED.name, "event.smoke", "device.offline"} <= slice_keys
    for key, ptype in docs_gen.event_keys().items():
        assert re.search(rf"^\| `{re.escape(key)}` \| \[{ptype.__name__}\]", text, re.MULTILINE), key
        assert f"### {ptype.__name__}\n" in text
    assert slice_keys <= set(docs_gen.event_keys())


def test_keys_made_outside_slice_models_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy of the registry, so the scratch key does not outlive this test.
    monkeypatch.setattr(envelope, "_REGISTRY", dict(envelope._REGISTRY))

    class ScratchDone(Payload, frozen=True):
        """A payload only this test knows."""

        n: int

    EventKey("scratch.done", ScratchDone)
    assert "scratch.done" in registered_keys()
    assert "scratch.done" not in docs_gen.event_keys()
    assert "scratch.done" not in docs_gen.events_reference()


def test_payload_schemas_in_the_doc_are_msgspec_schemas() -> None:
    text = docs_gen.events_reference()
    section = text.split("### SensorEvent\n", 1)[1]
    block = section.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(block) == msgspec.json.schema(SensorEvent)


def test_envelope_fields_all_described() -> None:
    assert {f.name for f in msgspec.structs.fields(docs_gen.Envelope)} == set(docs_gen.ENVELOPE_FIELDS)
    assert {f.name for f in msgspec.structs.fields(docs_gen.Context)} == set(docs_gen.CONTEXT_FIELDS)
    text = docs_gen.events_reference()
    for name in docs_gen.ENVELOPE_FIELDS:
        assert f"| `{name}` |" in text


def test_undescribed_field_fails_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(docs_gen.ENVELOPE_FIELDS, "hops")
    with pytest.raises(ValueError, match="hops"):
        docs_gen.events_reference()


def test_main_prints_the_page_and_refuses_unknown_pages() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert docs_gen.main(["events"]) == 0
    assert out.getvalue() == docs_gen.events_reference()
    assert docs_gen.main(["nope"]) == 2


def test_every_slice_key_has_a_subject_on_the_nats_stream() -> None:
    """A key outside the stream's subjects cannot be published on NATS (no stream answers) nor subscribed to: the
    `responder.*` keys of the dispatch slice were missing once."""
    prefixes = {subject.removesuffix(".>") for subject in DEFAULT_SUBJECTS}
    missing = sorted(key for key in docs_gen.event_keys() if key.split(".", 1)[0] not in prefixes)
    assert missing == []
