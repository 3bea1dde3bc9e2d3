"""The OCR engine on onnxruntime's CUDA execution provider reads what the CPU reads (skipped where
onnxruntime offers no CUDA provider: the onnxruntime-gpu wheel and a GPU are needed)."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from serve_app.screen.ocr import OcrEngine
from supportgraph_tools.screen.screens import ERRORS, error_screen

pytestmark = pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(), reason="no CUDA execution provider"
)


def test_cuda_reads_the_toast_the_cpu_reads() -> None:
    shot = error_screen(ERRORS[0], seed=7, surface="toast")
    x, y, w, h = shot.box
    crop = shot.after[y : y + h, x : x + w]
    gpu, cpu = OcrEngine(device="cuda"), OcrEngine(device="cpu")
    assert gpu.device == "cuda" and cpu.device == "cpu"
    assert [ln.text for ln in gpu.read([crop])[0]] == [ln.text for ln in cpu.read([crop])[0]]
