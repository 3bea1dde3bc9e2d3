"""PP-OCRv4 text detection + recognition on onnxruntime, with no OpenCV.

The weights are the ONNX files shipped inside the `rapidocr-onnxruntime` wheel (found on disk with
`importlib.util.find_spec`, never imported: its package imports cv2, and opencv-python's cv2 needs
libGL.so.1, which a fresh Debian or a slim container image lacks). Pre- and post-processing are numpy,
scipy and Pillow, tuned for screens: text is horizontal, so detection regions are axis-aligned boxes
(the DB probability map thresholded, connected components, each box grown by the DB "unclip" margin),
and recognition reads each box at 48 px height (CTC greedy decoding over the model's own character
list, kept in its ONNX metadata).

`OcrEngine.read(images, areas)` reads a batch of RGB uint8 arrays; recognition runs the text lines of
the whole batch together, in calls of lines of like width (padding costs as much as text on a CPU), and
only for lines centred in `areas` where given (a changed box read with a margin). Sessions run one
onnxruntime thread each on 2 cores (`default_threads`), pool threads sleeping rather than spinning.
`stages` holds the last read's milliseconds per stage. CUDA is used where onnxruntime offers it
(`device="auto"`).
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
import time
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


Box = tuple[int, int, int, int]


def centre_inside(box: Box, area: Box) -> bool:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return area[0] <= cx <= area[0] + area[2] and area[1] <= cy <= area[1] + area[3]


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


def width_groups(widths: list[int], max_batch: int = 8, waste: float = 0.15) -> list[list[int]]:
    """Indices of `widths` grouped for batched calls: sorted by width, a group grows while its padding
    (every row padded to the widest) stays within `waste` of its pixels and it holds <= `max_batch`."""
    groups: list[list[int]] = []
    total = 0
    for i in sorted(range(len(widths)), key=widths.__getitem__):
        group = groups[-1] if groups else None
        if (
            group is None
            or len(group) >= max_batch
            or widths[i] * (len(group) + 1) > (1 + waste) * (total + widths[i])
        ):
            groups.append([i])
            total = widths[i]
        else:
            group.append(i)
            total += widths[i]
    return groups


def default_threads() -> int:
    """onnxruntime threads per session, sized to the cores this process may use: half of them, 1 to 4.

    Detection and recognition run one after the other on small inputs; on 2 cores one thread read the
    eval's regions about 1.8x faster than two (`benchmarks/ocr_bench.py`), the second core being
    taken by the rest of the graph.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores // 2))


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
        rec_min_width: int = 320,
        rec_batch: int = 8,
        rec_waste: float = 0.15,
        spinning: bool = False,
        model_path: Path | None = None,
    ):
        import onnxruntime as ort

        folder = model_path or model_dir()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle pool threads sleep instead of spinning: the cores are shared with the rest of the graph
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.log_severity_level = 3
        self.threads = options.intra_op_num_threads
        self.providers = providers_for(device)
        self.det = ort.InferenceSession(str(folder / DET_MODEL), options, providers=self.providers)
        self.rec = ort.InferenceSession(str(folder / REC_MODEL), options, providers=self.providers)
        chars = self.rec.get_modelmeta().custom_metadata_map["character"].splitlines()
        self.charset = np.array(["", *chars, " "], dtype=object)  # CTC blank first, space last
        self.det_scale, self.det_max_side = det_scale, det_max_side
        self.det_threshold, self.box_threshold, self.unclip = det_threshold, box_threshold, unclip
        self.rec_min_width, self.rec_batch, self.rec_waste = rec_min_width, rec_batch, rec_waste
        self._local = threading.local()  # reads may run in several threads (regions beside frames)

    @property
    def device(self) -> str:
        return "cuda" if self.det.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    @property
    def stages(self) -> dict[str, float]:
        """ms per stage of this thread's last `read`."""
        if not hasattr(self._local, "stages"):
            self._local.stages = {}
        return self._local.stages

    def _stage(self, name: str, seconds: float) -> None:
        self.stages[name] = self.stages.get(name, 0.0) + seconds * 1000

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
        t0 = time.perf_counter()
        x, sy, sx = self._det_input(rgb)
        t1 = time.perf_counter()
        prob = self.det.run(None, {self.det.get_inputs()[0].name: x})[0][0, 0]
        t2 = time.perf_counter()
        boxes = self._boxes(prob, rgb.shape, sy, sx)
        self._stage("det_pre", t1 - t0)
        self._stage("det_infer", t2 - t1)
        self._stage("det_post", time.perf_counter() - t2)
        return boxes

    def _boxes(
        self, prob: np.ndarray, shape: tuple[int, ...], sy: float, sx: float
    ) -> list[tuple[int, int, int, int]]:
        mask = prob > self.det_threshold
        mask = ndimage.binary_dilation(mask, np.ones((2, 2), bool))
        labels, _ = ndimage.label(mask)
        boxes = []
        h, w = shape[:2]
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

    def recognize(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """(text, mean character probability) per RGB crop of one text line.

        Each crop is scaled to 48 px high at its own aspect; crops of like width share a call
        (`width_groups`), so little of a call is padding: on a CPU a batch costs about the sum of its
        rows, padding included.
        """
        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        widths = [self.rec_width(crop) for crop in crops]
        for group in width_groups(widths, self.rec_batch, self.rec_waste):
            t0 = time.perf_counter()
            width = max(widths[i] for i in group)
            x = np.zeros((len(group), 3, REC_HEIGHT, width), np.float32)
            for row, i in enumerate(group):
                img = Image.fromarray(crops[i]).resize((widths[i], REC_HEIGHT), Image.BILINEAR)
                x[row, :, :, : widths[i]] = (np.asarray(img, np.float32)[:, :, ::-1] / 127.5 - 1.0).transpose(
                    2, 0, 1
                )
            t1 = time.perf_counter()
            probs = self.rec.run(None, {self.rec.get_inputs()[0].name: x})[0]
            t2 = time.perf_counter()
            for row, i in enumerate(group):
                out[i] = self._ctc(probs[row])
            self._stage("rec_pre", t1 - t0)
            self._stage("rec_infer", t2 - t1)
            self._stage("rec_decode", time.perf_counter() - t2)
        return out

    def rec_width(self, crop: np.ndarray) -> int:
        """A crop's width when read: 48 px high at its aspect, a multiple of 8, at least `rec_min_width`."""
        width = math.ceil(REC_HEIGHT * crop.shape[1] / max(1, crop.shape[0]) / 8) * 8
        return max(self.rec_min_width, width)

    def _ctc(self, probs: np.ndarray) -> tuple[str, float]:
        idx = probs.argmax(axis=1)
        best = probs.max(axis=1)
        keep = idx != 0
        keep[1:] &= idx[1:] != idx[:-1]
        if not keep.any():
            return "", 0.0
        return "".join(self.charset[idx[keep]]), float(best[keep].mean())

    # both ------------------------------------------------------------------------------------------

    def read(self, images: list[np.ndarray], areas: list[Box | None] | None = None) -> list[list[OcrLine]]:
        """Lines per image (detection per image, recognition of every line of the batch together).

        `areas[n]` (image pixels), where given, limits image n to the lines whose centre lies in it:
        the changed box of a crop read with a margin, so text of the page around it that the margin
        catches (often cut, "ent", "drel") is neither recognized nor reported.
        """
        self._local.stages = {}
        areas = areas or [None] * len(images)
        boxes = [self.detect(img) for img in images]
        t0 = time.perf_counter()
        crops, owners = [], []
        for n, (img, found, area) in enumerate(zip(images, boxes, areas, strict=True)):
            for x, y, w, h in found:
                if area is not None and not centre_inside((x, y, w, h), area):
                    continue
                crops.append(np.ascontiguousarray(img[y : y + h, x : x + w]))
                owners.append((n, (x, y, w, h)))
        self._stage("crops", time.perf_counter() - t0)
        texts = self.recognize(crops) if crops else []
        lines: list[list[OcrLine]] = [[] for _ in images]
        for (n, box), (text, conf) in zip(owners, texts, strict=True):
            if text.strip():
                lines[n].append(OcrLine(text.strip(), box, round(conf, 4)))
        return lines
