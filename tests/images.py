"""Generated test images: screens, text, noise, gradients, flat, checkerboards, odd sizes, portrait."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from supportgraph_tools.frames.synthetic import ClipSpec, ScreenShareClip


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def flat(h: int, w: int, value: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(value, np.uint8), (h, w, 3)).copy()


def gradient(h: int, w: int, axis: int) -> np.ndarray:
    ramp = np.linspace(0, 255, (h, w)[axis]).astype(np.uint8)
    plane = np.broadcast_to(ramp[None, :] if axis == 1 else ramp[:, None], (h, w))
    return np.stack([plane, 255 - plane, plane // 2], axis=-1).copy()


def checkerboard(h: int, w: int, cell: int) -> np.ndarray:
    yy, xx = np.indices((h, w))
    plane = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8)
    return np.stack([plane] * 3, axis=-1)


def text(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for row in range(0, h, 16):
        draw.text((4, row), " ".join(str(x) for x in rng.integers(0, 10**6, 8)), fill=(0, 0, 0))
    return np.asarray(image).copy()


def screens(n: int = 3, width: int = 1280, height: int = 720) -> list[np.ndarray]:
    clip = ScreenShareClip(ClipSpec(seed=7, width=width, height=height, duration_s=20))
    frames = list(clip.frames())
    step = max(1, len(frames) // n)
    return [frames[i].rgb for i in range(0, step * n, step)]


def varied() -> list[np.ndarray]:
    """One of each kind, several sizes: what the exactness tests run over."""
    images = [*screens(3), *screens(2, 640, 480)]
    for h, w in [
        (720, 1280),
        (480, 640),
        (1080, 608),
        (37, 1001),
        (999, 33),
        (5, 7),
        (1, 1),
        (32, 32),
        (33, 31),
    ]:
        images += [noise(h, w, seed=h * w), gradient(h, w, 0), gradient(h, w, 1)]
    for value in [(0, 0, 0), (255, 255, 255), (17, 200, 90), (128, 128, 128)]:
        images += [flat(480, 640, value), flat(31, 45, value)]
    images += [checkerboard(720, 1280, 40), checkerboard(64, 64, 8), checkerboard(100, 300, 1)]
    images += [text(720, 1280, 1), text(1920, 1080, 2), text(300, 200, 3)]
    return images
