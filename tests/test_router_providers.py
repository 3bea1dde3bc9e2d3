"""Contract tests: the official SDKs (google-genai, anthropic, openai) against local servers speaking each
provider's wire format; failures map to typed ProviderErrors; the offline tiers answer for real."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
from typing import ClassVar

import pytest
from PIL import Image as PILImage

from serve_app.routing.confidence_line import ConfidenceLineFilter, strip_confidence
from serve_app.routing.providers import create_provider
from serve_app.routing.providers.base import Image, Message, Prompt, ProviderError
from serve_app.routing.providers.extractive import NOT_FOUND, ExtractiveResponder
from tests.wire import QuietHandler, read_json, reply_json, reply_sse, serving


def frame_png(color: tuple[int, int, int] = (20, 120, 200)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (32, 24), color).save(out, "PNG")
    return out.getvalue()


FRAME = Image(frame_png(), "image/png")
PROMPT = Prompt(
    (
        Message("user", "Why does sync fail?"),
        Message("assistant", "Which device?"),
        Message("user", "My phone"),
    ),
    context=("Sync fails when the app is older than 4.2. Update the app.",),
    images=(FRAME,),
    max_tokens=64,
)


class Scripted(QuietHandler):
    """Answers each request with the next scripted (status, payload, headers); records what it got."""

    script: ClassVar[list[tuple[int, dict, dict]]] = []
    seen: ClassVar[list[dict]] = []
    delay_s: ClassVar[float] = 0.0

    def record(self) -> dict:
        body = read_json(self)
        type(self).seen.append(
            {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
        )
        return body

    def do_POST(self) -> None:
        body = self.record()
        if not self.scripted():
            self.answer(body)

    def answer(self, body: dict) -> None:
        """The provider's own reply to `body` (no scripted failure is left)."""
        raise NotImplementedError

    def scripted(self) -> bool:
        """Reply with the next scripted failure if any; False when the handler should answer normally."""
        if self.delay_s:
            time.sleep(self.delay_s)
        if type(self).script:
            status, payload, headers = type(self).script.pop(0)
            reply_json(self, payload, status, headers)
            return True
        return False


class GeminiWire(Scripted):
    script, seen = [], []

    def answer(self, body: dict) -> None:
        usage = {"promptTokenCount": 321, "candidatesTokenCount": 12, "totalTokenCount": 333}
        if ":streamGenerateContent" in self.path:
            parts = ["Update the app ", "to 4.2 [1].\nConfidence: 0.9"]
            reply_sse(
                self,
                [
                    (
                        None,
                        {"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}]},
                    )
                    for p in parts
                ]
                + [
                    (
                        None,
                        {
                            "candidates": [
                                {
                                    "content": {"role": "model", "parts": [{"text": ""}]},
                                    "finishReason": "STOP",
                                }
                            ],
                            "usageMetadata": usage,
                        },
                    )
                ],
            )
            return
        text = f"Update the app to 4.2 [1]. ({len(body['contents'])} turns)\nConfidence: 0.9"
        reply_json(
            self,
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": text}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": usage,
                "modelVersion": "gemini-2.5-flash-lite",
            },
        )


THINK = "The user runs 4.1; the passage says 4.2 fixes it."


class AnthropicWire(Scripted):
    script, seen = [], []

    def answer(self, body: dict) -> None:
        text = "Update the app to 4.2 [1].\nConfidence: 0.95"
        if body.get("stream"):
            msg = {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 400, "output_tokens": 1},
            }
            thinking = {"type": "thinking", "thinking": "", "signature": ""}
            events = [  # Sonnet 5+ think adaptively by default: a thinking block comes first
                ("message_start", {"type": "message_start", "message": msg}),
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": thinking},
                ),
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "thinking_delta", "thinking": THINK},
                    },
                ),
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "signature_delta", "signature": "sig"},
                    },
                ),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 1,
                        "content_block": {"type": "text", "text": ""},
                    },
                ),
            ]
            events += [
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 1,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
                for piece in ("Update the app ", "to 4.2 [1].\n", "Confidence: 0.95")
            ]
            events += [
                ("content_block_stop", {"type": "content_block_stop", "index": 1}),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": 15},
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ]
            reply_sse(self, events)
            return
        reply_json(
            self,
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [
                    {"type": "thinking", "thinking": THINK, "signature": "sig"},
                    {"type": "text", "text": text},
                ],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 400, "output_tokens": 15},
            },
        )


