"""`supportgraph`: the command line. Each subcommand is a thin wrapper over a library function."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from serve_app.settings import load_settings

DESCRIPTION = """\
supportgraph: multi-modal customer-support agents as a Ray Serve model-serving graph.

Settings come from defaults, then --config FILE (or $SUPPORTGRAPH_CONFIG), then SUPPORTGRAPH_*
environment variables (nested with __, e.g. SUPPORTGRAPH_DEDUP__HAMMING_THRESHOLD=8)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supportgraph", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="start local Ray + the graph, replay generated screen-share sessions, print a report",
        description="Starts a local Ray and the graph on embedded defaults (no keys, no servers), "
        "replays generated screen-share clips over HTTP and prints dedup rate, images sent and cost. "
        "The last line is JSON.",
    )
    demo.add_argument("--duration", type=float, default=30.0, metavar="S", help="seconds per clip (30)")
    demo.add_argument("--streams", type=int, default=2, metavar="N", help="parallel streams (2)")
    demo.add_argument("--port", type=int, help="HTTP port (default: settings, 8000)")

    serve = sub.add_parser(
        "serve",
        help="start local Ray + the graph and serve HTTP until interrupted",
        description="Runs the graph on a local Ray until Ctrl-C or SIGTERM. For YAML-driven runs use "
        "`serve run configs/local.yaml`; for clusters `serve deploy`.",
    )
    serve.add_argument("--host", help="bind address (default: settings, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default: settings, 8000)")
    return parser


def _http_overrides(args: argparse.Namespace) -> dict[str, object]:
    http = {k: v for k, v in (("host", getattr(args, "host", None)), ("port", args.port)) if v is not None}
    return {"http": http} if http else {}


def _cmd_demo(args: argparse.Namespace) -> int:
    from serve_app.demo import run_demo

    if args.duration <= 0 or args.streams < 1:
        raise SystemExit("supportgraph demo: --duration must be > 0 and --streams >= 1")
    settings = load_settings(args.config, **_http_overrides(args))
    report = run_demo(settings, duration_s=args.duration, streams=args.streams)
    print(report.to_json())
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from serve_app.runtime import local_graph

    settings = load_settings(args.config, **_http_overrides(args))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with local_graph(settings) as graph:
        print(f"serving {graph.app_name} at {graph.base_url} (docs at {graph.base_url}/docs); Ctrl-C stops")
        stop.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"demo": _cmd_demo, "serve": _cmd_serve}
    try:
        return commands[args.command](args)
    except (FileNotFoundError, ValueError) as exc:  # settings errors: say what is wrong, no traceback
        print(f"supportgraph {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
