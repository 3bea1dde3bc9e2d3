"""pHash throughput: this project's kernels vs the imagehash loop, measured in the same process.

    python benchmarks/phash_bench.py [--seconds 2] [--json FILE]

Baseline: `imagehash.phash(Image.fromarray(frame))` one frame at a time on one thread (what a plain
implementation does). Rows: native C kernel (1 and 2 threads, and every CPU when there are more) and the
torch path: on CPU, and on CUDA when a GPU is visible ("torch cuda" hashes frames already on the GPU;
"cuda from host" takes numpy frames and copies them over, as the FrameDedup deployment does, with as
many torch CPU threads as the threads column says), at 640x480 and 1280x720, batches of 1, 32 and 128.
Prints frames/s and the ratio to the baseline at the same resolution; every result is also checked
against imagehash for exactness.
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

from serve_app.frames.phash import default_threads, native_available, phash_batch

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--json", help="also write the rows to this file")
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
        expected = np.array(
            [int(str(imagehash.phash(Image.fromarray(f))), 16) for f in frames[:32]], np.uint64
        )
        base = rate(
            lambda f8=frames[:8]: len([imagehash.phash(Image.fromarray(f)) for f in f8]), args.seconds
        )
        rows.append({"res": f"{w}x{h}", "impl": "imagehash loop", "batch": 1, "threads": 1, "fps": base})
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
                fps = rate(lambda d=data, o=options: len(phash_batch(d, **o)), args.seconds)
                rows.append({"res": f"{w}x{h}", "impl": name, "batch": batch, "threads": threads, "fps": fps})
        for row in rows:
            if row["res"] == f"{w}x{h}":
                row["vs_imagehash"] = row["fps"] / base
    header = ("resolution", "implementation", "batch", "threads", "frames/s", "x imagehash")
    print("{:>10} {:>15} {:>5} {:>7} {:>10} {:>11}".format(*header))
    for r in rows:
        cells = (r["res"], r["impl"], r["batch"], r["threads"], f"{r['fps']:.0f}", f"{r['vs_imagehash']:.1f}")
        print("{:>10} {:>15} {:>5} {:>7} {:>10} {:>11}".format(*cells))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    print(json.dumps({"bench": "phash", "rows": rows}))


if __name__ == "__main__":
    main()
