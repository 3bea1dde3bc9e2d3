"""The documentation is true and reachable: a short README with the two commands on its first screen,
links that resolve, a site that builds with `mkdocs build --strict`, a settings page generated from the
code, and the README's calls and the scripts of `examples/` working against the running graph.

CI runs only `make test`, so this module is the docs' CI step.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from serve_app.runtime import RunningGraph
from serve_app.samples import ingest_help_center
from serve_app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def prose(markdown: str) -> str:
    """The text outside fenced and inline code (links there are examples, not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", markdown))


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc gives a heading (markup stripped, as mkdocs does)."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", page.read_text()), re.M)}


def broken_links(page: Path) -> list[str]:
    """Relative links of `page` whose file (or heading anchor) does not exist."""
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    return broken


def test_readme_is_short_and_shows_the_two_commands_on_its_first_screen() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail into docs/"
    first_screen = "\n".join(lines[:40])
    assert "make demo" in first_screen and "make test" in first_screen
    assert not re.search(r"\bissue\s*#?\d+|#\d{1,3}\b", README.read_text(), re.I), "no issue numbers"


def test_every_relative_link_in_the_readme_and_the_docs_resolves() -> None:
    assert PAGES, "docs/*.md missing"
    broken = {str(p.relative_to(ROOT)): broken_links(p) for p in [README, *PAGES]}
    assert {page: links for page, links in broken.items() if links} == {}


def test_the_link_checker_catches_a_broken_file_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# A `code` heading\n")
    page = tmp_path / "a.md"
    page.write_text(
        "[ok](b.md#a-code-heading) [no](c.md) [bad](b.md#nope) `[code](x.md)` [web](https://x.org)"
    )
    assert broken_links(page) == ["c.md", "b.md#nope"]


def test_every_page_is_in_the_site_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    assert [p.name for p in PAGES if f": {p.name}" not in nav] == []


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs and mkdocs-material are not installed (pip install -e '.[dev]')")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "settings" / "index.html").is_file()


def _settings_generator():
    spec = importlib.util.spec_from_file_location(
        "gen_settings_docs", ROOT / "scripts" / "gen_settings_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_settings_page_is_generated_from_the_current_settings() -> None:
    gen = _settings_generator()
    assert (DOCS / "settings.md").read_text() == gen.render(), "run: python scripts/gen_settings_docs.py"
    assert gen.missing_descriptions() == [], "give these settings a Field(description=...)"


def test_a_stale_settings_page_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = _settings_generator()
    page = tmp_path / "settings.md"
    monkeypatch.setattr(gen, "PAGE", page)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    page.write_text(gen.render().replace("skip a frame within this many bits", "an old meaning"))
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0


def test_the_settings_page_lists_every_field_with_its_default() -> None:
    page = (DOCS / "settings.md").read_text()
    assert "| `dedup.hamming_threshold` | integer | `10` |" in page
    assert "| `serve.ingress.num_cpus` | number | `0.25` |" in page  # the section's default, not the class's
    assert "| `routing.tiers[].backend` |" in page and "| `knowledge.rerankers.<name>.model` |" in page
    from serve_app.settings import Settings

    def paths(model: type, prefix: str) -> set[str]:
        out = set()
        for name, field in model.model_fields.items():
            sub = field.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                out |= paths(sub, f"{prefix}{name}.")
            else:
                out.add(f"{prefix}{name}")
        return out

    assert sorted(p for p in paths(Settings, "") if f"| `{p}` |" not in page) == []


# --- against the running graph (the session `graph` fixture) -------------------------------------


def _run(args: list[str], timeout: float = 180) -> str:
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{shlex.join(args)}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.ray
def test_the_readme_calls_answer_as_it_says(graph: RunningGraph, graph_settings: Settings) -> None:
    """The frame, search and chat calls of "Try it", run as written against the graph (keys are off
    there, so the Authorization header is ignored)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    asyncio.run(ingest_help_center(graph_settings, "acme"))
    text = README.read_text()
    block = text[text.index("## Try it") :].split("```bash\n")[2].split("```")[0]
    calls = [c for c in block.split("\n\n") if c.strip()]
    assert len(calls) == 3
    replies = []
    for call in calls:
        command = "\n".join(line for line in call.splitlines() if not line.startswith("#"))
        command = command.replace("localhost:8000", graph.base_url.removeprefix("http://"))
        out = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=120, env={"KEY": "unused"}
        )
        replies.append(json.loads(out.stdout))
    frame, search, chat = replies
    assert (frame["verdict"], frame["send"], frame["reason"]) == ("processed", True, "first")
    assert search["passages"][0]["citation"].startswith("[1] Billing and plans > Refunds")
    assert chat["supportgraph"]["tier"] == "extractive" and "[1]" in chat["choices"][0]["message"]["content"]


@pytest.mark.ray
def test_example_screen_share_over_http(graph: RunningGraph) -> None:
    stream = "tenant_docs-ex_share-1.screen"
    out = _run([sys.executable, "examples/screen_share.py", "--base-url", graph.base_url, "--stream", stream])
    decisions = [line.split() for line in out.splitlines() if line.startswith("t=")]
    reasons = [d[3].removeprefix("reason=") for d in decisions]
    assert reasons == ["first", "duplicate", "duplicate", "region", "duplicate", "phash", "duplicate"]
    assert [d[2] for d in decisions].count("send=True") == 3
    assert "stream counters:" in out


@pytest.mark.ray
def test_example_openai_client(graph: RunningGraph, graph_settings: Settings) -> None:
    asyncio.run(ingest_help_center(graph_settings, "acme"))  # idempotent: the README test's tenant
    out = _run([sys.executable, "examples/openai_chat.py", "--base-url", graph.base_url, "--tenant", "acme"])
    assert "-- answered by extractive" in out and "Forgot password" in out
    streamed = re.search(r"-- streamed (\d+) pieces, (\d+) characters", out)
    assert streamed and int(streamed[2]) > 0


@pytest.mark.ray
def test_example_handle_call(graph: RunningGraph) -> None:
    """Run in this process, which is connected to the session's Ray (the script's own `ray.init` is in
    its `__main__` block)."""
    example = runpy.run_path(str(ROOT / "examples" / "handle_call.py"))
    decisions = example["main"](graph.app_name, "tenant_docs-ex_handle-1.screen")
    assert [d["reason"] for d in decisions][:3] == ["first", "duplicate", "duplicate"]
    assert [d["send"] for d in decisions] == [True, False, False, True, False, False]
