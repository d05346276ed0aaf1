"""Paced MQTT load for the ingest benchmark: Mosquitto's C client does the publishing, this process only paces it.

    python bench/mqtt_load.py --host H --port P --prefix PFX --devices FILE --rate R --count N --qos Q

One `mosquitto_pub -l` per device topic reads JSON lines from a pipe and publishes each line as it arrives; this
process writes the lines that are due every few milliseconds, so the publisher's cost stays in C and the rate is
steady. `--devices` is a JSON list of {id, community, kind}; message ids are b0..bN-1, round-robin over the devices.
Prints one JSON line: published, seconds, achieved rate.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--devices", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--qos", type=int, default=0)
    args = parser.parse_args()
    binary = shutil.which("mosquitto_pub")
    if binary is None:
        sys.exit("mosquitto_pub not found: apt-get install mosquitto-clients")
    with open(args.devices, encoding="utf-8") as f:
        devices = json.load(f)
    ts = time.time()
    lines: list[list[bytes]] = [[] for _ in devices]
    for i in range(args.count):
        d = i % len(devices)
        if devices[d]["kind"] == "smoke":
            lines[d].append(b'{"id":"b%d","ts":%.3f,"alarm":false,"temp":21.5}\n' % (i, ts))
        else:
            lines[d].append(b'{"id":"b%d","ts":%.3f,"open":true}\n' % (i, ts))
    procs = [
        subprocess.Popen(
            [
                binary,
                "-h",
                args.host,
                "-p",
                str(args.port),
                "-q",
                str(args.qos),
                "-l",
                "-t",
                f"{args.prefix}/{d['community']}/{d['kind']}/{d['id']}",
                "-i",
                f"{args.prefix}-pub{n}",
            ],
            stdin=subprocess.PIPE,
        )
        for n, d in enumerate(devices)
    ]
    time.sleep(0.3)  # let every publisher connect
    n_dev = len(devices)
    sent = 0
    started = time.perf_counter()
    while sent < args.count:
        due = min(args.count, int((time.perf_counter() - started) * args.rate) + 1)
        if due > sent:
            # Messages sent..due-1 go round-robin: device d gets indexes d, d+n, ...
            for d, proc in enumerate(procs):
                first = (sent - d + n_dev - 1) // n_dev
                last = (due - d + n_dev - 1) // n_dev
                if last > first:
                    assert proc.stdin is not None
                    proc.stdin.write(b"".join(lines[d][first:last]))
                    proc.stdin.flush()
            sent = due
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs:
        proc.wait(timeout=60)
    print(json.dumps({"published": sent, "seconds": elapsed, "rate": sent / elapsed}))


if __name__ == "__main__":
    main()
