/*
 * Exact re-implementation of the part of imagehash.phash that touches every pixel:
 * Pillow's integer RGB -> L conversion followed by Pillow's fixed-point LANCZOS
 * resize to 32x32 (two 8-bit passes, each rounded and clipped to uint8).
 *
 * The filter coefficients, their bounds and the pass order are computed in Python
 * (serve_app/frames/resample.py) exactly as Pillow computes them and handed in as
 * int32 tables; this file only does the integer arithmetic, so the 32x32 result is
 * identical to Pillow's bit for bit. The DCT and median stay in Python (scipy).
 *
 * Optionally, in the same pass, the region thumbnail of serve_app/frames/region.py: over cells of
 * cell_w x cell_h pixels (edge cells are smaller), the sum of the same Pillow L values and the sum of
 * each pixel's colourfulness max(R, G, B) - min(R, G, B), accumulated from each row as it is
 * converted, so the frame is read once for both signals.
 *
 * resize_batch() releases the GIL so callers can split a batch across threads. Speed comes from
 * the compiler flags (setup.py: -O3 -march=$SUPPORTGRAPH_MARCH, "native" by default).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define PRECISION_BITS 22
#define HALF (1 << (PRECISION_BITS - 1))
#define OUT 32
#define ROWS 4 /* rows converted and resampled together */


