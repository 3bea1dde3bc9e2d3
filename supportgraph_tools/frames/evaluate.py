"""`supportgraph eval-dedup`: the real dedup over generated clips with labelled events, against pHash alone.

Each clip (`synthetic.EventClip`: seed, resolution) is offered frame by frame to two `DedupService`s
with the same settings, one of them with the region signal off. Throttling depends only on time and
speech, so both sample the same frames; those are rendered (through JPEG, as a receiver decodes them)
once, and each service decides them in batches of `BATCH` through its batched kernel call, as a
replica does (no Ray).

Scores, per run:
- skip rate: offered frames not sent on (throttled or duplicate);
- event recall: share of significant events with a sent frame at most `WINDOW_S` (0.5 s) after them,
  overall and per kind;
- spurious sends: sent frames, other than a clip's first, with no significant event in the `WINDOW_S`
  before them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve_app.frames.sampler import Decision
from serve_app.frames.service import DedupService, Pending
from serve_app.settings import DedupSettings
from supportgraph_tools.frames.synthetic import SIGNIFICANT, ClipEvent, EventClip, EventClipSpec, jpeg_rgb

WINDOW_S = 0.5
BATCH = 32
STREAM = "tenant_eval_clip.screen"
TUNE_SEEDS = "0-11"  # where the region thresholds were chosen
REPORT_SEEDS = "200-205"  # what the README reports (never tuned on)


@dataclass
class RunScore:
    """One dedup configuration's results over some clips."""

    frames: int = 0
    sends: int = 0
    spurious: int = 0
    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SIGNIFICANT, 0))
    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SIGNIFICANT, 0))
    reasons: dict[str, int] = field(default_factory=dict)

    def add_clip(self, n_frames: int, sent: Sequence[Decision], events: Iterable[ClipEvent]) -> None:
        times = np.array([d.ts for d in sent])
        significant = [e for e in events if e.significant]
        starts = np.array([e.ts for e in significant])
        self.frames += n_frames
        self.sends += len(sent)
        for d in sent:
            self.reasons[d.reason.value] = self.reasons.get(d.reason.value, 0) + 1
        for e in significant:
            self.events[e.kind] += 1
            self.hits[e.kind] += bool(np.any((times >= e.ts) & (times <= e.ts + WINDOW_S)))
        for i, t in enumerate(times):
            if i > 0 and not np.any((starts <= t) & (starts >= t - WINDOW_S)):
                self.spurious += 1

    @property
    def skip_rate(self) -> float:
        return 1.0 - self.sends / self.frames if self.frames else 0.0

    @property
    def event_recall(self) -> float:
        total = sum(self.events.values())
        return sum(self.hits.values()) / total if total else 0.0

    def recall_by_kind(self) -> dict[str, float]:
        """Per kind that happened at least once."""
        return {k: self.hits[k] / n for k, n in self.events.items() if n}

    def summary(self) -> dict[str, Any]:
        return {
            "skip_rate": round(self.skip_rate, 4),
            "event_recall": round(self.event_recall, 4),
            "recall_by_kind": {k: round(v, 4) for k, v in self.recall_by_kind().items()},
            "spurious_sends": self.spurious,
        }


@dataclass
class Evaluation:
    combined: RunScore = field(default_factory=RunScore)
    phash_only: RunScore = field(default_factory=RunScore)
    clips: int = 0

    busy: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "eval": "dedup",
            **self.combined.summary(),
            "phash_only": self.phash_only.summary(),
            "busy": self.busy,
            "clips": self.clips,
        }


def _services(settings: DedupSettings) -> tuple[DedupService, DedupService]:
    combined = DedupService(settings.model_copy(update={"region_enabled": True}))
    alone = DedupService(settings.model_copy(update={"region_enabled": False}))
    return combined, alone


async def _decide(services: Sequence[DedupService], admitted: list[tuple[float, np.ndarray]]) -> list:
    out = []
    for service in services:
        sampler = service.streams.sampler(STREAM)
        out.append(await service.decide_batch([Pending(sampler, ts, frame) for ts, frame in admitted]))
    return out


