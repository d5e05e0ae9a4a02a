"""`relaycast serve` as a host: a supervisor, a telemetry process and workers, driven as a user runs it.

Records reach the store and the broadcast destinations through the telemetry process; SIGTERM flushes both
processes; a killed telemetry process is started again while requests keep succeeding, and loses only the records
around its death; two workers share one set of limits, one `/metrics` and their routing health.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from tests.conftest import (
    ADMIN_KEY,
    GUARDED_ALIAS,
    UPSTREAM_KEY,
    Fake,
    GatewayProcess,
    host_children,
    standard_config,
)

KEY = "rk-host-processes-key-0000001"


def telemetry_config(d: Path, extra: str = "") -> str:
    return f"""
store: {{path: {d}/store.db}}
broadcast:
  spool_dir: {d}/spool
  destinations:
    - {{name: file, kind: file, path: {d}/records.jsonl}}
{extra}
"""


def host(fake: Fake, extra: str = "", *args: str) -> GatewayProcess:
    """`relaycast serve` with the standard config (and `extra`), its command line given `args`; not yet ready."""
    return GatewayProcess(standard_config(fake.url, extra), extra_args=args, env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})


def stat_fields(pid: int, tid: int | None = None) -> list[str]:
    """/proc/PID/stat (or a thread's) from its third field on: [16] is the nice value, [38] the policy."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    return Path(path).read_text().rsplit(")", 1)[1].split()


def niceness(pid: int) -> int:
    return int(stat_fields(pid)[16])


def thread_policies(pid: int) -> dict[int, int]:
    """The scheduling policy of each of a process's threads (os.SCHED_OTHER 0, os.SCHED_IDLE 5)."""
    return {int(t.name): int(stat_fields(pid, int(t.name))[38]) for t in Path(f"/proc/{pid}/task").iterdir()}


def role_pids(gw: GatewayProcess, role: str) -> list[int]:
    return [p for p, r in host_children(gw.proc.pid).items() if r == role]


def admin_get(gw: GatewayProcess, path: str) -> bytes:
    req = urllib.request.Request(gw.url + path, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        body: bytes = r.read()
        return body


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in an exposition text."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name)


def chat(gw: GatewayProcess, key: str = "x") -> tuple[int, str]:
    """(status, the gateway's request id) of one request on a connection of its own."""
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="fakeai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        return raw.status_code, raw.headers["x-relaycast-request-id"]
    except openai.APIStatusError as e:
        return e.status_code, e.response.headers.get("x-relaycast-request-id", "")
    finally:
        client.close()


def file_records(d: Path) -> tuple[set[str], int]:
    """The request ids on the file's whole lines, and how many whole lines are not a record: a line a killed
    telemetry process left unfinished (the next one ends it with a newline). A last line without its newline is
    still being written, and is not read."""
    path = d / "records.jsonl"
    if not path.exists():
        return set(), 0
    ids: set[str] = set()
    torn = 0
    for line in path.read_bytes().split(b"\n")[:-1]:
        if not line.strip():
            continue
        try:
            ids.add(json.loads(line)["request_id"])
        except ValueError:
            torn += 1
    return ids, torn


def file_ids(d: Path) -> set[str]:
    return file_records(d)[0]


def store_ids(d: Path) -> set[str]:
    with sqlite3.connect(d / "store.db") as db:
        return {r[0] for r in db.execute("select request_id from requests")}


def wait_for(cond, timeout: float = 15.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_records_reach_store_and_broadcast_through_the_telemetry_process_and_sigterm_flushes_both(
    fake: Fake, tmp_path: Path
) -> None:
    gw = host(fake, telemetry_config(tmp_path)).wait_ready()
    try:
        roles = sorted(host_children(gw.proc.pid).values())
        assert roles == ["telemetry", "worker"]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: chat(gw), range(40)))
        assert {s for s, _ in results} == {200}
        # The requests get the CPU first: every thread of the telemetry process (its store writer's too, started
        # after it lowered its priority) runs only on CPU the worker does not want; the worker's are ordinary.
        [tele], [worker] = role_pids(gw, "telemetry"), role_pids(gw, "worker")
        policies = thread_policies(tele)
        assert len(policies) >= 2 and set(policies.values()) == {os.SCHED_IDLE}, policies
        assert set(thread_policies(worker).values()) == {os.SCHED_OTHER}
        assert _field(_last(gw.log(), "telemetry_started"), "priority") == "idle"
        ids = {rid for _, rid in results}
        # SIGTERM at once: the worker hands over its last records, then the telemetry process writes and sends them.
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(30) == 0
        written, torn = file_records(tmp_path)
        assert ids <= written and torn == 0
        assert ids <= store_ids(tmp_path)
        log = gw.log()
        assert "telemetry_stopped" in log and "gateway_stopped" in log
        assert not children_alive(roles_of=gw)
    finally:
        gw.stop()


def maps_package(pid: int, package: str) -> bool:
    """Whether the process has a compiled module of `package` mapped: it imported the package."""
    return any(f"/{package}/" in line and ".so" in line for line in Path(f"/proc/{pid}/maps").read_text().splitlines())


def test_a_worker_leaves_the_exporters_http_client_to_the_telemetry_process(fake: Fake, tmp_path: Path) -> None:
    """aiohttp (the exporters' and notifications' client, about 10 MB) is loaded by the telemetry process, which
    sends the records; a worker that served requests with a store and broadcast configured never loads it."""
    gw = host(fake, telemetry_config(tmp_path)).wait_ready()
    try:
        assert {chat(gw)[0] for _ in range(5)} == {200}
        [tele], [worker] = role_pids(gw, "telemetry"), role_pids(gw, "worker")
        assert maps_package(tele, "aiohttp")
        assert maps_package(worker, "httptools") and not maps_package(worker, "aiohttp")
    finally:
        gw.stop()


def children_alive(roles_of: GatewayProcess) -> list[int]:
    try:
        return list(host_children(roles_of.proc.pid))
    except FileNotFoundError:  # the supervisor is gone, and so its children
        return []


def test_a_killed_telemetry_process_is_restarted_requests_never_fail_and_only_records_in_flight_are_lost(
    fake: Fake, tmp_path: Path
) -> None:
    gw = host(fake, telemetry_config(tmp_path)).wait_ready()
    try:
        [old] = role_pids(gw, "telemetry")
        sent: list[tuple[float, int, str]] = []  # (time, status, request id)
        stop_at = [0.0]

        def traffic() -> None:
            while not stop_at[0] or time.monotonic() < stop_at[0]:
                status, rid = chat(gw)
                sent.append((time.monotonic(), status, rid))

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            runs = [pool.submit(traffic) for _ in range(4)]
            time.sleep(3.0)
            killed_at = time.monotonic()
            signal_pid(old, signal.SIGKILL)
            wait_for(lambda: [p for p in role_pids(gw, "telemetry") if p != old], what="a new telemetry process")
            wait_for(lambda: metric(admin_get_or_empty(gw, "/metrics").decode(), "relaycast_telemetry_connected") == 1)
            restarted_at = time.monotonic()
            stop_at[0] = time.monotonic() + 1.0
            for r in runs:
                r.result()
        # Requests never failed because of it.
        assert sent and {s for _, s, _ in sent} == {200}
        before = [rid for t, _, rid in sent if t < killed_at - WINDOW_S]
        after = [rid for t, _, rid in sent if t > restarted_at + 0.5]
        assert before and after
        wait_for(lambda: set(after) <= file_ids(tmp_path), what="records after the restart in the file")
        delivered, torn = file_records(tmp_path)
        assert torn <= 1, "only the line the kill cut short may be unfinished"
        # What was delivered before the kill stays; what came after the restart arrives; only the records handed
        # over around the kill may be missing.
        assert set(before) <= delivered
        missing = {rid for _, _, rid in sent} - delivered
        window = [rid for t, _, rid in sent if killed_at - WINDOW_S <= t <= restarted_at + 0.5]
        assert missing <= set(window)
        # The worker's accounting: every record handed over is acknowledged, dropped under a reason, or waiting.
        stats = json.loads(admin_get(gw, "/admin/stats"))["telemetry"]
        waiting = stats["backlog"] + stats["in_flight"]
        assert stats["handed"] == stats["acknowledged"] + sum(stats["dropped"].values()) + waiting
        # Reconnected (a connection made in the instant the dying process still listened may count once more).
        assert stats["connects"] >= 2
        assert "telemetry exited (-9); starting it again" in gw.log()
    finally:
        gw.stop()


# Records the telemetry process had taken but not yet written or sent when it was killed: a flush interval of
# the file destination (0.5 s) and of the store (1 s), with a margin.
WINDOW_S = 1.5


def signal_pid(pid: int, sig: signal.Signals) -> None:
    import os

    os.kill(pid, sig)


BIG_KEY = "rk-host-processes-key-0000002"
LIMITS = f"""
keys:
  - {{name: small, secret: {KEY}, rpm: 10}}
  - {{name: big, secret: {BIG_KEY}, rpm: 100000}}
"""


def test_two_workers_share_one_limit_and_one_metrics_view(fake: Fake, tmp_path: Path) -> None:
    gw = host(fake, telemetry_config(tmp_path, LIMITS), "--workers", "2").wait_ready()
    try:
        assert sorted(host_children(gw.proc.pid).values()) == ["state", "telemetry", "worker", "worker"]
        # The state process keeps the host's limits (no Redis): the workers wait for its answers, so it runs at their
        # priority; the telemetry process, which no request waits for, runs only on CPU they leave.
        [tele], [state], workers = role_pids(gw, "telemetry"), role_pids(gw, "state"), role_pids(gw, "worker")
        assert {niceness(state) - niceness(w) for w in workers} == {0}
        assert set(thread_policies(state).values()) == {os.SCHED_OTHER}
        # Its start line is written once its socket listens, which is when workers may already be serving.
        wait_for(lambda: " telemetry_started " in gw.log(), what="the telemetry process's start line")
        assert _field(_last(gw.log(), "telemetry_started"), "priority") == "idle"
        assert set(thread_policies(tele).values()) == {os.SCHED_IDLE}
        # Both workers answer (each on connections of its own): the stats name the worker that answered. The
        # kernel gives each new connection to whichever worker takes it first: ask until both have (a worker
        # still starting takes none).
        seen: set[int] = set()

        def both_answered() -> bool:
            seen.add(json.loads(admin_get(gw, "/admin/stats"))["telemetry"]["worker"])
            return seen == {0, 1}

        wait_for(both_answered, what="an answer from each worker")
        # 30 requests at once on their own connections: the key's 10 per minute admit 10 across both workers.
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            statuses = [s for s, _ in pool.map(lambda _: chat(gw, KEY), range(30))]
        assert statuses.count(200) == 10
        assert statuses.count(429) == 20

        # Far from its limit, a key's requests are admitted by the workers under leases, without asking.
        assert [chat(gw, BIG_KEY)[0] for _ in range(20)] == [200] * 20
        local: dict[int, int] = {}

        def both_told() -> bool:
            stats = json.loads(admin_get(gw, "/admin/stats"))
            local[stats["telemetry"]["worker"]] = stats["limits"]["local"]
            return len(local) == 2

        wait_for(both_told, what="the limits of each worker")
        assert sum(local.values()) >= 10  # each worker asks for its first request, and a lease covers the next 8

        # One view of the host, whichever worker answers: every request counted once, both workers connected.
        def one_view() -> bool:
            texts = [admin_get(gw, "/metrics").decode() for _ in range(6)]
            return all(
                metric(t, "relaycast_requests_total") == 50 and metric(t, "relaycast_telemetry_connected") == 2
                for t in texts
            )

        wait_for(one_view, what="one /metrics view of both workers")
    finally:
        gw.stop()


def test_workers_must_be_a_positive_number_or_auto(fake: Fake, tmp_path: Path) -> None:
    gw = host(fake, "", "--workers", "0")
    try:
        assert gw.proc.wait(20) == 2
        assert "--workers must be a positive number or `auto`" in gw.log()
    finally:
        gw.stop()


def test_metrics_answer_503_with_retry_after_while_the_telemetry_process_is_away(fake: Fake, tmp_path: Path) -> None:
    gw = host(fake).wait_ready()
    try:
        [tele] = role_pids(gw, "telemetry")
        signal_pid(tele, signal.SIGSTOP)  # alive but silent: the question times out
        try:
            status, _ = chat(gw)
            assert status == 200  # requests do not wait for it
        finally:
            signal_pid(tele, signal.SIGCONT)
        signal_pid(tele, signal.SIGKILL)
        with pytest.raises(urllib.error.HTTPError) as e:
            admin_get(gw, "/metrics")
        assert e.value.code == 503
        assert e.value.headers["retry-after"] == "1"
        assert json.loads(e.value.read())["error"]["code"] == "telemetry_unavailable"
        wait_for(lambda: b"relaycast_requests_total" in admin_get_or_empty(gw, "/metrics"), what="metrics again")
    finally:
        gw.stop()


def test_metrics_and_admin_views_answer_with_the_last_view_and_its_age_while_the_telemetry_process_is_too_busy(
    fake: Fake, tmp_path: Path
) -> None:
    """At saturation the telemetry process (under SCHED_IDLE) can take longer than a scrape's timeout to answer;
    SIGSTOP stands for that: alive, connected, silent."""
    gw = host(fake, telemetry_config(tmp_path)).wait_ready()
    try:
        assert chat(gw)[0] == 200
        fresh = admin_get(gw, "/metrics").decode()
        assert metric(fresh, "relaycast_metrics_view_age_seconds") == 0.0
        assert metric(fresh, "relaycast_requests_total") == 1
        stats = json.loads(admin_get(gw, "/admin/stats"))
        assert (stats["requests"], stats["view_age_s"]) == (1, 0.0)
        assert json.loads(admin_get(gw, "/admin/broadcast"))["view_age_s"] == 0.0  # a view to stand in later

        def file_sent() -> int:
            listing = json.loads(admin_get(gw, "/admin/broadcast/destinations"))
            [dest] = listing["destinations"]
            return int(dest["status"]["sent"]) if listing["view_age_s"] == 0.0 else -1

        wait_for(lambda: file_sent() == 1, what="the file destination's status with the first record")
        [tele] = role_pids(gw, "telemetry")
        signal_pid(tele, signal.SIGSTOP)
        try:
            assert chat(gw)[0] == 200
            stale = admin_get(gw, "/metrics").decode()  # within admin_get's 5 s, where the question times out in 10
            assert metric(stale, "relaycast_metrics_view_age_seconds") >= 2.0
            assert metric(stale, "relaycast_requests_total") == 1  # the view it had: without the second request
            stats = json.loads(admin_get(gw, "/admin/stats"))
            assert stats["requests"] == 1 and stats["view_age_s"] >= 2.0
            assert stats["telemetry"]["handed"] == 2  # what the worker knows itself is as of now
            listing = json.loads(admin_get(gw, "/admin/broadcast/destinations"))  # the Settings page's
            assert listing["view_age_s"] >= 2.0
            assert [(d["name"], d["status"]["sent"]) for d in listing["destinations"]] == [("file", 1)]
            status = subprocess.run(
                [sys.executable, "-m", "relaycast", "broadcast", "status", "--url", gw.url, "--admin-key", ADMIN_KEY],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert status.returncode == 0, status.stderr
            assert "the telemetry process is busy" in status.stdout
        finally:
            signal_pid(tele, signal.SIGCONT)

        def fresh_again() -> bool:
            text = admin_get(gw, "/metrics").decode()
            now = json.loads(admin_get(gw, "/admin/stats"))
            return (
                metric(text, "relaycast_metrics_view_age_seconds") == 0.0
                and metric(text, "relaycast_requests_total") == 2
                and (now["requests"], now["view_age_s"]) == (2, 0.0)
            )

        wait_for(fresh_again, what="fresh views with both requests")
    finally:
        gw.stop()


def admin_get_or_empty(gw: GatewayProcess, path: str) -> bytes:
    try:
        return admin_get(gw, path)
    except urllib.error.HTTPError:
        return b""


def test_a_worker_that_finds_the_config_invalid_stops_the_host_with_status_2(fake: Fake, tmp_path: Path) -> None:
    gw = host(fake).wait_ready()
    try:
        gw.config_path.write_text("providers: [{name: x}]\n")  # edited while the host runs, then a worker dies
        [worker] = role_pids(gw, "worker")
        signal_pid(worker, signal.SIGKILL)
        assert gw.proc.wait(30) == 2
        log = gw.log()
        assert "relaycast: invalid config" in log and "worker-0 found the config invalid; stopping" in log
    finally:
        gw.stop()


def test_after_sigterm_the_port_refuses_new_connections_while_a_request_finishes(fake: Fake, tmp_path: Path) -> None:
    gw = host(fake).wait_ready()
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                client.chat.completions.create,
                model="fakeai/gpt-4o-mini@latency_ms=1500",
                messages=[{"role": "user", "content": "hi"}],
            )
            time.sleep(0.5)
            gw.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(urllib.error.URLError) as e:
                urllib.request.urlopen(gw.url + "/healthz", timeout=2)
            assert isinstance(e.value.reason, ConnectionRefusedError)
            assert slow.result().choices[0].message.content  # the request in flight finished
        assert gw.proc.wait(30) == 0
    finally:
        gw.stop()


def test_stored_responses_are_shared_by_the_workers_and_outlive_a_restart(fake: Fake, tmp_path: Path) -> None:
    def client(gw: GatewayProcess) -> openai.OpenAI:  # a client of its own: its own connection, either worker
        return openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=15)

    config = telemetry_config(tmp_path)
    gw = host(fake, config, "--workers", "2").wait_ready()
    try:
        made = [client(gw).responses.create(model="fakeai/gpt-4o-mini@tokens=3", input=f"q{i}") for i in range(4)]
        for r in made * 3:
            assert client(gw).responses.retrieve(r.id).output_text == "the quick brown"
        follow = client(gw).responses.create(
            model="fakeai/gpt-4o-mini@tokens=2", previous_response_id=made[0].id, input="and then?"
        )
        assert follow.output_text == "the quick"
        assert [m["content"] for m in fake.last_body()["messages"]] == ["q0", "the quick brown", "and then?"]
    finally:
        gw.stop()
    again = host(fake, config).wait_ready()
    try:
        assert client(again).responses.retrieve(made[1].id).output_text == "the quick brown"
        client(again).responses.delete(made[1].id)
        with pytest.raises(openai.NotFoundError):
            client(again).responses.retrieve(made[1].id)
    finally:
        again.stop()


