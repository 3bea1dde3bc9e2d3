"""Region OCR latency, stage by stage, against the engine as it was configured before, in the same run.

    python benchmarks/ocr_bench.py [--rounds 3] [--per-error 2] [--seed 1000]

The regions are `supportgraph eval-screen`'s: generated 1280x720 desktops before and after an error
shows, decided by the dedup service; each region send of at most a quarter of the frame is cropped with
the reader's 12 px margin. Two engines read every region in turn (interleaved, `--rounds` times, so load
from other jobs falls on both alike):

- `before`: the settings this replaced: onnxruntime threads min(4, cores) with spinning pool threads,
  recognition in calls of up to 8 lines padded to the widest (at least 320 px), every detected line
  read (the margin's too);
- `after`: the defaults (`OcrEngine()`): threads sized to the cores, no spinning, lines grouped by
  width (little padding, no 320 px floor), only lines centred in the changed box read.

Prints per-stage medians (detection preprocessing, inference, box post-processing, crops, recognition
preprocessing, inference, CTC decoding, normalization), p50/p95 of a region read, the after/before
ratios, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import numpy as np

from serve_app.screen.normalize import Vocabulary, normalize_line
from serve_app.screen.ocr import OcrEngine
from serve_app.screen.reader import crop_box
from serve_app.stats import percentile
from supportgraph_tools.screen.evaluate import cases, dedup_decision
from supportgraph_tools.screen.screens import ERRORS, error_screen

STAGES = ("det_pre", "det_infer", "det_post", "crops", "rec_pre", "rec_infer", "rec_decode", "normalize")


def regions(per_error: int, seed: int) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """(crop with margin, changed box in crop pixels) of each region send up to a quarter frame."""
    out = []
    for n, case in enumerate(cases(list(ERRORS), per_error, seed)):
        shot = error_screen(case.error, case.seed)
        _, box = asyncio.run(dedup_decision(shot, f"tenant_bench_case-{n}.screen"))
        if box is None or box[2] * box[3] > shot.after.shape[0] * shot.after.shape[1] / 4:
            continue
        x, y, w, h = crop_box(shot.after.shape, box, 12)
        out.append(
            (np.ascontiguousarray(shot.after[y : y + h, x : x + w]), (box[0] - x, box[1] - y, box[2], box[3]))
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-error", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()

    crops = regions(args.per_error, args.seed)
    engines = {
        "before": OcrEngine(
            device="cpu", threads=min(4, os.cpu_count() or 1), spinning=True, rec_min_width=320, rec_waste=1e9
        ),
        "after": OcrEngine(device="cpu"),
    }
    vocab = Vocabulary()
    for engine in engines.values():  # warm both (the first call of a session is slow)
        engine.read([crops[0][0]])
    total: dict[str, list[float]] = {name: [] for name in engines}
    stages: dict[str, dict[str, list[float]]] = {name: {s: [] for s in STAGES} for name in engines}
    texts: dict[str, list[str]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for crop, area in crops:
            for name, engine in engines.items():
                started = time.perf_counter()
                lines = engine.read([crop], None if name == "before" else [area])[0]
                t0 = time.perf_counter()
                read = [normalize_line(line.text, vocab) for line in lines]
                done = time.perf_counter()
                total[name].append((done - started) * 1000)
                for stage in STAGES[:-1]:
                    stages[name][stage].append(engine.stages.get(stage, 0.0))
                stages[name]["normalize"].append((done - t0) * 1000)
                texts[name].append(" | ".join(read))

    print(
        f"{len(crops)} regions x {args.rounds} rounds; threads before {engines['before'].threads}, "
        f"after {engines['after'].threads}; {os.cpu_count()} cores"
    )
    print(f"{'stage (median ms)':<20}{'before':>10}{'after':>10}")
    for stage in STAGES:
        b, a = (float(np.median(stages[n][stage])) for n in ("before", "after"))
        print(f"{stage:<20}{b:>10.1f}{a:>10.1f}")
    summary = {
        name: {"p50": round(percentile(v, 0.5), 1), "p95": round(percentile(v, 0.95), 1)}
        for name, v in total.items()
    }
    for name, row in summary.items():
        print(f"{'read ' + name:<20}p50 {row['p50']:>8.1f}  p95 {row['p95']:>8.1f}")
    ratio = {k: round(summary["after"][k] / summary["before"][k], 3) for k in ("p50", "p95")}
    print(f"after / before: p50 {ratio['p50']:.3f}  p95 {ratio['p95']:.3f}")
    changed = sum(b != a for b, a in zip(texts["before"], texts["after"], strict=True))
    print(f"regions whose text differs (after drops the margin's lines): {changed} of {len(texts['after'])}")
    print(json.dumps({"bench": "ocr", "regions": len(crops), **summary, "ratio": ratio}))


if __name__ == "__main__":
    main()
