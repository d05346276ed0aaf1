"""A node in a process of its own, for tests that kill it: `python -m tests.integration.sensing.node_process SETTINGS`.

SETTINGS is the JSON of `Settings` keyword arguments. The node registers the test district's devices, prints READY,
and runs until SIGTERM (an orderly stop) or SIGKILL (a crash, which is the point).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from safecity.kernel import logging as sc_logging
from safecity.kernel.settings import Settings
from safecity.runtime import Runtime
from safecity.sim.district import build_district

DISTRICT = build_district(devices=200)


async def main(settings: Settings) -> None:
    """Start the node, say READY once connected, run until SIGTERM."""
    sc_logging.configure(settings.log_level, settings.log_json)
    runtime = Runtime(settings, tagger=DISTRICT.tag_index())
    await runtime.start()
    await runtime.devices.upsert_many(DISTRICT.devices)
    if runtime.mqtt is not None:
        await asyncio.wait_for(runtime.mqtt.connected.wait(), 30)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    await stop.wait()
    await runtime.stop()


if __name__ == "__main__":
    asyncio.run(main(Settings(**json.loads(sys.argv[1]))))