def test_a_lone_worker_stores_reads_and_continues_responses_while_its_telemetry_process_is_stopped(
    fake: Fake, tmp_path: Path
) -> None:
    """One worker does not wait for the telemetry process to store a response, and reads its own copies first: a
    stopped (or starved) telemetry process neither holds the answers back nor breaks a follow-up. The host's store
    gets every response once that process runs again, and a delete (which waits for it) holds after a restart."""
    config = telemetry_config(tmp_path)
    gw = host(fake, config).wait_ready()
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=5)
    try:
        (telemetry,) = role_pids(gw, "telemetry")
        os.kill(telemetry, signal.SIGSTOP)
        try:
            made = client.responses.create(model="fakeai/gpt-4o-mini@tokens=3", input="q0")
            assert client.responses.retrieve(made.id).output_text == "the quick brown"
            follow = client.responses.create(
                model="fakeai/gpt-4o-mini@tokens=2", previous_response_id=made.id, input="and then?"
            )
            assert follow.output_text == "the quick"
            assert [m["content"] for m in fake.last_body()["messages"]] == ["q0", "the quick brown", "and then?"]
            gone = client.responses.create(model="fakeai/gpt-4o-mini@tokens=1", input="short-lived")
        finally:
            os.kill(telemetry, signal.SIGCONT)
        client.responses.delete(gone.id)  # a delete waits for the host's store: it must not come back
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(gone.id)

        def stored() -> int:
            entries: int = json.loads(admin_get(gw, "/admin/store"))["store"]["stored_responses"]["entries"]
            return entries

        wait_for(lambda: stored() == 2, what="the host's store to take the two responses kept (the third deleted)")
    finally:
        gw.stop()
    again = host(fake, config).wait_ready()  # a new worker, with no copies: the host's store answers
    client = openai.OpenAI(base_url=again.base_url, api_key="x", max_retries=0, timeout=5)
    try:
        assert client.responses.retrieve(made.id).output_text == "the quick brown"
        assert client.responses.retrieve(follow.id).output_text == "the quick"
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(gone.id)
    finally:
        again.stop()