def run_clip(clip: EventClip, settings: DedupSettings, pool: ThreadPoolExecutor) -> tuple[list, list]:
    """Sent decisions of the combined and the pHash-only dedup over one clip."""
    services = _services(settings)
    samplers = [s.streams.sampler(STREAM) for s in services]
    sampled = []
    for index, (ts, speaking) in enumerate(clip.times()):
        kept = [sampler.admit(ts, speaking) is None for sampler in samplers]
        if kept[0] != kept[1]:
            raise AssertionError("throttling differs between two samplers with the same policy")
        if kept[0]:
            sampled.append((index, ts))
    sent: tuple[list, list] = ([], [])
    for start in range(0, len(sampled), BATCH):
        chunk = sampled[start : start + BATCH]
        frames = pool.map(lambda item: jpeg_rgb(clip.image(item[1]), clip.quality), chunk)
        admitted = [(ts, frame) for (_, ts), frame in zip(chunk, frames, strict=True)]
        for out, decisions in zip(sent, asyncio.run(_decide(services, admitted)), strict=True):
            out.extend(d for d in decisions if d.send)
    return sent


def evaluate(
    seeds: Sequence[int],
    resolutions: Sequence[tuple[int, int]],
    settings: DedupSettings | None = None,
    duration_s: float = 30.0,
    threads: int = 2,
    busy: bool = False,
) -> Evaluation:
    """Both dedups over every (seed, resolution) clip (`busy`: busy desktops, `busy.py`)."""
    settings = settings or DedupSettings()
    result = Evaluation(busy=busy)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render") as pool:
        for seed, (width, height) in itertools.product(seeds, resolutions):
            spec = EventClipSpec(seed=seed, width=width, height=height, duration_s=duration_s, busy=busy)
            clip = EventClip(spec)
            combined, alone = run_clip(clip, settings, pool)
            result.combined.add_clip(clip.n_frames, combined, clip.events)
            result.phash_only.add_clip(clip.n_frames, alone, clip.events)
            result.clips += 1
    return result


def parse_seeds(text: str) -> list[int]:
    """`100-105`, `1,2,7` or a mix: `0-3,9`."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"seeds look like 100-105 or 1,2,7; got {text!r}")
        seeds += range(int(lo), int(hi or lo) + 1)
    return seeds


def parse_resolution(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit()) or not (
        64 <= int(width) <= 3840 and 64 <= int(height) <= 2160
    ):
        raise ValueError(f"a resolution looks like 1280x720 (64x64 to 3840x2160), got {text!r}")
    return int(width), int(height)


def table(result: Evaluation, seeds: str, resolutions: Sequence[str]) -> Any:
    """The scores side by side, as a rich table."""
    from rich.table import Table

    c, p = result.combined, result.phash_only
    events = sum(c.events.values())
    out = Table(
        title=f"eval-dedup: seeds {seeds}, {' + '.join(resolutions)}: {result.clips} clips, "
        f"{c.frames} frames, {events} significant events"
    )
    for col in ("", "pHash + region", "pHash alone"):
        out.add_column(col, justify="left" if not col else "right")
    out.add_row("skip rate", f"{c.skip_rate:.2%}", f"{p.skip_rate:.2%}")
    out.add_row("frames sent", str(c.sends), str(p.sends))
    out.add_row("event recall (0.5 s)", f"{c.event_recall:.3f}", f"{p.event_recall:.3f}")
    for kind, n in c.events.items():
        if n:
            out.add_row(f"  {kind} ({n})", f"{c.hits[kind]}/{n}", f"{p.hits[kind]}/{n}")
    out.add_row("spurious sends", str(c.spurious), str(p.spurious))
    out.add_row("sent by reason", _reasons(c), _reasons(p))
    return out


def _reasons(score: RunScore) -> str:
    return ", ".join(f"{r} {score.reasons[r]}" for r in ("first", "phash", "region") if r in score.reasons)
