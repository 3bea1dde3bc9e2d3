"""pHash is bit-exact with imagehash.phash on every backend, and the resize plan matches Pillow."""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
import torch
from PIL import Image

from serve_app.frames.phash import (
    FrameShapeError,
    hamming,
    hash_frames,
    hash_hex,
    native_available,
    phash_batch,
    signals_batch,
    thumbnails_native,
    thumbnails_torch,
)
from tests import images


def reference(frame: np.ndarray) -> int:
    return int(str(imagehash.phash(Image.fromarray(frame))), 16)


@pytest.fixture(scope="module")
def varied() -> list[np.ndarray]:
    return images.varied()


def test_native_kernel_is_built() -> None:
    assert native_available(), "the C kernel must build at install time (make test installs it)"


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_every_varied_image_hashes_like_imagehash(backend: str, varied: list[np.ndarray]) -> None:
    expected = [reference(f) for f in varied]
    got = [int(phash_batch(f[None], backend=backend)[0]) for f in varied]
    mismatches = [
        (f.shape, hash_hex(e), hash_hex(g)) for f, e, g in zip(varied, expected, got, strict=True) if e != g
    ]
    assert not mismatches


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_batches_split_across_threads_match_one_by_one(threads: int) -> None:
    frames = np.stack([images.noise(240, 320, seed=s) for s in range(7)])
    frames[3] = images.flat(240, 320, (9, 9, 9))
    expected = np.array([reference(f) for f in frames], dtype=np.uint64)
    np.testing.assert_array_equal(phash_batch(frames, backend="native", threads=threads), expected)


def test_torch_tensor_input_and_mixed_sizes(varied: list[np.ndarray]) -> None:
    frames = varied[:12]
    expected = np.array([reference(f) for f in frames], dtype=np.uint64)
    np.testing.assert_array_equal(hash_frames(frames), expected)
    same = np.stack(images.screens(2, 320, 240))
    np.testing.assert_array_equal(
        phash_batch(torch.from_numpy(same)), np.array([reference(f) for f in same], dtype=np.uint64)
    )


def test_resize_matches_pillow_over_many_size_pairs() -> None:
    """Pillow picks the pass order by shape; the plan must pick the same for every size pair."""
    rng = np.random.default_rng(3)
    sizes = {(int(h), int(w)) for h, w in rng.integers(2, 420, size=(160, 2))}
    sizes |= {(2000, 1000), (2000, 1020), (100, 2000), (34, 34), (37, 34), (40, 37), (43, 37), (16, 14)}
    for h, w in sorted(sizes):
        frame = images.noise(h, w, seed=h + w)
        pillow = np.asarray(Image.fromarray(frame).convert("L").resize((32, 32), Image.LANCZOS))
        np.testing.assert_array_equal(thumbnails_native(frame[None])[0], pillow, err_msg=f"{h}x{w}")
        if h * w < 60_000:
            np.testing.assert_array_equal(thumbnails_torch(frame[None])[0], pillow, err_msg=f"torch {h}x{w}")


def test_hamming_counts_differing_bits() -> None:
    assert int(hamming(0, 0)) == 0
    assert int(hamming(0b1011, 0b0001)) == 2
    assert int(hamming(2**64 - 1, 0)) == 64
    np.testing.assert_array_equal(hamming(np.array([1, 3], np.uint64), 0), [1, 2])


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 8, 8), np.uint8),
        np.zeros((1, 8, 8, 4), np.uint8),
        np.zeros((1, 8, 8, 3), np.float32),
        np.zeros((1, 0, 8, 3), np.uint8),
    ],
)
def test_bad_frames_are_rejected_with_a_message(bad: np.ndarray) -> None:
    with pytest.raises(FrameShapeError, match="frames must"):
        phash_batch(bad)


def test_empty_batch_gives_empty_result() -> None:
    assert phash_batch(np.zeros((0, 10, 10, 3), np.uint8)).shape == (0,)


def reference_cells(frame: np.ndarray, cell: tuple[int, int]) -> np.ndarray:
    """The region thumbnail by its definition: Pillow's L and max(R,G,B) - min(R,G,B), summed per cell."""
    h, w, _ = frame.shape
    cell_w, cell_h = cell
    luma = np.asarray(Image.fromarray(frame).convert("L"), np.int64)
    colour = frame.astype(np.int64).max(axis=2) - frame.astype(np.int64).min(axis=2)
    rows, cols = -(-h // cell_h), -(-w // cell_w)
    out = []
    for plane in (luma, colour):
        padded = np.zeros((rows * cell_h, cols * cell_w), np.int64)
        padded[:h, :w] = plane
        out.append(padded.reshape(rows, cell_h, cols, cell_w).sum(axis=(1, 3)))
    return np.stack(out)


def test_region_cells_are_the_same_integers_on_both_backends(varied: list[np.ndarray]) -> None:
    """C kernel, torch and the definition agree on every cell, edge cells and pass orders included,
    and asking for cells leaves the pHash as it was."""
    by_size: dict[tuple[int, ...], list[np.ndarray]] = {}
    for frame in varied:
        by_size.setdefault(frame.shape, []).append(frame)
    for shape, group in by_size.items():
        frames = np.stack(group[:3])
        for cell in [(16, 2), (12, 2), (7, 3), (1, 1)]:
            expected = np.stack([reference_cells(f, cell) for f in frames])
            native = signals_batch(frames, cell=cell, backend="native", threads=2)
            np.testing.assert_array_equal(native.cells, expected, err_msg=f"native {shape} {cell}")
            np.testing.assert_array_equal(native.hashes, phash_batch(frames, backend="native"))
            if shape[0] * shape[1] <= 1280 * 720:
                torch_cpu = signals_batch(frames, cell=cell, backend="torch", device="cpu")
                np.testing.assert_array_equal(torch_cpu.cells, expected, err_msg=f"torch {shape} {cell}")
                np.testing.assert_array_equal(torch_cpu.hashes, native.hashes)


def test_bad_cell_sizes_are_refused() -> None:
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    for cell in [(0, 2), (16, 0), (4096, 4096)]:
        with pytest.raises(ValueError, match="region cells"):
            signals_batch(frames, cell=cell)
    assert signals_batch(np.zeros((0, 8, 8, 3), np.uint8), cell=(4, 2)).cells.shape == (0, 2, 4, 2)
