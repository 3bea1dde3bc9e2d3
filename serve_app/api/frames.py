"""`/v1/streams/...`: offer screen-share frames to the dedup, read and close a stream's counters.

The body is read under the frame byte limit and decoded here (JPEG, PNG or raw RGB24), off the
event loop; the `FrameBackend` in `app.state.frames` decides. `/frames/batch` takes several frames of one
stream in one request (the fast path): one request's overhead and one call to the dedup for all of them;
raw RGB24 frames go on as one array, without a copy; planes (`application/x-supportgraph-planes`, the
fastest: half the bytes of raw RGB, no conversion here, the same decisions) as two arrays, without a
copy; JPEG/PNG frames are decoded in parallel threads.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel

from serve_app.api.access import OVERLOADED, allow, authenticate, authorize, charge_frames
from serve_app.api.checked import CheckedRoute
from serve_app.backends import FrameBackend
from serve_app.frames.decode import FrameDecodeError, FrameLimits, decode_frame, split_batch
from serve_app.frames.planes import Planes
from serve_app.tenancy import InvalidIdentifier, parse_stream_id

routes = APIRouter(
    prefix="/v1/streams",
    tags=["frames"],
    dependencies=[Depends(authenticate), Depends(allow("admin", "client"))],
    route_class=CheckedRoute,
)

STREAM_ID = Path(
    ...,
    max_length=300,
    description="tenant_<tenant>_<room>[.<track>], e.g. tenant_acme_support-42.screen",
)


class FrameDecisionOut(BaseModel):
    stream_id: str
    verdict: str  # throttled | duplicate | processed
    send: bool
    ts: float
    phash: str | None
    distance: int | None
    reason: str  # first | phash | region | throttled | duplicate
    box: list[int] | None = None  # [x, y, width, height] of the changed region, frame pixels


class FrameBatchOut(BaseModel):
    decisions: list[FrameDecisionOut]  # one per frame, in the order of the body


def frame_backend(request: Request) -> FrameBackend:
    return request.app.state.frames


def checked_stream(request: Request, stream_id: str) -> str:
    """A well-formed stream id of the API key's tenant (400, 403 otherwise)."""
    try:
        tenant = parse_stream_id(stream_id).tenant_id
    except InvalidIdentifier as exc:
        raise HTTPException(400, str(exc)) from None
    authorize(request, tenant)
    return stream_id


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"frame is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"frame is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


@routes.post(
    "/{stream_id}/frames",
    response_model=FrameDecisionOut,
    summary="Offer one screen-share frame; says whether to send it on (processed) or skip it",
    responses={
        400: {"description": "bad stream id"},
        413: {"description": "frame too large"},
        415: {"description": "unsupported content type"},
        422: {"description": "corrupt frame"},
        **OVERLOADED,
    },
)
async def submit_frame(
    request: Request,
    stream_id: str = STREAM_ID,
    ts: float | None = Query(None, ge=0, le=1e12, allow_inf_nan=False, description="frame time, seconds"),
    speaking: bool = Query(False, description="the user is speaking: sample at the active rate"),
    width: int | None = Query(None, ge=1, le=16384, description="raw RGB24 only"),
    height: int | None = Query(None, ge=1, le=16384, description="raw RGB24 only"),
) -> dict[str, Any]:
    checked_stream(request, stream_id)
    limits: FrameLimits = request.app.state.limits
    body = await read_body(request, limits.max_bytes)
    try:
        frame = await asyncio.to_thread(
            decode_frame, body, request.headers.get("content-type"), limits, width, height
        )
    except FrameDecodeError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return await frame_backend(request).offer(stream_id, frame, speaking, ts)


@routes.post(
    "/{stream_id}/frames/batch",
    response_model=FrameBatchOut,
    summary="Offer several frames of one stream in one request (the fast path); one decision per frame",
    responses={
        400: {"description": "bad stream id"},
        413: {"description": "batch or a frame too large, or too many frames"},
        415: {"description": "unsupported content type"},
        422: {"description": "corrupt frame, or sizes / ts that do not match the body"},
        **OVERLOADED,
    },
)
async def submit_frames(
    request: Request,
    stream_id: str = STREAM_ID,
    ts: list[float] | None = Query(None, description="each frame's time, seconds: one per frame, or none"),
    speaking: list[bool] = Query([False], description="one value for every frame, or one per frame"),
    sizes: list[int] | None = Query(None, description="bytes of each frame in the body (JPEG/PNG)"),
    width: int | None = Query(None, ge=1, le=16384, description="raw RGB24 and planes only"),
    height: int | None = Query(None, ge=1, le=16384, description="raw RGB24 and planes only"),
) -> dict[str, Any]:
    checked_stream(request, stream_id)
    limits: FrameLimits = request.app.state.limits
    if ts is not None and not all(0 <= t <= 1e12 for t in ts):  # NaN fails both
        raise HTTPException(422, "every ts must be a number of seconds in [0, 1e12]")
    body = await read_body(request, limits.max_batch_bytes)
    ctype = request.headers.get("content-type")
    count = None if ts is None else len(ts)
    try:
        split = split_batch(body, ctype, limits, count=count, sizes=sizes, width=width, height=height)
        n = len(split)
        if len(speaking) not in (1, n):
            raise FrameDecodeError(f"speaking has {len(speaking)} values for {n} frames")
        if isinstance(split, Planes):  # planes: decided as the RGB frames they came from
            frames: Any = split
        elif isinstance(split, list):  # JPEG / PNG: decoded in parallel, off the event loop
            frames = list(
                await asyncio.gather(
                    *(asyncio.to_thread(decode_frame, part, ctype, limits) for part in split)
                )
            )
        else:
            frames = split
    except FrameDecodeError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    charge_frames(request, n - 1)  # the route was charged one frame on the way in
    flags: Any = speaking[0] if len(speaking) == 1 else speaking
    if isinstance(frames, Planes):
        decisions = await frame_backend(request).offer_planes(stream_id, frames, flags, ts)
    else:
        decisions = await frame_backend(request).offer_many(stream_id, frames, flags, ts)
    return {"decisions": decisions}


@routes.get("/{stream_id}/stats", summary="Counters of a stream and its tenant")
async def stream_stats(request: Request, stream_id: str = STREAM_ID) -> dict[str, Any]:
    return await frame_backend(request).stats(checked_stream(request, stream_id))


@routes.delete("/{stream_id}", summary="End a stream; returns its final counters")
async def close_stream(request: Request, stream_id: str = STREAM_ID) -> dict[str, Any]:
    return await frame_backend(request).close(checked_stream(request, stream_id))