class OpenAIWire(Scripted):
    script, seen = [], []

    def answer(self, body: dict) -> None:
        usage = {"prompt_tokens": 250, "completion_tokens": 9, "total_tokens": 259}
        if body.get("stream"):
            base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
            pieces = ["Update ", "the app [1].\n", "Confidence: 0.8"]
            events = [
                (None, {**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
                for p in pieces
            ]
            events.append((None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
            events.append((None, {**base, "choices": [], "usage": usage}))
            events.append((None, "[DONE]"))
            reply_sse(self, events)
            return
        reply_json(
            self,
            {
                "id": "c1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Update the app [1].\nConfidence: 0.8"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GEMINI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.setenv(var, f"key-{var}")
    for wire in (GeminiWire, AnthropicWire, OpenAIWire):
        wire.script, wire.seen, wire.delay_s = [], [], 0.0


def run(coro):
    return asyncio.run(coro)


async def collect(provider, prompt: Prompt, timeout_s: float = 10) -> tuple[str, object]:
    text, last = [], None
    async for piece in provider.stream(prompt, timeout_s):
        if isinstance(piece, str):
            text.append(piece)
        else:
            last = piece
    return "".join(text), last


async def both(provider, prompt: Prompt, timeout_s: float = 10):
    """complete() then stream() on one event loop (SDK clients keep their connections on it)."""
    return await provider.complete(prompt, timeout_s), await collect(provider, prompt, timeout_s)


def test_gemini_sdk_speaks_generate_content() -> None:
    with serving(GeminiWire) as url:
        gemini = create_provider("gemini", "gemini-2.5-flash-lite", base_url=url)
        done, (streamed, final) = run(both(gemini, PROMPT))
    sent = GeminiWire.seen[0]
    assert sent["path"].endswith("/models/gemini-2.5-flash-lite:generateContent")
    assert sent["headers"]["x-goog-api-key"] == "key-GEMINI_API_KEY"
    body = sent["body"]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    image = body["contents"][-1]["parts"][0]["inlineData"]
    assert (
        base64.b64decode(image["data"]) == FRAME.data
        and image.get("mimeType", image.get("mime_type")) == "image/png"
    )
    assert "Sync fails when the app is older than 4.2" in str(body["systemInstruction"])
    assert body["generationConfig"]["maxOutputTokens"] == 64
    assert (done.input_tokens, done.output_tokens, done.finish_reason) == (321, 12, "stop")
    assert done.answer == "Update the app to 4.2 [1]. (3 turns)"
    assert ":streamGenerateContent" in GeminiWire.seen[1]["path"]
    assert streamed.endswith("Confidence: 0.9") and final.input_tokens == 321


def test_anthropic_sdk_speaks_messages() -> None:
    with serving(AnthropicWire) as url:
        claude = create_provider("anthropic", "claude-sonnet-5-5", base_url=url)
        done, (streamed, final) = run(both(claude, PROMPT))
    sent = AnthropicWire.seen[0]
    auth = sent["headers"].get("x-api-key") or sent["headers"].get("authorization", "").removeprefix(
        "Bearer "
    )
    assert sent["path"] == "/v1/messages" and auth == "key-ANTHROPIC_API_KEY"
    assert "anthropic-version" in sent["headers"]
    body = sent["body"]
    assert body["model"] == "claude-sonnet-5-5" and body["max_tokens"] == 64
    assert not {"temperature", "top_p", "top_k"} & set(body)  # Sonnet 5+ refuse sampling parameters
    assert "older than 4.2" in body["system"]
    image = body["messages"][-1]["content"][0]
    assert image["type"] == "image" and base64.b64decode(image["source"]["data"]) == FRAME.data
    assert (done.input_tokens, done.output_tokens) == (400, 15)
    assert streamed == "Update the app to 4.2 [1].\nConfidence: 0.95"  # thinking is not the answer
    assert THINK not in done.answer and (final.input_tokens, final.output_tokens) == (400, 15)


def test_openai_sdk_speaks_chat_completions() -> None:
    with serving(OpenAIWire) as url:
        server = create_provider("openai-compatible", "qwen2.5-7b", base_url=f"{url}/v1")
        done, (streamed, final) = run(both(server, PROMPT))
    body = OpenAIWire.seen[0]["body"]
    assert OpenAIWire.seen[0]["path"] == "/v1/chat/completions"
    assert body["messages"][0]["role"] == "system" and "older than 4.2" in body["messages"][0]["content"]
    parts = body["messages"][-1]["content"]
    assert parts[0]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(FRAME.data).decode()
    assert (done.input_tokens, done.output_tokens) == (250, 9)
    assert OpenAIWire.seen[1]["body"]["stream_options"] == {"include_usage": True}
    assert streamed == "Update the app [1].\nConfidence: 0.8" and final.input_tokens == 250


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [(429, "rate_limit", True), (500, "server", True), (503, "server", True), (400, "client", False)],
)
@pytest.mark.parametrize(
    ("wire", "backend"),
    [(GeminiWire, "gemini"), (AnthropicWire, "anthropic"), (OpenAIWire, "openai-compatible")],
)
def test_provider_failures_are_typed(wire, backend: str, status: int, kind: str, retryable: bool) -> None:
    error = {"error": {"code": status, "message": "scripted", "status": "X", "type": "error"}}
    wire.script = [(status, error, {"retry-after": "2"})]
    with serving(wire) as url:
        provider = create_provider(backend, "m", base_url=f"{url}/v1" if backend != "gemini" else url)
        with pytest.raises(ProviderError) as caught:
            run(provider.complete(PROMPT, 10))
    assert (caught.value.kind, caught.value.status, caught.value.retryable) == (kind, status, retryable)
    if status == 429:
        assert caught.value.retry_after_s == 2.0


@pytest.mark.parametrize("backend", ["gemini", "anthropic", "openai-compatible"])
def test_slow_provider_times_out(backend: str) -> None:
    wire = {"gemini": GeminiWire, "anthropic": AnthropicWire, "openai-compatible": OpenAIWire}[backend]
    wire.delay_s = 1.5
    with serving(wire) as url:
        provider = create_provider(backend, "m", base_url=f"{url}/v1" if backend != "gemini" else url)
        started = time.perf_counter()
        with pytest.raises(ProviderError) as caught:
            run(provider.complete(PROMPT, 0.3))
    assert caught.value.kind == "timeout" and caught.value.retryable
    assert time.perf_counter() - started < 1.4


def test_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(ValueError, match=r"\$ANTHROPIC_API_KEY"):
        create_provider("anthropic", "claude-sonnet-4-5")
    with pytest.raises(ValueError, match="unknown LLM backend"):
        create_provider("mystery", "m")


def test_extractive_tier_quotes_the_unit_that_answers_with_its_citation() -> None:
    passages = (
        "Billing\n## Refunds\nAnnual plans can be refunded in full within 14 days of purchase. Monthly plans"
        " are not refunded.\n## Invoices\nInvoices are emailed to the billing contact every month.",
        "Account\n## Reset a forgotten password\n1. Choose **Forgot password** on the sign-in page.\n"
        "2. Open the emailed link\nand choose a new password.",
    )
    responder = ExtractiveResponder()
    refund = run(
        responder.complete(
            Prompt((Message("user", "Can I get a refund on an annual plan?"),), context=passages), 1
        )
    )
    assert refund.answer == "Annual plans can be refunded in full within 14 days of purchase. [1]"
    assert refund.offline and re.search(r"\nConfidence: (0|1)\.\d\d$", refund.text)
    reset = run(
        responder.complete(Prompt((Message("user", "how do I reset my password"),), context=passages), 1)
    )
    # a "how do I" question gets the steps, wrapped lines joined
    assert reset.answer == (
        "1. Choose Forgot password on the sign-in page. "
        "2. Open the emailed link and choose a new password. [2]"
    )
    sure = responder.answer(
        Prompt((Message("user", "Can I get a refund on an annual plan?"),), context=passages)
    )
    unsure = responder.answer(Prompt((Message("user", "refund via paypal wallet"),), context=passages))
    assert 0 <= unsure[1] < sure[1] <= 1
    nothing = run(responder.complete(Prompt((Message("user", "hello there"),)), 1))
    assert nothing.answer == NOT_FOUND and nothing.text.endswith("Confidence: 0.00")


def test_bundled_smollm2_tier_generates_offline() -> None:
    smol = create_provider("gguf", "smollm2-135m")
    # loaded without weight repacking (llama.cpp's AMX path segfaults on Intel Xeons with AMX)
    assert smol.repacks_weights is False and smol._llm.model_params.use_extra_bufts is False
    prompt = Prompt((Message("user", "Say hello."),), max_tokens=8, temperature=0)
    done = run(smol.complete(prompt, 60))
    streamed, final = run(collect(smol, prompt, 60))
    assert done.offline and done.model == "smollm2-135m" and done.text.strip()
    assert 0 < done.output_tokens <= 8 and done.input_tokens > 10
    assert streamed == done.text and final.offline  # temperature 0: the same words either way


def test_confidence_line_is_removed_from_answers_and_streams() -> None:
    assert strip_confidence("Do X [1].\nConfidence: 0.7") == "Do X [1]."
    assert strip_confidence("**Confidence:** 85%\n") == ""
    assert strip_confidence("My confidence: high\nok") == "My confidence: high\nok"
    lines = ConfidenceLineFilter()
    out = "".join(lines.feed(p) for p in ["Do ", "X.\nThen Y", ".\nConf", "idence: 0.8"]) + lines.finish()
    assert out == "Do X.\nThen Y.\n"


def test_weight_repacking_is_off_unless_the_tier_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp.llama_cpp as lib

    from serve_app.routing.providers import local_gguf, tier_provider
    from serve_app.settings import TierSettings

    assert lib.llama_model_default_params().use_extra_bufts is True  # llama.cpp's own default
    for wanted in (False, True):
        with local_gguf._model_params(use_extra_bufts=wanted):
            assert lib.llama_model_default_params().use_extra_bufts is wanted
    assert lib.llama_model_default_params().use_extra_bufts is True  # restored after the load
    made: list[tuple[bool, int | None]] = []

    class Recorded(local_gguf.LocalGGUFProvider):
        def __init__(
            self,
            model: str,
            path: str | None = None,
            threads: int | None = None,
            repack_weights: bool = False,
        ) -> None:
            made.append((repack_weights, threads))

    monkeypatch.setattr(local_gguf, "LocalGGUFProvider", Recorded)
    for settings in ({}, {"repack_weights": True}):
        tier_provider(TierSettings(name="smol", backend="gguf", model="smollm2-135m", **settings))
    # threads: what the caller (the replica: the tier's setting, else its CPUs) gives, else the tier's
    tier_provider(TierSettings(name="smol", backend="gguf", model="smollm2-135m", threads=3))
    tier_provider(TierSettings(name="smol", backend="gguf", model="smollm2-135m"), threads=1)
    assert made == [(False, None), (True, None), (False, 3), (False, 1)]


def test_llama_cpp_runs_generation_and_prompt_processing_on_the_given_threads() -> None:
    """llama-cpp-python would give prompt processing (n_threads_batch) every core of the machine."""
    from serve_app.routing.providers.local_gguf import LocalGGUFProvider

    provider = LocalGGUFProvider(threads=1)
    params = provider._llm.context_params
    assert (provider.threads, params.n_threads, params.n_threads_batch) == (1, 1, 1)
