"""Local HTTP servers that speak a provider's wire format, for contract tests of the official SDKs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (timeout tests) is expected, not a failure of the server


@contextmanager
def running(server: BaseServer) -> Iterator[int]:
    """Serves on a thread for the duration of the block; yields the port."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A local HTTP server on a free port for the duration of the block; yields its base URL."""
    with running(_Server(("127.0.0.1", 0), handler)) as port:
        yield f"http://127.0.0.1:{port}"


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


class KnowledgeWire(BaseHTTPRequestHandler):
    """Speaks the two billed knowledge APIs: OpenAI's POST /v1/embeddings (384-d hashed bags of words,
    `usage.prompt_tokens` = words) and Cohere's POST /v2/rerank (word overlap, one search unit billed).
    Class counters say what was billed, to check the ledger against."""

    tokens_billed: int = 0
    searches_billed: int = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = read_json(self)
        if self.path.endswith("/embeddings"):
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            tokens = sum(len(t.split()) for t in texts)
            with KnowledgeWire.lock:
                KnowledgeWire.tokens_billed += tokens
            data = [{"object": "embedding", "index": i, "embedding": bag(t)} for i, t in enumerate(texts)]
            usage = {"prompt_tokens": tokens, "total_tokens": tokens}
            reply_json(self, {"object": "list", "model": body["model"], "data": data, "usage": usage})
        elif self.path.endswith("/rerank"):
            with KnowledgeWire.lock:
                KnowledgeWire.searches_billed += 1
            words = set(body["query"].lower().split())
            scores = [len(words & set(d.lower().split())) / (1 + len(words)) for d in body["documents"]]
            order = sorted(range(len(scores)), key=lambda i: -scores[i])[: body.get("top_n") or len(scores)]
            results = [{"index": i, "relevance_score": scores[i]} for i in order]
            reply_json(
                self, {"id": "local", "results": results, "meta": {"billed_units": {"search_units": 1}}}
            )
        else:
            reply_json(self, {"message": f"no route {self.path}"}, 404)

    def log_message(self, *_: object) -> None:
        pass


def bag(text: str, dim: int = 384) -> list[float]:
    """A deterministic bag-of-words vector (crc32 buckets), the same in every process."""
    import zlib

    out = [0.0] * dim
    for word in text.lower().split():
        out[zlib.crc32(word.encode()) % dim] += 1.0
    out[0] += 1e-3  # never all zero
    return out
