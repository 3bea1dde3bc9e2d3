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
 * The same pass also runs from planes (serve_app/frames/planes.py): the luma plane instead of RGB, the
 * colourfulness cells added up from 2x2 block sums a client computed with planes_batch(). And
 * region_observe() is RegionDetector.observe (serve_app/frames/region.py) in C, value for value.
 *
 * resize_batch() releases the GIL so callers can split a batch across threads. Speed comes from
 * the compiler flags (setup.py: -O3 -march=$SUPPORTGRAPH_MARCH, "native" by default).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
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
        const uint8_t *restrict row = gray + (size_t)r * W, *restrict crow = chroma ? chroma + (size_t)r * W : NULL;
        int32_t *restrict col = cells->col, *restrict col_c = cells->col_c;
        for (int x = 0; x < W; x++) col[x] += row[x];
        if (chroma)
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

/* Convert `nrows` (at most ROWS) rows starting at frame row `y` to gray; with cells, add them there.
 * channels 3: RGB pixels (gray and colourfulness computed here); channels 1: the gray (luma) plane
 * itself, whose cells get the luma sums only (the colourfulness comes from the colour plane). */
static void convert_rows(const uint8_t *rgb, int channels, int16_t *gray, Cells *cells, int nrows, int y,
                         int W) {
    const uint8_t *src = rgb + (size_t)y * W * channels;
    if (channels == 1) {
        for (size_t i = 0; i < (size_t)W * nrows; i++) gray[i] = src[i];
        if (!cells) return;
        if (cells->cw == 16 && cells->ch == 2 && y % 2 == 0 && nrows % 2 == 0 && cells->strip < 0) {
            for (int r = 0; r < nrows; r += 2) {
                const size_t at = (size_t)((y + r) / 2) * cells->cols, row = (size_t)r * W;
                strip16_sums(src + row, src + row + W, cells->sums + at, cells->cols, W);
            }
            return;
        }
        cells_add_rows(cells, src, NULL, nrows, y, W);
        return;
    }
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

/* Vertical pass: column-vector accumulation over rows of an image with `cols` columns whose pixels are
   `T`: `vpass` reads the uint8 rows a horizontal pass wrote, `vpass_gray` the gray rows (int16) straight,
   used when the vertical pass runs first. One body, so the two stay the same arithmetic. */
#define DEFINE_VPASS(name, T)                                                                    \
    static void name(const T *restrict img, int cols, const Filter *fy, uint8_t *restrict out,  \
                     int32_t *restrict acc) {                                                    \
        for (int yy = 0; yy < OUT; yy++) {                                                       \
            const int32_t ymin = fy->bnd[2 * yy], taps = fy->bnd[2 * yy + 1];                    \
            const int32_t *w = fy->k + (size_t)yy * fy->ksize;                                   \
            for (int c = 0; c < cols; c++) acc[c] = HALF;                                        \
            for (int t = 0; t < taps; t++) {                                                     \
                const T *r = img + (size_t)(ymin + t) * cols;                                    \
                const int32_t wt = w[t];                                                         \
                for (int c = 0; c < cols; c++) acc[c] += (int32_t)r[c] * wt;                     \
            }                                                                                    \
            for (int c = 0; c < cols; c++) out[(size_t)yy * cols + c] = clip8(acc[c]);           \
        }                                                                                        \
    }
DEFINE_VPASS(vpass, uint8_t)
DEFINE_VPASS(vpass_gray, int16_t)
#undef DEFINE_VPASS

/*
 * One frame. fx == NULL: no horizontal pass (W == 32); fy == NULL: no vertical pass; cells == NULL:
 * no region thumbnail. Scratch must hold H*W int16 + H*OUT bytes + max(W, OUT) int32 + W int16.
 */
static void resize_frame(const uint8_t *rgb, int channels, int H, int W, const Filter *fx, const Filter *fy,
                         int vertical_first, uint8_t *out, void *scratch, Cells *cells) {
    int16_t *gray = (int16_t *)scratch;                        /* H*W */
    uint8_t *tmp = (uint8_t *)(gray + (size_t)H * W);          /* H*OUT or OUT*W */
    int32_t *acc = (int32_t *)(tmp + (size_t)(H > OUT ? H : OUT) * (W > OUT ? W : OUT));

    if (fx && fy && vertical_first) {
        for (int y = 0; y < H; y++) convert_rows(rgb, channels, gray + (size_t)y * W, cells, 1, y, W);
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
            convert_rows(rgb, channels, gray, cells, ROWS, y, W);
            hpass_rows(gray, W, fx, tmp + (size_t)y * OUT);
        }
        for (; y < y1; y++) {
            convert_rows(rgb, channels, gray, cells, 1, y, W);
            hpass_row(gray, fx, tmp + (size_t)y * OUT);
        }
        /* rows the resize never reads still belong to the cells */
        for (int r = 0; cells && r < y0; r++) convert_rows(rgb, channels, gray, cells, 1, r, W);
        for (int r = y1; cells && r < H; r++) convert_rows(rgb, channels, gray, cells, 1, r, W);
        if (fy) vpass(tmp, OUT, fy, out, acc);
        else memcpy(out, tmp, (size_t)OUT * OUT);
        return;
    }
    /* W == OUT: vertical pass only (or a plain conversion when H == OUT too). */
    for (int y = 0; y < H; y++) convert_rows(rgb, channels, gray + (size_t)y * W, cells, 1, y, W);
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
    PyObject *color_obj = Py_None;
    Py_ssize_t n, start, stop;
    int H, W, vertical_first, cell_w = 0, cell_h = 0;
    if (!PyArg_ParseTuple(args, "OniiOOOOpOnn|OiiO", &frames_obj, &n, &H, &W, &kx_obj, &bx_obj,
                          &ky_obj, &by_obj, &vertical_first, &out_obj, &start, &stop, &cells_obj,
                          &cell_w, &cell_h, &color_obj))
        return NULL;
    /* planes: frames is the luma plane [n, H, W], color the colourfulness sums of 2x2 blocks */
    const int planes = color_obj != Py_None, channels = planes ? 1 : 3;
    const int half_h = (H + 1) / 2, half_w = (W + 1) / 2;
    if (planes && cells_obj != Py_None && (cell_h != 2 || cell_w % 2)) {
        PyErr_SetString(PyExc_ValueError, "planes need region cells 2 pixels tall and an even number wide");
        return NULL;
    }
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
    Py_buffer fb, ob, cb, kxb, bxb, kyb, byb, colb;
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
    if (planes && PyObject_GetBuffer(color_obj, &colb, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&fb);
        PyBuffer_Release(&ob);
        if (has_cells) PyBuffer_Release(&cb);
        return NULL;
    }
    if (planes && ((uintptr_t)colb.buf % sizeof(uint16_t)) != 0) {  /* read as uint16_t below */
        PyErr_SetString(PyExc_ValueError, "color plane is not aligned to 2 bytes");
        PyBuffer_Release(&fb);
        PyBuffer_Release(&ob);
        if (has_cells) PyBuffer_Release(&cb);
        PyBuffer_Release(&colb);
        return NULL;
    }
    PyObject *result = NULL;
    if (get_filter(kx_obj, bx_obj, &kxb, &bxb, &fx, &has_x) < 0) goto done_fo;
    if (get_filter(ky_obj, by_obj, &kyb, &byb, &fy, &has_y) < 0) goto done_x;
    if (fb.len != n * (Py_ssize_t)H * W * channels || ob.len != n * (Py_ssize_t)OUT * OUT ||
        (planes && colb.len != n * (Py_ssize_t)half_h * half_w * 2)) {
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
        resize_frame(src + (size_t)i * H * W * channels, channels, H, W, has_x ? &fx : NULL,
                     has_y ? &fy : NULL, vertical_first, dst + (size_t)i * OUT * OUT, scratch,
                     has_cells ? &cells : NULL);
        if (has_cells) cells_flush(&cells, W);
        if (planes && has_cells) { /* colourfulness per cell: the 2x2 block sums of its two rows, cell_w / 2 of them */
            const uint16_t *color = (const uint16_t *)colb.buf + (size_t)i * half_h * half_w;
            const int per = cell_w / 2;
            for (int r = 0; r < half_h; r++) {
                const uint16_t *row = color + (size_t)r * half_w;
                int32_t *to = cells.sums_c + (size_t)r * cells.cols;
                for (int c = 0; c < cells.cols; c++) {
                    const int b0 = c * per, b1 = b0 + per < half_w ? b0 + per : half_w;
                    int32_t acc = 0;
                    for (int b = b0; b < b1; b++) acc += row[b];
                    to[c] = acc;
                }
            }
        }
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
    if (planes) PyBuffer_Release(&colb);
    return result;
}

/*
 * planes_batch(frames, n, H, W, luma, color, start, stop): what the dedup reads of uint8 RGB frames
 * [n, H, W, 3], for frames[start:stop]: the luma plane uint8 [n, H, W] (Pillow's L, as above) and the
 * colourfulness max(R, G, B) - min(R, G, B) summed over blocks of 2x2 pixels (the last row and column
 * of blocks may be smaller), uint16 [n, ceil(H / 2), ceil(W / 2)]. GIL released.
 */
static PyObject *planes_batch(PyObject *self, PyObject *args) {
    PyObject *frames_obj, *luma_obj, *color_obj;
    Py_ssize_t n, start, stop;
    int H, W;
    if (!PyArg_ParseTuple(args, "OniiOOnn", &frames_obj, &n, &H, &W, &luma_obj, &color_obj, &start, &stop))
        return NULL;
    if (H <= 0 || W <= 0 || n < 0 || start < 0 || stop > n || start > stop) {
        PyErr_SetString(PyExc_ValueError, "bad frame geometry or range");
        return NULL;
    }
    const int hh = (H + 1) / 2, hw = (W + 1) / 2;
    Py_buffer fb, lb, cb;
    if (PyObject_GetBuffer(frames_obj, &fb, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(luma_obj, &lb, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&fb);
        return NULL;
    }
    if (PyObject_GetBuffer(color_obj, &cb, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&fb);
        PyBuffer_Release(&lb);
        return NULL;
    }
    PyObject *result = NULL;
    uint8_t *chroma = NULL;
    int16_t *gray = NULL;
    if (fb.len != n * (Py_ssize_t)H * W * 3 || lb.len != n * (Py_ssize_t)H * W ||
        cb.len != n * (Py_ssize_t)hh * hw * 2) {
        PyErr_SetString(PyExc_ValueError, "frame, luma or colour buffer has the wrong size");
        goto done;
    }
    chroma = malloc((size_t)2 * W);
    gray = malloc((size_t)W * sizeof(int16_t));
    if (!chroma || !gray) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = start; i < stop; i++) {
        const uint8_t *rgb = (const uint8_t *)fb.buf + (size_t)i * H * W * 3;
        uint8_t *luma = (uint8_t *)lb.buf + (size_t)i * H * W;
        uint16_t *color = (uint16_t *)cb.buf + (size_t)i * hh * hw;
        for (int y = 0; y < H; y += 2) {
            const int rows = y + 1 < H ? 2 : 1;
            for (int r = 0; r < rows; r++)
                gray_chroma_row(rgb + (size_t)(y + r) * W * 3, gray, luma + (size_t)(y + r) * W,
                                chroma + (size_t)r * W, W);
            uint16_t *to = color + (size_t)(y / 2) * hw;
            const uint8_t *c0 = chroma, *c1 = chroma + W;
            for (int b = 0; b < W / 2; b++) {
                uint16_t acc = (uint16_t)(c0[2 * b] + c0[2 * b + 1]);
                if (rows == 2) acc = (uint16_t)(acc + c1[2 * b] + c1[2 * b + 1]);
                to[b] = acc;
            }
            if (W % 2) to[hw - 1] = (uint16_t)(c0[W - 1] + (rows == 2 ? c1[W - 1] : 0));
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    free(chroma);
    free(gray);
    PyBuffer_Release(&fb);
    PyBuffer_Release(&lb);
    PyBuffer_Release(&cb);
    return result;
}

/* ---- region detector (serve_app/frames/region.py: RegionDetector.observe, the numpy definition) ----
 *
 * The same arithmetic in the same types as the numpy code, so every value and every decision is equal:
 * float64 for tile and strip means (int32 / float32 promotes to float64 there), float32 for window means
 * and differences, comparisons against a Python float threshold done in float32 (NumPy's weak scalars),
 * the per-strip window sums added in numpy's doubling order (they are not integers there), and
 * 8-connected components with their bounding boxes (what scipy.ndimage.label/find_objects give).
 */

/* Scratch of the calling thread, kept between calls (a fresh malloc of this size is an mmap whose pages
 * fault in on every call: that alone cost more than the detector's arithmetic). Grows, never shrinks. */
static _Thread_local char *tl_scratch = NULL;
static _Thread_local size_t tl_scratch_len = 0;

static void *thread_scratch(size_t len) {
    if (len > tl_scratch_len) {
        char *grown = realloc(tl_scratch, len);
        if (!grown) return NULL;
        tl_scratch = grown;
        tl_scratch_len = len;
    }
    return tl_scratch;
}

/* rint() for 0 <= x < 2**51 in the default rounding mode (half to even), without SSE4.1: adding and
 * taking away 2**52 leaves the nearest integer (no -ffast-math, so the compiler keeps both steps). */
static inline double round_even(double x) {
    const double big = 4503599627370496.0; /* 2**52 */
    const double t = x + big;
    return t - big;
}

/* Sums of every k consecutive rows of x [S, C] (float32) into out [S - k + 1, C], in _window_sums' order:
 * runs of 1, 2, 4, ... rows by doubling, then the largest runs that fit added in turn. */
static int window_sums_f32(const float *x, int S, int C, int k, float *out, float *work) {
    const float *runs[32];
    int spans[32], nr = 1, span = 1;
    runs[0] = x;
    spans[0] = 1;
    int ok = 1;
    float *r = work; /* the runs, one after another: at most log2(k) * S * C floats */
    while (2 * span <= k) {
        const size_t rows = (size_t)(S - 2 * span + 1) * C;
        const float *p = runs[nr - 1];
        const size_t off = (size_t)span * C;
        for (size_t i = 0; i < rows; i++) r[i] = p[i] + p[i + off];
        runs[nr] = r;
        r += rows;
        spans[nr++] = 2 * span;
        span *= 2;
    }
    if (ok) {
        const size_t n = (size_t)(S - k + 1) * C;
        memcpy(out, runs[nr - 1], n * sizeof(float));
        int done = span;
        while (done < k) {
            int j = nr - 1;
            while (spans[j] > k - done) j--;
            const float *p = runs[j] + (size_t)done * C;
            for (size_t i = 0; i < n; i++) out[i] += p[i];
            done += spans[j];
        }
    }
    return ok;
}

typedef struct {
    int S, C, Wn, k, tile, height, width;
    float threshold;
    long long min_width, min_area;
} RegionGeom;

typedef struct {
    int found;
    int x0, y0, x1, y1;
    long long tiles;
} RegionBox;

/* The box around every 8-connected component of mask [Wn, C] big enough to be a region change (the
 * rules of RegionDetector._qualifying). labels: int32 scratch [Wn * C], stack: int32 scratch [Wn * C]. */
static RegionBox qualifying(const uint8_t *mask, const RegionGeom *g, long long min_height, int32_t *labels,
                            int32_t *stack) {
    RegionBox box = {0, 0, 0, 0, 0, 0};
    const int R = g->Wn, C = g->C;
    memset(labels, 0, (size_t)R * C * sizeof(int32_t));
    int32_t next = 0;
    for (int start = 0; start < R * C; start++) {
        if (!mask[start] || labels[start]) continue;
        next++;
        int top = 0, r0 = R, r1 = -1, c0 = C, c1 = -1;
        long long count = 0;
        labels[start] = next;
        stack[top++] = start;
        while (top) {
            const int at = stack[--top], r = at / C, c = at % C;
            count++;
            if (r < r0) r0 = r;
            if (r > r1) r1 = r;
            if (c < c0) c0 = c;
            if (c > c1) c1 = c;
            for (int dr = -1; dr <= 1; dr++) {
                const int rr = r + dr;
                if (rr < 0 || rr >= R) continue;
                for (int dc = -1; dc <= 1; dc++) {
                    const int cc = c + dc;
                    if (cc < 0 || cc >= C) continue;
                    const int nb = rr * C + cc;
                    if (mask[nb] && !labels[nb]) {
                        labels[nb] = next;
                        stack[top++] = nb;
                    }
                }
            }
        }
        const long long x0 = (long long)c0 * g->tile;
        long long x1 = (long long)(c1 + 1) * g->tile;
        if (x1 > g->width) x1 = g->width;
        const long long y0 = (long long)r0 * 2;
        long long y1 = (long long)r1 * 2 + g->tile;
        if (y1 > g->height) y1 = g->height;
        const long long w = x1 - x0, h = y1 - y0;
        const int big = w >= g->min_width || w * h >= g->min_area;
        if (!(big && h >= min_height)) continue;
        if (!box.found) {
            box.found = 1;
            box.x0 = (int)x0; box.y0 = (int)y0; box.x1 = (int)x1; box.y1 = (int)y1;
        } else {
            if (x0 < box.x0) box.x0 = (int)x0;
            if (y0 < box.y0) box.y0 = (int)y0;
            if (x1 > box.x1) box.x1 = (int)x1;
            if (y1 > box.y1) box.y1 = (int)y1;
        }
        box.tiles += count;
    }
    return box;
}

static RegionBox qualifying_diff(const float *diff, const uint8_t *fresh, const RegionGeom *g,
                                 long long min_height, uint8_t *mask, int32_t *labels, int32_t *stack) {
    const size_t n = (size_t)g->Wn * g->C;
    int any = 0;
    for (size_t i = 0; i < n; i++) {
        mask[i] = (uint8_t)(fresh[i] && diff[i] >= g->threshold);
        any |= mask[i];
    }
    if (!any) {
        RegionBox none = {0, 0, 0, 0, 0, 0};
        return none;
    }
    return qualifying(mask, g, min_height, labels, stack);
}

static size_t count_changed(const float *diff, size_t n, float threshold) {
    size_t changed = 0;
    for (size_t i = 0; i < n; i++) changed += diff[i] >= threshold;
    return changed;
}

/* diff0 compared at a reference shifted by `lo` windows (or the mean of shifts lo and lo + 1 when half):
 * out = fmin(diff0, max over channels |current - shifted|), diff0 where no shifted window exists. */
static void shifted_diff(const float *cur, const float *ref, const float *diff0, int Wn, int C, int lo,
                         int half, float *out) {
    const size_t plane = (size_t)Wn * C;
    for (int j = 0; j < Wn; j++) {
        const int a = j + lo, b = j + lo + (half ? 1 : 0);
        const size_t row = (size_t)j * C;
        if (a < 0 || a >= Wn || b < 0 || b >= Wn) {
            memcpy(out + row, diff0 + row, (size_t)C * sizeof(float));
            continue;
        }
        const float *ra0 = ref + (size_t)a * C, *ra1 = ref + plane + (size_t)a * C;
        const float *rb0 = ref + (size_t)b * C, *rb1 = ref + plane + (size_t)b * C;
        const float *c0 = cur + row, *c1 = cur + plane + row;
        const float *restrict z = diff0 + row;
        float *restrict o = out + row;
        if (half) {
            for (int c = 0; c < C; c++) {
                const float s0 = (ra0[c] + rb0[c]) / 2.0f, s1 = (ra1[c] + rb1[c]) / 2.0f;
                const float d0 = fabsf(c0[c] - s0), d1 = fabsf(c1[c] - s1);
                const float m = d0 > d1 ? d0 : d1;
                o[c] = m < z[c] ? m : z[c];
            }
        } else {
            for (int c = 0; c < C; c++) {
                const float d0 = fabsf(c0[c] - ra0[c]), d1 = fabsf(c1[c] - ra1[c]);
                const float m = d0 > d1 ? d0 : d1;
                o[c] = m < z[c] ? m : z[c];
            }
        }
    }
}

/* How many windows differ by at least `threshold` under shifted_diff's rule (no array written). */
static size_t shifted_changed(const float *cur, const float *ref, const float *diff0, int Wn, int C, int lo,
                              int half, float threshold) {
    const size_t plane = (size_t)Wn * C;
    size_t changed = 0;
    for (int j = 0; j < Wn; j++) {
        const int a = j + lo, b = j + lo + (half ? 1 : 0);
        const size_t row = (size_t)j * C;
        const float *restrict z = diff0 + row;
        if (a < 0 || a >= Wn || b < 0 || b >= Wn) {
            for (int c = 0; c < C; c++) changed += z[c] >= threshold;
            continue;
        }
        const float *ra0 = ref + (size_t)a * C, *ra1 = ref + plane + (size_t)a * C;
        const float *rb0 = ref + (size_t)b * C, *rb1 = ref + plane + (size_t)b * C;
        const float *c0 = cur + row, *c1 = cur + plane + row;
        int32_t n = 0;
        if (half) {
            for (int c = 0; c < C; c++) {
                const float s0 = (ra0[c] + rb0[c]) / 2.0f, s1 = (ra1[c] + rb1[c]) / 2.0f;
                const float d0 = fabsf(c0[c] - s0), d1 = fabsf(c1[c] - s1);
                const float m = d0 > d1 ? d0 : d1;
                n += (m < z[c] ? m : z[c]) >= threshold;
            }
        } else {
            for (int c = 0; c < C; c++) {
                const float d0 = fabsf(c0[c] - ra0[c]), d1 = fabsf(c1[c] - ra1[c]);
                const float m = d0 > d1 ? d0 : d1;
                n += (m < z[c] ? m : z[c]) >= threshold;
            }
        }
        changed += (size_t)n;
    }
    return changed;
}

/*
 * region_observe(sums, reference, previous, changed_at, pending, counts, window_counts, tile_counts,
 *                now, since, threshold, tile, height, width, max_shift, min_width, min_area, explains)
 * sums int32 [2, S, C]; reference uint8 [2, S, C]; previous uint8 [2, T, C] (updated); changed_at float32
 * [T, C] (updated); pending uint8 [2, S, C] (written); counts float32 [S, C]; window_counts float32
 * [S - k + 1, C]; tile_counts float32 [T, C]. Returns None or (x, y, width, height, tiles, shift_px).
 */
static PyObject *region_observe(PyObject *self, PyObject *args) {
    PyObject *objs[8];
    float now, since, threshold;
    int tile, height, width, max_shift;
    long long min_width, min_area;
    double explains;
    if (!PyArg_ParseTuple(args, "OOOOOOOOfffiiiiLLd", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                          &objs[5], &objs[6], &objs[7], &now, &since, &threshold, &tile, &height, &width,
                          &max_shift, &min_width, &min_area, &explains))
        return NULL;
    if (tile < 2 || tile % 2 || height < 1 || width < 1 || max_shift < 0) {
        PyErr_SetString(PyExc_ValueError, "bad region geometry");
        return NULL;
    }
    const int S = (height + 1) / 2, C = (width + tile - 1) / tile, per = tile / 2;
    const int k = per < S ? per : S, Wn = S - k + 1, T = (S + per - 1) / per;
    const size_t SC = (size_t)S * C, TC = (size_t)T * C, WC = (size_t)Wn * C;
    const Py_ssize_t want[8] = {(Py_ssize_t)(2 * SC * 4), (Py_ssize_t)(2 * SC), (Py_ssize_t)(2 * TC),
                                (Py_ssize_t)(TC * 4),     (Py_ssize_t)(2 * SC), (Py_ssize_t)(SC * 4),
                                (Py_ssize_t)(WC * 4),     (Py_ssize_t)(TC * 4)};
    const int writable[8] = {0, 0, 1, 1, 1, 0, 0, 0};
    Py_buffer bufs[8];
    int got = 0;
    for (; got < 8; got++) {
        int flags = PyBUF_C_CONTIGUOUS | (writable[got] ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(objs[got], &bufs[got], flags) < 0) break;
        if (bufs[got].len != want[got]) {
            PyErr_Format(PyExc_ValueError, "region_observe: argument %d has %zd bytes, expected %zd", got,
                         bufs[got].len, want[got]);
            got++;
            break;
        }
    }
    PyObject *result = NULL;
    if (got < 8 || PyErr_Occurred()) goto release;
    const int32_t *sums = bufs[0].buf;
    const uint8_t *reference = bufs[1].buf;
    uint8_t *previous = bufs[2].buf;
    float *changed_at = bufs[3].buf;
    uint8_t *pending = bufs[4].buf;
    const float *counts = bufs[5].buf, *wcounts = bufs[6].buf, *tcounts = bufs[7].buf;

    /* float scratch: cur, ref (2 * WC each), diff0, diff, best (WC each), strip (SC), xs (SC);
     * int32: labels, stack (WC each); uint8: fresh, mask (WC each) */
    int doublings = 0;
    while ((2 << doublings) <= k) doublings++;
    const size_t floats = 4 * WC + 3 * WC + 2 * SC + (size_t)doublings * SC;
    char *mem = thread_scratch(floats * sizeof(float) + 2 * WC * sizeof(int32_t) + 2 * WC + 64);
    if (!mem) {
        PyErr_NoMemory();
        goto release;
    }
    float *cur = (float *)mem, *ref = cur + 2 * WC, *diff0 = ref + 2 * WC, *diff = diff0 + WC;
    float *bestd = diff + WC, *xs = bestd + WC, *wsum = xs + SC;
    float *work = wsum + SC;
    int32_t *labels = (int32_t *)(work + (size_t)doublings * SC), *stack = labels + WC;
    uint8_t *fresh = (uint8_t *)(stack + WC), *mask = fresh + WC;
    RegionGeom g = {S, C, Wn, k, tile, height, width, threshold, min_width, min_area};
    RegionBox box = {0, 0, 0, 0, 0, 0};
    long long shift_px = 0;
    int ok = 1;

    Py_BEGIN_ALLOW_THREADS
    /* freshness: non-overlapping tile means (float64) against the previous sampled frame's */
    for (int t = 0; t < T; t++) {
        const int s0 = t * per, s1 = s0 + per < S ? s0 + per : S;
        for (int c = 0; c < C; c++) {
            double m[2];
            for (int ch = 0; ch < 2; ch++) {
                int32_t acc = 0;
                for (int s = s0; s < s1; s++) acc += sums[(size_t)ch * SC + (size_t)s * C + c];
                m[ch] = (double)acc / (double)tcounts[(size_t)t * C + c];
            }
            const size_t at = (size_t)t * C + c;
            const double d0 = fabs(m[0] - (double)previous[at]), d1 = fabs(m[1] - (double)previous[TC + at]);
            if ((d0 > d1 ? d0 : d1) >= 2.0) changed_at[at] = now;
            previous[at] = (uint8_t)round_even(m[0]);
            previous[TC + at] = (uint8_t)round_even(m[1]);
        }
    }
    for (int ch = 0; ch < 2; ch++) {
        const int32_t *restrict from = sums + (size_t)ch * SC;
        uint8_t *restrict to = pending + (size_t)ch * SC;
        for (size_t i = 0; i < SC; i++) to[i] = (uint8_t)round_even((double)from[i] / (double)counts[i]);
    }
    int any_fresh = 0;
    for (int w = 0; w < Wn; w++) {
        const int top = 2 * w;
        int first = top / tile, last = (top + tile - 1) / tile;
        if (first > T - 1) first = T - 1;
        if (last > T - 1) last = T - 1;
        for (int c = 0; c < C; c++) {
            const uint8_t f = changed_at[(size_t)first * C + c] >= since || changed_at[(size_t)last * C + c] >= since;
            fresh[(size_t)w * C + c] = f;
            any_fresh |= f;
        }
    }
    if (!any_fresh) goto done;
    /* window means of the frame and of the reference (exact integers summed: any order is the same) */
    for (int ch = 0; ch < 2 && ok; ch++) {
        for (size_t i = 0; i < SC; i++) xs[i] = (float)sums[(size_t)ch * SC + i];
        ok = window_sums_f32(xs, S, C, k, cur + ch * WC, work);
        for (size_t i = 0; i < SC; i++) xs[i] = (float)reference[(size_t)ch * SC + i] * counts[i];
        ok = ok && window_sums_f32(xs, S, C, k, ref + ch * WC, work);
        for (size_t i = 0; i < WC; i++) {
            cur[ch * WC + i] = cur[ch * WC + i] / wcounts[i];
            ref[ch * WC + i] = ref[ch * WC + i] / wcounts[i];
        }
    }
    if (!ok) goto done;
    for (size_t i = 0; i < WC; i++) {
        const float d0 = fabsf(cur[i] - ref[i]), d1 = fabsf(cur[WC + i] - ref[WC + i]);
        diff0[i] = d0 > d1 ? d0 : d1;
    }
    box = qualifying_diff(diff0, fresh, &g, 0, mask, labels, stack);
    if (!box.found) goto done; /* compensation only ever removes changes */
    /* scroll compensation: whole shifts by size (-1, 1, -2, 2, ...), then the halves beside the best */
    const int steps = max_shift / 2;
    const size_t unshifted = count_changed(diff0, WC, threshold);
    size_t best_changed = unshifted;
    int best_lo = 0, best_half = 0; /* best shift = best_lo + best_half / 2 */
    for (int a = 1; a <= steps; a++) {
        for (int sign = -1; sign <= 1; sign += 2) {
            const size_t changed = shifted_changed(cur, ref, diff0, Wn, C, sign * a, 0, threshold);
            if (changed < best_changed) {
                best_changed = changed;
                best_lo = sign * a;
                best_half = 0;
            }
        }
    }
    const int around = best_lo; /* int(best): best is whole here */
    for (int side = 0; side < 2; side++) {
        const int lo = side ? around : around - 1; /* the halves around - 0.5 and around + 0.5 */
        if (lo < -steps || lo + 1 > steps) continue;
        const size_t changed = shifted_changed(cur, ref, diff0, Wn, C, lo, 1, threshold);
        if (changed < best_changed) {
            best_changed = changed;
            best_lo = lo;
            best_half = 1;
        }
    }
    const float *chosen = diff0;
    if (!((double)best_changed > (double)unshifted * explains)) {
        shifted_diff(cur, ref, diff0, Wn, C, best_lo, best_half, bestd);
        /* per strip: each 2-pixel strip matches the reference as it was or scrolled, whichever is closer */
        for (int s = 0; s < S; s++) {
            const int a = s + best_lo, b = s + best_lo + best_half;
            const int valid = a >= 0 && a < S && b >= 0 && b < S;
            for (int c = 0; c < C; c++) {
                const size_t at = (size_t)s * C + c;
                double still = 0.0, moved = 0.0;
                for (int ch = 0; ch < 2; ch++) {
                    const size_t plane = (size_t)ch * SC;
                    const double mean = (double)sums[plane + at] / (double)counts[at];
                    const double d = fabs(mean - (double)reference[plane + at]);
                    still = ch == 0 || d > still ? d : still;
                    if (valid) {
                        float below = (float)reference[plane + (size_t)a * C + c];
                        if (best_half) below = (below + (float)reference[plane + (size_t)b * C + c]) / 2.0f;
                        const double dm = fabs(mean - (double)below);
                        moved = ch == 0 || dm > moved ? dm : moved;
                    }
                }
                const double best = valid && moved < still ? moved : still; /* fmin; no strip: still */
                xs[at] = (float)(best * (double)counts[at]);
            }
        }
        ok = window_sums_f32(xs, S, C, k, wsum, work);
        if (!ok) goto done;
        for (size_t i = 0; i < WC; i++) {
            const float v = wsum[i] / wcounts[i];
            diff[i] = v < bestd[i] ? v : bestd[i];
        }
        chosen = diff;
        shift_px = 2LL * best_lo + best_half;
    }
    {
        const long long s = shift_px < 0 ? -shift_px : shift_px;
        box = qualifying_diff(chosen, fresh, &g, s + 2LL * tile + 1, mask, labels, stack);
    }
done:
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_NoMemory();
        goto release;
    }
    if (!box.found) {
        result = Py_None;
        Py_INCREF(result);
    } else {
        result = Py_BuildValue("(iiiiLL)", box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0, box.tiles, shift_px);
    }
release:
    for (int i = 0; i < got; i++) PyBuffer_Release(&bufs[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"resize_batch", resize_batch, METH_VARARGS,
     "resize_batch(frames, n, H, W, kx, bx, ky, by, vertical_first, out, start, stop"
     "[, cells, cell_w, cell_h]): Pillow-exact RGB->L + LANCZOS 32x32 for frames[start:stop] and, "
     "optionally, luma and colourfulness sums per cell_w x cell_h cell; with `color` given, frames is the "
     "luma plane [n, H, W] and color the 2x2 colourfulness sums (uint16) of planes_batch; GIL released."},
    {"planes_batch", planes_batch, METH_VARARGS,
     "planes_batch(frames, n, H, W, luma, color, start, stop): the luma plane and the 2x2 colourfulness "
     "sums of RGB frames[start:stop]; GIL released."},
    {"region_observe", region_observe, METH_VARARGS,
     "region_observe(sums, reference, previous, changed_at, pending, counts, window_counts, tile_counts, "
     "now, since, threshold, tile, height, width, max_shift, min_width, min_area, explains): "
     "RegionDetector.observe's arithmetic; None or (x, y, width, height, tiles, shift_px)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_phash_native",
                                    "Pillow-exact gray + LANCZOS 32x32 kernel, with luma and colourfulness cell sums.", -1, methods};

PyMODINIT_FUNC PyInit__phash_native(void) { return PyModule_Create(&module); }
