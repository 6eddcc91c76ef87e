"""Pauses the machine imposes on busy processes: one busy loop per core, every gap over a threshold.

A soak's slow windows can come from the machine rather than the server. A process that only sleeps sees
little of that: it is woken when it asks. A process that is always running sees every moment its core
was taken away, and two of them, pinned to different cores, show whether both cores stopped at once
(something outside the guest, or the whole kernel) or one (another process on that core).

    python bench/pauses.py [--seconds 120] [--threshold-ms 10]

Prints one line per gap (the time, the core, its length), then each core's count and longest gap.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time


def watch(core: int, seconds: float, threshold: float, results: multiprocessing.Queue[object]) -> None:
    os.sched_setaffinity(0, {core})
    gaps: list[tuple[float, float]] = []
    end = time.monotonic() + seconds
    last = time.monotonic()
    while (now := time.monotonic()) < end:
        if now - last > threshold:
            gaps.append((time.time() - (time.monotonic() - last), now - last))
        last = now
    results.put((core, gaps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--threshold-ms", type=float, default=10.0)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    results: multiprocessing.Queue[object] = multiprocessing.Queue()
    watchers = [
        multiprocessing.Process(target=watch, args=(core, args.seconds, args.threshold_ms / 1000, results))
        for core in cores
    ]
    for watcher in watchers:
        watcher.start()
    found = dict(results.get() for _ in watchers)  # type: ignore[misc]
    for watcher in watchers:
        watcher.join()
    gaps = sorted((at, core, length) for core, core_gaps in found.items() for at, length in core_gaps)
    for at, core, length in gaps:
        stamp = time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"
        print(f"{stamp}  core {core}  {length * 1000:7.1f} ms")
    for core in cores:
        lengths = [length for _, length in found[core]]
        longest = f"{max(lengths) * 1000:.1f} ms" if lengths else "-"
        count = f"{len(lengths)} gaps over {args.threshold_ms:g} ms in {args.seconds:g} s"
        print(f"core {core}: {count}, longest {longest}")


if __name__ == "__main__":
    main()
