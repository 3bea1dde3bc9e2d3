"""`supportgraph adapt`: a tenant's own reranker, a cross-encoder trained on its knowledge base.

The cross-encoder starts from the bundled MiniLM weights (a classification head on its pooled output)
and learns from the pairs that knowledge/pairs.py generates from the tenant's chunks (no labels): for
each question, its passage against its hard negatives, a softmax over the group (listwise). Plain
torch, so one loop owns the time budget, the checkpoints and the device.

Files, under `<state_dir>/models/<tenant>/`:
- `work/pairs.jsonl`: the generated pairs (kept: a resumed run trains on the same data);
- `work/checkpoint/`: the model, optimizer and step of an unfinished run (resumed by the next run);
- `reranker/`: the served model (a sentence-transformers CrossEncoder folder) and `adapted.json`,
  replaced whole (written beside, then renamed) each time a run stops, so a reader never sees half.

Time is bounded: `max_minutes` covers generation and training; a run that hits it publishes what it
has (marked `complete: false`) and the next run resumes from its checkpoint.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serve_app.db.database import Database
from serve_app.knowledge import pairs as kb_pairs
from serve_app.knowledge.embedders import Embedder
from serve_app.knowledge.embedders.local import quiet_transformers, resolve_model

BASE_MODEL = "all-MiniLM-L6-v2"
META = "adapted.json"
Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class AdaptConfig:
    """What a run generates and how it trains. A change to the first three regenerates the pairs."""

    questions: int = 1200  # pairs generated (one per sampled chunk)
    negatives: int = 3  # hard negatives per pair
    seed: int = 0
    max_length: int = 192  # tokens of question + passage (MiniLM's window is 256)
    batch_questions: int = 4  # questions per step; each brings 1 + negatives passages
    epochs: int = 1
    lr: float = 4e-5  # encoder; the new head learns 20x faster
    holdout: int = 80  # pairs kept out of training to measure the result
    checkpoint_every: int = 20  # steps


def models_dir(state_dir: Path) -> Path:
    return state_dir / "models"


def tenant_dir(state_dir: Path, tenant_id: str) -> Path:
    return models_dir(state_dir) / tenant_id


def pick_device(choice: str) -> str:
    """cpu, cuda, or auto (cuda when torch sees one)."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device (use cpu or auto)")
    if choice not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {choice!r} (cpu, cuda, auto)")
    return choice


async def training_pairs(
    db: Database,
    embedder: Embedder,
    tenant_id: str,
    cfg: AdaptConfig,
    work: Path,
    progress: Progress | None = None,
) -> list[kb_pairs.Pair]:
    """The run's pairs: those saved by an earlier run with the same generation settings, else new ones
    (questions from the tenant's chunks, hard negatives mined in batches)."""
    path, stamp = work / "pairs.jsonl", work / "pairs.json"
    wanted = {
        "questions": cfg.questions,
        "negatives": cfg.negatives,
        "seed": cfg.seed,
        "version": kb_pairs.PAIRS_VERSION,
    }
    if path.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return kb_pairs.load_pairs(path)
    async with db.tenant(tenant_id) as conn:
        chunks = await kb_pairs.load_chunks(conn)
    if not chunks:
        raise ValueError(f"tenant {tenant_id!r} has no knowledge base chunks: ingest documents first")
    questions = kb_pairs.make_questions(chunks, cfg.questions, cfg.seed)
    mined: list[kb_pairs.Pair] = []
    for start in range(0, len(questions), 64):
        async with db.tenant(tenant_id) as conn:
            batch = questions[start : start + 64]
            mined += await kb_pairs.mine_negatives(conn, embedder, batch, cfg.negatives)
        if progress:
            progress("mining negatives", min(start + 64, len(questions)), len(questions))
    if len(mined) < 8:
        raise ValueError(f"tenant {tenant_id!r}: only {len(mined)} usable pairs (too few documents?)")
    work.mkdir(parents=True, exist_ok=True)
    kb_pairs.save_pairs(path, mined)
    stamp.write_text(json.dumps(wanted))
    return mined


