"""The state process of a host of several workers (`relaycast.server.state_process`), driven as a user runs
`relaycast serve --workers 2`: what a request waits for (the host's limits, stored responses) is its, so a
telemetry process that gets no CPU (stopped here, starved at saturation) holds no request back; a killed state
process is started again, requests with limits are refused meanwhile rather than left waiting or let through, and
stored responses come back from the store."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from pathlib import Path

import openai

from tests.conftest import Fake, GatewayProcess
from tests.integration.test_host_processes import (
    BIG_KEY,
    KEY,
    LIMITS,
    admin_get,
    chat,
    host,
    role_pids,
    telemetry_config,
    wait_for,
)


def client(gw: GatewayProcess) -> openai.OpenAI:
    """A client of its own: its own connection, to either worker."""
    return openai.OpenAI(base_url=gw.base_url, api_key=BIG_KEY, max_retries=0, timeout=5)


def test_with_two_workers_a_stopped_telemetry_process_holds_back_no_request(fake: Fake, tmp_path: Path) -> None:
    gw = host(fake, telemetry_config(tmp_path, LIMITS), "--workers", "2").wait_ready()
    try:
        [tele] = role_pids(gw, "telemetry")
        os.kill(tele, signal.SIGSTOP)
        try:
            began = time.monotonic()
            # The key's 10 a minute admit 10 across both workers, decided by the state process.
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                statuses = [s for s, _ in pool.map(lambda _: chat(gw, KEY), range(16))]
            assert sorted(statuses) == [200] * 10 + [429] * 6
            # A response stored by one worker is read and continued through the others' connections at once.
            made = client(gw).responses.create(model="fakeai/gpt-4o-mini@tokens=3", input="q0")
            for _ in range(4):
                assert client(gw).responses.retrieve(made.id).output_text == "the quick brown"
            follow = client(gw).responses.create(
                model="fakeai/gpt-4o-mini@tokens=2", previous_response_id=made.id, input="and then?"
            )
            assert follow.output_text == "the quick"
            assert [m["content"] for m in fake.last_body()["messages"]] == ["q0", "the quick brown", "and then?"]
            # Nothing waited for the stopped process: each of these requests took the fake upstream's time.
            assert time.monotonic() - began < 5.0
        finally:
            os.kill(tele, signal.SIGCONT)

        # Its records were kept in the workers' backlogs meanwhile and arrive now; the store view shows both
        # processes' parts: the records the telemetry process wrote and the responses the state process keeps.
        def arrived() -> bool:
            store = json.loads(admin_get(gw, "/admin/store"))["store"]
            return bool(store["written"] >= 18 and store["stored_responses"]["entries"] == 2)

        wait_for(arrived, what="the records and the stored responses in /admin/store")
    finally:
        gw.stop()


def test_a_killed_state_process_is_restarted_limits_refuse_meanwhile_and_responses_come_back_from_the_store(
    fake: Fake, tmp_path: Path
) -> None:
    gw = host(fake, telemetry_config(tmp_path, LIMITS), "--workers", "2").wait_ready()
    try:
        made = client(gw).responses.create(model="fakeai/gpt-4o-mini@tokens=3", input="kept")
        assert [chat(gw, KEY)[0] for _ in range(3)] == [200] * 3

        def written() -> int:
            n: int = json.loads(admin_get(gw, "/admin/store"))["store"]["stored_responses"]["store"]["written"]
            return n

        wait_for(lambda: written() == 1, what="the stored response written to the store")
        [old] = role_pids(gw, "state")
        os.kill(old, signal.SIGKILL)
        # Until a new one listens, a request with limits is refused (503 limiter_unavailable), never let through
        # unchecked nor left waiting.
        assert chat(gw, KEY)[0] in (200, 503)
        assert chat(gw, BIG_KEY)[0] in (200, 503)
        # The admin views still answer: /admin/stats without the host's limits while it is away (no 503).
        assert "host" in json.loads(admin_get(gw, "/admin/stats"))["limits"]
        wait_for(lambda: [p for p in role_pids(gw, "state") if p != old], what="a new state process")

        # Each worker connects to the new one (the stats name the worker that answered and its link to it).
        reconnected: set[int] = set()

        def both_reconnected() -> bool:
            stats = json.loads(admin_get(gw, "/admin/stats"))
            if stats["state"] == {"connected": True, "connects": 2}:
                reconnected.add(stats["telemetry"]["worker"])
            return reconnected == {0, 1}

        wait_for(both_reconnected, what="both workers connected to the new state process")
        # It starts the key's window afresh: 10 more across both workers.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = [s for s, _ in pool.map(lambda _: chat(gw, KEY), range(13))]
        assert sorted(statuses) == [200] * 10 + [429] * 3
        # The stored response, which its memory lost, is read back from the store by either worker.
        for _ in range(4):
            assert client(gw).responses.retrieve(made.id).output_text == "the quick brown"
        assert "state-0 exited" not in gw.log() and "relaycast: state exited" in gw.log()
    finally:
        gw.stop()
