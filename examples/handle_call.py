"""Call the FrameDedup deployment through a Ray Serve handle, as the LiveKit agent does.

Inside the Ray cluster (a process connected with `ray.init`), deployments are called by handle, not
HTTP: `offer` takes one RGB frame, `offer_many` several frames of one stream in one call, and
`offer_planes` the same frames as planes (half the bytes, the same decisions). Call with keywords: the
stream-affinity request router reads `stream_id` to keep the stream on one replica.

    .venv/bin/supportgraph serve &      # starts a local Ray; or RAY_ADDRESS of your cluster
    RAY_ADDRESS=auto .venv/bin/python examples/handle_call.py
"""

from __future__ import annotations

import os

import numpy as np
from ray import serve

from serve_app.frames.planes import to_planes


def screens(count: int, height: int = 360, width: int = 640) -> np.ndarray:
    """uint8 [count, H, W, 3]: the same grey page, a red banner across the top from halfway on."""
    frames = np.full((count, height, width, 3), 230, np.uint8)
    frames[:, 40:300:24, 40:560] = 70  # lines of 'text'
    frames[count // 2 :, :48] = (180, 40, 40)
    return frames


def main(app_name: str = "supportgraph", stream_id: str = "tenant_acme_handle-1.screen") -> list[dict]:
    """Offer six frames three ways; returns the decisions in order."""
    dedup = serve.get_deployment_handle("FrameDedup", app_name=app_name)
    frames = screens(6)
    decisions = [dedup.offer.remote(stream_id=stream_id, frame=frames[0], is_speaking=False, ts=0.0).result()]
    decisions += dedup.offer_many.remote(
        stream_id=stream_id, frames=frames[1:3], is_speaking=False, ts=[0.2, 0.4]
    ).result()
    planes = to_planes(frames[3:])  # computed by the caller; the replica skips the per-pixel work
    decisions += dedup.offer_planes.remote(
        stream_id=stream_id, luma=planes.luma, color=planes.color, is_speaking=False, ts=[0.6, 0.8, 1.0]
    ).result()
    for d in decisions:
        print(f"t={d['ts']:.1f}s  {d['verdict']:<10} send={d['send']!s:<5} reason={d['reason']}")
    return decisions


if __name__ == "__main__":
    import ray

    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=False)
    main(os.environ.get("SUPPORTGRAPH_APP", "supportgraph"))