def _field(line: str, name: str) -> str:
    m = re.search(rf'(?:^| ){name}=("[^"]*"|\S+)', line)
    assert m, f"{name} missing from: {line}"
    return m.group(1).strip('"')


def _last(log: str, event: str) -> str:
    lines = [ln for ln in log.splitlines() if f" {event} " in ln or ln.endswith(f" {event}")]
    assert lines, f"no {event} line in:\n{log}"
    return lines[-1]


@pytest.mark.parametrize("layout", [(), ("--single-process",)], ids=["telemetry-process", "single-process"])
def test_sigterm_logs_what_it_drained_flushed_and_spooled(fake: Fake, tmp_path: Path, layout: tuple[str, ...]) -> None:
    gw = host(fake, telemetry_config(tmp_path), *layout).wait_ready()
    try:
        assert chat(gw)[0] == 200
        client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        fake.reset()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                client.chat.completions.create,
                model="fakeai/gpt-4o-mini@latency_ms=2000",  # within its first_token timeout (3 s)
                messages=[{"role": "user", "content": "in flight at SIGTERM"}],
            )
            wait_for(lambda: fake.requests(), what="the request to reach the upstream")
            gw.proc.send_signal(signal.SIGTERM)
            assert slow.result().choices[0].message.content  # drained: it finished
        # The host exits 0; one process ends as uvicorn ends it, by the signal it was stopped with.
        assert gw.proc.wait(60) == (-signal.SIGTERM if layout else 0)
        log = gw.log()
    finally:
        gw.stop()
    done = _last(log, "shutdown_complete")  # the serving process's last word
    assert (_field(done, "in_flight"), _field(done, "drained"), _field(done, "cut")) == ("1", "1", "0")
    assert float(_field(done, "drain_seconds")) <= float(_field(done, "seconds"))
    # What each destination and the store delivered, spooled and dropped: in the same process, or in the
    # telemetry process, to which the worker says what it handed over.
    if layout:
        flushed = done
    else:
        assert _field(done, "telemetry") == "handed=2 acknowledged=2 dropped=0"
        flushed = _last(log, "telemetry_stopped")
        assert (_field(flushed, "received"), _field(flushed, "workers_unfinished")) == ("2", "0")
    assert _field(flushed, "broadcast_file") == "sent=2 spooled_batches=0 dropped=0"
    assert _field(flushed, "store") == "written=2 queued=0 dropped=0"


