"""`server.telemetry_priority` as the telemetry process applies it (`telemetry_process.lower_priority`): each case
in a fresh interpreter, since a thread cannot raise its priority again once it has lowered it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import os, sys, threading
from relaycast.server.telemetry_process import lower_priority
setting = sys.argv[1] if sys.argv[1] in ("auto", "idle") else int(sys.argv[1])
before = os.nice(0)
made, done = threading.Event(), threading.Event()
tid = []
def earlier():  # a thread made before the priority is lowered, as the store writer's is
    tid.append(threading.get_native_id())
    made.set()
    done.wait()
t = threading.Thread(target=earlier)
t.start()
made.wait()
said = lower_priority(setting)
print(said, os.sched_getscheduler(0), os.nice(0) - before)
print(os.sched_getscheduler(tid[0]), os.getpriority(os.PRIO_PROCESS, tid[0]) - before)
done.set()
t.join()
"""


def applied(setting: str) -> tuple[str, int, int]:
    """What `lower_priority` said, the policy it left, and how many nice levels it went down."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, setting],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    # the last two: the earlier thread's policy and nice levels, which must be the calling thread's
    assert out[-2:] == out[-4:-2], f"a thread made before was left at policy {out[-2]}, nice +{out[-1]}"
    return " ".join(out[:-4]), int(out[-4]), int(out[-3])


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("auto", ("idle", os.SCHED_IDLE, 0)),  # no request waits for it: what they wait for is the state process's
        ("idle", ("idle", os.SCHED_IDLE, 0)),
        ("7", ("nice +7", os.SCHED_OTHER, 7)),
        ("0", ("nice +0", os.SCHED_OTHER, 0)),
    ],
)
def test_the_setting_gives_the_workers_the_cpu_first_as_it_says(setting: str, expected: tuple[str, int, int]) -> None:
    if os.nice(0) + expected[2] > 19:
        pytest.skip("this test already runs at a nice value too high to go 7 lower")
    assert applied(setting) == expected
