"""FrameDedup in Serve's local testing mode (no cluster), with the @serve.batch workaround for 2.60."""

from __future__ import annotations

import numpy as np
import pytest
from ray import serve
from ray.serve import batching

from deployments.frame_dedup import FrameDedup
from tests import images


@pytest.fixture()
def local_handle(monkeypatch: pytest.MonkeyPatch):
    # Ray 2.60: @serve.batch asks for the replica context, which local testing mode lacks.
    monkeypatch.setattr(
        batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None
    )
    app = serve.deployment(FrameDedup, name="FrameDedupLocal").options(
        user_config={"hamming_threshold": 10, "idle_fps": 5}
    )
    return serve.run(
        app.bind({"device": "cpu"}), name="local-dedup", route_prefix=None, _local_testing_mode=True
    )


def test_offer_through_a_local_handle(local_handle) -> None:
    frame = images.text(100, 200, 9)
    verdicts = [
        local_handle.offer.remote(stream_id="tenant_l_r", frame=f, is_speaking=False, ts=t).result()[
            "verdict"
        ]
        for f, t in [(frame, 0.0), (frame, 0.05), (frame, 0.3), (np.ascontiguousarray(frame[::-1]), 0.6)]
    ]
    assert verdicts == ["processed", "throttled", "duplicate", "processed"]


def test_bad_stream_id_raises_through_the_handle(local_handle) -> None:
    with pytest.raises(ValueError, match="invalid stream id"):
        local_handle.offer.remote(stream_id="nope", frame=images.flat(8, 8, (0, 0, 0))).result()