def test_a_request_still_running_at_the_drain_deadline_is_counted_as_cut(tmp_path: Path) -> None:
    import asyncio
    import threading

    from relaycast.config import ServerConfig
    from relaycast.server.guards import ConnectionGuard
    from relaycast.server.runner import DrainingServer, free_port, uvicorn_config

    started = threading.Event()

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/slow":
            started.set()
            await asyncio.sleep(3600)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    # The gateway's own settings: requests in flight get `server.drain_timeout` (30 s by default) once it stops.
    guard = ConnectionGuard(ServerConfig(drain_timeout=1))
    server = DrainingServer(uvicorn_config(app, "127.0.0.1", port, log_level="critical", guard=guard))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the server to start")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/slow", timeout=30).read())
        assert started.wait(10)
        server.should_exit = True
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            slow.result()
    thread.join(30)
    assert server.drain is not None and (server.drain.in_flight, server.drain.cut, server.drain.drained) == (1, 1, 0)
    assert server.drain.seconds < 10  # cut at its 1 s deadline, not the default's 30 s
    assert server.report is not None and server.report["cut"] == 1


HEALTH = (
    """
admin_key: {admin}
routing: {{circuit: {{failures: 3, cooldown_s: 60}}}}
providers:
  - {{name: fakeai, kind: openai_compatible, base_url: '{fake}', api_key: '{upstream}', models: [gpt-4o-mini]}}
"""
    + GUARDED_ALIAS
)


