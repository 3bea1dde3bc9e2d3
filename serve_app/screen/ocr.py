"""PP-OCRv4 text detection + recognition on onnxruntime, with no OpenCV.

The weights are the ONNX files shipped inside the `rapidocr-onnxruntime` wheel (found on disk with
`importlib.util.find_spec`, never imported: its package imports cv2, and opencv-python's cv2 needs
libGL.so.1, which a fresh Debian or a slim container image lacks). Pre- and post-processing are numpy,
scipy and Pillow, tuned for screens: text is horizontal, so detection regions are axis-aligned boxes
(the DB probability map thresholded, connected components, each box grown by the DB "unclip" margin),
and recognition reads each box at 48 px height (CTC greedy decoding over the model's own character
list, kept in its ONNX metadata).

`OcrEngine.read(images)` reads a batch of RGB uint8 arrays; recognition runs the text lines of the whole
batch together, sorted by width. CUDA is used where onnxruntime offers it (`device="auto"`).
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

DET_MODEL = "ch_PP-OCRv4_det_infer.onnx"
REC_MODEL = "ch_PP-OCRv4_rec_infer.onnx"
REC_HEIGHT = 48


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: tuple[int, int, int, int]  # x, y, w, h in the pixels of the image it was read from
    confidence: float


def reading_order(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Rows top to bottom (boxes whose centres lie within half a line height), each left to right."""
    rows: list[list[tuple[int, int, int, int]]] = []
    for box in sorted(boxes, key=lambda b: b[1] + b[3] / 2):
        centre = box[1] + box[3] / 2
        if rows and abs(centre - (rows[-1][0][1] + rows[-1][0][3] / 2)) <= rows[-1][0][3] / 2:
            rows[-1].append(box)
        else:
            rows.append([box])
    return [b for row in rows for b in sorted(row, key=lambda b: b[0])]