class Trainer:
    """The cross-encoder, its optimizer and schedule, on one device."""

    def __init__(self, cfg: AdaptConfig, device: str, start: Path | None = None):
        quiet_transformers()
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        source = str(start) if start else resolve_model(BASE_MODEL)
        self.cfg, self.device, self.torch = cfg, device, torch
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1).to(device)
        self.model.base_model.embeddings.word_embeddings.weight.requires_grad_(False)  # 12M rows: kept
        head = [p for n, p in self.model.named_parameters() if n.startswith("classifier")]
        body = [
            p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("classifier")
        ]
        self.optimizer = torch.optim.AdamW(
            [{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.lr * 20}], weight_decay=0.01
        )
        self.step = 0
        if start and (start / "optimizer.pt").exists():
            state = torch.load(start / "optimizer.pt", map_location=device)
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])

    def scores(self, questions: list[str], passages: list[str]) -> Any:
        batch = self.tokenizer(
            questions,
            passages,
            truncation="longest_first",  # as the CrossEncoder does at serving time
            max_length=self.cfg.max_length,
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        return self.model(**batch).logits.squeeze(-1)

    def train_step(self, group: list[kb_pairs.Pair], total_steps: int) -> float:
        """One optimizer step on a group of pairs: each question's passage against its negatives."""
        torch = self.torch
        self.model.train()
        width = 1 + self.cfg.negatives
        questions, passages = [], []
        for pair in group:
            negatives = (pair.negatives * width)[: self.cfg.negatives]  # pad a short list by repeating
            questions += [pair.query] * width
            passages += [pair.positive, *negatives]
        logits = self.scores(questions, passages).view(len(group), width)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(group), dtype=torch.long))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        for g, base in zip(self.optimizer.param_groups, (self.cfg.lr, self.cfg.lr * 20), strict=True):
            g["lr"] = base * schedule(self.step, total_steps)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.step += 1
        return float(loss.detach())

    def first_place(self, held_out: list[kb_pairs.Pair]) -> dict[str, float]:
        """Share of held-out questions whose own passage scores above all its negatives: overall
        (`all`) and per question kind (a model that learns one kind's artefact shows it here)."""
        self.model.eval()
        wins: dict[str, list[int]] = {}
        with self.torch.inference_mode():
            for pair in held_out:
                logits = self.scores(
                    [pair.query] * (1 + len(pair.negatives)), [pair.positive, *pair.negatives]
                )
                won = int(int(logits.argmax()) == 0)
                wins.setdefault("all", []).append(won)
                wins.setdefault(pair.kind, []).append(won)
        return {kind: round(sum(w) / len(w), 4) for kind, w in sorted(wins.items())} or {"all": 0.0}

    def save(self, folder: Path, with_optimizer: bool, report: dict[str, Any] | None = None) -> None:
        """The model (a checkpoint: with the optimizer and step; a published model: with its report)
        into `folder`, replaced whole."""
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        self.tokenizer.save_pretrained(tmp)
        if with_optimizer:
            self.torch.save(
                {"optimizer": self.optimizer.state_dict(), "step": self.step}, tmp / "optimizer.pt"
            )
        if report is not None:
            (tmp / META).write_text(json.dumps(report, indent=1))
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)


def schedule(step: int, total: int) -> float:
    """Linear warm-up over the first tenth, then linear decay to zero."""
    warm = max(1, total // 10)
    return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))


