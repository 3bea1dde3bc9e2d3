"""Turning an uploaded frame (JPEG, PNG or raw RGB24 bytes) into a uint8 [H, W, 3] array, or a clear error.

Checks happen before pixels are decoded: byte size, format from the file signature, declared dimensions
against a pixel budget (so a tiny PNG claiming 100k x 100k never allocates), then a full decode that
reports truncated or corrupt data.

A batch upload (`split_batch`) is several frames of one stream back to back: raw RGB24 frames of one size
(one `[B, H, W, 3]` view of the body, no copy), planes of one size (`application/x-supportgraph-planes`,
`planes.py`: per frame the luma bytes then the 2x2 colour sums, half of RGB, views of the body), or
JPEG/PNG files whose byte sizes the client lists.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from serve_app.errors import FrameDecodeError
from serve_app.frames.planes import MEDIA_TYPE as PLANES_TYPE
from serve_app.frames.planes import Planes

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}
RAW_TYPES = ("application/octet-stream", "image/x-raw-rgb")


@dataclass(frozen=True)
class FrameLimits:
    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 3840 * 2160
    max_batch_frames: int = 64  # frames per batch upload
    max_batch_bytes: int = 192 * 1024 * 1024  # a batch upload's body (64 raw 720p frames: 169 MiB)


def _check_dims(width: int, height: int, limits: FrameLimits) -> None:
    if width < 1 or height < 1:
        raise FrameDecodeError(f"frame must be at least 1x1 pixels, got {width}x{height}")
    if width * height > limits.max_pixels:
        raise FrameDecodeError(
            f"frame is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}", 413
        )


def decode_raw(data: bytes, width: int | None, height: int | None, limits: FrameLimits) -> np.ndarray:
    if width is None or height is None:
        raise FrameDecodeError("raw RGB24 frames need the width and height query parameters")
    _check_dims(width, height, limits)
    expected = width * height * 3
    if len(data) != expected:
        raise FrameDecodeError(f"raw RGB24 {width}x{height} frame needs {expected} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)


def decode_image(data: bytes, content_type: str, limits: FrameLimits) -> np.ndarray:
    expected = FORMATS[content_type]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[expected])
            _check_dims(image.width, image.height, limits)
            image.load()
    except FrameDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FrameDecodeError(f"frame is too large to decode: {exc}", 413) from None
    except UnidentifiedImageError:
        raise FrameDecodeError(f"body is not a valid {expected} image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise FrameDecodeError(f"corrupt or truncated {expected} image: {exc}") from None
    return np.asarray(image.convert("RGB"))


def decode_frame(
    data: bytes,
    content_type: str | None,
    limits: FrameLimits,
    width: int | None = None,
    height: int | None = None,
) -> np.ndarray:
    """Decode one upload by its media type; raises FrameDecodeError (with an HTTP status) on bad input."""
    if len(data) > limits.max_bytes:
        raise FrameDecodeError(f"frame is {len(data)} bytes; the limit is {limits.max_bytes}", 413)
    if not data:
        raise FrameDecodeError("empty body: send a JPEG, PNG or raw RGB24 frame")
    media = (content_type or "").split(";")[0].strip().lower()
    if media in FORMATS:
        return decode_image(data, media, limits)
    if media in RAW_TYPES:
        return decode_raw(data, width, height, limits)
    if media == PLANES_TYPE:
        raise FrameDecodeError(f"send {PLANES_TYPE} bodies to /frames/batch (one frame or more)", 415)
    raise FrameDecodeError(
        f"unsupported content type {content_type!r}: use image/jpeg, image/png or application/octet-stream "
        "(raw RGB24 with width and height)",
        415,
    )


def split_batch(
    data: bytes,
    content_type: str | None,
    limits: FrameLimits,
    *,
    count: int | None,
    sizes: list[int] | None,
    width: int | None = None,
    height: int | None = None,
) -> np.ndarray | Planes | list[bytes]:
    """A batch body: raw RGB24 as one uint8 `[B, H, W, 3]` array (a view of `data`), planes as `Planes`
    (views of `data`), or JPEG/PNG as one bytes object per frame (cut at `sizes`, to decode with
    `decode_frame`). `count`: the number of frames the other parameters say (None: from `sizes`, or for
    raw and planes from the body size)."""
    if len(data) > limits.max_batch_bytes:
        raise FrameDecodeError(f"batch is {len(data)} bytes; the limit is {limits.max_batch_bytes}", 413)
    if not data:
        raise FrameDecodeError("empty body: send JPEG, PNG or raw RGB24 frames back to back")
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in FORMATS and media not in RAW_TYPES and media != PLANES_TYPE:
        raise FrameDecodeError(
            f"unsupported content type {content_type!r}: use image/jpeg, image/png, "
            f"application/octet-stream (raw RGB24 with width and height) or {PLANES_TYPE} (with width "
            "and height)",
            415,
        )
    if media == PLANES_TYPE:
        if sizes is not None:
            raise FrameDecodeError("planes batches take width and height, not sizes")
        if width is None or height is None:
            raise FrameDecodeError("planes need the width and height query parameters")
        _check_dims(width, height, limits)
        try:
            planes = Planes.from_bytes(data, width, height, count)
        except ValueError as exc:
            raise FrameDecodeError(str(exc)) from None
        _check_count(len(planes), limits)
        return planes
    if sizes is not None:
        if count is not None and len(sizes) != count:
            raise FrameDecodeError(f"sizes has {len(sizes)} values for {count} frames")
        count = len(sizes)
        if any(n < 1 for n in sizes) or sum(sizes) != len(data):
            raise FrameDecodeError(f"sizes must be positive and add up to the body's {len(data)} bytes")
    if media in RAW_TYPES:
        if width is None or height is None:
            raise FrameDecodeError("raw RGB24 frames need the width and height query parameters")
        _check_dims(width, height, limits)
        frame_bytes = width * height * 3
        if count is None:
            count = len(data) // frame_bytes
        if count < 1 or len(data) != count * frame_bytes or (sizes and set(sizes) != {frame_bytes}):
            raise FrameDecodeError(
                f"raw RGB24 {width}x{height} frames are {frame_bytes} bytes each; got {len(data)} bytes"
                + (f" for {count} frames" if count else "")
            )
        _check_count(count, limits)
        return np.frombuffer(data, dtype=np.uint8).reshape(count, height, width, 3)
    if sizes is None:
        raise FrameDecodeError("JPEG and PNG batches need the sizes query parameter (bytes of each frame)")
    _check_count(count, limits)
    parts, at = [], 0
    for n in sizes:
        if n > limits.max_bytes:
            raise FrameDecodeError(f"a frame is {n} bytes; the limit is {limits.max_bytes}", 413)
        parts.append(data[at : at + n])
        at += n
    return parts


def _check_count(count: int, limits: FrameLimits) -> None:
    if not 1 <= count <= limits.max_batch_frames:
        raise FrameDecodeError(f"send 1 to {limits.max_batch_frames} frames per batch, got {count}", 413)