static inline uint8_t clip8(int32_t v) {
    v >>= PRECISION_BITS; /* arithmetic shift, like Pillow's lookup index */
    return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

typedef struct {
    const int32_t *k;    /* [OUT, ksize] fixed-point weights */
    const int32_t *bnd;  /* [OUT, 2] (first input index, number of taps) */
    int ksize;
    int16_t *k_hi, *k_lo; /* k = k_hi * 2048 + k_lo, both int16: lets the dot product use 16-bit MACs */
} Filter;

/* Weights are below 2**22 in magnitude, so k >> 11 fits int16 and k & 2047 is in [0, 2048). */
static void split_weights(Filter *f, int16_t *hi, int16_t *lo) {
    for (int i = 0; i < OUT * f->ksize; i++) {
        hi[i] = (int16_t)(f->k[i] >> 11);
        lo[i] = (int16_t)(f->k[i] & 2047);
    }
    f->k_hi = hi;
    f->k_lo = lo;
}

/* Pillow: L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16, for `n` pixels. */
static void gray_row(const uint8_t *restrict rgb, int16_t *restrict out, int n) {
    for (int i = 0; i < n; i++) {
        uint32_t v = (uint32_t)rgb[3 * i] * 19595u + (uint32_t)rgb[3 * i + 1] * 38470u +
                     (uint32_t)rgb[3 * i + 2] * 7471u + 0x8000u;
        out[i] = (int16_t)(v >> 16);
    }
}

/*
 * Region cells: where the sums go (NULL: pHash only). Two channels per cell: the gray value L above and
 * the colourfulness max(R, G, B) - min(R, G, B). Rows are first added column-wise into `col` / `col_c`
 * (W-wide adds), which are reduced into the cells of their strip of `ch` rows once, when the next row
 * belongs to another strip or the frame is done.
 */
typedef struct {
    int32_t *sums, *sums_c; /* [ceil(H / ch), cols] each: luma, colourfulness */
    int cw, ch, cols;
    int32_t *col, *col_c;   /* [W] column sums of the rows seen of strip `strip` */
    uint8_t *rows8;         /* [2, ROWS, W] gray and colourfulness (uint8) of the rows being converted */
    int strip;              /* -1: nothing accumulated */
} Cells;

static void reduce_cells(const int32_t *restrict col, int32_t *restrict dst, int cols, int cw, int W) {
    for (int c = 0; c < cols; c++) {
        const int x0 = c * cw, x1 = x0 + cw < W ? x0 + cw : W;
        int32_t s = 0;
        for (int x = x0; x < x1; x++) s += col[x];
        dst[c] += s;
    }
}

static void cells_flush(Cells *cells, int W) {
    if (cells->strip < 0) return;
    const size_t at = (size_t)cells->strip * cells->cols;
    reduce_cells(cells->col, cells->sums + at, cells->cols, cells->cw, W);
    reduce_cells(cells->col_c, cells->sums_c + at, cells->cols, cells->cw, W);
    memset(cells->col, 0, (size_t)W * sizeof(int32_t));
    memset(cells->col_c, 0, (size_t)W * sizeof(int32_t));
    cells->strip = -1;
}

/* Add `nrows` rows of width W, the first at frame row `y`, from their gray and colourfulness rows. */
static void cells_add_rows(Cells *cells, const uint8_t *restrict gray, const uint8_t *restrict chroma,
                           int nrows, int y, int W) {
    for (int r = 0; r < nrows; r++) {
        const int strip = (y + r) / cells->ch;
        if (strip != cells->strip) {
            cells_flush(cells, W);
            cells->strip = strip;
        }
        const uint8_t *restrict row = gray + (size_t)r * W, *restrict crow = chroma + (size_t)r * W;
        int32_t *restrict col = cells->col, *restrict col_c = cells->col_c;
        for (int x = 0; x < W; x++) col[x] += row[x];
        for (int x = 0; x < W; x++) col_c[x] += crow[x];
    }
}

/* gray_row, and each pixel's colourfulness max(R, G, B) - min(R, G, B) into `chroma`. Two loops over the
 * same (cache-resident) pixels: the luma one works in 32-bit lanes, the colourfulness one in 8-bit lanes,
 * four times as many per vector instruction as one fused loop gets. */
static void gray_chroma_row(const uint8_t *restrict rgb, int16_t *restrict out, uint8_t *restrict gray8,
                            uint8_t *restrict chroma, int n) {
    for (int i = 0; i < n; i++) {
        const uint32_t v = ((uint32_t)rgb[3 * i] * 19595u + (uint32_t)rgb[3 * i + 1] * 38470u +
                            (uint32_t)rgb[3 * i + 2] * 7471u + 0x8000u) >> 16;
        out[i] = (int16_t)v;
        gray8[i] = (uint8_t)v;
    }
    for (int i = 0; i < n; i++) {
        const uint8_t r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
        const uint8_t hi1 = r > g ? r : g, lo1 = r < g ? r : g;
        const uint8_t hi = hi1 > b ? hi1 : b, lo = lo1 < b ? lo1 : b;
        chroma[i] = (uint8_t)(hi - lo);
    }
}

/* Sums of the cells of one strip of two uint8 rows (a, b) into `dst`, for cells 16 wide (the default). */
static void strip16_sums(const uint8_t *restrict a, const uint8_t *restrict b, int32_t *restrict dst,
                         int cols, int W) {
    const int full = W / 16;
#ifdef __SSE2__
    const __m128i zero = _mm_setzero_si128();
    for (int c = 0; c < full; c++) { /* psadbw against zero: sums of 8 bytes in each 64-bit half */
        const __m128i sa = _mm_sad_epu8(_mm_loadu_si128((const __m128i *)(a + 16 * c)), zero);
        const __m128i sb = _mm_sad_epu8(_mm_loadu_si128((const __m128i *)(b + 16 * c)), zero);
        const __m128i sum = _mm_add_epi64(sa, sb);
        dst[c] += _mm_cvtsi128_si32(sum) + _mm_cvtsi128_si32(_mm_srli_si128(sum, 8));
    }
#else
    for (int c = 0; c < full; c++) {
        uint32_t s = 0;
        for (int x = 0; x < 16; x++) s += (uint32_t)a[16 * c + x] + b[16 * c + x];
        dst[c] += (int32_t)s;
    }
#endif
    for (int c = full; c < cols; c++) {
        int32_t s = 0;
        for (int x = 16 * c; x < W; x++) s += a[x] + b[x];
        dst[c] += s;
    }
}

/* Convert `nrows` (at most ROWS) rows starting at frame row `y` to gray; with cells, add them there. */
static void convert_rows(const uint8_t *rgb, int16_t *gray, Cells *cells, int nrows, int y, int W) {
    const uint8_t *src = rgb + (size_t)y * W * 3;
    if (!cells) {
        gray_row(src, gray, W * nrows);
        return;
    }
    uint8_t *g8 = cells->rows8, *c8 = cells->rows8 + (size_t)ROWS * W;
    gray_chroma_row(src, gray, g8, c8, W * nrows);
    if (cells->cw == 16 && cells->ch == 2 && y % 2 == 0 && nrows % 2 == 0 && cells->strip < 0) {
        for (int r = 0; r < nrows; r += 2) { /* whole strips: no column sums needed */
            const size_t at = (size_t)((y + r) / 2) * cells->cols, row = (size_t)r * W;
            strip16_sums(g8 + row, g8 + row + W, cells->sums + at, cells->cols, W);
            strip16_sums(c8 + row, c8 + row + W, cells->sums_c + at, cells->cols, W);
        }
        return;
    }
    cells_add_rows(cells, g8, c8, nrows, y, W);
}

/* One output value: HALF + sum(px * (hi * 2048 + lo)), exact in int32 like Pillow's own sum. */
static int32_t dot_taps(const int16_t *restrict px, const int16_t *restrict hi,
                            const int16_t *restrict lo, int taps) {
    int32_t s_hi = 0, s_lo = 0;
    for (int t = 0; t < taps; t++) {
        s_hi += (int32_t)px[t] * hi[t];
        s_lo += (int32_t)px[t] * lo[t];
    }
    return HALF + s_hi * 2048 + s_lo;
}

/* Horizontal pass over one gray row of width W -> OUT values. */
static void hpass_row(const int16_t *row, const Filter *fx, uint8_t *out) {
    for (int xx = 0; xx < OUT; xx++) {
        const int32_t xmin = fx->bnd[2 * xx], taps = fx->bnd[2 * xx + 1];
        const size_t at = (size_t)xx * fx->ksize;
        out[xx] = clip8(dot_taps(row + xmin, fx->k_hi + at, fx->k_lo + at, taps));
    }
}

/* The same for ROWS rows at once (stride W): each weight is loaded once for all of them. */
static void hpass_rows(const int16_t *restrict rows, int W, const Filter *fx, uint8_t *restrict out) {
    for (int xx = 0; xx < OUT; xx++) {
        const int32_t xmin = fx->bnd[2 * xx], taps = fx->bnd[2 * xx + 1];
        const size_t at = (size_t)xx * fx->ksize;
        const int16_t *restrict hi = fx->k_hi + at, *restrict lo = fx->k_lo + at;
        const int16_t *p0 = rows + xmin, *p1 = p0 + W, *p2 = p1 + W, *p3 = p2 + W;
        int32_t h0 = 0, h1 = 0, h2 = 0, h3 = 0, l0 = 0, l1 = 0, l2 = 0, l3 = 0;
        for (int t = 0; t < taps; t++) {
            const int32_t a = hi[t], b = lo[t];
            h0 += p0[t] * a; l0 += p0[t] * b;
            h1 += p1[t] * a; l1 += p1[t] * b;
            h2 += p2[t] * a; l2 += p2[t] * b;
            h3 += p3[t] * a; l3 += p3[t] * b;
        }
        out[0 * OUT + xx] = clip8(HALF + h0 * 2048 + l0);
        out[1 * OUT + xx] = clip8(HALF + h1 * 2048 + l1);
        out[2 * OUT + xx] = clip8(HALF + h2 * 2048 + l2);
        out[3 * OUT + xx] = clip8(HALF + h3 * 2048 + l3);
    }
}

/* Vertical pass: column-vector accumulation over rows of an image with `cols` columns. */
static void vpass(const uint8_t *restrict img, int cols, const Filter *fy,
                      uint8_t *restrict out, int32_t *restrict acc) {
    for (int yy = 0; yy < OUT; yy++) {
        const int32_t ymin = fy->bnd[2 * yy], taps = fy->bnd[2 * yy + 1];
        const int32_t *w = fy->k + (size_t)yy * fy->ksize;
        for (int c = 0; c < cols; c++) acc[c] = HALF;
        for (int t = 0; t < taps; t++) {
            const uint8_t *r = img + (size_t)(ymin + t) * cols;
            const int32_t wt = w[t];
            for (int c = 0; c < cols; c++) acc[c] += (int32_t)r[c] * wt;
        }
        for (int c = 0; c < cols; c++) out[(size_t)yy * cols + c] = clip8(acc[c]);
    }
}

/* Vertical pass straight from gray rows (int16), used when the vertical pass runs first. */
static void vpass_gray(const int16_t *restrict img, int cols, const Filter *fy,
                           uint8_t *restrict out, int32_t *restrict acc) {
    for (int yy = 0; yy < OUT; yy++) {
        const int32_t ymin = fy->bnd[2 * yy], taps = fy->bnd[2 * yy + 1];
        const int32_t *w = fy->k + (size_t)yy * fy->ksize;
        for (int c = 0; c < cols; c++) acc[c] = HALF;
        for (int t = 0; t < taps; t++) {
            const int16_t *r = img + (size_t)(ymin + t) * cols;
            const int32_t wt = w[t];
            for (int c = 0; c < cols; c++) acc[c] += (int32_t)r[c] * wt;
        }
        for (int c = 0; c < cols; c++) out[(size_t)yy * cols + c] = clip8(acc[c]);
    }
}

/*
 * One frame. fx == NULL: no horizontal pass (W == 32); fy == NULL: no vertical pass; cells == NULL:
 * no region thumbnail. Scratch must hold H*W int16 + H*OUT bytes + max(W, OUT) int32 + W int16.
 */
static void resize_frame(const uint8_t *rgb, int H, int W, const Filter *fx, const Filter *fy,
                         int vertical_first, uint8_t *out, void *scratch, Cells *cells) {
    int16_t *gray = (int16_t *)scratch;                        /* H*W */
    uint8_t *tmp = (uint8_t *)(gray + (size_t)H * W);          /* H*OUT or OUT*W */
    int32_t *acc = (int32_t *)(tmp + (size_t)(H > OUT ? H : OUT) * (W > OUT ? W : OUT));

    if (fx && fy && vertical_first) {
        for (int y = 0; y < H; y++) convert_rows(rgb, gray + (size_t)y * W, cells, 1, y, W);
        vpass_gray(gray, W, fy, tmp, acc); /* -> OUT x W */
        int16_t *row = gray;               /* reuse as one int16 row */
        for (int yy = 0; yy < OUT; yy++) {
            for (int x = 0; x < W; x++) row[x] = tmp[(size_t)yy * W + x];
            hpass_row(row, fx, out + (size_t)yy * OUT);
        }
        return;
    }
    if (fx) {
        /* Pillow only resamples the rows the vertical pass will read. */
        int y0 = 0, y1 = H;
        if (fy) {
            y0 = fy->bnd[0];
            y1 = fy->bnd[2 * (OUT - 1)] + fy->bnd[2 * (OUT - 1) + 1];
        }
        int y = y0;
        for (; y + ROWS <= y1; y += ROWS) {
            convert_rows(rgb, gray, cells, ROWS, y, W);
            hpass_rows(gray, W, fx, tmp + (size_t)y * OUT);
        }
        for (; y < y1; y++) {
            convert_rows(rgb, gray, cells, 1, y, W);
            hpass_row(gray, fx, tmp + (size_t)y * OUT);
        }
        /* rows the resize never reads still belong to the cells */
        for (int r = 0; cells && r < y0; r++) convert_rows(rgb, gray, cells, 1, r, W);
        for (int r = y1; cells && r < H; r++) convert_rows(rgb, gray, cells, 1, r, W);
        if (fy) vpass(tmp, OUT, fy, out, acc);
        else memcpy(out, tmp, (size_t)OUT * OUT);
        return;
    }
    /* W == OUT: vertical pass only (or a plain conversion when H == OUT too). */
    for (int y = 0; y < H; y++) convert_rows(rgb, gray + (size_t)y * W, cells, 1, y, W);
    if (fy) {
        vpass_gray(gray, W, fy, out, acc);
    } else {
        for (size_t i = 0; i < (size_t)OUT * OUT; i++) out[i] = (uint8_t)gray[i];
    }
}

static int get_filter(PyObject *k_obj, PyObject *b_obj, Py_buffer *kb, Py_buffer *bb, Filter *f,
                      int *present) {
    *present = 0;
    if (k_obj == Py_None) return 0;
    if (PyObject_GetBuffer(k_obj, kb, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (PyObject_GetBuffer(b_obj, bb, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(kb);
        return -1;
    }
    if (bb->len != (Py_ssize_t)(2 * OUT * sizeof(int32_t)) || kb->len % (OUT * sizeof(int32_t))) {
        PyBuffer_Release(kb);
        PyBuffer_Release(bb);
        PyErr_SetString(PyExc_ValueError, "filter tables have the wrong size");
        return -1;
    }
    f->k = (const int32_t *)kb->buf;
    f->bnd = (const int32_t *)bb->buf;
    f->ksize = (int)(kb->len / (OUT * sizeof(int32_t)));
    f->k_hi = f->k_lo = NULL;
    *present = 1;
    return 0;
}

/*
 * resize_batch(frames, n, H, W, kx, bx, ky, by, vertical_first, out, start, stop
 *              [, cells, cell_w, cell_h])
 * cells (optional, int32 [n, 2, ceil(H / cell_h), ceil(W / cell_w)], written for frames[start:stop]):
 * the region thumbnail, per cell the sum of L and the sum of max(R, G, B) - min(R, G, B).
 */
static PyObject *resize_batch(PyObject *self, PyObject *args) {
    PyObject *frames_obj, *kx_obj, *bx_obj, *ky_obj, *by_obj, *out_obj, *cells_obj = Py_None;
    Py_ssize_t n, start, stop;
    int H, W, vertical_first, cell_w = 0, cell_h = 0;
    if (!PyArg_ParseTuple(args, "OniiOOOOpOnn|Oii", &frames_obj, &n, &H, &W, &kx_obj, &bx_obj,
                          &ky_obj, &by_obj, &vertical_first, &out_obj, &start, &stop, &cells_obj,
                          &cell_w, &cell_h))
        return NULL;
    if (H <= 0 || W <= 0 || n < 0 || start < 0 || stop > n || start > stop) {
        PyErr_SetString(PyExc_ValueError, "bad frame geometry or range");
        return NULL;
    }
    const int has_cells = cells_obj != Py_None;
    /* 255 * cell_w * cell_h must fit an int32 sum */
    if (has_cells && (cell_w < 1 || cell_h < 1 || (int64_t)cell_w * cell_h > (1 << 23))) {
        PyErr_SetString(PyExc_ValueError, "region cells must be at least 1x1 and at most 2**23 pixels");
        return NULL;
    }
    Py_buffer fb, ob, cb, kxb, bxb, kyb, byb;
    Filter fx, fy;
    Cells cells = {NULL, NULL, cell_w, cell_h, has_cells ? (W + cell_w - 1) / cell_w : 0, NULL, NULL, NULL, -1};
    const Py_ssize_t cells_per_frame =
        has_cells ? (Py_ssize_t)((H + cell_h - 1) / cell_h) * cells.cols : 0;
    int has_x = 0, has_y = 0;
    if (PyObject_GetBuffer(frames_obj, &fb, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(out_obj, &ob, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&fb);
        return NULL;
    }
    if (has_cells && PyObject_GetBuffer(cells_obj, &cb, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&fb);
        PyBuffer_Release(&ob);
        return NULL;
    }
    PyObject *result = NULL;
    if (get_filter(kx_obj, bx_obj, &kxb, &bxb, &fx, &has_x) < 0) goto done_fo;
    if (get_filter(ky_obj, by_obj, &kyb, &byb, &fy, &has_y) < 0) goto done_x;
    if (fb.len != n * (Py_ssize_t)H * W * 3 || ob.len != n * (Py_ssize_t)OUT * OUT) {
        PyErr_SetString(PyExc_ValueError, "frame or output buffer has the wrong size");
        goto done_y;
    }
    if (has_cells && cb.len != 2 * n * cells_per_frame * (Py_ssize_t)sizeof(int32_t)) {
        PyErr_SetString(PyExc_ValueError, "region cell buffer has the wrong size");
        goto done_y;
    }
    size_t rows = (size_t)(H > OUT ? H : OUT), cols = (size_t)(W > OUT ? W : OUT);
    size_t scratch_len = (size_t)H * W * 2 + rows * cols + cols * 4 + 64;
    void *scratch = malloc(scratch_len);
    int16_t *split = has_x ? malloc((size_t)OUT * fx.ksize * 2 * sizeof(int16_t)) : NULL;
    cells.col = has_cells ? calloc((size_t)W * 2, sizeof(int32_t)) : NULL;
    cells.col_c = cells.col ? cells.col + W : NULL;
    cells.rows8 = has_cells ? malloc((size_t)W * ROWS * 2) : NULL;
    if (!scratch || (has_x && !split) || (has_cells && (!cells.col || !cells.rows8))) {
        free(scratch);
        free(split);
        free(cells.col);
        free(cells.rows8);
        PyErr_NoMemory();
        goto done_y;
    }
    if (has_x) split_weights(&fx, split, split + (size_t)OUT * fx.ksize);
    const uint8_t *src = (const uint8_t *)fb.buf;
    uint8_t *dst = (uint8_t *)ob.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = start; i < stop; i++) {
        if (has_cells) {
            cells.sums = (int32_t *)cb.buf + (size_t)i * 2 * cells_per_frame;
            cells.sums_c = cells.sums + cells_per_frame;
            memset(cells.sums, 0, (size_t)cells_per_frame * 2 * sizeof(int32_t));
        }
        resize_frame(src + (size_t)i * H * W * 3, H, W, has_x ? &fx : NULL, has_y ? &fy : NULL,
                     vertical_first, dst + (size_t)i * OUT * OUT, scratch, has_cells ? &cells : NULL);
        if (has_cells) cells_flush(&cells, W);
    }
    Py_END_ALLOW_THREADS
    free(scratch);
    free(split);
    free(cells.col);
    free(cells.rows8);
    result = Py_None;
    Py_INCREF(result);
done_y:
    if (has_y) {
        PyBuffer_Release(&kyb);
        PyBuffer_Release(&byb);
    }
done_x:
    if (has_x) {
        PyBuffer_Release(&kxb);
        PyBuffer_Release(&bxb);
    }
done_fo:
    PyBuffer_Release(&fb);
    PyBuffer_Release(&ob);
    if (has_cells) PyBuffer_Release(&cb);
    return result;
}

static PyMethodDef methods[] = {
    {"resize_batch", resize_batch, METH_VARARGS,
     "resize_batch(frames, n, H, W, kx, bx, ky, by, vertical_first, out, start, stop"
     "[, cells, cell_w, cell_h]): Pillow-exact RGB->L + LANCZOS 32x32 for frames[start:stop] and, "
     "optionally, luma and colourfulness sums per cell_w x cell_h cell; GIL released."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_phash_native",
                                    "Pillow-exact gray + LANCZOS 32x32 kernel, with luma and colourfulness cell sums.", -1, methods};

PyMODINIT_FUNC PyInit__phash_native(void) { return PyModule_Create(&module); }
