"""Share a screen over HTTP: offer frames of one stream to the dedup and see which it sends on.

A generated 640x360 desktop is sent five times a second: unchanged frames are skipped as duplicates, a
toast that appears is sent on (the region signal, with its box), a switch to another window is sent on
(pHash). The first frames go one per request as PNG (`/frames`); the rest in one request as raw RGB24
(`/frames/batch`, the fast path). Then the stream's counters, and the stream is closed.

    .venv/bin/supportgraph serve &
    .venv/bin/python examples/screen_share.py --api-key "$KEY"     # a key of tenant acme
"""

from __future__ import annotations

import argparse
import io
import os

import httpx
import numpy as np
from PIL import Image

WIDTH, HEIGHT = 640, 360


def desktop(toast: bool = False, other_window: bool = False) -> np.ndarray:
    """A uint8 [H, W, 3] screen: a window with lines of text, optionally a toast or another window."""
    frame = np.full((HEIGHT, WIDTH, 3), 235, np.uint8)
    frame[:24] = (40, 60, 90)  # title bar
    for row in range(48, 300, 20):  # lines of 'text'
        frame[row : row + 8, 32 : 32 + (row * 37) % 420 + 120] = 60
    if other_window:
        frame[30:340, 60:600] = (250, 250, 250)
        frame[30:60, 60:600] = (120, 30, 30)
        frame[100:108, 90:500] = 20
    if toast:  # a light toast with a red line: pHash barely moves, the region signal sees it
        frame[290:340, 340:600] = (200, 200, 205)
        frame[305:315, 355:560] = (230, 60, 60)
    return frame


def png(frame: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="PNG")
    return out.getvalue()


def share(base_url: str, stream_id: str, api_key: str | None = None) -> list[dict]:
    """Offer the generated frames; returns one decision per frame, in order."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    frames = [desktop()] * 3 + [desktop(toast=True)] * 2 + [desktop(other_window=True)] * 2
    ts = [i * 0.2 for i in range(len(frames))]  # seconds; 5 fps, the idle sampling rate
    decisions = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        for frame, t in zip(frames[:3], ts[:3], strict=True):
            reply = client.post(
                f"/v1/streams/{stream_id}/frames",
                params={"ts": t},
                content=png(frame),
                headers={"content-type": "image/png"},
            )
            decisions.append(reply.raise_for_status().json())
        batch = client.post(
            f"/v1/streams/{stream_id}/frames/batch",
            params={"ts": ts[3:], "width": WIDTH, "height": HEIGHT},
            content=np.stack(frames[3:]).tobytes(),
            headers={"content-type": "application/octet-stream"},
        )
        decisions += batch.raise_for_status().json()["decisions"]
        stats = client.get(f"/v1/streams/{stream_id}/stats").raise_for_status().json()
        client.delete(f"/v1/streams/{stream_id}").raise_for_status()
    for t, d in zip(ts, decisions, strict=True):
        print(f"t={t:.1f}s  {d['verdict']:<10} send={d['send']!s:<5} reason={d['reason']:<9} box={d['box']}")
    print("stream counters:", stats["stream"])
    return decisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--stream", default="tenant_acme_example-1.screen", help="tenant_<tenant>_<room>.<track>"
    )
    parser.add_argument("--api-key", default=os.environ.get("SUPPORTGRAPH_API_KEY"))
    args = parser.parse_args()
    share(args.base_url, args.stream, args.api_key)


if __name__ == "__main__":
    main()
