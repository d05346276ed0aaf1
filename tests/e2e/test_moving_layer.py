"""The moving-objects layer in Debian's chromium: objects are drawn where they are, in their status colour, and move
on an update (pixels read back from the map's WebGL canvas), with the texture cache and without it.

The bench page (`/ui/src/bench/index.html?feed=none`) holds the layer without a feed; the test hands it positions
through the page. No timed assertion: what is checked is where the pixels are, not how fast.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from safecity.web.build import ensure_built
from safecity.web.chromium import CHROMIUM, WEBGL_ARGS

BACKGROUND = (0x0B, 0x12, 0x20)
GREEN = (0x3E, 0xCF, 0x8E)  # available (STATUS_CODES 0)
RED = (0xE8, 0x46, 0x5A)  # on_scene (3)
# Places in the district, a few hundred metres apart (the page's view is the district at zoom 11.2, dots ~4 px).
A = (121.23, 31.38)
B = (121.27, 31.36)
C = (121.25, 31.35)
EMPTY = (121.21, 31.39)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The built UI served by the node's static mount on a free loopback port."""
    import socket

    import uvicorn
    from fastapi import FastAPI

    from safecity.web.static import install_ui

    ensure_built()
    app = FastAPI()
    install_ui(app)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "the UI server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, WebGL on SwiftShader."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=WEBGL_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(params=["cache", "direct"])
def page(request: pytest.FixtureRequest, server: str, browser: Any) -> Iterator[Any]:
    """The bench page with the layer and no feed; fails the test on a console error or a non-loopback request."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    outside: list[str] = []
    errors: list[str] = []

    def guard(route: Any) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    cache = "1" if request.param == "cache" else "0"
    page.goto(f"{server}/ui/src/bench/index.html?feed=none&cache={cache}")
    page.wait_for_function("window.bench && window.bench.map.getLayer('moving') !== undefined")
    yield page
    context.close()
    assert outside == [], f"requests left loopback: {outside}"
    assert errors == [], f"console errors: {errors}"


def put(page: Any, objects: list[tuple[int, tuple[float, float], float | None, int]]) -> None:
    """Hand the layer N objects: (id, (lon, lat), heading or None, status code)."""
    page.evaluate(
        """(objects) => window.bench.layer.setPositions(
            Uint32Array.from(objects.map((o) => o[0])),
            Float64Array.from(objects.map((o) => o[1][0])),
            Float64Array.from(objects.map((o) => o[1][1])),
            Float32Array.from(objects.map((o) => (o[2] === null ? NaN : o[2]))),
            Uint8Array.from(objects.map((o) => o[3])),
        )""",
        objects,
    )


def colour_at(page: Any, place: tuple[float, float]) -> tuple[int, int, int]:
    """The colour of the map's pixel at a place, read back after the next frame."""
    rgba = page.evaluate("([lon, lat]) => window.bench.probe(lon, lat)", list(place))
    return (rgba[0], rgba[1], rgba[2])


def near(actual: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - e) <= 6 for a, e in zip(actual, expected, strict=True))


def test_objects_are_drawn_where_they_are_in_their_status_colour(page: Any) -> None:
    put(page, [(1, A, None, 0), (2, B, 90.0, 3), (3, C, None, 255)])  # 3 is hidden
    assert near(colour_at(page, A), GREEN)
    assert near(colour_at(page, B), RED)
    assert near(colour_at(page, C), BACKGROUND)
    assert near(colour_at(page, EMPTY), BACKGROUND)


def test_an_update_moves_the_objects(page: Any) -> None:
    put(page, [(1, A, None, 0), (2, B, None, 3)])
    assert near(colour_at(page, A), GREEN)
    put(page, [(1, C, 180.0, 0), (2, B, None, 0)])  # 1 moves, 2 changes status
    assert near(colour_at(page, A), BACKGROUND)
    assert near(colour_at(page, C), GREEN)
    assert near(colour_at(page, B), GREEN)


def test_objects_stay_on_their_place_while_the_map_pans(page: Any) -> None:
    put(page, [(1, A, None, 3)])
    page.evaluate("window.bench.map.jumpTo({center: [121.262, 31.377]})")
    assert near(colour_at(page, A), RED)
    page.evaluate("window.bench.map.jumpTo({center: [121.18, 31.33]})")  # past the cache's margin: drawn again
    assert near(colour_at(page, A), RED)
    assert near(colour_at(page, EMPTY), BACKGROUND)


def test_pick_answers_the_object_under_a_point(page: Any) -> None:
    put(page, [(11, A, None, 0), (12, B, None, 3)])
    picked = page.evaluate(
        "([lon, lat]) => { const b = window.bench; return b.layer.pick(b.map.project([lon, lat])); }", list(B)
    )
    assert picked == {"id": 12, "index": 1}
    nothing = page.evaluate(
        "([lon, lat]) => { const b = window.bench; return b.layer.pick(b.map.project([lon, lat])); }", list(EMPTY)
    )
    assert nothing is None
    assert page.evaluate("window.bench.layer.positionOf(11)") == pytest.approx(list(A), abs=1e-6)


def test_projected_attributes_from_a_worker_draw_the_same(page: Any) -> None:
    # what the bench's feed worker hands the layer: pack() output, relative to an origin of its own
    page.evaluate(
        """([a, b]) => {
            const n = 2;
            const data = new Float32Array(n * 4);
            const origin = [0.8368, 0.4025];  // near the district, in mercator: not the layer's origin
            const bbox = window.bench.pack([a[0], b[0]], [a[1], b[1]], [NaN, 45], [3, 0], origin, data);
            window.bench.layer.setProjected(Uint32Array.from([1, 2]), data, n, origin, bbox);
        }""",
        [list(A), list(B)],
    )
    assert near(colour_at(page, A), RED)
    assert near(colour_at(page, B), GREEN)
    assert near(colour_at(page, EMPTY), BACKGROUND)
    assert page.evaluate("window.bench.layer.positionOf(2)") == pytest.approx(list(B), abs=1e-5)
