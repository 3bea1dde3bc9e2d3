"""Settings precedence and validation; tenant and stream identifiers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serve_app.settings import load_settings
from serve_app.tenancy import InvalidIdentifier, parse_stream_id, room_name, validate_tenant_id


def test_defaults_match_the_seed() -> None:
    s = load_settings()
    assert (s.dedup.hamming_threshold, s.dedup.active_fps, s.dedup.idle_fps) == (10, 30, 5)
    assert s.pricing.load().image_usd == 0.002
    assert s.serve.frame_dedup.num_cpus < 1 and s.serve.ingress.num_cpus < 1


def test_yaml_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("dedup:\n  hamming_threshold: 6\n  idle_fps: 2\nhttp:\n  port: 9001\n")
    monkeypatch.setenv("SUPPORTGRAPH_DEDUP__IDLE_FPS", "3")
    s = load_settings(cfg, http={"port": 9002})
    assert (s.dedup.hamming_threshold, s.dedup.idle_fps, s.http.port) == (6, 3, 9002)
    monkeypatch.setenv("SUPPORTGRAPH_CONFIG", str(cfg))
    assert load_settings().dedup.hamming_threshold == 6


def test_unknown_keys_and_bad_values_are_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("dedup:\n  hamming_treshold: 6\n")
    with pytest.raises(ValidationError, match="hamming_treshold"):
        load_settings(cfg)
    with pytest.raises(ValidationError):
        load_settings(dedup={"hamming_threshold": 70})
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.yaml")


def test_cuda_needs_a_gpu_share() -> None:
    with pytest.raises(ValidationError, match="num_gpus"):
        load_settings(dedup={"device": "cuda"})
    assert (
        load_settings(dedup={"device": "cuda"}, serve={"frame_dedup": {"num_gpus": 1}}).dedup.device == "cuda"
    )


def test_stream_ids_parse_into_tenant_room_track() -> None:
    sid = parse_stream_id("tenant_acme-eu_support-42.screen")
    assert (sid.tenant_id, sid.room, sid.track, sid.room_name) == (
        "acme-eu",
        "support-42",
        "screen",
        "tenant_acme-eu_support-42",
    )
    assert str(sid) == "tenant_acme-eu_support-42.screen"
    assert room_name("acme", "r1") == "tenant_acme_r1"


@pytest.mark.parametrize("bad", ["", "Acme", "ac_me", "-acme", "a" * 64, "acme;drop"])
def test_bad_tenant_ids(bad: str) -> None:
    with pytest.raises(InvalidIdentifier):
        validate_tenant_id(bad)


def test_a_stream_belongs_to_the_tenant_its_id_parses_to() -> None:
    """The one tenant-owns-stream rule: the parsed tenant, not a prefix of the raw string; a malformed
    id is malformed whoever it seems to name."""
    from serve_app.errors import ForeignStream
    from serve_app.tenancy import tenant_stream

    assert tenant_stream("acme", "tenant_acme_desk-1.screen").room == "desk-1"
    for foreign in ("tenant_acme-eu_desk-1", "tenant_other_desk-1.screen"):
        with pytest.raises(ForeignStream):
            tenant_stream("acme", foreign)
    for malformed in ("tenant_acme_", "tenant_acme_desk 1", "desk-1", "tenant_acme_a.b.c"):
        with pytest.raises(InvalidIdentifier):
            tenant_stream("acme", malformed)
    assert issubclass(ForeignStream, ValueError) and not issubclass(ForeignStream, InvalidIdentifier)
