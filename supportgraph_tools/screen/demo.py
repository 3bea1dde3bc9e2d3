"""The demo's screen-reading part: a short clip in which an error toast appears, sent over HTTP like any
screen share; once the ScreenReader has read what the dedup sent on, the vague question "what does this
error mean?" names the stream and gets the help-center article on that error, cited, offline."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from supportgraph_tools.screen.screens import ERRORS, error_screen

QUESTION = "what does this error mean?"


@dataclass
class ScreenDemo:
    stream_id: str
    sent: list[dict[str, Any]] = field(default_factory=list)  # the decisions that sent a frame on
    frames: int = 0
    read: list[str] = field(default_factory=list)  # what appeared on screen, as read
    read_s: float = 0.0
    answer: str = ""
    tier: str = ""
    answer_ms: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "screen_frames": self.frames,
            "screen_sent": [d["reason"] for d in self.sent],
            "screen_read": self.read,
            "screen_answer_tier": self.tier,
            "screen_answer_cites": "[1]" in self.answer,
        }

    def render(self, console: Console) -> None:
        console.rule("[bold]Screen reading: an error toast, then a vague question")
        table = Table()
        for col in ("step", "what"):
            table.add_column(col)
        sends = ", ".join(f"{d['reason']} {d['box'] or 'whole frame'}" for d in self.sent)
        table.add_row("clip", f"{self.frames} frames over HTTP; sent on: {sends}")
        table.add_row("read", f"{' / '.join(self.read) or '(nothing)'} ({self.read_s:.1f} s after the toast)")
        table.add_row("question", QUESTION)
        table.add_row("answer", f"{self.answer}\n[{self.tier}, {self.answer_ms:.0f} ms]")
        console.print(table)


async def screen_demo(
    base_url: str, app_name: str, tenant: str, headers: dict[str, str], fps: float = 5.0, seconds: float = 2.0
) -> ScreenDemo:
    from ray import serve

    shot = error_screen(ERRORS[0], seed=42, surface="toast")
    result = ScreenDemo(f"tenant_{tenant}_screen-demo.screen")
    reader = serve.get_deployment_handle("ScreenReader", app_name=app_name)
    before, after = jpeg_rgb_bytes(shot.before), jpeg_rgb_bytes(shot.after)
    async with httpx.AsyncClient(base_url=base_url, timeout=120.0, headers=headers) as client:
        n = int(fps * seconds)
        for i in range(n):
            ts = i / fps
            body = before if i < n // 2 else after
            if i == n // 2:
                toast_at = time.perf_counter()
            reply = await client.post(
                f"/v1/streams/{result.stream_id}/frames",
                params={"ts": ts},
                content=body,
                headers={"content-type": "image/jpeg"},
            )
            decision = reply.raise_for_status().json()
            result.frames += 1
            if decision["send"]:
                result.sent.append(decision)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen = await reader.peek.remote(stream_id=result.stream_id)
            if seen["appeared"] and not seen["pending"] and any("rror" in x for x in seen["appeared"]):
                break
            await asyncio.sleep(0.5)
        result.read = [x for x in seen["appeared"] if x in ("Sync failed",) or "0x" in x] or seen["appeared"]
        result.read_s = time.perf_counter() - toast_at
        started = time.perf_counter()
        body = {
            "model": "auto",
            "messages": [{"role": "user", "content": QUESTION}],
            "stream_id": result.stream_id,
            "max_tokens": 128,
        }
        reply = (await client.post("/v1/chat/completions", json=body)).raise_for_status().json()
        result.answer_ms = (time.perf_counter() - started) * 1e3
        result.answer = reply["choices"][0]["message"]["content"]
        result.tier = reply["supportgraph"]["tier"]
    return result


def jpeg_rgb_bytes(rgb: Any, quality: int = 80) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
    return out.getvalue()
