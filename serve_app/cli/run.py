"""Commands that run the graph or its parts: demo, serve, agent, manifest."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from serve_app.cli.common import _http_overrides
from serve_app.settings import load_settings


def _cmd_demo(args: argparse.Namespace) -> int:
    from supportgraph_tools.demo import run_demo

    if args.duration <= 0 or args.streams < 1:
        raise SystemExit("supportgraph demo: --duration must be > 0 and --streams >= 1")
    settings = load_settings(args.config, **_http_overrides(args))
    report = run_demo(settings, duration_s=args.duration, streams=args.streams)
    print(report.to_json())
    return 0 if report.ok else 1


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


def _cmd_agent(args: argparse.Namespace) -> int:
    from serve_app.agent.worker import run_worker

    run_worker(list(args.args))
    return 0


def _cmd_manifest(args: argparse.Namespace) -> int:
    from serve_app.manifest import render

    args.output.write_text(render(args.serve_config, args.rayservice, Path.cwd()))
    print(f"wrote {args.output}")
    return 0
