"""Dead-letter scrubbing: personal fields pseudonymized wherever they sit, unparseable bytes kept only when safe."""

from __future__ import annotations

import json

from safecity.sensing.pseudonym import Pseudonymizer
from safecity.sensing.scrub import scrub

P = Pseudonymizer(b"k" * 32)


def test_plate_nested_list_and_duplicate_key_are_replaced() -> None:
    raw = (
        '{"plate":"沪A·54321","plate":null,'
        '"after":{"recognized_license_plate":["沪B12345",0.9],"sub_label":"老王的车"}}'
    )
    kept = scrub(raw.encode(), kind=None, pseudonymize=P)
    assert kept.raw is not None
    text = kept.raw.decode()
    for clear in ("沪A", "54321", "沪B12345", "老王"):
        assert clear not in text
    body = json.loads(text)
    assert body["after"]["recognized_license_plate"] == [P("plate", "沪B12345"), 0.9]
    assert body["after"]["sub_label"] == P("sub_label", "老王的车")
    assert kept.scrub_text("plate 沪B12345 refused") == f"plate {P('plate', '沪B12345')} refused"


def test_bytes_without_personal_fields_stay_exactly() -> None:
    raw = b'{ "alarm": true,  "temp": 71.5 }'
    assert scrub(raw, kind="smoke", pseudonymize=P).raw == raw


def test_unparseable_bytes_kept_only_for_kinds_without_personal_fields() -> None:
    raw = '{"plate": "沪A54321", '.encode()
    assert scrub(raw, kind="checkpoint", pseudonymize=P).raw is None
    assert scrub(raw, kind=None, pseudonymize=P).raw is None
    assert scrub(b'"\xe6\xb2\xaaA54321"', kind="video", pseudonymize=P).raw is None  # a bare JSON string
    assert scrub(b"{not json", kind="smoke", pseudonymize=P).raw == b"{not json"
