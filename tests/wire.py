"""Local HTTP servers that speak a provider's wire format, for contract tests of the official SDKs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (timeout tests) is expected, not a failure of the server


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A local HTTP server on a free port for the duration of the block; yields its base URL."""
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def read_json(handler: BaseHTTPRequestHandler) -> dict:
    return json.loads(handler.rfile.read(int(handler.headers.get("content-length") or 0)) or b"{}")


def reply_json(
    handler: BaseHTTPRequestHandler, payload: dict, status: int = 200, headers: dict | None = None
) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


def reply_sse(handler: BaseHTTPRequestHandler, events: list[tuple[str | None, dict | str]]) -> None:
    """Server-sent events: (event name or None, data) pairs; the connection closes after the last."""
    handler.send_response(200)
    handler.send_header("content-type", "text/event-stream")
    handler.send_header("connection", "close")
    handler.end_headers()
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        handler.wfile.write((f"event: {name}\n" if name else "").encode() + f"data: {text}\n\n".encode())
        handler.wfile.flush()
    handler.close_connection = True


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: object) -> None:
        pass
