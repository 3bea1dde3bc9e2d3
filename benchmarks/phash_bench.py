"""pHash throughput: this project's kernels vs the imagehash loop, measured in the same process; and what
the region signal adds to it.

    python benchmarks/phash_bench.py [--seconds 2] [--json FILE] [--only-region]

Baseline: `imagehash.phash(Image.fromarray(frame))` one frame at a time on one thread (what a plain
implementation does). Rows: native C kernel (1 and 2 threads, and every CPU when there are more) and the
torch path: on CPU, and on CUDA when a GPU is visible ("torch cuda" hashes frames already on the GPU;
"cuda from host" takes numpy frames and copies them over, as the FrameDedup deployment does, with as
many torch CPU threads as the threads column says), at 640x480 and 1280x720, batches of 1, 32 and 128.
Prints frames/s and the ratio to the baseline at the same resolution; every result is also checked
against imagehash for exactness.

Region rows, each against its pHash-alone twin measured right before it ("x pHash": time per frame
relative to it, 1.00 = no cost): "native C +region" is the same kernel call also returning the region
thumbnail (`signals_batch(cell=...)`); "decision" rows decide 128 consecutive sampled frames (5 fps) of
a generated screen share (`EventClip`) in one stream, kernel plus `FrameSampler.decide`, with the region
signal on ("+region") and off.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # keep BLAS pools from competing with the kernels

import imagehash
import numpy as np
import torch
from PIL import Image

from serve_app.frames.phash import default_threads, native_available, phash_batch, signals_batch
from serve_app.frames.region import RegionPolicy, Thumb
from serve_app.frames.sampler import FrameSampler, SamplingPolicy
from serve_app.tenancy import parse_stream_id
from supportgraph_tools.frames.synthetic import EventClip, EventClipSpec

RESOLUTIONS = [(480, 640), (720, 1280)]
BATCHES = [1, 32, 128]


def frames_for(h: int, w: int, n: int = 128) -> np.ndarray:
    """Screen-like frames: text-ish noise blocks on flat backgrounds (content does not change speed)."""
    rng = np.random.default_rng(h * w)
    frames = np.full((n, h, w, 3), 235, np.uint8)
    for i in range(n):
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        frames[i, y : y + h // 3, x : x + w // 3] = rng.integers(0, 256, (h // 3, w // 3, 3), dtype=np.uint8)
    return frames


def rate(fn: Callable[[], int], seconds: float) -> float:
    fn()  # warm-up (plans, thread pool, CUDA context)
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += fn()
    return done / elapsed


def paired(first: Callable[[], int], second: Callable[[], int], seconds: float) -> tuple[float, float]:
    """Rates of two functions measured in alternating slices (a busy shared CPU drifts alike for both)."""
    done, spent = [0, 0], [0.0, 0.0]
    first(), second()
    for _ in range(4):
        for i, fn in enumerate((first, second)):
            start = time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds / 4:
                done[i] += fn()
            spent[i] += elapsed
    return done[0] / spent[0], done[1] / spent[1]


def clip_frames(h: int, w: int, n: int = 128) -> np.ndarray:
    """`n` consecutive 5-fps frames of a generated screen share, as the dedup samples them."""
    clip = EventClip(EventClipSpec(seed=7, width=w, height=h, duration_s=n / 5 + 1))
    return np.stack([clip.rgb(i / 5) for i in range(n)])


def decide_all(frames: np.ndarray, region: bool, threads: int) -> int:
    """One stream's decisions over `frames`: the batched kernel call, then the sampler's dedup gate."""
    policy = SamplingPolicy(region=RegionPolicy(enabled=region))
    sampler = FrameSampler(parse_stream_id("tenant_bench_s.screen"), policy)
    cell = policy.region.cell if region else None
    signals = signals_batch(frames, cell=cell, backend="native", threads=threads)
    h, w = frames.shape[1:3]
    for i, phash in enumerate(signals.hashes):
        thumb = None if signals.cells is None else Thumb(signals.cells[i], h, w, policy.region.tile)
        sampler.decide(i / 5, int(phash), thumb)
    return len(frames)


def region_rows(h: int, w: int, frames: np.ndarray, seconds: float) -> list[dict]:
    """pHash alone, then pHash + region thumbnail, back to back at each batch and thread count; and the
    decisions over a screen share with and without the region signal."""
    rows = []
    cell = RegionPolicy().cell
    for threads in sorted({1, 2, default_threads()}):
        for batch in (32, 128):
            data = frames[:batch]
            alone, both = paired(
                lambda d=data, t=threads: len(phash_batch(d, backend="native", threads=t)),
                lambda d=data, t=threads: len(signals_batch(d, cell=cell, threads=t).hashes),
                seconds,
            )
            rows.append(_row(h, w, "native C", batch, threads, alone))
            rows.append(_row(h, w, "native C +region", batch, threads, both, alone / both))
    share = clip_frames(h, w)
    for threads in sorted({1, 2}):
        alone, both = paired(
            lambda t=threads: decide_all(share, False, t),
            lambda t=threads: decide_all(share, True, t),
            seconds,
        )
        rows.append(_row(h, w, "decision", len(share), threads, alone))
        rows.append(_row(h, w, "decision +region", len(share), threads, both, alone / both))
    return rows


def _row(h: int, w: int, impl: str, batch: int, threads: int, fps: float, speed: float | None = None) -> dict:
    row = {"res": f"{w}x{h}", "impl": impl, "batch": batch, "threads": threads, "fps": fps}
    if speed is not None:
        row["x_phash"] = speed  # time per frame relative to the pHash-alone twin
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--only-region", action="store_true", help="only the region rows (and baseline)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cuda = torch.cuda.is_available()
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"cuda={'yes: ' + torch.cuda.get_device_name() if cuda else 'no'}, native={native_available()}"
    )
    rows = []
    for h, w in RESOLUTIONS:
        frames = frames_for(h, w)
        base = rate(
            lambda f8=frames[:8]: len([imagehash.phash(Image.fromarray(f)) for f in f8]), args.seconds
        )
        rows.append({"res": f"{w}x{h}", "impl": "imagehash loop", "batch": 1, "threads": 1, "fps": base})
        if not args.only_region:
            rows += phash_rows(h, w, frames, args.seconds, cuda)
        if native_available():
            rows += region_rows(h, w, frames, args.seconds)
        for row in rows:
            if row["res"] == f"{w}x{h}":
                row["vs_imagehash"] = row["fps"] / base
    header = ("resolution", "implementation", "batch", "threads", "frames/s", "x imagehash", "x pHash")
    line = "{:>10} {:>16} {:>5} {:>7} {:>10} {:>11} {:>7}"
    print(line.format(*header))
    for r in rows:
        ratio = f"{r['x_phash']:.2f}" if "x_phash" in r else ""
        cells = (r["res"], r["impl"], r["batch"], r["threads"], f"{r['fps']:.0f}", f"{r['vs_imagehash']:.1f}")
        print(line.format(*cells, ratio))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    print(json.dumps({"bench": "phash", "rows": rows}))


def phash_rows(h: int, w: int, frames: np.ndarray, seconds: float, cuda: bool) -> list[dict]:
    """Every pHash implementation at every batch size, each checked against imagehash first."""
    expected = np.array([int(str(imagehash.phash(Image.fromarray(f))), 16) for f in frames[:32]], np.uint64)
    rows = []
    variants: list[tuple[str, int, dict]] = []
    counts = sorted({1, 2, default_threads()})
    if native_available():
        variants += [("native C", t, {"backend": "native", "threads": t}) for t in counts]
    variants.append(("torch cpu", 2, {"backend": "torch", "device": "cpu"}))
    if cuda:
        variants.append(("torch cuda", 0, {"backend": "torch", "device": "cuda"}))
        # torch's CPU threads stage host frames in pinned memory (more than one) or copy directly
        variants += [("cuda from host", t, {"backend": "torch", "device": "cuda"}) for t in counts]
    for name, threads, options in variants:
        if threads and name != "native C":
            torch.set_num_threads(threads)
        gpu_frames = torch.from_numpy(frames).cuda() if name == "torch cuda" else None
        for batch in BATCHES:
            if name == "torch cpu" and batch > 32:
                continue  # float64 matmuls on CPU: the fallback path, not a contender
            data = gpu_frames[:batch] if gpu_frames is not None else frames[:batch]
            got = phash_batch(data[:32], **options)
            assert np.array_equal(got, expected[: len(got)]), f"{name} is not exact"
            fps = rate(lambda d=data, o=options: len(phash_batch(d, **o)), seconds)
            rows.append({"res": f"{w}x{h}", "impl": name, "batch": batch, "threads": threads, "fps": fps})
    torch.set_num_threads(2)
    return rows


if __name__ == "__main__":
    main()
