"""Frame dedup on CUDA: the torch path is bit-exact with imagehash there too, and the service uses it.

Skipped where no GPU is visible (CI); run on a GPU machine with
`python -m pytest --noconftest tests/test_phash_cuda.py` (needs no Ray or Postgres).
"""

from __future__ import annotations

import asyncio

import imagehash
import numpy as np
import pytest
import torch
from PIL import Image

from serve_app.frames import phash
from serve_app.frames.phash import (
    hash_frames,
    phash_batch,
    resolve_backend,
    signals_batch,
    thumbnails_torch,
)
from serve_app.frames.sampler import Verdict
from serve_app.frames.service import DedupService, Pending
from serve_app.settings import DedupSettings
from tests import images

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")


def reference(frame: np.ndarray) -> int:
    return int(str(imagehash.phash(Image.fromarray(frame))), 16)


def test_every_varied_image_hashes_like_imagehash_on_cuda() -> None:
    varied = images.varied()
    expected = np.array([reference(f) for f in varied], dtype=np.uint64)
    got = np.array([phash_batch(f[None], backend="torch", device="cuda")[0] for f in varied], dtype=np.uint64)
    np.testing.assert_array_equal(got, expected)


def test_cuda_tensors_go_to_the_torch_path_and_stay_exact() -> None:
    frames = np.stack(images.screens(6, 640, 360))
    on_gpu = torch.from_numpy(frames).cuda()
    assert resolve_backend(on_gpu) == ("torch", None)
    expected = np.array([reference(f) for f in frames], dtype=np.uint64)
    np.testing.assert_array_equal(phash_batch(on_gpu), expected)


def test_large_batches_span_chunks_and_match_the_cpu_kernel() -> None:
    """More 720p frames than one torch step holds: every chunk is hashed, in order, like on the CPU."""
    per_step = phash._TORCH_CHUNK_PIXELS // (720 * 1280)
    n = 2 * per_step + 3
    rng = np.random.default_rng(11)
    frames = np.full((n, 720, 1280, 3), 240, np.uint8)
    for i in range(n):
        y, x = rng.integers(0, 360), rng.integers(0, 640)
        frames[i, y : y + 240, x : x + 420] = rng.integers(0, 256, (240, 420, 3), dtype=np.uint8)
    cpu = phash_batch(frames, backend="native" if phash.native_available() else "torch")
    np.testing.assert_array_equal(phash_batch(frames, backend="torch", device="cuda"), cpu)
    for i in (0, per_step, n - 1):
        assert int(cpu[i]) == reference(frames[i])


def test_cuda_thumbnails_equal_pillow_for_odd_sizes() -> None:
    for h, w in [(37, 34), (2000, 1000), (100, 2000), (481, 853), (16, 14)]:
        frame = images.noise(h, w, seed=h * w)
        pillow = np.asarray(Image.fromarray(frame).convert("L").resize((32, 32), Image.LANCZOS))
        np.testing.assert_array_equal(thumbnails_torch(frame[None], "cuda")[0], pillow, err_msg=f"{h}x{w}")


def test_service_on_cuda_decides_like_the_cpu_service() -> None:
    frames = [images.noise(120, 160, seed=s % 3) for s in range(24)] + [images.text(240, 320, 2)] * 4
    plan = [(f"tenant_t_s{i % 3}", frames[i], i % 4 == 0, i * 0.07) for i in range(len(frames))]
    cpu = DedupService(DedupSettings(device="cpu"))
    expected = [asyncio.run(cpu.offer(*p)).to_dict() for p in plan]

    gpu = DedupService(DedupSettings(device="cuda"))
    assert gpu.device == "cuda"
    admitted = [gpu.admit(*p) for p in plan]
    pending = [a for a in admitted if isinstance(a, Pending)]
    decided = iter(asyncio.run(gpu.decide_batch(pending)))
    got = [(next(decided) if isinstance(a, Pending) else a).to_dict() for a in admitted]
    assert got == expected
    assert {d["verdict"] for d in got} >= {Verdict.PROCESSED.value, Verdict.DUPLICATE.value}


def test_mixed_sizes_hash_per_size_on_cuda() -> None:
    frames = images.varied()[:10]
    expected = np.array([reference(f) for f in frames], dtype=np.uint64)
    np.testing.assert_array_equal(hash_frames(frames, backend="torch", device="cuda"), expected)


def test_region_cells_on_cuda_equal_the_cpu_kernel() -> None:
    """The region thumbnail is the same integers on CUDA (numpy frames and CUDA tensors) as on CPU."""
    for frames in [np.stack(images.screens(3, 1280, 720)), np.stack(images.varied()[5:8])]:
        for cell in [(16, 2), (7, 3)]:
            cpu = signals_batch(frames, cell=cell, backend="native" if phash.native_available() else "torch")
            gpu = signals_batch(frames, cell=cell, backend="torch", device="cuda")
            on_gpu = signals_batch(torch.from_numpy(frames).cuda(), cell=cell)
            np.testing.assert_array_equal(gpu.cells, cpu.cells)
            np.testing.assert_array_equal(on_gpu.cells, cpu.cells)
            np.testing.assert_array_equal(gpu.hashes, cpu.hashes)


def test_planes_on_cuda_give_the_rgb_integers() -> None:
    """Planes (luma + 2x2 colour sums) hashed and summed on the GPU: the CPU kernel's values from RGB."""
    from serve_app.frames.planes import planes_signals, to_planes

    rng = np.random.default_rng(5)
    for height, width in ((720, 1280), (33, 47), (100, 32)):
        frames = rng.integers(0, 256, (4, height, width, 3), dtype=np.uint8)
        want = phash.signals_batch(frames, cell=(16, 2), backend="native")
        got = planes_signals(to_planes(frames), cell=(16, 2), backend="torch", device="cuda")
        assert np.array_equal(got.hashes, want.hashes) and np.array_equal(got.cells, want.cells)
