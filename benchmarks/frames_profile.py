"""Where a frame's time goes on the handle path: CPU milliseconds per frame of each stage, one thread.

    python benchmarks/frames_profile.py [--size 1280x720] [--streams 16] [--batch 16] [--rounds 6] [--no-ray]
        [--busy]

One round is what a FrameDedup replica gets from `streams` callers sending `batch` frames each (720p,
16 x 16 = 256 frames of a generated screen share, every frame sampled, none throttled), and each stage
is timed over `rounds` rounds in this process, as CPU time (`time.process_time`, so other jobs on the
cores move the figures less than wall time would):

- `serialize_rgb` / `serialize_planes`: `ray.put` then `ray.get` of one call's frames (`[B, H, W, 3]`
  RGB, or the planes: luma + 2x2 colour sums), what the caller's and the replica's Ray workers do to move
  them through the object store (skipped with `--no-ray`);
- `admit`: the stream state's throttle gate and checks (`DedupService.admit`);
- `kernel_rgb` / `kernel_planes`: pHash and region thumbnail in one pass (`signals_batch`, from RGB or
  from planes), one thread;
- `to_planes`: what a client spends making planes of its RGB frames, one thread;
- `decide_numpy` / `decide_native`: every decision (pHash distance, region detector, state update) with
  the region detector's numpy definition or its C port;
- `to_dict`: the decision as the reply carries it;
- `decide_native_no_growth`: `decide_native` with the text-growth test off (`region_growth_max_h=0`):
  the difference is what the test costs a frame; `growth_test_call`: one call of the test on a changed
  box 976 x 42 (what it costs each time the detector found a region); `growth_test_lines`: one call on
  three grey text lines added to a blank terminal area (448 x 82), which runs every step of the test.

`--busy` profiles a busy desktop (chat sidebar, growing log, pasted phrases: `frames/busy.py`).

Serve's own per-call work (the router, the `@serve.batch` queue, the reply) is what
`benchmarks/frames_bench.py` shows beyond these (its `service` reference is admit + kernel + decisions
with every thread). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from serve_app.frames import sampler as sampler_module
from serve_app.frames.growth import GrowthShape, text_growth
from serve_app.frames.phash import signals_batch
from serve_app.frames.planes import planes_signals, to_planes
from serve_app.frames.region import RegionDetector, Thumb
from serve_app.frames.service import DedupService, Pending
from serve_app.settings import DedupSettings
from supportgraph_tools.frames.synthetic import EventClip, EventClipSpec


def growth_lines_ms(shape: tuple[int, ...]) -> float:
    """One growth-test call that runs every step: three text lines (ink rows 12 px, gaps 8 px, cells of
    varied ink) added to a blank terminal area, in a 448 x 82 box of a thumbnail of `shape`."""
    rng = np.random.default_rng(0)
    reference = np.zeros(shape, np.uint8)
    reference[0] = 30
    means = reference.copy()
    for line in range(3):
        top = 280 + line * 10  # strips (2 px): the box starts at y = 546
        means[0, top + 2 : top + 8, :26] = rng.integers(45, 95, (6, 26))
    box = (0, 546, 448, 82)
    assert text_growth(means, reference, box, 16, GrowthShape())
    return cpu_ms(lambda: text_growth(means, reference, box, 16, GrowthShape()), 1, 2000)


def cpu_ms(fn: Callable[[], object], frames: int, rounds: int) -> float:
    fn()  # warm
    start = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - start) * 1e3 / (frames * rounds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--no-ray", action="store_true", help="skip the object-store round trips")
    parser.add_argument("--busy", action="store_true", help="a busy desktop (frames/busy.py)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    n = args.streams * args.batch
    spec = EventClipSpec(seed=17, width=width, height=height, duration_s=n / 5 + 1, busy=args.busy)
    clip = EventClip(spec)
    distinct = np.stack([clip.rgb(i / 5) for i in range(min(n, 48))])
    frames = np.concatenate([distinct] * -(-n // len(distinct)))[:n]
    planes = to_planes(frames)
    one_call = frames[: args.batch]
    call_planes = to_planes(one_call)
    cell = (16, 2)
    out: dict[str, float] = {}

    if not args.no_ray:
        import ray

        ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
        for _ in range(2):  # the second time, with the object store warm, counts
            out["serialize_rgb"] = cpu_ms(lambda: ray.get(ray.put(one_call)), args.batch, args.rounds * 4)
            out["serialize_planes"] = cpu_ms(
                lambda: ray.get(ray.put((call_planes.luma, call_planes.color))), args.batch, args.rounds * 4
            )
        ray.shutdown()

    rounds = iter(range(10**6))
    service = DedupService(DedupSettings(hash_threads=1))

    def admitted() -> list[Pending]:
        r = next(rounds)
        return [
            service.admit(f"tenant_prof_s-{i // args.batch}.screen", f, True, (r * n + i) / 30)
            for i, f in enumerate(frames)
        ]  # each stream's frames are consecutive frames of the clip, as a caller sends them

    out["admit"] = cpu_ms(admitted, n, args.rounds)
    out["kernel_rgb"] = cpu_ms(lambda: signals_batch(frames, cell=cell, threads=1), n, args.rounds)
    out["kernel_planes"] = cpu_ms(lambda: planes_signals(planes, cell=cell, threads=1), n, args.rounds)
    out["to_planes"] = cpu_ms(lambda: to_planes(frames, 1), n, args.rounds)
    signals = signals_batch(frames, cell=cell, threads=1)
    thumbs = [Thumb(c, height, width, 16) for c in signals.cells]
    growth_h = GrowthShape().max_height
    runs = (
        ("decide_numpy", False, growth_h),
        ("decide_native", True, growth_h),
        ("decide_native_no_growth", True, 0),
    )
    for name, native, growth in runs:
        detector_of = sampler_module.RegionDetector
        sampler_module.RegionDetector = lambda policy, native=native: RegionDetector(policy, native=native)
        try:
            service = DedupService(DedupSettings(hash_threads=1, region_growth_max_h=growth))

            def decide(service: DedupService = service) -> list:
                r = next(rounds)
                pending = [
                    service.admit(
                        f"tenant_prof_d-{i // args.batch}.screen", frames[i], True, (r * n + i) / 30
                    )
                    for i in range(n)
                ]
                return [
                    p.sampler.decide(p.ts, int(h), th, count=False)
                    for p, h, th in zip(pending, signals.hashes, thumbs, strict=True)
                ]

            out[name] = cpu_ms(decide, n, args.rounds) - out["admit"]  # admit + decide, less admit
            decisions = decide()
        finally:
            sampler_module.RegionDetector = detector_of
    out["to_dict"] = cpu_ms(lambda: [d.to_dict() for d in decisions], n, args.rounds)
    reference = np.rint(thumbs[0].strip_means()).astype(np.uint8)
    means = np.rint(thumbs[1].strip_means()).astype(np.uint8)
    box = (16, height - 120, min(976, width - 32), 42)
    out["growth_test_call"] = cpu_ms(lambda: text_growth(means, reference, box, 16, GrowthShape()), 1, 2000)
    out["growth_test_lines"] = growth_lines_ms(reference.shape)
    reasons: dict[str, int] = {}
    for d in decisions:
        reasons[d.reason.value] = reasons.get(d.reason.value, 0) + 1

    print(
        f"# {width}x{height}, {args.streams} streams x {args.batch} frames a call; CPU ms per frame, 1 thread"
    )
    print(f"# reasons in the last round: {reasons}")
    for name, ms in out.items():
        print(f"{name:>17} {ms:8.3f}")
    result = {
        "bench": "frames_profile",
        "size": f"{width}x{height}",
        "streams": args.streams,
        "batch": args.batch,
        "busy": args.busy,
        "cpu_ms_per_frame": {k: round(v, 4) for k, v in out.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
