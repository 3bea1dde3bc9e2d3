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
 * resize_batch() releases the GIL so callers can split a batch across threads. Speed comes from
 * the compiler flags (setup.py: -O3 -march=$SUPPORTGRAPH_MARCH, "native" by default).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS 22
#define HALF (1 << (PRECISION_BITS - 1))
#define OUT 32


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

#define ROWS 4
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
 * One frame. fx == NULL: no horizontal pass (W == 32); fy == NULL: no vertical pass.
 * Scratch must hold H*W int16 + H*OUT bytes + max(W, OUT) int32 + W int16.
 */
static void resize_frame(const uint8_t *rgb, int H, int W, const Filter *fx, const Filter *fy,
                         int vertical_first, uint8_t *out, void *scratch) {
    int16_t *gray = (int16_t *)scratch;                        /* H*W */
    uint8_t *tmp = (uint8_t *)(gray + (size_t)H * W);          /* H*OUT or OUT*W */
    int32_t *acc = (int32_t *)(tmp + (size_t)(H > OUT ? H : OUT) * (W > OUT ? W : OUT));

    if (fx && fy && vertical_first) {
        for (int y = 0; y < H; y++) gray_row(rgb + (size_t)y * W * 3, gray + (size_t)y * W, W);
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
            gray_row(rgb + (size_t)y * W * 3, gray, W * ROWS);
            hpass_rows(gray, W, fx, tmp + (size_t)y * OUT);
        }
        for (; y < y1; y++) {
            gray_row(rgb + (size_t)y * W * 3, gray, W);
            hpass_row(gray, fx, tmp + (size_t)y * OUT);
        }
        if (fy) vpass(tmp, OUT, fy, out, acc);
        else memcpy(out, tmp, (size_t)OUT * OUT);
        return;
    }
    /* W == OUT: vertical pass only (or a plain conversion when H == OUT too). */
    for (int y = 0; y < H; y++) gray_row(rgb + (size_t)y * W * 3, gray + (size_t)y * W, W);
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

/* resize_batch(frames, n, H, W, kx, bx, ky, by, vertical_first, out, start, stop) */
static PyObject *resize_batch(PyObject *self, PyObject *args) {
    PyObject *frames_obj, *kx_obj, *bx_obj, *ky_obj, *by_obj, *out_obj;
    Py_ssize_t n, start, stop;
    int H, W, vertical_first;
    if (!PyArg_ParseTuple(args, "OniiOOOOpOnn", &frames_obj, &n, &H, &W, &kx_obj, &bx_obj,
                          &ky_obj, &by_obj, &vertical_first, &out_obj, &start, &stop))
        return NULL;
    if (H <= 0 || W <= 0 || n < 0 || start < 0 || stop > n || start > stop) {
        PyErr_SetString(PyExc_ValueError, "bad frame geometry or range");
        return NULL;
    }
    Py_buffer fb, ob, kxb, bxb, kyb, byb;
    Filter fx, fy;
    int has_x = 0, has_y = 0;
    if (PyObject_GetBuffer(frames_obj, &fb, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(out_obj, &ob, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&fb);
        return NULL;
    }
    PyObject *result = NULL;
    if (get_filter(kx_obj, bx_obj, &kxb, &bxb, &fx, &has_x) < 0) goto done_fo;
    if (get_filter(ky_obj, by_obj, &kyb, &byb, &fy, &has_y) < 0) goto done_x;
    if (fb.len != n * (Py_ssize_t)H * W * 3 || ob.len != n * (Py_ssize_t)OUT * OUT) {
        PyErr_SetString(PyExc_ValueError, "frame or output buffer has the wrong size");
        goto done_y;
    }
    size_t rows = (size_t)(H > OUT ? H : OUT), cols = (size_t)(W > OUT ? W : OUT);
    size_t scratch_len = (size_t)H * W * 2 + rows * cols + cols * 4 + 64;
    void *scratch = malloc(scratch_len);
    int16_t *split = has_x ? malloc((size_t)OUT * fx.ksize * 2 * sizeof(int16_t)) : NULL;
    if (!scratch || (has_x && !split)) {
        free(scratch);
        free(split);
        PyErr_NoMemory();
        goto done_y;
    }
    if (has_x) split_weights(&fx, split, split + (size_t)OUT * fx.ksize);
    const uint8_t *src = (const uint8_t *)fb.buf;
    uint8_t *dst = (uint8_t *)ob.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = start; i < stop; i++) {
        resize_frame(src + (size_t)i * H * W * 3, H, W, has_x ? &fx : NULL, has_y ? &fy : NULL,
                     vertical_first, dst + (size_t)i * OUT * OUT, scratch);
    }
    Py_END_ALLOW_THREADS
    free(scratch);
    free(split);
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
    return result;
}

static PyMethodDef methods[] = {
    {"resize_batch", resize_batch, METH_VARARGS,
     "resize_batch(frames, n, H, W, kx, bx, ky, by, vertical_first, out, start, stop): "
     "Pillow-exact RGB->L + LANCZOS 32x32 for frames[start:stop], GIL released."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_phash_native",
                                    "Pillow-exact gray + LANCZOS 32x32 kernel.", -1, methods};

PyMODINIT_FUNC PyInit__phash_native(void) { return PyModule_Create(&module); }
