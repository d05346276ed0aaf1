"""Property: a pack `rules check` accepts always loads and runs in the engine; one it refuses says where and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from tests.rule_packs import EVENTS, rule_packs

from safecity.sensing.model import Tags
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.warning.engine import Engine, EventView
from safecity.warning.rules import RuleError, parse_pack

KEY = Pseudonymizer(b"unit-test-pseudonym-key!")
T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # 22:00 in Asia/Shanghai: inside and outside the drawn schedules


def _events() -> list[EventView]:
    """One event of every name, spread over a day, inside the test zone, in town t1, with a listed plate."""
    out: list[EventView] = []
    for i in range(48):
        name = EVENTS[i % len(EVENTS)]
        out.append(
            EventView(
                id=f"e{i:03d}",
                name=name,
                t=(T0 + timedelta(minutes=30 * i)).timestamp(),
                device_id=f"d{i % 3}",
                tags=Tags(town="t1", community="c1", building="b1", device_kind=name),
                lon=121.245,
                lat=31.375,
                value=float(i % 7) * 10.0,
                state=["open", "alarm", "occupied", "closed"][i % 4],
                data={"alarm": i % 2 == 0, "temp": 40.0 + i},
                pseudonyms={"plate": KEY("plate", "沪A12345")},
            )
        )
    return out


@settings(max_examples=300)
@given(rule_packs())
def test_check_accepts_only_packs_the_engine_loads_and_runs(case: tuple[str, str | None]) -> None:
    text, fault = case
    try:
        pack = parse_pack(text, "pack.yaml", pseudonymize=KEY)
    except RuleError as err:
        assert fault is not None, f"a valid pack was refused: {err.lines()}"
        assert err.issues
        for line, message in err.issues:
            assert isinstance(line, int) and line >= 1, (line, message)
            assert "Traceback" not in message
        return
    assert fault is None, f"`rules check` accepted a pack with fault {fault!r}:\n{text}"
    engine = Engine(pack, now=lambda: T0)
    for ev in _events():
        engine.process(ev)
        engine.due(datetime.fromtimestamp(ev.t, UTC))
    # A reload keeps the open windows of unchanged rules: that path loads the same pack again.
    Engine.restore(pack, engine.snapshot(), now=lambda: T0)