def model_dir() -> Path:
    """The folder of the ONNX weights in the installed `rapidocr-onnxruntime` wheel (not imported)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("rapidocr-onnxruntime is not installed: it ships the OCR weights")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def providers_for(device: str) -> list[str]:
    """onnxruntime execution providers: CUDA first where asked for (or `auto` and available)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OcrEngine:
    """Text lines with boxes and confidences from RGB frames (or crops of them)."""

    def __init__(
        self,
        device: str = "auto",
        threads: int | None = None,
        det_scale: float = 1.5,
        det_max_side: int = 1600,
        det_threshold: float = 0.3,
        box_threshold: float = 0.5,
        unclip: float = 1.6,
        model_path: Path | None = None,
    ):
        import onnxruntime as ort

        folder = model_path or model_dir()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.providers = providers_for(device)
        self.det = ort.InferenceSession(str(folder / DET_MODEL), options, providers=self.providers)
        self.rec = ort.InferenceSession(str(folder / REC_MODEL), options, providers=self.providers)
        chars = self.rec.get_modelmeta().custom_metadata_map["character"].splitlines()
        self.charset = np.array(["", *chars, " "], dtype=object)  # CTC blank first, space last
        self.det_scale, self.det_max_side = det_scale, det_max_side
        self.det_threshold, self.box_threshold, self.unclip = det_threshold, box_threshold, unclip

    @property
    def device(self) -> str:
        return "cuda" if self.det.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    # detection -------------------------------------------------------------------------------------

    def _det_input(self, rgb: np.ndarray) -> tuple[np.ndarray, float, float]:
        h, w = rgb.shape[:2]
        scale = min(self.det_scale, self.det_max_side / max(h, w))
        th = max(32, round(h * scale / 32) * 32)
        tw = max(32, round(w * scale / 32) * 32)
        img = np.asarray(Image.fromarray(rgb).resize((tw, th), Image.BILINEAR), dtype=np.float32)
        x = (img[:, :, ::-1] / 127.5 - 1.0).transpose(2, 0, 1)[None]  # BGR, as PaddleOCR trained it
        return np.ascontiguousarray(x), h / th, w / tw

    def detect(self, rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Axis-aligned text boxes (x, y, w, h) in the image's pixels, top to bottom, left to right."""
        x, sy, sx = self._det_input(rgb)
        prob = self.det.run(None, {self.det.get_inputs()[0].name: x})[0][0, 0]
        mask = prob > self.det_threshold
        mask = ndimage.binary_dilation(mask, np.ones((2, 2), bool))
        labels, _ = ndimage.label(mask)
        boxes = []
        h, w = rgb.shape[:2]
        for n, sl in enumerate(ndimage.find_objects(labels), 1):
            if sl is None:
                continue
            ys, xs = sl
            bh, bw = ys.stop - ys.start, xs.stop - xs.start
            if min(bh, bw) < 3:
                continue
            score = float(prob[sl][labels[sl] == n].mean())
            if score < self.box_threshold:
                continue
            grow = bh * bw * self.unclip / (2 * (bh + bw))  # DB's unclip distance for a rectangle
            x0 = max(0, int((xs.start - grow) * sx))
            y0 = max(0, int((ys.start - grow) * sy))
            x1 = min(w, math.ceil((xs.stop + grow) * sx))
            y1 = min(h, math.ceil((ys.stop + grow) * sy))
            if x1 - x0 >= 4 and y1 - y0 >= 4:
                boxes.append((x0, y0, x1 - x0, y1 - y0))
        return reading_order(boxes)

    # recognition -----------------------------------------------------------------------------------

    def recognize(self, crops: list[np.ndarray], batch: int = 8) -> list[tuple[str, float]]:
        """(text, mean character probability) per RGB crop of one text line."""
        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / max(1, crops[i].shape[0]))
        for start in range(0, len(order), batch):
            chunk = order[start : start + batch]
            widths = [
                max(8, math.ceil(REC_HEIGHT * crops[i].shape[1] / max(1, crops[i].shape[0]))) for i in chunk
            ]
            width = max(320, max(widths))
            x = np.zeros((len(chunk), 3, REC_HEIGHT, width), np.float32)
            for row, (i, cw) in enumerate(zip(chunk, widths, strict=True)):
                img = Image.fromarray(crops[i]).resize((cw, REC_HEIGHT), Image.BILINEAR)
                x[row, :, :, :cw] = (np.asarray(img, np.float32)[:, :, ::-1] / 127.5 - 1.0).transpose(2, 0, 1)
            probs = self.rec.run(None, {self.rec.get_inputs()[0].name: x})[0]
            for row, i in enumerate(chunk):
                out[i] = self._ctc(probs[row])
        return out

    def _ctc(self, probs: np.ndarray) -> tuple[str, float]:
        idx = probs.argmax(axis=1)
        best = probs.max(axis=1)
        keep = idx != 0
        keep[1:] &= idx[1:] != idx[:-1]
        if not keep.any():
            return "", 0.0
        return "".join(self.charset[idx[keep]]), float(best[keep].mean())

    # both ------------------------------------------------------------------------------------------

    def read(self, images: list[np.ndarray]) -> list[list[OcrLine]]:
        """Lines per image (detection per image, recognition of every line of the batch together)."""
        boxes = [self.detect(img) for img in images]
        crops, owners = [], []
        for n, (img, found) in enumerate(zip(images, boxes, strict=True)):
            for x, y, w, h in found:
                crops.append(np.ascontiguousarray(img[y : y + h, x : x + w]))
                owners.append((n, (x, y, w, h)))
        texts = self.recognize(crops) if crops else []
        lines: list[list[OcrLine]] = [[] for _ in images]
        for (n, box), (text, conf) in zip(owners, texts, strict=True):
            if text.strip():
                lines[n].append(OcrLine(text.strip(), box, round(conf, 4)))
        return lines
