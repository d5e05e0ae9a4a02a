"""The `relaycast` command: parses its arguments and runs one subcommand (`relaycast COMMAND --help` lists each
one's options).

    serve                                   the gateway, from a YAML config
    demo                                    fake providers, the gateway and a realistic load, with a summary
    fake-upstream                           the fake provider server (OpenAI and Anthropic wire formats)
    broadcast test | status                 test destinations' connections; their counters on a running gateway
    routes status                           routing health of a running gateway
    monitors status | export                monitor state on a running gateway; rules as Datadog or Prometheus
    keys create | list | revoke | rotate    virtual gateway keys, through a running gateway's admin API
    report                                  spend, tokens, latency or errors, from the store or a running gateway
    prices show | update                    what a model costs and where from; fetch current prices
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import sys
from collections.abc import Sequence
from pathlib import Path

from relaycast import config as config_mod
from relaycast.cli.admin import add_url_argument

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="relaycast",
        description="relaycast: an OpenAI-compatible LLM gateway that makes every LLM call measurable, traceable "
        "and debuggable.",
        epilog="Start with `relaycast demo`: it runs fake providers, the gateway and a realistic load on this machine.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "serve", help="run the gateway from a YAML config", description="Run the gateway from a YAML config."
    )
    p.add_argument("--config", "-c", required=True, help="path to relaycast.yaml")
    p.add_argument("--host", help="listen address (default: server.host in the config, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: server.port in the config, else 8080)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback address with no gateway keys")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--workers",
        default="1",
        help="serving processes sharing the port: a number, or `auto` for one per core (default 1); a telemetry "
        "process beside them keeps the store, broadcast, metrics and monitors",
    )
    p.add_argument(
        "--single-process",
        action="store_true",
        help="serve and keep the telemetry in one process (no supervisor, no telemetry process)",
    )

    d = sub.add_parser(
        "demo",
        help="run fake providers, the gateway and a realistic load, then print a summary",
        description="Start fake upstream providers on loopback, the gateway in front of them, and send a realistic "
        "mix of requests through it with the official openai SDK. Without --requests it keeps serving until Ctrl-C.",
    )
    d.add_argument("--requests", "-n", type=int, help="send N requests, print the summary and exit")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")
    d.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default 8)")
    d.add_argument("--port", type=int, default=8080, help="gateway port (default 8080; a free one if taken)")
    d.add_argument(
        "--upstream-port", type=int, default=8081, help="fake upstream port (default 8081; a free one if taken)"
    )
    d.add_argument("--write-config", metavar="FILE", help="also write the config the demo runs to FILE")
    d.add_argument("--seed", type=int, default=1, help="seed of the request mix")

    f = sub.add_parser(
        "fake-upstream",
        help="run the fake provider server (OpenAI and Anthropic wire formats)",
        description="Run the fake provider server. Behaviour per request comes from the model name "
        "(`gpt-4o-mini@ttft_ms=200,tokens=40`) or the `x-fake-behaviour` header; see relaycast/fake/behaviour.py.",
    )
    f.add_argument("--host", default="127.0.0.1")
    f.add_argument("--port", type=int, default=8081)
    f.add_argument("--api-key", help="require this key (Bearer or x-api-key)")
    f.add_argument("--behaviour", default="", help="default behaviour, e.g. 'latency_ms=50,tokens=20'")
    f.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error", "critical"])

    b = sub.add_parser(
        "broadcast",
        help="test or inspect broadcast destinations (Datadog, OTLP, webhook, file)",
        description="Test Connection for broadcast destinations, and their status on a running gateway.",
    )
    bsub = b.add_subparsers(dest="broadcast_command", metavar="ACTION", required=True)
    bt = bsub.add_parser(
        "test",
        help="check a destination's connection and send it one test span",
        description="For Datadog: check the API key against the site and send one test span (or check the agent). "
        "For OTLP and webhooks: send a test payload. For files: check the directory is writable. Exit 0 only if "
        "every destination tested is OK.",
    )
    bt.add_argument("name", nargs="?", help="the destination to test (default: all)")
    bt.add_argument(
        "--config", "-c", default=None, help="path to relaycast.yaml (default: the DD_* and OTEL_* variables alone)"
    )
    bs = bsub.add_parser("status", help="per-destination counters of a running gateway (admin key)")
    add_url_argument(bs)
    bs.add_argument("--admin-key", default=None, help="admin key (default: $RELAYCAST_ADMIN_KEY)")
    bs.add_argument("--json", action="store_true", help="print JSON")
    bl = bsub.add_parser("list", help="every destination of a running gateway: where it comes from, its state")
    ba = bsub.add_parser(
        "add",
        help="save a destination in a running gateway's store (tested first), as Settings > Broadcast does",
        description="Save (or replace) a destination in the gateway's store: it runs on every replica within "
        "seconds, without a restart. Test Connection runs first; a destination that fails it is not saved unless "
        "--save-anyway. Secrets are sealed at rest and never shown again. Example: relaycast broadcast add datadog "
        "--kind datadog --set-env api_key=DD_API_KEY --set ml_app=checkout --set site=us5.datadoghq.com",
    )
    ba.add_argument("name", help="the destination's name")
    ba.add_argument(
        "--kind", required=True, help="datadog, otlp, webhook, file, langfuse, s3, ... (see docs/broadcast.md)"
    )
    ba.add_argument("--set", action="append", metavar="NAME=VALUE", help="a setting (repeat)")
    ba.add_argument("--set-env", action="append", metavar="NAME=VARIABLE", help="a setting from the environment")
    ba.add_argument("--save-anyway", action="store_true", help="save even if Test Connection fails")
    br = bsub.add_parser("remove", help="delete a destination saved in the gateway's store")
    br.add_argument("name")
    be = bsub.add_parser("enable", help="turn the destinations saved in the store on")
    bd = bsub.add_parser("disable", help="turn the destinations saved in the store off (the config's stay on)")
    for p_ in (bl, ba, br, be, bd):
        add_url_argument(p_)
        p_.add_argument("--admin-key", default=None, help="admin key (default: $RELAYCAST_ADMIN_KEY)")
    bl.add_argument("--json", action="store_true", help="print JSON")

    rt = sub.add_parser(
        "routes", help="routing health of a running gateway", description="Routing health of a running gateway."
    )
    rsub = rt.add_subparsers(dest="routes_command", metavar="ACTION", required=True)
    rs = rsub.add_parser(
        "status", help="per-target state, latency percentiles, error rates and transitions (admin key)"
    )
    add_url_argument(rs)
    rs.add_argument("--admin-key", default=None, help="admin key (default: $RELAYCAST_ADMIN_KEY)")
    rs.add_argument("--json", action="store_true", help="print JSON")

    mo = sub.add_parser(
        "monitors",
        help="monitor rules: status of a running gateway, or export as Datadog / Prometheus",
        description="Monitor rules: their state on a running gateway, or the configured rules exported as "
        "Datadog monitors or Prometheus alerting rules.",
    )
    msub = mo.add_subparsers(dest="monitors_command", required=True)
    ms = msub.add_parser("status", help="rules, alerts and recent incidents of a running gateway (admin key)")
    add_url_argument(ms)
    ms.add_argument("--admin-key", default=None, help="admin key (default: $RELAYCAST_ADMIN_KEY)")
    ms.add_argument("--json", action="store_true", help="print JSON")
    me = msub.add_parser(
        "export", help="the configured rules as Datadog monitor definitions or Prometheus alerting rules"
    )
    me.add_argument("--config", "-c", required=True, help="path to relaycast.yaml")
    me.add_argument("--format", required=True, choices=("datadog", "prometheus"))
    me.add_argument("--ml-app", help="Datadog ml_app to scope monitors to (default: the config's Datadog destination)")
    me.add_argument("--output", "-o", help="write to this file (default: standard output)")
    ke = sub.add_parser(
        "keys",
        help="virtual gateway keys of a running gateway: create, list, revoke, rotate (admin key)",
        description="Issue and manage virtual gateway keys through a running gateway's admin API. "
        "A key's secret is printed once, at creation or rotation; relaycast keeps only its hash.",
    )
    ksub = ke.add_subparsers(dest="keys_command", required=True)
    for name, help_ in (
        ("create", "issue a key (prints its secret once)"),
        ("list", "list keys (never secrets)"),
        ("revoke", "revoke a key: 401 on every replica within a second"),
        ("delete", "delete a key: 401 on every replica within a second"),
        ("rotate", "a new secret for a key; the old one stops working"),
    ):
        kp = ksub.add_parser(name, help=help_)
        if name != "list":
            kp.add_argument("name", help="the key's name")
        add_url_argument(kp)
        kp.add_argument("--admin-key", default=None, help="admin key (default: $RELAYCAST_ADMIN_KEY)")
        kp.add_argument("--json", action="store_true", help="print JSON")
        if name == "create":
            kp.add_argument("--owner")
            kp.add_argument("--models", help="comma-separated models or routes it may use; patterns allowed (openai/*)")
            kp.add_argument("--user", help="default user for its requests")
            kp.add_argument("--feature", help="default feature for its requests")
            kp.add_argument(
                "--pin", action="store_true", help="its --user and --feature replace what its requests name"
            )
            kp.add_argument("--tag", action="append", help="default tag k=v (repeatable)")
            kp.add_argument("--rpm", type=int, help="requests per minute")
            kp.add_argument("--tpm", type=int, help="tokens per minute")
            kp.add_argument("--budget-day", type=float, help="USD per UTC day")
            kp.add_argument("--budget-month", type=float, help="USD per UTC month")
            kp.add_argument("--expires-in-days", type=float)
    rep = sub.add_parser(
        "report",
        help="spend, tokens, latency or errors from the store",
        description="Spend and tokens by model, provider, user, feature or key; or latency percentiles; "
        "or error rates; from the store (--config) or a running gateway (--url).",
    )
    from relaycast.cli.report import add_arguments

    add_arguments(rep)
    from relaycast.cli import prices as prices_cli

    prices_cli.add_arguments(sub.add_parser("prices", help="what a model costs and where from; fetch current prices"))
    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except KeyboardInterrupt:  # Ctrl-C: the conventional status of a command stopped by SIGINT, no traceback
        return 130


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "prices":
        from relaycast.cli import prices as prices_cli

        return prices_cli.run(args)
    if args.command == "keys":
        from relaycast.cli.admin import keys_command

        return keys_command(args)
    if args.command == "monitors":
        if args.monitors_command == "status":
            from relaycast.cli.admin import monitors_status

            return monitors_status(args)
        return _monitors_export(args)
    if args.command == "report":
        from relaycast.cli.report import run

        return run(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "demo":
        from relaycast.cli.demo import run_demo

        return run_demo(args)
    if args.command == "fake-upstream":
        return _fake(args)
    if args.command == "broadcast":
        if args.broadcast_command == "test":
            from relaycast.cli.broadcast import broadcast_test

            return broadcast_test(args)
        if args.broadcast_command in ("list", "add", "remove", "enable", "disable"):
            from relaycast.cli import broadcast as bc

            actions = {"list": bc.broadcast_list, "add": bc.broadcast_add, "remove": bc.broadcast_remove}
            return actions.get(args.broadcast_command, bc.broadcast_toggle)(args)
        from relaycast.cli.admin import broadcast_status

        return broadcast_status(args)
    if args.command == "routes":
        from relaycast.cli.admin import routes_status

        return routes_status(args)
    parser.print_help()
    return 0


def _monitors_export(args: argparse.Namespace) -> int:
    import orjson

    from relaycast.monitors.export import datadog_monitors, prometheus_rules

    cfg = config_mod.load_or_say(args.config)
    if cfg is None:
        return 2
    if cfg.monitors is None or not cfg.monitors.rules:
        print("relaycast: the config has no monitor rules (monitors: rules:)", file=sys.stderr)
        return 2
    routes = {name: r.targets for name, r in cfg.models.items()}
    if args.format == "datadog":
        from relaycast.telemetry.settings import DatadogOptions

        dests = cfg.broadcast.destinations if cfg.broadcast else ()
        dd = next((d.options for d in dests if isinstance(d.options, DatadogOptions)), None)
        from relaycast.providers.presets import PRESETS, vendor

        # A provider whose models name their vendor (OpenRouter) serves several: it has no one vendor to scope by.
        vendors = {
            p.name: vendor(p.kind, p.name, "")
            for p in cfg.providers.values()
            if not (p.kind in PRESETS and PRESETS[p.kind].vendor_in_model_name)
        }
        monitors, notes = datadog_monitors(cfg.monitors.rules, routes, dd, args.ml_app, vendors)
        text = orjson.dumps(monitors, option=orjson.OPT_INDENT_2).decode() + "\n"
    else:
        text, notes = prometheus_rules(cfg.monitors.rules, routes, cfg.metrics.user_label)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _serve(args: argparse.Namespace) -> int:

    from relaycast.log import configure
    from relaycast.server.app import Gateway
    from relaycast.server.guards import ConnectionGuard
    from relaycast.server.runner import DrainingServer, tune_gc, uvicorn_config

    cfg = config_mod.load_or_say(args.config)
    if cfg is None:
        return 2
    host = args.host or cfg.server.host
    port = args.port if args.port is not None else cfg.server.port
    if not is_loopback(host) and not cfg.keys and not (args.insecure or cfg.server.insecure):
        print(
            f"relaycast: refusing to listen on {host} with no gateway keys configured: anyone who can reach it could "
            "spend your provider credits. Add `keys:` to the config, listen on 127.0.0.1, or pass --insecure.",
            file=sys.stderr,
        )
        return 2
    # The gateway checks Host against the address it really listens on.
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, host=host, port=port))
    if not args.single_process:
        from relaycast.server.host import serve, worker_count

        try:
            workers = worker_count(args.workers)
        except ValueError:
            print(f"relaycast: --workers must be a positive number or `auto`, not {args.workers!r}", file=sys.stderr)
            return 2
        return serve(cfg, args.config, workers, args.log_level)
    if args.workers not in ("1", "auto"):
        print("relaycast: --single-process serves with one process: drop --workers", file=sys.stderr)
        return 2
    configure(args.log_level)
    tune_gc()
    guard = ConnectionGuard(cfg.server)
    app = Gateway(cfg, connections=guard.counts)
    server = DrainingServer(uvicorn_config(app, host, port, log_level="warning", guard=guard))
    print(f"relaycast: serving on http://{host}:{port}/v1 (config {args.config})", file=sys.stderr, flush=True)
    server.run()
    return 0 if server.started else 1


def _fake(args: argparse.Namespace) -> int:
    import uvicorn

    from relaycast.fake.behaviour import BadBehaviour, parse
    from relaycast.fake.server import FakeUpstream
    from relaycast.server.runner import uvicorn_config

    try:
        defaults = parse(args.behaviour)
    except BadBehaviour as e:
        print(f"relaycast fake-upstream: {e}", file=sys.stderr)
        return 2
    app = FakeUpstream(defaults=defaults, api_key=args.api_key)
    print(f"relaycast fake-upstream: serving on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn_config(app, args.host, args.port, log_level=args.log_level)).run()
    return 0


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