class Connection:
    """One keep-alive connection to a host: every request on it reaches the one worker that took it."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        self.worker = self.stats()["telemetry"]["worker"]

    def stats(self) -> dict:  # type: ignore[type-arg]
        return self._get_json("/admin/stats")

    def routes(self) -> dict:  # type: ignore[type-arg]
        return self._get_json("/admin/routes")

    def _get_json(self, path: str) -> dict:  # type: ignore[type-arg]
        self.conn.request("GET", path, headers={"authorization": f"Bearer {ADMIN_KEY}"})
        r = self.conn.getresponse()
        body = r.read()
        assert r.status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]

    def guarded(self) -> tuple[str, str]:
        """One request to the alias whose first target always fails: (attempts, the target that answered)."""
        body = json.dumps({"model": "guarded", "messages": [{"role": "user", "content": "hi"}]})
        self.conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        r = self.conn.getresponse()
        r.read()
        assert r.status == 200
        return r.getheader("x-relaycast-attempts") or "", r.getheader("x-relaycast-target") or ""

    def close(self) -> None:
        self.conn.close()


def test_a_circuit_one_worker_opens_is_avoided_by_the_other_without_redis(fake: Fake) -> None:
    config = HEALTH.format(admin=ADMIN_KEY, fake=fake.url, upstream=UPSTREAM_KEY)
    gw = GatewayProcess(config, extra_args=("--workers", "2")).wait_ready()
    others: list[Connection] = []
    try:
        a = Connection(gw)
        others.append(a)
        for _ in range(3):  # three 503s from `bad` open its circuit on this worker; each request fails over
            assert a.guarded() == ("2", "fakeai/gpt-4o-mini")
        assert a.guarded() == ("1", "fakeai/gpt-4o-mini")

        def on_the_other_worker() -> bool:  # new connections until one lands on the worker that saw none of it
            c = Connection(gw)
            others.append(c)
            return c.worker != a.worker

        wait_for(on_the_other_worker, what="a connection to the other worker")
        b = others[-1]
        # Within a second or so (each worker shares every 0.5 s, through the telemetry process) the other worker
        # holds the circuit the first opened, and says so.
        wait_for(lambda: "bad/gpt-4o-mini" in b.routes()["shared"]["open"], what="the open circuit on the other worker")
        assert 0 < b.routes()["shared"]["open"]["bad/gpt-4o-mini"] <= 60
        assert "bad/gpt-4o-mini" not in b.routes()["targets"]  # it never tried it itself
        # Its first request for the alias skips `bad` without trying it.
        assert b.guarded() == ("1", "fakeai/gpt-4o-mini")
        shared = b.stats()["shared_health"]
        assert (shared["via"], shared["others_open"], shared["errors"]) == ("state_process", 1, 0)
        assert shared["syncs"] >= 2

        # `relaycast routes status` asks whichever worker takes its connection: on the other one, it names the
        # circuit open elsewhere.
        def status_names_it() -> bool:
            out = subprocess.run(
                [sys.executable, "-m", "relaycast", "routes", "status", "--url", gw.url, "--admin-key", ADMIN_KEY],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            return "bad/gpt-4o-mini: circuit open on another worker or replica (avoided here for" in out

        wait_for(status_names_it, what="routes status on the other worker")
    finally:
        for c in others:
            c.close()
        gw.stop()
