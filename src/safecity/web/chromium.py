"""How the project's own tools (browser tests, bench/ui.py) start Debian's chromium headless: never a downloaded
browser, and no connection attempted off this machine."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("SAFECITY_CHROMIUM", "/usr/bin/chromium"))
HEADLESS_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# WebGL 2 on the CPU (SwiftShader): for pages that draw with a custom WebGL layer on a machine without a GPU.
WEBGL_ARGS = [*HEADLESS_ARGS, "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
