"""The parts of a running gateway, built in one place (`Services.start`, from the lifespan) and closed in one place
(`Services.close`). Handlers, the admin API, the keys API and `/metrics` receive them explicitly.

The telemetry parts (metrics, store writer, broadcast, monitors: `relaycast.server.telemetry_hub`) run in this process,
or, when the gateway is one of a host's workers (`link`, from `relaycast.server.host`), in the host's telemetry
process, which this process reaches through `host` (`relaycast.telemetry.channel`). Admin views read them through
`telemetry()` either way. What a host's several workers share and wait for (limits without Redis, routing health,
dashboard logouts without a store, stored responses) is kept by its state process, reached through `state`
(`relaycast.server.state_process`); `telemetry()` sends it the questions that are its (STATE_OPS)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from relaycast import errors
from relaycast.config import Config
from relaycast.costs.compute import Coster
from relaycast.costs.pricer import build_pricer
from relaycast.errors import RemoteError
from relaycast.keys.registry import KeyRegistry
from relaycast.limits.admission import Admission, build_limiter
from relaycast.limits.base import Limiter
from relaycast.limits.host import RemoteLimiter
from relaycast.log import EventLog
from relaycast.providers.client import UpstreamClient
from relaycast.providers.forward import forward_table
from relaycast.providers.http import UpstreamBuffer
from relaycast.providers.registry import build_providers
from relaycast.records import RequestRecord
from relaycast.redact import Redactor
from relaycast.routing.executor import Executor
from relaycast.routing.health import HealthBoard, configured_targets
from relaycast.routing.plan import Planner
from relaycast.routing.replicas import HostExchange, RedisExchange, SharedHealth
from relaycast.routing.settings import RoutingSettings
from relaycast.server.analytics import Analytics
from relaycast.server.auth import Authenticator
from relaycast.server.dashboard import Dashboard
from relaycast.server.latest import LatestAnswer
from relaycast.server.session_share import HostShare, StoreShare
from relaycast.server.shutdown import shutdown_step
from relaycast.server.state_process import STATE_OPS
from relaycast.store.reader import StoreReader
from relaycast.store.spend import spend_loader
from relaycast.telemetry.channel import HostClient
from relaycast.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from relaycast.monitors.engine import MonitorEngine
    from relaycast.server.host import Link
    from relaycast.server.telemetry_hub import TelemetryHub
    from relaycast.store.writer import StoreWriter
    from relaycast.telemetry.pipeline import Broadcaster

Sink = Callable[[RequestRecord], None]
STEP_S = 2.0  # at shutdown: stopping one background part (its own calls have shorter timeouts)
CLOSE_GRACE_S = 2.0  # at shutdown, past the flush deadline: to hand back what is left and close connections
MIN_STEP_S = 0.2  # at shutdown, once the grace is spent: each last step's time to close
LINK_WAIT_S = 15.0  # at start, a worker waits this long for its host's telemetry process before serving
VIEW_WAIT_S = 2.0  # a view waits this long for the telemetry process's answer before serving the last one
VIEW_MAX_AGE_S = 300.0  # ... which it serves only this long after it came
# what the admin views and /metrics read of it (`broadcast_saved`: the saved destinations' sync, for Settings)
VIEWS = ("metrics", "stats", "broadcast", "broadcast_saved", "store", "monitors")


class Services:
    """Everything a running gateway is made of. Build with `await Services.start(config)`; `await close()`."""

    def __init__(
        self,
        config: Config,
        sinks: Iterable[Sink] = (),
        clock: Callable[[], float] | None = None,
        link: Link | None = None,
    ) -> None:
        """The parts that need no I/O. `clock` (wall-clock seconds) replaces the system's for record timestamps,
        retention and monitors: tests inject one. `link`: this process is a worker of a host, whose telemetry
        process it hands records to."""
        self.config = config
        self.link = link
        self.clock: Callable[[], float] = clock or time.time
        self.wall_ns: Callable[[], int] = (lambda: int(self.clock() * 1e9)) if clock else time.time_ns
        self.started = time.time()
        self.redactor = Redactor(config.secrets())
        self.log = EventLog(self.redactor)
        self.keys = KeyRegistry(config.keys, self.log, required=config.keys_required)
        self.auth = Authenticator(config.admin_key_sha256, self.keys)
        self.board = HealthBoard(
            config.routing or RoutingSettings(),
            self.log,
            configured=configured_targets(config.models, config.providers),
        )
        pricer = build_pricer(config.providers, config.models, config.prices)
        if pricer.catalog.notice:
            self.log.warning("prices_file_not_used", detail=pricer.catalog.notice)
        self.planner = Planner(config.models, config.providers, self.board, pricer)
        self.coster = Coster(pricer)
        self.dashboard = Dashboard(config.admin_key_sha256, config.dashboard_secret)
        # Every header some provider forwards: a request's values for them are checked once, before any attempt.
        self.forwarded = forward_table(
            tuple(dict.fromkeys(n.lower() for p in config.providers.values() for n in p.forward_headers))
        )
        self.auth.session = self.dashboard.valid  # the dashboard's pages call the admin API with their session
        self.models_body = _models_body(config)
        self.anthropic_models_body = anthropic_models(self.models_body)
        self.analytics = Analytics(None, self.redactor)
        # The bytes of upstream answers this process may hold at once, shared by every provider.
        self.upstream_buffer = UpstreamBuffer(config.server.max_upstream_buffer_bytes)
        # The server's connection counts (open, refused by reason), when it runs with relaycast's guards.
        self.connections: Callable[[], Mapping[str, int]] | None = None
        self.executor: Executor | None = None
        self.reader: StoreReader | None = None
        self.hub: TelemetryHub | None = None  # the telemetry parts, when they run in this process
        self.host: HostClient | None = None  # the link to the host's telemetry process, when they run there
        self.state: HostClient | None = None  # the link to the host's state process, with several workers
        self.limiter: Limiter | None = None
        self.replicas: SharedHealth | None = None
        self.admission: Admission  # with the limiter, in _start
        self._extra_sinks = tuple(sinks)
        self.sinks: tuple[Sink, ...] = self._extra_sinks
        self._http: UpstreamClient | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._views: dict[str, LatestAnswer[Any]] = {v: LatestAnswer(VIEW_WAIT_S, VIEW_MAX_AGE_S) for v in VIEWS}

    @classmethod
    async def start(
        cls,
        config: Config,
        sinks: Iterable[Sink] = (),
        clock: Callable[[], float] | None = None,
        link: Link | None = None,
    ) -> Services:
        s = cls(config, sinks, clock, link)
        try:
            await s._start()
        except BaseException:
            await s.close()
            raise
        return s

    async def _start(self) -> None:
        config = self.config
        self._http = UpstreamClient()
        providers = build_providers(config.providers, self._http, self.upstream_buffer)
        self.executor = Executor(providers, self.board, self.log)
        if config.store is not None:
            self.reader = StoreReader(config.store)
            self.analytics = Analytics(self.reader, self.redactor)
        # The store's schema is migrated by the telemetry parts' writer: they start first.
        if self.link is None:
            # Only here: a worker (the telemetry parts in their own process) never loads them, nor their HTTP client.
            from relaycast.server.telemetry_hub import TelemetryHub

            self.hub = TelemetryHub(config, self.redactor, self.log, self.board, self.clock, self.reader)
            await self.hub.start()
            self.sinks = (*self.hub.sinks, *self._extra_sinks)
        else:
            self.host = HostClient(self.link.socket, self.link.worker, self.log, on_demotions=self._demoted)
            self.host.start()
            self.sinks = (self.host, *self._extra_sinks)
            links = [self.host]
            if self.link.state is not None:
                self.state = HostClient(self.link.state, self.link.worker, self.log, name="state")
                self.state.start()
                links.append(self.state)
            for link in links:  # each listens once the store is migrated
                try:
                    await asyncio.wait_for(link.connected.wait(), LINK_WAIT_S)
                except TimeoutError:
                    self.log.error(f"{link.name}_not_connected", waited_s=LINK_WAIT_S)
        if self.reader is not None:
            await self.keys.start(self.reader)
            await self.dashboard.start(StoreShare(self.reader), self.log)
        elif self.state is not None:
            await self.dashboard.start(HostShare(self.state), self.log)  # logouts through the state process
        if self.state is not None and not _redis_limits(config):
            self.limiter = RemoteLimiter(self.state)  # one limiter for the host, in its state process
        else:
            self.limiter = build_limiter(
                config.limits, self.log, spend_loader(lambda: self.reader, self.log), self.clock
            )
        self.admission = Admission(config.limits, self.limiter, self.coster.pricer, self.clock, self.later)
        # Routing health: shared through Redis across replicas (and workers); else by the workers of a host.
        if config.redis_url:
            self.replicas = SharedHealth(RedisExchange(config.redis_url), self.board, self.log)
        elif self.state is not None:
            self.replicas = SharedHealth(HostExchange(self.state), self.board, self.log)
        if self.replicas is not None:
            self.replicas.start()
        self.log.info(
            "gateway_started",
            providers=",".join(config.providers),
            aliases=len(config.models),
            keys=len(config.keys),
        )

    def _demoted(self, demotions: dict[tuple[str, str], str]) -> None:
        self.board.monitor_alerts = demotions

    # --- the telemetry parts, wherever they run -----------------------------------------------

    @property
    def metrics(self) -> Metrics | None:
        return self.hub.metrics if self.hub else None

    @property
    def store(self) -> StoreWriter | None:
        return self.hub.store if self.hub else None

    @property
    def broadcaster(self) -> Broadcaster | None:
        return self.hub.broadcaster if self.hub else None

    @property
    def monitors(self) -> MonitorEngine | None:
        return self.hub.monitors if self.hub else None

    async def telemetry(self, op: str, arg: object = None, after_records: bool = True) -> Any:
        """One query to the telemetry parts (`TelemetryHub.query`), here or in the telemetry process, or to the
        state process for STATE_OPS when the host has one. With `after_records` (an admin view of the telemetry
        parts) its answer sees the records this worker handed over before it (unless the telemetry process is far
        behind: `HostClient.query`); without (a stored response), it does not wait for them."""
        if self.hub is not None:
            return await self.hub.query(op, (0, arg) if op == "metrics" else arg)
        link = self.state if self.state is not None and op in STATE_OPS else self.host
        assert link is not None
        try:
            return await link.query(op, arg, after_records=after_records and link is self.host)
        except RemoteError as e:  # a failure inside that process: logged there and here, never detailed
            self.log.error(f"{link.name}_query_failed", op=op, error=self.redactor.scrub(str(e))[:200])
            raise errors.RelaycastError(f"Internal error in the {link.name} process.") from None

    async def view(self, op: str, arg: object = None) -> tuple[Any, float]:
        """One of the telemetry parts' VIEWS (`/metrics` with this process's gauges as `arg`, an admin view's
        counters) and its age in seconds (to the millisecond): 0.0 when they answered within VIEW_WAIT_S, else the
        last answer this process was given (`LatestAnswer`) while they are busy. Never to be changed: it may be
        served again."""
        if self.hub is not None:
            return await self.telemetry(op, arg), 0.0
        answer, age = await self._views[op].get(lambda: self.telemetry(op, arg))
        return answer, round(age, 3)

    async def close(self, flush_timeout_s: float = 10.0) -> None:
        """Stop within `flush_timeout_s` plus CLOSE_GRACE_S (give or take MIN_STEP_S per connection pool), whatever
        hangs: the background tasks first, then the broadcast, notification and store queues flushed at once until
        the deadline (broadcast spools what it could not send, the store counts what it could not write), then the
        connections. A part that overruns its share is logged and left behind; the last line logged,
        `gateway_stopped`, says what was delivered, spooled and dropped since the start."""
        began = time.monotonic()
        deadline = began + flush_timeout_s

        def left(cap: float = flush_timeout_s) -> float:
            return max(0.0, min(cap, deadline - time.monotonic()))

        def grace() -> float:  # past the deadline: what is left of the grace, and never nothing
            return max(MIN_STEP_S, deadline + CLOSE_GRACE_S - time.monotonic())

        # What reads and writes through the parts below: polls, shared health, limit settlements.
        await self._bounded("keys", self.keys.stop(), left(STEP_S))
        await self._bounded("dashboard", self.dashboard.stop(), left(STEP_S))
        if self.replicas is not None:
            await self._bounded("replicas", self.replicas.stop(), left(STEP_S))
            self.replicas = None
        if self._pending:
            await self._bounded("settlements", asyncio.gather(*self._pending, return_exceptions=True), left(STEP_S))
        if self.limiter is not None:
            await self._bounded("limiter", self.limiter.close(), left(STEP_S))
            self.limiter = None
        # The telemetry parts: their queues flushed within the deadline, or the last records handed over.
        if self.hub is not None:
            await self.hub.close(deadline, grace, self._bounded)
        if self.state is not None:  # after the limiter: its last settlements and reports go first
            await self._bounded("state_link", self.state.close(left(STEP_S)), grace())
        if self.host is not None:
            await self._bounded("telemetry_link", self.host.close(left()), grace())
        if self.reader is not None:
            await self._bounded("reader", self.reader.close(), grace())
            self.reader = None
        if self._http is not None:
            await self._bounded("http", self._http.close(), grace())
        self._http = None
        self._log_stopped(began)

    async def _bounded(self, step: str, work: Awaitable[object], timeout_s: float) -> None:
        await shutdown_step(self.log, self.redactor, step, work, timeout_s)

    def _log_stopped(self, began: float) -> None:
        fields: dict[str, object] = {"seconds": round(time.monotonic() - began, 3)}
        if self.hub is not None:
            fields.update(self.hub.stopped_fields())
        if self.host is not None:
            st = self.host.status()
            dropped = ",".join(f"{r}:{n}" for r, n in st["dropped"].items() if n)
            fields["telemetry"] = f"handed={st['handed']} acknowledged={st['acknowledged']} dropped={dropped or 0}"
        self.log.info("gateway_stopped", **fields)

    def emit(self, record: RequestRecord) -> None:
        """Hand a finished record to every sink. Never raises into the request."""
        for sink in self.sinks:
            try:
                sink(record)
            except Exception as e:  # noqa: BLE001
                self.log.error("sink_failed", sink=type(sink).__name__, error=type(e).__name__)

    def later(self, coro: Awaitable[None]) -> None:
        """Run `coro` after the response, keeping a reference until it ends (limit settlements)."""
        t = asyncio.ensure_future(coro)
        self._pending.add(t)
        t.add_done_callback(self._pending.discard)


def _redis_limits(config: Config) -> bool:
    return config.limits is not None and bool(config.limits.redis_url)


def anthropic_models(openai_body: bytes) -> bytes:
    """The model list in Anthropic's format (`GET /v1/models` from an Anthropic client: it sends
    `anthropic-version`)."""
    ids = [m["id"] for m in orjson.loads(openai_body)["data"]]
    data = [{"type": "model", "id": i, "display_name": i, "created_at": "1970-01-01T00:00:00Z"} for i in ids]
    return orjson.dumps(
        {"data": data, "has_more": False, "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}
    )


def _models_body(config: Config) -> bytes:
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "relaycast"} for name in config.models]
    for p in config.providers.values():
        data.extend({"id": f"{p.name}/{m}", "object": "model", "created": 0, "owned_by": p.name} for m in p.models)
    return orjson.dumps({"object": "list", "data": data})
