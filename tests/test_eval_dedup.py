"""`supportgraph eval-dedup`: the real sampler over generated clips, scored, ending with the JSON line."""

from __future__ import annotations

import json

import pytest

from serve_app.cli import main
from serve_app.frames.sampler import Decision, Reason, Verdict
from supportgraph_tools.frames.evaluate import RunScore, parse_resolution, parse_seeds
from supportgraph_tools.frames.synthetic import ClipEvent

FIELDS = {"skip_rate", "event_recall", "recall_by_kind", "spurious_sends"}


def test_eval_dedup_prints_a_table_and_the_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval-dedup", "--seeds", "3", "--resolution", "640x480", "--duration", "8"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any("pHash + region" in line for line in out)
    summary = json.loads(out[-1])
    # the field names stay; busy and clips were added beside them
    assert set(summary) == {"eval", *FIELDS, "phash_only", "busy", "clips"} and summary["eval"] == "dedup"
    assert summary["busy"] is False and summary["clips"] == 1
    assert set(summary["phash_only"]) == FIELDS
    assert 0.9 < summary["skip_rate"] < 1 and 0 < summary["event_recall"] <= 1
    assert set(summary["recall_by_kind"]) == set(summary["phash_only"]["recall_by_kind"])
    assert summary["event_recall"] >= summary["phash_only"]["event_recall"]


def test_scores_count_recall_within_half_a_second_and_spurious_sends() -> None:
    def sent(ts: float) -> Decision:
        return Decision("tenant_a_r", Verdict.PROCESSED, ts, reason=Reason.REGION)

    events = [ClipEvent(1.0, "toast", "open"), ClipEvent(3.0, "banner", "on"), ClipEvent(2.0, "cursor")]
    score = RunScore()
    score.add_clip(100, [sent(0.0), sent(1.4), sent(2.1), sent(3.6)], events)
    assert score.recall_by_kind() == {"toast": 1.0, "banner": 0.0}  # 3.6 is 0.6 s after the banner
    assert score.spurious == 2  # 2.1 (a cursor move only) and 3.6; the first frame never counts
    assert score.skip_rate == pytest.approx(0.96)


@pytest.mark.parametrize("bad", [["--seeds", "a-b"], ["--resolution", "1280"], ["--resolution", "9x9"]])
def test_bad_arguments_are_a_clear_error(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval-dedup", *bad]) == 2
    assert "eval-dedup" in capsys.readouterr().err


def test_seed_and_resolution_syntax() -> None:
    assert parse_seeds("100-102,7") == [100, 101, 102, 7]
    assert parse_resolution("640X480") == (640, 480)