def split(pairs: list[kb_pairs.Pair], cfg: AdaptConfig) -> tuple[list[kb_pairs.Pair], list[kb_pairs.Pair]]:
    """(training pairs in a seeded order repeated `epochs` times, held-out pairs)."""
    shuffled = list(pairs)
    random.Random(cfg.seed).shuffle(shuffled)
    holdout = min(cfg.holdout, len(shuffled) // 5)
    train = shuffled[holdout:]
    return [p for _ in range(cfg.epochs) for p in train], shuffled[:holdout]


async def adapt_tenant(
    db: Database,
    embedder: Embedder,
    state_dir: Path,
    tenant_id: str,
    cfg: AdaptConfig = AdaptConfig(),
    max_minutes: float = 10.0,
    device: str = "cpu",
    progress: Progress | None = None,
    retrain: bool = False,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Generate (or reuse) the tenant's pairs, train (or resume) its cross-encoder until done or out of
    time, publish it under `reranker/` and return what the run did. A model already trained to the end
    with the same settings is kept (`retrain`: new pairs, new training). `max_steps`: at most this many
    steps in this run (then it stops as at the time limit)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    deadline = started + max_minutes * 60
    home = tenant_dir(state_dir, tenant_id)
    work, checkpoint = home / "work", home / "work" / "checkpoint"
    current = published(state_dir, tenant_id)
    if retrain:
        shutil.rmtree(work, ignore_errors=True)
    elif (
        current
        and current["complete"]
        and current["config"] == asdict(cfg)
        and current.get("pairs_version") == kb_pairs.PAIRS_VERSION  # older rules: trained again
    ):
        return current | {"skipped": "already trained with these settings (--retrain to start over)"}
    pairs = await training_pairs(db, embedder, tenant_id, cfg, work, progress)
    generated_s, generated_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    # a checkpoint resumes only the run it belongs to: the same settings on the same pairs (another
    # holdout would move trained pairs into the held-out set, other pairs would change the data)
    run = json.dumps({"config": asdict(cfg), "pairs": (work / "pairs.json").read_text()}, sort_keys=True)
    if checkpoint.exists() and _read(checkpoint / "run.json") != run:
        shutil.rmtree(checkpoint)
    train, held_out = split(pairs, cfg)
    total = math.ceil(len(train) / cfg.batch_questions)
    trainer = Trainer(cfg, pick_device(device), checkpoint if checkpoint.exists() else None)

    def save_checkpoint() -> None:
        trainer.save(checkpoint, with_optimizer=True)
        (checkpoint / "run.json").write_text(run)

    resumed_at, losses = trainer.step, []
    last = total if max_steps is None else min(total, resumed_at + max_steps)
    while trainer.step < last and time.perf_counter() < deadline:
        at = trainer.step * cfg.batch_questions
        losses.append(trainer.train_step(train[at : at + cfg.batch_questions], total))
        if progress:
            progress("training", trainer.step, total)
        if trainer.step % cfg.checkpoint_every == 0 and trainer.step < last:
            save_checkpoint()
    complete = trainer.step >= total
    if not complete:
        save_checkpoint()
    trained_s = time.perf_counter() - started - generated_s
    trained_cpu = time.process_time() - cpu_started - generated_cpu
    report = {
        "tenant": tenant_id,
        "pairs": len(pairs),
        "steps": trainer.step,
        "total_steps": total,
        "resumed_at": resumed_at,
        "complete": complete,
        "held_out_first_place": (first := trainer.first_place(held_out))["all"],
        "held_out_first_place_by_kind": {k: v for k, v in first.items() if k != "all"},
        "held_out": len(held_out),
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4) if losses else None,
        "device": trainer.device,
        "seconds": {"pairs": round(generated_s, 1), "training": round(trained_s, 1)},
        # CPU seconds of this process, all threads (the cost on a shared host; wall time depends on load)
        "cpu_seconds": {"pairs": round(generated_cpu, 1), "training": round(trained_cpu, 1)},
        "config": asdict(cfg),
        "pairs_version": kb_pairs.PAIRS_VERSION,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    trainer.save(home / "reranker", with_optimizer=False, report=report)
    if complete:
        shutil.rmtree(checkpoint, ignore_errors=True)  # the next run starts over (new data, new pairs)
    return report


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def published(state_dir: Path, tenant_id: str) -> dict[str, Any] | None:
    """The report of the tenant's served model, or None when it has none."""
    meta = tenant_dir(state_dir, tenant_id) / "reranker" / META
    return json.loads(meta.read_text()) if meta.exists() else None
