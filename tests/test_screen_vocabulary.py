"""Each tenant's ingested help center is its OCR vocabulary: a product word only one tenant documents is
split out of a glued OCR run for that tenant alone, and an ingest refreshes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deployments.screen_reader import ScreenReaderDeployment, tenant_of
from serve_app.knowledge.ingest import ingest_path
from serve_app.screen.normalize import Vocabulary
from serve_app.screen.ocr import OcrLine
from serve_app.screen.tenant_vocabulary import TenantVocabularies
from serve_app.settings import ScreenSettings
from tests.conftest import LiveDB

GLUED = "Openthequuxboardpanel"


class _Glued:
    """An engine that reads every image as the glued line."""

    def read(self, images: list[np.ndarray], areas: list | None = None) -> list[list[OcrLine]]:
        return [[OcrLine(GLUED, (2, 2, 60, 12), 0.99)] for _ in images]


def _help_center(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "panels.md").write_text(f"# Panels\n\n{text}\n", encoding="utf-8")
    return root


def test_a_tenants_product_word_splits_only_with_its_own_help_center(
    live_db: LiveDB, embedder, kb_settings, tmp_path: Path
) -> None:
    acme = _help_center(
        tmp_path / "acme", "Open the Quuxboard panel to see every board. The panel lists boards."
    )
    other = _help_center(
        tmp_path / "other", "Open the settings panel to see your account. The panel lists options."
    )
    base = Vocabulary()
    assert "quuxboard" not in base

    async def scenario() -> tuple:
        await ingest_path(live_db.db, embedder, acme, "vocab-acme")
        await ingest_path(live_db.db, embedder, other, "vocab-other")
        vocabularies = TenantVocabularies(live_db.db, base, refresh_s=0)
        acme_vocab = await vocabularies.get("vocab-acme")
        other_vocab = await vocabularies.get("vocab-other")
        unchanged = await vocabularies.get("vocab-acme")  # nothing ingested since: not rebuilt
        builds = vocabularies.builds
        # the other tenant documents the Quuxboard too: its vocabulary follows the ingest
        _help_center(other, "")
        (other / "boards.md").write_text("# Boards\n\nThe Quuxboard shows every board.\n", encoding="utf-8")
        await ingest_path(live_db.db, embedder, other, "vocab-other")
        refreshed = await vocabularies.get("vocab-other")
        # through the deployment: a read of an acme stream is normalized with acme's words
        dep = ScreenReaderDeployment(
            ScreenSettings(warm=False), kb_settings.db, kb_settings.state_dir, engine_factory=_Glued
        )
        await dep.vocabularies.get("vocab-acme")  # built (a read waits for it only 0.1 s)
        frame = np.random.default_rng(1).integers(0, 255, (40, 200, 3), dtype=np.uint8)
        for stream in ("tenant_vocab-acme_desk.screen", "tenant_vocab-nobody_desk.screen"):
            await dep.read(stream, frame)
        read_acme = (await dep.peek("tenant_vocab-acme_desk.screen"))["current"]
        read_nobody = (await dep.peek("tenant_vocab-nobody_desk.screen"))["current"]
        await dep.close()
        return acme_vocab, other_vocab, unchanged, builds, refreshed, read_acme, read_nobody

    acme_vocab, other_vocab, unchanged, builds, refreshed, read_acme, read_nobody = live_db.run(scenario())
    from serve_app.screen.normalize import normalize_line

    assert normalize_line(GLUED, acme_vocab) == "Open the quuxboard panel"
    assert normalize_line(GLUED, other_vocab) == GLUED  # row-level security: acme's words are not its
    assert normalize_line(GLUED, base) == GLUED
    assert unchanged is acme_vocab and builds == 2
    assert normalize_line(GLUED, refreshed) == "Open the quuxboard panel"
    assert read_acme == ["Open the quuxboard panel"] and read_nobody == [GLUED]


def test_tenant_of_streams_and_chat_keys() -> None:
    assert tenant_of("tenant_acme_desk-1.screen") == "acme"
    assert tenant_of("chat:acme:1234") == "acme"
    assert tenant_of("chat:Not A Tenant:1") is None and tenant_of("nonsense") is None


def test_no_database_gives_the_base_vocabulary() -> None:
    import asyncio

    base = Vocabulary()
    assert asyncio.run(TenantVocabularies(None, base).get("acme")) is base
