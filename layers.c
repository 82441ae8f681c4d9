/* layers.c - the layers: each *_forward beside its *_backward, and for the convolution a
 * naive reference (conv2d_*_ref) beside the fast path (im2col + sgemm).
 *
 * All tensors are float32 NCHW. Backward functions overwrite dx (conv2d_backward_add adds
 * to it) and accumulate (+=) into parameter gradients; any gradient pointer may be NULL. Per-channel statistics and
 * reductions are summed in double, and every parallel reduction combines its partial
 * results in a fixed order, so a run with a given thread count repeats bit for bit.
 * Elementwise loops and per-channel sums are vectorised with `omp simd` (a reduction's
 * lanes are combined in an order fixed at compile time); without OpenMP they stay scalar. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "resnet.h"
#include "conv_epilogue.h"
#include "dist.h"
#include "parallel.h"
#include "simd.h"

/* ------------------------------------------------------------------------------------ */
/* Convolution: reference                                                                */
/* ------------------------------------------------------------------------------------ */

/* Offset of element [i0, i1, i2, i3] in a contiguous [*, d1, d2, d3] tensor. */
static inline size_t at4(int i0, int i1, int i2, int i3, int d1, int d2, int d3) {
    return (((size_t)i0 * d1 + i1) * d2 + i2) * d3 + i3;
}

static int conv_groups(const ConvSpec *s) { return s->groups > 1 ? s->groups : 1; }

/* With groups G, input channels and outputs split into G groups; output oc reads only the
 * in_c / G input channels of its group g = oc / (out_c / G): weight [out_c, in_c / G, kh, kw]. */
void conv2d_forward_ref(const ConvSpec *s, int n, int h, int w, const float *x, const float *weight,
                        const float *bias, float *y) {
    int oh = conv_out_size(h, s->kh, s->stride, s->pad);
    int ow = conv_out_size(w, s->kw, s->stride, s->pad);
    int ci = s->in_c, co = s->out_c, kh = s->kh, kw = s->kw, st = s->stride, pad = s->pad;
    int cig = ci / conv_groups(s), cog = co / conv_groups(s);
    for (int b = 0; b < n; b++)
        for (int oc = 0; oc < co; oc++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    double sum = bias ? bias[oc] : 0.0;
                    for (int icl = 0; icl < cig; icl++)
                        for (int ky = 0; ky < kh; ky++)
                            for (int kx = 0; kx < kw; kx++) {
                                int iy = oy * st - pad + ky, ix = ox * st - pad + kx;
                                int ic = oc / cog * cig + icl;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                sum += (double)weight[at4(oc, icl, ky, kx, cig, kh, kw)] *
                                       x[at4(b, ic, iy, ix, ci, h, w)];
                            }
                    y[at4(b, oc, oy, ox, co, oh, ow)] = (float)sum;
                }
}

/* Each gradient is gathered in double from the terms that reach it:
 *   dx[b, ic, iy, ix]       = sum_{oc,ky,kx} w[oc, ic, ky, kx] * dy[b, oc, oy, ox]
 *                             over the (oy, ox) with iy = oy*s - p + ky, ix = ox*s - p + kx
 *   dweight[oc, ic, ky, kx] += sum_{b,oy,ox} x[b, ic, iy, ix] * dy[b, oc, oy, ox]
 *   dbias[oc]               += sum_{b,oy,ox} dy[b, oc, oy, ox]                         */
void conv2d_backward_ref(const ConvSpec *s, int n, int h, int w, const float *x,
                         const float *weight, const float *dy, float *dx, float *dweight,
                         float *dbias) {
    int oh = conv_out_size(h, s->kh, s->stride, s->pad);
    int ow = conv_out_size(w, s->kw, s->stride, s->pad);
    int ci = s->in_c, co = s->out_c, kh = s->kh, kw = s->kw, st = s->stride, pad = s->pad;
    int cig = ci / conv_groups(s), cog = co / conv_groups(s);
    if (dx)
        for (int b = 0; b < n; b++)
            for (int ic = 0; ic < ci; ic++)
                for (int iy = 0; iy < h; iy++)
                    for (int ix = 0; ix < w; ix++) {
                        double sum = 0;
                        int g = ic / cig, icl = ic % cig;
                        for (int oc = g * cog; oc < (g + 1) * cog; oc++)
                            for (int ky = 0; ky < kh; ky++)
                                for (int kx = 0; kx < kw; kx++) {
                                    int ty = iy + pad - ky, tx = ix + pad - kx;
                                    if (ty < 0 || tx < 0 || ty % st || tx % st) continue;
                                    int oy = ty / st, ox = tx / st;
                                    if (oy >= oh || ox >= ow) continue;
                                    sum += (double)weight[at4(oc, icl, ky, kx, cig, kh, kw)] *
                                           dy[at4(b, oc, oy, ox, co, oh, ow)];
                                }
                        dx[at4(b, ic, iy, ix, ci, h, w)] = (float)sum;
                    }
    if (dweight)
        for (int oc = 0; oc < co; oc++)
            for (int icl = 0; icl < cig; icl++)
                for (int ky = 0; ky < kh; ky++)
                    for (int kx = 0; kx < kw; kx++) {
                        double sum = 0;
                        int ic = oc / cog * cig + icl;
                        for (int b = 0; b < n; b++)
                            for (int oy = 0; oy < oh; oy++)
                                for (int ox = 0; ox < ow; ox++) {
                                    int iy = oy * st - pad + ky, ix = ox * st - pad + kx;
                                    if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                    sum += (double)x[at4(b, ic, iy, ix, ci, h, w)] *
                                           dy[at4(b, oc, oy, ox, co, oh, ow)];
                                }
                        dweight[at4(oc, icl, ky, kx, cig, kh, kw)] += (float)sum;
                    }
    if (dbias)
        for (int oc = 0; oc < co; oc++) {
            double sum = 0;
            for (int b = 0; b < n; b++)
                for (int oy = 0; oy < oh; oy++)
                    for (int ox = 0; ox < ow; ox++) sum += dy[at4(b, oc, oy, ox, co, oh, ow)];
            dbias[oc] += (float)sum;
        }
}

/* ------------------------------------------------------------------------------------ */
/* Convolution: fast path, im2col + sgemm                                                */
/* ------------------------------------------------------------------------------------ */

/* The output columns ox in [*lo, *hi) whose input column ox*stride - pad + k lies in [0, size). */
static void valid_range(int out, int size, int k, int stride, int pad, int *lo, int *hi) {
    int a = pad - k; /* need ox*stride >= a */
    int l = a <= 0 ? 0 : (a + stride - 1) / stride;
    int b = size - 1 + pad - k; /* need ox*stride <= b */
    int u = b < 0 ? 0 : b / stride + 1;
    *lo = l < out ? l : out;
    *hi = u < out ? u : out;
    if (*hi < *lo) *hi = *lo;
}

/* One row of im2col for a stride-1 convolution whose output is as wide as its input (a
 * "same" kernel, e.g. 3x3 with padding 1): over the output rows whose input row iy =
 * oy - pad + ky exists, out[(oy - oy0) * w + ox] = plane[iy * w + ox + kx - pad] is ONE
 * shifted copy of the plane, after which the columns that fell outside it (ox + kx - pad
 * outside [0, w): the first or last |kx - pad| of each row) are zeroed. */
static void im2col_row_same(const ConvSpec *s, int h, int w, int oy0, int oy1, int ky, int kx,
                            const float *plane, float *out) {
    int dx = kx - s->pad;
    int oya = s->pad - ky > oy0 ? s->pad - ky : oy0;         /* first row with iy >= 0 */
    int oyb = h + s->pad - ky < oy1 ? h + s->pad - ky : oy1; /* past the last, iy < h */
    if (oya > oy1) oya = oy1;
    if (oyb < oya) oyb = oya;
    memset(out, 0, sizeof(float) * (size_t)(oya - oy0) * w);
    memset(out + (size_t)(oyb - oy0) * w, 0, sizeof(float) * (size_t)(oy1 - oyb) * w);
    if (oyb == oya) return;
    float *dst = out + (size_t)(oya - oy0) * w;
    const float *src = plane + (ptrdiff_t)(oya - s->pad + ky) * w + dx;
    size_t len = (size_t)(oyb - oya) * w;
    /* skip the elements outside the plane: the first -dx or the last dx, which are
     * zeroed below anyway */
    size_t first = dx < 0 ? (size_t)-dx : 0;
    size_t last = dx > 0 ? (len > (size_t)dx ? len - (size_t)dx : 0) : len;
    if (last > first) memcpy(dst + first, src + first, sizeof(float) * (last - first));
    for (int oy = oya; oy < oyb; oy++, dst += w) {
        for (int ox = 0; ox < -dx && ox < w; ox++) dst[ox] = 0;
        for (int ox = w - dx > 0 ? w - dx : 0; ox < w; ox++) dst[ox] = 0;
    }
}

/* col[(ic*kh + ky)*kw + kx, (oy - oy0)*ow + ox] = x[ic, oy*s - p + ky, ox*s - p + kx] (0
 * outside), for the output rows oy in [oy0, oy1): the [in_c*kh*kw, (oy1-oy0)*ow] matrix
 * whose product with the [out_c, in_c*kh*kw] weight is the convolution of one image (at
 * those rows). Rows of col are ld floats apart. */
static void im2col_rows(const ConvSpec *s, int h, int w, int oy0, int oy1, int ow, const float *x,
                        float *col, size_t ld, int parallel) {
    int rows = s->in_c * s->kh * s->kw, same = s->stride == 1 && ow == w;
    OMP_PRAGMA(omp parallel for schedule(static) if (parallel))
    for (int r = 0; r < rows; r++) {
        int kx = r % s->kw, ky = (r / s->kw) % s->kh, ic = r / (s->kw * s->kh);
        const float *plane = x + (size_t)ic * h * w;
        float *out = col + (size_t)r * ld;
        if (same) {
            im2col_row_same(s, h, w, oy0, oy1, ky, kx, plane, out);
            continue;
        }
        int lo, hi;
        valid_range(ow, w, kx, s->stride, s->pad, &lo, &hi);
        for (int oy = oy0; oy < oy1; oy++, out += ow) {
            int iy = oy * s->stride - s->pad + ky;
            if (iy < 0 || iy >= h) {
                memset(out, 0, sizeof(float) * ow);
                continue;
            }
            const float *row = plane + (size_t)iy * w;
            int ix = lo * s->stride - s->pad + kx; /* the input column of output column lo */
            for (int ox = 0; ox < lo; ox++) out[ox] = 0;
            int ox = lo;
            if (s->stride == 1 && hi > lo) {
                memcpy(out + lo, row + ix, sizeof(float) * (hi - lo));
                ox = hi;
            } else if (s->stride == 2 && hi - lo >= VLEN) {
                /* VLEN outputs from the even columns of 2 * VLEN - 1 inputs, the last
                 * VLEN overlapping the ones before (reads stay inside [lo, hi)'s inputs) */
                for (; ox + VLEN <= hi; ox += VLEN, ix += 2 * VLEN)
                    vstore(out + ox, vload_even(row + ix));
                if (ox < hi) vstore(out + hi - VLEN, vload_even(row + ix - 2 * (ox - (hi - VLEN))));
                ox = hi;
            }
            for (; ox < hi; ox++, ix += s->stride) out[ox] = row[ix];
            for (int ox = hi; ox < ow; ox++) out[ox] = 0;
        }
    }
}

/* The whole image: oh*ow columns. */
static void im2col(const ConvSpec *s, int h, int w, int oh, int ow, const float *x, float *col,
                   size_t ld, int parallel) {
    im2col_rows(s, h, w, 0, oh, ow, x, col, ld, parallel);
}

/* The adjoint of im2col_rows: dx[ic, iy, ix] += the col entries that copied it, for the
 * output rows [oy0, oy1) that col holds. */
static void col2im_rows(const ConvSpec *s, int h, int w, int oy0, int oy1, int ow, const float *col,
                        size_t ld, float *dx, int parallel) {
    OMP_PRAGMA(omp parallel for schedule(static) if (parallel))
    for (int ic = 0; ic < s->in_c; ic++) {
        float *plane = dx + (size_t)ic * h * w;
        for (int ky = 0; ky < s->kh; ky++)
            for (int kx = 0; kx < s->kw; kx++) {
                const float *in = col + (size_t)((ic * s->kh + ky) * s->kw + kx) * ld;
                int lo, hi;
                valid_range(ow, w, kx, s->stride, s->pad, &lo, &hi);
                for (int oy = oy0; oy < oy1; oy++, in += ow) {
                    int iy = oy * s->stride - s->pad + ky;
                    if (iy < 0 || iy >= h) continue;
                    float *row = plane + (size_t)iy * w;
                    int ix = lo * s->stride - s->pad + kx, ox = lo;
                    if (s->stride == 1) /* the same adds, VLEN at a time */
                        for (; ox + VLEN <= hi; ox += VLEN, ix += VLEN)
                            vstore(row + ix, vadd(vload(row + ix), vload(in + ox)));
                    for (; ox < hi; ox++, ix += s->stride) row[ix] += in[ox];
                }
            }
    }
}

static int conv_is_pointwise(const ConvSpec *s) {
    return s->kh == 1 && s->kw == 1 && s->stride == 1 && s->pad == 0;
}

/* Output rows per im2col chunk: about CONV_CHUNK_COLS columns, so that the chunk of col
 * (K x cols: 1.2 MB for a 3x3 conv over 64 channels) stays in L2 from im2col to the GEMM's
 * packing, and the product with it (its rows < DIRECT_A_MAX_N columns) reads the weights
 * in place; the epilogue then runs on output still in cache. */
#define CONV_CHUNK_COLS 512
#define CONV_CHUNK_MIN_MACS (1L << 20) /* sgemm's own threshold for using threads */

static int conv_chunk_rows(int oh, int ow) {
    long chunks = ((long)oh * ow + CONV_CHUNK_COLS - 1) / CONV_CHUNK_COLS; /* equal chunks */
    int rows = (int)((oh + chunks - 1) / chunks);
    return rows < 1 ? 1 : rows;
}

/* Floats of an im2col buffer for oh x ow output positions (one chunk of an image; none for
 * a pointwise conv, which multiplies the input plane directly), rounded to 64 bytes. */
static size_t conv_col_floats(const ConvSpec *s, int oh, int ow) {
    if (conv_is_pointwise(s)) return 16;
    return ((size_t)s->in_c * s->kh * s->kw * oh * ow + 15) / 16 * 16;
}

/* Threads split the batch when there is at least one image per thread: each runs im2col
 * and a single-threaded sgemm on its own images (sgemm sees omp_in_parallel). With fewer
 * images than threads the images go one after the other and sgemm and im2col parallelise
 * inside. Called from inside a parallel region, everything runs on the calling thread. */
static int conv_split_batch(int n) {
    int t = omp_get_max_threads();
    return !omp_in_parallel() && t > 1 && t <= RN_MAX_THREADS && n >= t;
}

/* The vector at p + i of a run of n floats, the last one partial (lanes past n: 0 when
 * loaded, untouched when stored): activations and epilogues VLEN elements at a time. */
static inline VF act_load(const float *p, long i, size_t n) {
    return i + VLEN <= (long)n ? vload(p + i) : vload_part(p + i, 0, (int)((long)n - i));
}
static inline void act_store(float *p, long i, size_t n, VF v) {
    if (i + VLEN <= (long)n)
        vstore(p + i, v);
    else
        vstore_part(p + i, 0, (int)((long)n - i), v);
}

static int epilogue_is_empty(const ConvEpilogue *e, const float *residual) {
    return !e->scale && !e->shift && !residual && e->act == CONV_ACT_NONE;
}

/* The epilogue on one output row (channel oc) of length N, in place:
 * y = act(y * scale[oc] + shift[oc] + residual), each part optional (ConvEpilogue). */
static void epilogue_row(const ConvEpilogue *e, int oc, int N, float *row, const float *res) {
    if (e->scale) {
        float sc = e->scale[oc], sh = e->shift ? e->shift[oc] : 0.0f;
        OMP_PRAGMA(omp simd)
        for (int i = 0; i < N; i++) row[i] = row[i] * sc + sh;
    } else if (e->shift) {
        float sh = e->shift[oc];
        OMP_PRAGMA(omp simd)
        for (int i = 0; i < N; i++) row[i] += sh;
    }
    if (res) {
        OMP_PRAGMA(omp simd)
        for (int i = 0; i < N; i++) row[i] += res[i];
    }
    if (e->act == CONV_ACT_RELU) {
        OMP_PRAGMA(omp simd)
        for (int i = 0; i < N; i++) row[i] = row[i] > 0 ? row[i] : 0.0f;
    } else if (e->act == CONV_ACT_SILU) { /* as silu_forward */
        for (long i = 0; i < N; i += VLEN) act_store(row, i, (size_t)N, vsilu(act_load(row, i, N)));
    }
}

/* A pointwise convolution of 1x1 maps (squeeze-and-excitation's two layers) is a linear
 * layer, y[n, out_c] = x[n, in_c] weight^T: one product for the batch, then the epilogue
 * along each image's channels, a vector of channels at a time. (Image by image it ran the
 * epilogue on rows of one element, 20-40 us a layer, and the batched path copied x into
 * col first.) Each element gets the same products in the same order as there. */
static void conv_forward_1x1_map(const ConvSpec *s, int n, const float *x, const float *weight,
                                 const ConvEpilogue *e, const float *residual, float *y) {
    const int K = s->in_c, co = s->out_c;
    sgemm(0, 1, n, co, K, 1.0f, x, K, weight, K, 0.0f, y, co);
    if (epilogue_is_empty(e, residual)) return;
    for (int b = 0; b < n; b++) {
        float *yb = y + (size_t)b * co;
        const float *rb = residual ? residual + (size_t)b * co : NULL;
        for (int oc = 0; oc < co; oc += VLEN) {
            VF sc = e->scale ? act_load(e->scale, oc, (size_t)co) : vzero();
            VF sh = e->shift ? act_load(e->shift, oc, (size_t)co) : vzero();
            VF r = rb ? act_load(rb, oc, (size_t)co) : vzero();
            act_store(yb, oc, (size_t)co,
                      epilogue_vector(e, act_load(yb, oc, (size_t)co), sc, sh, rb ? &r : NULL));
        }
    }
}

/* Small maps (layer4 at 224x224, layer3 and layer4 at 96x96) make thin per-image products
 * that waste most of the GEMM's register tiles and, in backward, sum the weight gradient a
 * few columns at a time. Below CONV_BATCH_MAX_N output positions the whole batch goes
 * through ONE product, threaded inside sgemm: the images side by side as columns of col
 * [K, n*N], the result [out_c, n*N] scattered back to NCHW. The forward gives the
 * per-image path's bits (sgemm's arithmetic per element does not depend on the column
 * count); the weight gradient sums over all n*N columns in one product instead of image
 * by image, with no per-thread partial sums (so its bits do not depend on the threads). */
#define CONV_BATCH_MAX_N      128
#define CONV_BATCH_MAX_FLOATS ((size_t)48 << 20) /* 192 MB of col + product at most */

static int conv_batched(const ConvSpec *s, int n, int N) {
    size_t K = (size_t)s->in_c * s->kh * s->kw;
    return n > 1 && N < CONV_BATCH_MAX_N && (K + s->out_c) * n * (size_t)N <= CONV_BATCH_MAX_FLOATS;
}

/* Floats of the batched path's buffer for nb images: col [K, nb*N], then the product
 * (forward) or the gathered dY (backward) [out_c, nb*N]. */
static size_t conv_batch_floats(const ConvSpec *s, int nb, int N) {
    size_t K = (size_t)s->in_c * s->kh * s->kw, ld = (size_t)nb * N;
    return (K * ld + 15) / 16 * 16 + ((size_t)s->out_c * ld + 15) / 16 * 16;
}

/* The nb images through one product, with buf from conv_batch_floats. parallel: the loops
 * and sgemm may use threads (else, called inside a parallel region, everything runs on
 * the calling thread). */
static void conv_forward_batched(const ConvSpec *s, int h, int w, int oh, int ow, const float *x,
                                 const float *weight, const ConvEpilogue *e, const float *residual,
                                 float *y, int nb, float *buf, int parallel) {
    int K = s->in_c * s->kh * s->kw, N = oh * ow, co = s->out_c;
    size_t ld = (size_t)nb * N, x_stride = (size_t)s->in_c * h * w;
    float *col = buf, *prod = buf + ((size_t)K * ld + 15) / 16 * 16;
    OMP_PRAGMA(omp parallel for schedule(static) if (parallel))
    for (int b = 0; b < nb; b++)
        im2col(s, h, w, oh, ow, x + b * x_stride, col + (size_t)b * N, ld, 0);
    sgemm(0, 0, co, (int)ld, K, 1.0f, weight, K, col, (int)ld, 0.0f, prod, (int)ld);
    OMP_PRAGMA(omp parallel for schedule(static) if (parallel))
    for (long r = 0; r < (long)nb * co; r++) {
        int b = (int)(r / co), oc = (int)(r % co);
        size_t at = (size_t)r * N;
        memcpy(y + at, prod + (size_t)oc * ld + (size_t)b * N, sizeof(float) * N);
        epilogue_row(e, oc, N, y + at, residual ? residual + at : NULL);
    }
}

/* The nb images: dweight += dY [out_c, nb*N] * col^T, one product over all their columns;
 * dcol = weight^T * dY, then col2im image by image (adding to dx when add_dx). */
static void conv_backward_batched(const ConvSpec *s, int h, int w, int oh, int ow, const float *x,
                                  const float *weight, const float *dy, float *dx, int add_dx,
                                  float *dweight, int nb, float *buf, int parallel) {
    int K = s->in_c * s->kh * s->kw, N = oh * ow, co = s->out_c;
    size_t ld = (size_t)nb * N, x_stride = (size_t)s->in_c * h * w;
    float *col = buf, *g = buf + ((size_t)K * ld + 15) / 16 * 16;
    OMP_PRAGMA(omp parallel for schedule(static) if (parallel))
    for (long r = 0; r < (long)nb * co; r++) {
        int b = (int)(r / co), oc = (int)(r % co);
        memcpy(g + (size_t)oc * ld + (size_t)b * N, dy + (size_t)r * N, sizeof(float) * N);
    }
    if (dweight) {
        OMP_PRAGMA(omp parallel for schedule(static) if (parallel))
        for (int b = 0; b < nb; b++)
            im2col(s, h, w, oh, ow, x + b * x_stride, col + (size_t)b * N, ld, 0);
        sgemm(0, 1, co, K, (int)ld, 1.0f, g, (int)ld, col, (int)ld, 1.0f, dweight, K);
    }
    if (dx) {
        sgemm(1, 0, K, (int)ld, co, 1.0f, weight, K, g, (int)ld, 0.0f, col, (int)ld);
        OMP_PRAGMA(omp parallel for schedule(static) if (parallel))
        for (int b = 0; b < nb; b++) {
            float *dxb = dx + b * x_stride;
            if (!add_dx) memset(dxb, 0, sizeof(float) * x_stride);
            col2im_rows(s, h, w, 0, oh, ow, col + (size_t)b * N, ld, dxb, 0);
        }
    }
}

/* The epilogue of one chunk of an image's output (columns at.. of the N-column planes),
 * block by block from inside the product (sgemm_tiles), while each block is in L2. */
typedef struct {
    const ConvEpilogue *e;
    const float *residual;
    float *y;
    size_t N, at;
    int out_c;
} ChunkEpilogue;

#define RESIDUAL_AHEAD 4 /* channels the residual epilogue prefetches ahead */

static void chunk_epilogue_tile(void *ctx, int oc0, int rows, int j0, int cols) {
    const ChunkEpilogue *c = ctx;
    for (int oc = oc0; oc < oc0 + rows; oc++) {
        size_t off = (size_t)oc * c->N + c->at + j0;
        /* The residual (a block's input, written layers ago) is in L3 or memory, one short
         * run per channel that the hardware prefetcher picks up too late: ask for the run
         * RESIDUAL_AHEAD channels ahead (measured: the 56x56 residual convs of ResNet-50
         * went from 8.1 to 5.8 ms). */
        if (c->residual && oc + RESIDUAL_AHEAD < c->out_c)
            for (int i = 0; i < cols; i += LINE_FLOATS)
                vprefetch(c->residual + off + (size_t)RESIDUAL_AHEAD * c->N + i);
        epilogue_row(c->e, oc, cols, c->y + off, c->residual ? c->residual + off : NULL);
    }
}

/* Output rows [oy0, oy1) of one image: y[out_c, cols] = weight[out_c, K] * col[K, cols],
 * then the epilogue on each tile of the product as it is finished (a pointwise conv
 * multiplies x itself). */
static void conv_forward_chunk(const ConvSpec *s, int h, int w, int oh, int ow, const float *x,
                               const float *weight, const ConvEpilogue *e, const float *residual,
                               float *y, float *col, int oy0, int oy1, int inner_parallel) {
    int K = s->in_c * s->kh * s->kw, N = oh * ow, cols = (oy1 - oy0) * ow;
    size_t at = (size_t)oy0 * ow;
    const float *b = x + at;
    int ldb = N;
    if (!conv_is_pointwise(s)) {
        im2col_rows(s, h, w, oy0, oy1, ow, x, col, (size_t)cols, inner_parallel);
        b = col;
        ldb = cols;
    }
    if (epilogue_is_empty(e, residual)) {
        sgemm(0, 0, s->out_c, cols, K, 1.0f, weight, K, b, ldb, 0.0f, y + at, N);
    } else {
        ChunkEpilogue ce = {e, residual, y, (size_t)N, at, s->out_c};
        sgemm_tiles(0, 0, s->out_c, cols, K, weight, K, b, ldb, y + at, N, chunk_epilogue_tile,
                    &ce);
    }
}

/* One image, a chunk of output rows at a time. Each element's arithmetic is the same as in
 * one product (sgemm's K blocking depends on K only) followed by epilogue_row. */
static void conv_forward_image(const ConvSpec *s, int h, int w, int oh, int ow, const float *x,
                               const float *weight, const ConvEpilogue *e, const float *residual,
                               float *y, float *col, int inner_parallel) {
    const int step = conv_chunk_rows(oh, ow);
    /* A pointwise chunk over few input channels (EfficientNet's 16 -> 96 at 112x112: 0.8 M
     * multiply-adds) is too small for sgemm to wake its threads: the threads take whole
     * chunks instead (there is no col to share, and a chunk's bits do not depend on the
     * thread). */
    if (inner_parallel && conv_is_pointwise(s) && oh > step &&
        (long)s->out_c * step * ow * s->in_c < CONV_CHUNK_MIN_MACS) {
        OMP_PRAGMA(omp parallel for schedule(static))
        for (int oy0 = 0; oy0 < oh; oy0 += step)
            conv_forward_chunk(s, h, w, oh, ow, x, weight, e, residual, y, col, oy0,
                               oy0 + step < oh ? oy0 + step : oh, 0);
        return;
    }
    for (int oy0 = 0; oy0 < oh; oy0 += step)
        conv_forward_chunk(s, h, w, oh, ow, x, weight, e, residual, y, col, oy0,
                           oy0 + step < oh ? oy0 + step : oh, inner_parallel);
}

/* ------------------------------------------------------------------------------------ */
/* Convolution: depthwise, direct                                                        */
/* ------------------------------------------------------------------------------------ */

/* A depthwise convolution (groups = in_c = out_c, EfficientNet's and MobileNet's k x k
 * layers) convolves each channel's plane with its own kernel:
 *   y[oy, ox] = sum_{ky, kx} w[ky, kx] * xp[oy * s + ky, ox * s + kx]
 * xp being the plane with pad zeros on every side, cut to ph x pw (what the outputs read).
 * As a grouped GEMM it would be a product of one-row matrices; here it runs directly, on
 * VLEN channels at a time (below), so the vectors are full for any width and stride. */
static int conv_is_depthwise(const ConvSpec *s) {
    return s->groups > 1 && s->groups == s->in_c && s->groups == s->out_c;
}

typedef struct {
    int h, w, oh, ow; /* input and output planes */
    int ph, pw;       /* the padded plane: the rows and columns the outputs read */
} DwShape;

static DwShape dw_shape(const ConvSpec *s, int h, int w) {
    DwShape d = {h, w, conv_out_size(h, s->kh, s->stride, s->pad),
                 conv_out_size(w, s->kw, s->stride, s->pad), 0, 0};
    d.ph = (d.oh - 1) * s->stride + s->kh;
    d.pw = (d.ow - 1) * s->stride + s->kw;
    return d;
}

/* The forward runs on blocks of VLEN channels, interleaved: the block's padded input
 * planes become xb [ph][pw][VLEN] (one vector per position, a lane per channel), so each
 * output position is one vector whatever the map's width or the stride:
 *   yb[oy, ox] = sum_{ky, kx} wb[ky, kx] (*) xb[oy * s + ky, ox * s + kx]   (lane by lane)
 * wb [kh * kw][VLEN] holding the block's kernels. Rows go into and out of NCHW through
 * VLEN x VLEN transposes; the epilogue is applied to the vectors before they go out (a
 * residual, per plane after). A block with fewer than VLEN channels leaves lanes at 0. */
#define DW_OX_BLOCK 4 /* outputs of a row in flight: independent chains of FMAs */

/* The forward packs and convolves a band of DW_BAND_ROWS output rows at a time: the band's
 * input rows (kh - stride of them packed twice) stay in L2 from packing to use, where a
 * whole 112x112 plane of 16 channels (800 KB) went out to L3 before its rows were read. */
#define DW_BAND_ROWS 8

typedef struct {
    float *xb, *wb, *yr; /* [rows][pw][VLEN], [taps][VLEN], one output row [ow][VLEN] */
} DwBlockBuf;

/* Padded input rows a band of output rows reads (rows_out: d->oh for the whole plane). */
static int dw_band_in_rows(const ConvSpec *s, const DwShape *d, int rows_out) {
    int r = (rows_out - 1) * s->stride + s->kh;
    return r < d->ph ? r : d->ph;
}

static size_t dw_block_floats(const DwShape *d, int in_rows, int taps) {
    return ((size_t)in_rows * d->pw + (size_t)taps + (size_t)d->ow) * VLEN;
}

static DwBlockBuf dw_block_buf(const DwShape *d, int in_rows, int taps, float *mem) {
    DwBlockBuf b = {mem, mem + (size_t)in_rows * d->pw * VLEN, NULL};
    b.yr = b.wb + (size_t)taps * VLEN;
    return b;
}

#define DW_PREFETCH_ROWS 4

/* wb = the kernels of nc channels (nc <= VLEN), interleaved. */
static void dw_pack_weights(const ConvSpec *s, const float *wk, int nc, float *wb) {
    const int taps = s->kh * s->kw;
    for (int t = 0; t < taps; t++)
        for (int c = 0; c < VLEN; c++) wb[t * VLEN + c] = c < nc ? wk[(size_t)c * taps + t] : 0.0f;
}

/* xb = rows [r0, r1) of nc planes (h x w each) padded and interleaved, row r0 first. */
static void dw_pack_rows(const ConvSpec *s, const DwShape *d, const float *x, int nc, int r0,
                         int r1, float *xb) {
    const int p = s->pad, pw = d->pw;
    int rows = d->h + p < d->ph ? d->h : d->ph - p, cols = d->w + p < pw ? d->w : pw - p;
    if (rows < 0) rows = 0;
    if (cols < 0) cols = 0;
    for (int r = r0; r < r1; r++) {
        float *row = xb + (size_t)(r - r0) * pw * VLEN;
        if (r < p || r >= p + rows) {
            memset(row, 0, sizeof(float) * pw * VLEN);
            continue;
        }
        const int left = p < pw ? p : pw, right = pw - p - cols;
        memset(row, 0, sizeof(float) * left * VLEN);
        if (right > 0) memset(row + (size_t)(p + cols) * VLEN, 0, sizeof(float) * right * VLEN);
        const float *in = x + (size_t)(r - p) * d->w;
        /* nc planes are nc streams, more than the hardware prefetcher follows: ask for
         * each one's row DW_PREFETCH_ROWS ahead */
        if (r - p + DW_PREFETCH_ROWS < rows)
            for (int c = 0; c < nc; c++)
                for (int ix = 0; ix < cols; ix += LINE_FLOATS)
                    vprefetch(in + (size_t)c * d->h * d->w + (size_t)DW_PREFETCH_ROWS * d->w + ix);
        for (int ix = 0; ix < cols; ix += VLEN) {
            VF v[VLEN];
            for (int c = 0; c < VLEN; c++)
                v[c] = c < nc ? vload_part(in + (size_t)c * d->h * d->w, ix, cols) : vzero();
            vtranspose(v);
            for (int j = 0; j < VLEN && ix + j < cols; j++)
                vstore(row + (size_t)(p + ix + j) * VLEN, v[j]);
        }
    }
}

/* The whole block: wb, and xb holding every padded row. */
static void dw_pack_block(const ConvSpec *s, const DwShape *d, const float *x, const float *wk,
                          int nc, DwBlockBuf *b) {
    dw_pack_weights(s, wk, nc, b->wb);
    dw_pack_rows(s, d, x, nc, 0, d->ph, b->xb);
}

/* Output row oy of the block into b->yr, the epilogue applied when e is given; xb holds
 * the padded rows from r0 on. */
static void dw_block_row(const ConvSpec *s, const DwShape *d, const DwBlockBuf *b, int r0, int oy,
                         const ConvEpilogue *e, const float *scale, const float *shift) {
    const int st = s->stride, kh = s->kh, kw = s->kw, ow = d->ow;
    const size_t pw = (size_t)d->pw, sv = (size_t)st * VLEN;
    const float *in = b->xb + ((size_t)oy * st - (size_t)r0) * pw * VLEN;
    int ox = 0;
    for (; ox + DW_OX_BLOCK <= ow; ox += DW_OX_BLOCK) {
        VF a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
        for (int ky = 0; ky < kh; ky++) {
            const float *q = in + (ky * pw + (size_t)ox * st) * VLEN;
            for (int kx = 0; kx < kw; kx++, q += VLEN) {
                VF wv = vload(b->wb + (size_t)(ky * kw + kx) * VLEN);
                a0 = vfma(wv, vload(q), a0);
                a1 = vfma(wv, vload(q + sv), a1);
                a2 = vfma(wv, vload(q + 2 * sv), a2);
                a3 = vfma(wv, vload(q + 3 * sv), a3);
            }
        }
        vstore(b->yr + (size_t)ox * VLEN, a0);
        vstore(b->yr + (size_t)(ox + 1) * VLEN, a1);
        vstore(b->yr + (size_t)(ox + 2) * VLEN, a2);
        vstore(b->yr + (size_t)(ox + 3) * VLEN, a3);
    }
    for (; ox < ow; ox++) { /* the same sums, one output at a time */
        VF a = vzero();
        for (int ky = 0; ky < kh; ky++) {
            const float *q = in + (ky * pw + (size_t)ox * st) * VLEN;
            for (int kx = 0; kx < kw; kx++, q += VLEN)
                a = vfma(vload(b->wb + (size_t)(ky * kw + kx) * VLEN), vload(q), a);
        }
        vstore(b->yr + (size_t)ox * VLEN, a);
    }
    if (!e) return;
    const VF sc = scale ? vload(scale) : vset1(1.0f), sh = shift ? vload(shift) : vzero();
    for (ox = 0; ox < ow; ox++)
        vstore(b->yr + (size_t)ox * VLEN,
               epilogue_vector(e, vload(b->yr + (size_t)ox * VLEN), sc, sh, NULL));
}

/* b->yr back into row oy of the nc output planes y (oh x ow each). */
static void dw_unpack_row(const DwShape *d, const DwBlockBuf *b, int oy, int nc, float *y) {
    const int ow = d->ow;
    const size_t N = (size_t)d->oh * ow;
    for (int ox = 0; ox < ow; ox += VLEN) {
        VF v[VLEN];
        for (int j = 0; j < VLEN; j++)
            v[j] = ox + j < ow ? vload(b->yr + (size_t)(ox + j) * VLEN) : vzero();
        vtranspose(v);
        for (int c = 0; c < nc; c++) vstore_part(y + c * N + (size_t)oy * ow, ox, ow, v[c]);
    }
}

/* Maps at least DW_PLANE_MIN_OW wide run plane by plane instead, with a vector along each
 * output row, straight from and to NCHW (no transposes). The plane's padded input is
 * split by column phase: with stride s, phase q holds xq[r, j] = xp[r, j * s + q], so tap
 * (ky, kx) of the outputs ox.. ox + VLEN - 1 is one unaligned vector of phase kx % s:
 *   y[oy, ox..] = sum_{ky, kx} w[ky, kx] * x{kx % s}[oy * s + ky, ox + kx / s ..]
 * Each phase row is padded with zeros past what the last vector reads, so the loads need
 * no masks; the last vector of a row is stored in part. The sums run over (ky, kx) in the
 * blocked kernel's order from zero, and the epilogue is the same epilogue_vector: both
 * paths give the same bits. */
#define DW_PLANE_MIN_OW   16

typedef struct {
    int vecs;   /* vectors per output row */
    int pcols;  /* floats per phase row: vecs * VLEN + (kw - 1) / s, to whole lines */
    size_t per; /* floats per phase: ph * pcols */
} DwPlane;

static DwPlane dw_plane(const ConvSpec *s, const DwShape *d) {
    DwPlane p;
    p.vecs = (d->ow + VLEN - 1) / VLEN;
    p.pcols = (p.vecs * VLEN + (s->kw - 1) / s->stride + LINE_FLOATS - 1) / LINE_FLOATS *
              LINE_FLOATS;
    p.per = (size_t)d->ph * p.pcols;
    return p;
}

/* xq = the plane x (h x w) padded and split into its s column phases, a vector at a time:
 * column j of phase q is input column j * s + q - pad (0 outside the plane). Vectors that
 * reach past the plane's columns load only what is there (vload_part); stride 2 takes the
 * even lanes of two vectors. */
static void dw_plane_phases(const ConvSpec *s, const DwShape *d, const DwPlane *p, const float *x,
                            float *xq) {
    const int st = s->stride, pad = s->pad, w = d->w, pc = p->pcols;
    for (int q = 0; q < st; q++)
        for (int r = 0; r < d->ph; r++) {
            float *row = xq + q * p->per + (size_t)r * pc;
            const int iy = r - pad;
            if (iy < 0 || iy >= d->h) {
                for (int j = 0; j < pc; j += VLEN) vstore(row + j, vzero());
                continue;
            }
            const float *in = x + (size_t)iy * w;
            for (int j = 0; j < pc; j += VLEN) {
                const int i0 = j * st + q - pad; /* input column of lane 0 */
                if (st == 1) {
                    vstore(row + j, i0 >= 0 && i0 + VLEN <= w ? vload(in + i0)
                                                              : vload_part(in, i0, w));
                } else if (st == 2) {
                    const int full = i0 >= 0 && i0 + 2 * VLEN <= w;
                    const VF lo = full ? vload(in + i0) : vload_part(in, i0, w);
                    const VF hi = full ? vload(in + i0 + VLEN) : vload_part(in, i0 + VLEN, w);
                    vstore(row + j, veven(lo, hi));
                } else {
                    for (int k = 0; k < VLEN; k++)
                        row[j + k] = i0 + k * st >= 0 && i0 + k * st < w ? in[i0 + k * st] : 0.0f;
                }
            }
        }
}

/* The epilogue of channel oc on one output vector (row oy, columns ox..), and its store. */
RN_INLINE void dw_plane_store(const DwShape *d, const ConvEpilogue *e, VF sc, VF sh,
                              const float *res, float *y, int oy, int ox, VF v) {
    const size_t row0 = (size_t)oy * d->ow;
    if (e) {
        VF r = res ? act_load(res + row0, ox, (size_t)d->ow) : vzero();
        v = epilogue_vector(e, v, sc, sh, res ? &r : NULL);
    }
    act_store(y + row0, ox, (size_t)d->ow, v);
}

/* Output rows oy0..oy0 + R - 1 of one plane at C vectors of columns from ox, for a KH x KW
 * kernel of stride S (constants once inlined, so the loops unroll and the kernel's taps
 * stay in registers; R * C independent chains of FMAs). Each input vector is loaded once
 * and goes to every output row that reads it: input row oy0 * S + rr holds tap row
 * ky = rr - i * S of output row oy0 + i. Each output still sums its taps in (ky, kx)
 * order, from zero. */
RN_INLINE void dw_plane_rows(const DwPlane *p, const float *xq, const VF *wv, int KH, int KW,
                             int S, int R, int C, int oy0, int ox, VF *acc) {
    RN_UNROLL for (int i = 0; i < R * C; i++) acc[i] = vzero();
    const float *base = xq + (size_t)oy0 * S * p->pcols + (size_t)ox;
    RN_UNROLL for (int rr = 0; rr < (R - 1) * S + KH; rr++) {
        RN_UNROLL for (int kx = 0; kx < KW; kx++) {
            const float *q =
                base + (size_t)(kx % S) * p->per + (size_t)rr * p->pcols + (size_t)(kx / S);
            RN_UNROLL for (int c = 0; c < C; c++) {
                const VF xv = vload(q + c * VLEN);
                RN_UNROLL for (int i = 0; i < R; i++) {
                    const int ky = rr - i * S;
                    if (ky >= 0 && ky < KH)
                        acc[i * C + c] = vfma(wv[ky * KW + kx], xv, acc[i * C + c]);
                }
            }
        }
    }
}

#define DW_PLANE_ROWS 4 /* output rows in flight, */
#define DW_PLANE_VECS 2 /* times vectors along them */

/* Every output vector of one plane (weights wk), in blocks of DW_PLANE_ROWS rows by
 * DW_PLANE_VECS vectors; the rest one vector at a time. */
RN_INLINE void dw_plane_fixed(const DwShape *d, const DwPlane *p, const float *xq, const float *wk,
                              int KH, int KW, int S, const ConvEpilogue *e, VF sc, VF sh,
                              const float *res, float *y) {
    enum { R = DW_PLANE_ROWS, C = DW_PLANE_VECS };
    VF wv[25], acc[R * C];
    RN_UNROLL for (int t = 0; t < KH * KW; t++) wv[t] = vset1(wk[t]);
    const int full = d->oh / R * R, wide = p->vecs / C * C * VLEN;
    for (int oy = 0; oy < full; oy += R) {
        int ox = 0;
        for (; ox < wide; ox += C * VLEN) {
            dw_plane_rows(p, xq, wv, KH, KW, S, R, C, oy, ox, acc);
            RN_UNROLL for (int i = 0; i < R; i++) RN_UNROLL for (int c = 0; c < C; c++)
                dw_plane_store(d, e, sc, sh, res, y, oy + i, ox + c * VLEN, acc[i * C + c]);
        }
        for (; ox < d->ow; ox += VLEN) {
            dw_plane_rows(p, xq, wv, KH, KW, S, R, 1, oy, ox, acc);
            RN_UNROLL for (int i = 0; i < R; i++)
                dw_plane_store(d, e, sc, sh, res, y, oy + i, ox, acc[i]);
        }
    }
    for (int oy = full; oy < d->oh; oy++)
        for (int ox = 0; ox < d->ow; ox += VLEN) {
            dw_plane_rows(p, xq, wv, KH, KW, S, 1, 1, oy, ox, acc);
            dw_plane_store(d, e, sc, sh, res, y, oy, ox, acc[0]);
        }
}

/* Any other kernel: one output vector at a time, its taps in a loop. */
static void dw_plane_any(const ConvSpec *s, const DwShape *d, const DwPlane *p, const float *xq,
                         const float *wk, const ConvEpilogue *e, VF sc, VF sh, const float *res,
                         float *y) {
    const int st = s->stride, kh = s->kh, kw = s->kw;
    for (int oy = 0; oy < d->oh; oy++)
        for (int ox = 0; ox < d->ow; ox += VLEN) {
            VF a = vzero();
            for (int ky = 0; ky < kh; ky++)
                for (int kx = 0; kx < kw; kx++)
                    a = vfma(vset1(wk[ky * kw + kx]),
                             vload(xq + (size_t)(kx % st) * p->per +
                                   (size_t)(oy * st + ky) * p->pcols + (size_t)(ox + kx / st)),
                             a);
            dw_plane_store(d, e, sc, sh, res, y, oy, ox, a);
        }
}

/* Every output vector of one plane (weights wk [kh * kw]), with the epilogue of channel oc
 * when e is given (and the residual plane res, if any). */
static void dw_plane_convolve(const ConvSpec *s, const DwShape *d, const DwPlane *p,
                              const float *xq, const float *wk, const ConvEpilogue *e, int oc,
                              const float *res, float *y) {
    const VF sc = e && e->scale ? vset1(e->scale[oc]) : vset1(1.0f);
    const VF sh = e && e->shift ? vset1(e->shift[oc]) : vzero();
    const int k = s->kh == s->kw ? s->kh : 0;
    if (k == 3 && s->stride == 1)
        dw_plane_fixed(d, p, xq, wk, 3, 3, 1, e, sc, sh, res, y);
    else if (k == 3 && s->stride == 2)
        dw_plane_fixed(d, p, xq, wk, 3, 3, 2, e, sc, sh, res, y);
    else if (k == 5 && s->stride == 1)
        dw_plane_fixed(d, p, xq, wk, 5, 5, 1, e, sc, sh, res, y);
    else if (k == 5 && s->stride == 2)
        dw_plane_fixed(d, p, xq, wk, 5, 5, 2, e, sc, sh, res, y);
    else
        dw_plane_any(s, d, p, xq, wk, e, sc, sh, res, y);
}

/* Every (image, channel) plane: phases, then its output vectors. Planes are independent,
 * so threads take them in any order with the same results. */
static void conv_forward_depthwise_planes(const ConvSpec *s, int n, int h, int w, const float *x,
                                          const float *weight, const ConvEpilogue *e,
                                          const float *residual, float *y) {
    const DwShape d = dw_shape(s, h, w);
    const DwPlane p = dw_plane(s, &d);
    const int c = s->in_c, taps = s->kh * s->kw;
    const size_t N = (size_t)d.oh * d.ow, HW = (size_t)h * w;
    OMP_PRAGMA(omp parallel if (!omp_in_parallel()))
    {
        float *xq = rn_scratch(omp_get_thread_num(), (size_t)s->stride * p.per + VLEN);
        OMP_PRAGMA(omp for schedule(static))
        for (long plane = 0; plane < (long)n * c; plane++) {
            const int oc = (int)(plane % c);
            dw_plane_phases(s, &d, &p, x + (size_t)plane * HW, xq);
            dw_plane_convolve(s, &d, &p, xq, weight + (size_t)oc * taps, e, oc,
                              residual ? residual + (size_t)plane * N : NULL,
                              y + (size_t)plane * N);
        }
    }
}

/* Every (image, block of VLEN channels): pack, convolve row by row with the epilogue, unpack.
 * Blocks are independent, so threads take them in any order with the same results. */
static void conv_forward_depthwise(const ConvSpec *s, int n, int h, int w, const float *x,
                                   const float *weight, const ConvEpilogue *e,
                                   const float *residual, float *y) {
    const DwShape d = dw_shape(s, h, w);
    const int c = s->in_c, taps = s->kh * s->kw, N = d.oh * d.ow;
    const int blocks = (c + VLEN - 1) / VLEN;
    if (d.ow >= DW_PLANE_MIN_OW) {
        conv_forward_depthwise_planes(s, n, h, w, x, weight, e, residual, y);
        return;
    }
    OMP_PRAGMA(omp parallel if (!omp_in_parallel()))
    {
        const int band_rows = dw_band_in_rows(s, &d, DW_BAND_ROWS);
        float *mem = rn_scratch(omp_get_thread_num(), dw_block_floats(&d, band_rows, taps));
        DwBlockBuf b = dw_block_buf(&d, band_rows, taps, mem);
        float sc[VLEN], sh[VLEN];
        OMP_PRAGMA(omp for schedule(static))
        for (long job = 0; job < (long)n * blocks; job++) {
            const int img = (int)(job / blocks), c0 = (int)(job % blocks) * VLEN;
            const int nc = c - c0 < VLEN ? c - c0 : VLEN;
            const size_t plane0 = (size_t)img * c + c0;
            const ConvEpilogue *eb = residual ? NULL : e; /* else per plane, after */
            if (eb)
                for (int k = 0; k < VLEN; k++) {
                    sc[k] = eb->scale && k < nc ? eb->scale[c0 + k] : 1.0f;
                    sh[k] = eb->shift && k < nc ? eb->shift[c0 + k] : 0.0f;
                }
            dw_pack_weights(s, weight + (size_t)c0 * taps, nc, b.wb);
            for (int oy0 = 0; oy0 < d.oh; oy0 += DW_BAND_ROWS) {
                const int oy1 = oy0 + DW_BAND_ROWS < d.oh ? oy0 + DW_BAND_ROWS : d.oh;
                const int r0 = oy0 * s->stride;
                dw_pack_rows(s, &d, x + plane0 * h * w, nc, r0,
                             r0 + dw_band_in_rows(s, &d, oy1 - oy0), b.xb);
                for (int oy = oy0; oy < oy1; oy++) {
                    dw_block_row(s, &d, &b, r0, oy, eb, eb ? sc : NULL, eb ? sh : NULL);
                    dw_unpack_row(&d, &b, oy, nc, y + plane0 * N);
                }
            }
            if (e && residual)
                for (int k = 0; k < nc; k++)
                    epilogue_row(e, c0 + k, N, y + (plane0 + k) * N, residual + (plane0 + k) * N);
        }
    }
}

/* The backward on the same blocks of VLEN interleaved channels, image by image: with the
 * block's padded input xb, its output gradient gb [oh][ow][VLEN] and the kernels wb,
 *   dw[ky, kx] += sum_{oy, ox} xb[oy * s + ky, ox * s + kx] (*) gb[oy, ox]
 *   dxb[oy * s + ky, ox * s + kx] += wb[ky, kx] (*) gb[oy, ox]      (dxb zeroed, padded)
 *   dbias += sum_{oy, ox} gb[oy, ox]                                 (in double)
 * then dxb's interior goes out to dx. */
typedef struct {
    DwBlockBuf f;         /* xb and wb as the forward's */
    float *gb, *dxb, *dw; /* [oh * ow][VLEN], [ph * pw][VLEN], [taps][VLEN] */
} DwBackBuf;

static size_t dw_back_floats(const DwShape *d, int taps) {
    return dw_block_floats(d, d->ph, taps) +
           ((size_t)d->oh * d->ow + (size_t)d->ph * d->pw + (size_t)taps) * VLEN;
}

static DwBackBuf dw_back_buf(const DwShape *d, int taps, float *mem) {
    DwBackBuf b;
    b.f = dw_block_buf(d, d->ph, taps, mem);
    b.gb = mem + dw_block_floats(d, d->ph, taps);
    b.dxb = b.gb + (size_t)d->oh * d->ow * VLEN;
    b.dw = b.dxb + (size_t)d->ph * d->pw * VLEN;
    return b;
}

/* gb = the nc planes dy (oh x ow each) interleaved. */
static void dw_pack_grad(const DwShape *d, const float *dy, int nc, float *gb) {
    const int ow = d->ow;
    const size_t N = (size_t)d->oh * ow;
    for (int oy = 0; oy < d->oh; oy++)
        for (int ox = 0; ox < ow; ox += VLEN) {
            VF v[VLEN];
            for (int c = 0; c < VLEN; c++)
                v[c] = c < nc ? vload_part(dy + c * N + (size_t)oy * ow, ox, ow) : vzero();
            vtranspose(v);
            for (int j = 0; j < VLEN && ox + j < ow; j++)
                vstore(gb + ((size_t)oy * ow + ox + j) * VLEN, v[j]);
        }
}

static void dw_block_weight_grad(const ConvSpec *s, const DwShape *d, DwBackBuf *b) {
    const int st = s->stride, kw = s->kw, ow = d->ow;
    const size_t pw = (size_t)d->pw;
    for (int t = 0; t < s->kh * kw; t++) {
        const int ky = t / kw, kx = t % kw;
        VF a0 = vzero(), a1 = vzero(); /* two chains: even and odd outputs */
        for (int oy = 0; oy < d->oh; oy++) {
            const float *q = b->f.xb + ((size_t)(oy * st + ky) * pw + kx) * VLEN;
            const float *g = b->gb + (size_t)oy * ow * VLEN;
            int ox = 0;
            for (; ox + 2 <= ow; ox += 2) {
                a0 = vfma(vload(q + (size_t)ox * st * VLEN), vload(g + (size_t)ox * VLEN), a0);
                a1 = vfma(vload(q + (size_t)(ox + 1) * st * VLEN),
                          vload(g + (size_t)(ox + 1) * VLEN), a1);
            }
            if (ox < ow)
                a0 = vfma(vload(q + (size_t)ox * st * VLEN), vload(g + (size_t)ox * VLEN), a0);
        }
        vstore(b->dw + (size_t)t * VLEN, vadd(a0, a1));
    }
}

static void dw_block_input_grad(const ConvSpec *s, const DwShape *d, DwBackBuf *b) {
    const int st = s->stride, kh = s->kh, kw = s->kw, ow = d->ow;
    const size_t pw = (size_t)d->pw;
    memset(b->dxb, 0, sizeof(float) * (size_t)d->ph * pw * VLEN);
    for (int oy = 0; oy < d->oh; oy++)
        for (int ky = 0; ky < kh; ky++) {
            float *row = b->dxb + (size_t)(oy * st + ky) * pw * VLEN;
            const float *g = b->gb + (size_t)oy * ow * VLEN;
            for (int ox = 0; ox < ow; ox++) {
                const VF gv = vload(g + (size_t)ox * VLEN);
                float *q = row + (size_t)ox * st * VLEN;
                for (int kx = 0; kx < kw; kx++, q += VLEN)
                    vstore(q, vfma(vload(b->f.wb + (size_t)(ky * kw + kx) * VLEN), gv, vload(q)));
            }
        }
}

/* dxb's interior (row iy + pad, column ix + pad of input pixel iy, ix; 0 past what the
 * outputs read) into the nc planes dx (h x w each), added to them when add_dx. */
static void dw_unpack_input_grad(const ConvSpec *s, const DwShape *d, const DwBackBuf *b, int nc,
                                 int add_dx, float *dx) {
    const int p = s->pad, h = d->h, w = d->w;
    const size_t HW = (size_t)h * w;
    for (int iy = 0; iy < h; iy++) {
        const float *row = b->dxb + (size_t)(iy + p) * d->pw * VLEN;
        for (int ix = 0; ix < w; ix += VLEN) {
            VF v[VLEN];
            for (int j = 0; j < VLEN; j++)
                v[j] = iy + p < d->ph && ix + j < w && ix + j + p < d->pw
                           ? vload(row + (size_t)(ix + j + p) * VLEN)
                           : vzero();
            vtranspose(v);
            for (int c = 0; c < nc; c++) {
                float *out = dx + c * HW + (size_t)iy * w;
                vstore_part(out, ix, w, add_dx ? vadd(vload_part(out, ix, w), v[c]) : v[c]);
            }
        }
    }
}

/* Each thread takes whole blocks of channels and goes through the images in order, so
 * every weight and bias gradient is summed in one order whatever the thread count. */
static void conv_backward_depthwise(const ConvSpec *s, int n, int h, int w, const float *x,
                                    const float *weight, const float *dy, float *dx, int add_dx,
                                    float *dweight, float *dbias) {
    const DwShape d = dw_shape(s, h, w);
    const int c = s->in_c, taps = s->kh * s->kw, N = d.oh * d.ow;
    const int blocks = (c + VLEN - 1) / VLEN;
    OMP_PRAGMA(omp parallel if (!omp_in_parallel()))
    {
        float *mem = rn_scratch(omp_get_thread_num(), dw_back_floats(&d, taps));
        DwBackBuf b = dw_back_buf(&d, taps, mem);
        OMP_PRAGMA(omp for schedule(static))
        for (int blk = 0; blk < blocks; blk++) {
            const int c0 = blk * VLEN, nc = c - c0 < VLEN ? c - c0 : VLEN;
            double bias_sum[VLEN] = {0};
            for (int img = 0; img < n; img++) {
                const size_t plane0 = (size_t)img * c + c0;
                dw_pack_grad(&d, dy + plane0 * N, nc, b.gb);
                if (dbias)
                    for (int i = 0; i < N; i++)
                        for (int k = 0; k < VLEN; k++) bias_sum[k] += b.gb[(size_t)i * VLEN + k];
                if (!dx && !dweight) continue;
                dw_pack_block(s, &d, x + plane0 * h * w, weight + (size_t)c0 * taps, nc, &b.f);
                if (dweight) {
                    dw_block_weight_grad(s, &d, &b);
                    for (int k = 0; k < nc; k++)
                        for (int t = 0; t < taps; t++)
                            dweight[(size_t)(c0 + k) * taps + t] += b.dw[(size_t)t * VLEN + k];
                }
                if (dx) {
                    dw_block_input_grad(s, &d, &b);
                    dw_unpack_input_grad(s, &d, &b, nc, add_dx, dx + plane0 * h * w);
                }
            }
            if (dbias)
                for (int k = 0; k < nc; k++) dbias[c0 + k] += (float)bias_sum[k];
        }
    }
}

/* One group of a grouped convolution, as the dense convolution it is. */
static ConvSpec conv_group_spec(const ConvSpec *s) {
    ConvSpec g = *s;
    g.in_c /= conv_groups(s);
    g.out_c /= conv_groups(s);
    g.groups = 1;
    return g;
}

/* Where group g of image b lies: its dense spec, and the offsets of its input channels,
 * output channels and weights in the whole convolution's NCHW tensors. */
typedef struct {
    ConvSpec spec;
    size_t plane_in, plane_out, weights;
} GroupLayout;

static GroupLayout group_layout(const ConvSpec *s, int h, int w) {
    GroupLayout L;
    L.spec = conv_group_spec(s);
    L.plane_in = (size_t)h * w;
    L.plane_out = (size_t)conv_out_size(h, s->kh, s->stride, s->pad) *
                  conv_out_size(w, s->kw, s->stride, s->pad);
    L.weights = (size_t)L.spec.out_c * L.spec.in_c * s->kh * s->kw;
    return L;
}

static size_t group_in_at(const GroupLayout *L, const ConvSpec *s, int b, int g) {
    return ((size_t)b * s->in_c + (size_t)g * L->spec.in_c) * L->plane_in;
}

static size_t group_out_at(const GroupLayout *L, const ConvSpec *s, int b, int g) {
    return ((size_t)b * s->out_c + (size_t)g * L->spec.out_c) * L->plane_out;
}

/* A grouped convolution image by image and group by group, each a dense one on its slice of
 * the input channels, the weights and the output channels (contiguous in NCHW). */
static void conv_forward_grouped(const ConvSpec *s, int n, int h, int w, const float *x,
                                 const float *weight, const ConvEpilogue *e, const float *residual,
                                 float *y) {
    const GroupLayout L = group_layout(s, h, w);
    for (int b = 0; b < n; b++)
        for (int g = 0; g < conv_groups(s); g++) {
            const size_t co = (size_t)g * L.spec.out_c, yo = group_out_at(&L, s, b, g);
            ConvEpilogue eg = {NULL, NULL, e ? e->act : CONV_ACT_NONE};
            if (e && e->scale) eg.scale = e->scale + co;
            if (e && e->shift) eg.shift = e->shift + co;
            conv2d_forward_fused(&L.spec, 1, h, w, x + group_in_at(&L, s, b, g),
                                 weight + g * L.weights, &eg, residual ? residual + yo : NULL,
                                 y + yo);
        }
}

void conv2d_forward_fused(const ConvSpec *s, int n, int h, int w, const float *x,
                          const float *weight, const ConvEpilogue *e, const float *residual,
                          float *y) {
    int oh = conv_out_size(h, s->kh, s->stride, s->pad);
    int ow = conv_out_size(w, s->kw, s->stride, s->pad);
    if (oh <= 0 || ow <= 0) return; /* the kernel does not fit: an empty output */
    if (conv_is_depthwise(s)) {
        conv_forward_depthwise(s, n, h, w, x, weight, epilogue_is_empty(e, residual) ? NULL : e,
                               residual, y);
        return;
    }
    if (conv_groups(s) > 1) {
        conv_forward_grouped(s, n, h, w, x, weight, e, residual, y);
        return;
    }
    if (conv_is_pointwise(s) && h == 1 && w == 1) {
        conv_forward_1x1_map(s, n, x, weight, e, residual, y);
        return;
    }
    size_t col_size = conv_col_floats(s, conv_chunk_rows(oh, ow), ow); /* one chunk */
    size_t x_stride = (size_t)s->in_c * h * w, y_stride = (size_t)s->out_c * oh * ow;
    if (conv_batched(s, n, oh * ow)) {
        /* the whole batch through one product, sgemm's threads over its tiles */
        float *buf = rn_scratch(omp_get_thread_num(), conv_batch_floats(s, n, oh * ow));
        conv_forward_batched(s, h, w, oh, ow, x, weight, e, residual, y, n, buf,
                             !omp_in_parallel());
    } else if (conv_split_batch(n)) {
        OMP_PRAGMA(omp parallel)
        {
            float *col = rn_scratch(omp_get_thread_num(), col_size);
            /* An image's output does not depend on the thread that computes it, so threads
             * take images as they free up: on a shared machine, a thread that loses its
             * core for a while no longer holds up the others at the end of the layer. */
            OMP_PRAGMA(omp for schedule(dynamic, 1))
            for (int b = 0; b < n; b++)
                conv_forward_image(s, h, w, oh, ow, x + b * x_stride, weight, e,
                                   residual ? residual + b * y_stride : NULL, y + b * y_stride, col,
                                   0);
        }
    } else {
        float *col = rn_scratch(omp_get_thread_num(), col_size);
        int inner = !omp_in_parallel();
        for (int b = 0; b < n; b++)
            conv_forward_image(s, h, w, oh, ow, x + b * x_stride, weight, e,
                               residual ? residual + b * y_stride : NULL, y + b * y_stride, col,
                               inner);
    }
}

void conv2d_forward(const ConvSpec *s, int n, int h, int w, const float *x, const float *weight,
                    const float *bias, float *y) {
    ConvEpilogue e = {NULL, bias, CONV_ACT_NONE};
    conv2d_forward_fused(s, n, h, w, x, weight, &e, NULL, y);
}

/* One image: dweight[out_c, K] += dy[out_c, N] * col[K, N]^T and dx = col2im(weight^T dy),
 * a chunk of output rows at a time (as the forward), col holding one chunk of col or of
 * dcol; a pointwise conv uses x and dx themselves. */
static void conv_backward_image(const ConvSpec *s, int h, int w, int oh, int ow, const float *x,
                                const float *weight, const float *dy, float *dx, int add_dx,
                                float *dweight, float *col, int inner_parallel) {
    int K = s->in_c * s->kh * s->kw, N = oh * ow;
    if (conv_is_pointwise(s)) {
        if (dweight) sgemm(0, 1, s->out_c, K, N, 1.0f, dy, N, x, N, 1.0f, dweight, K);
        if (dx) sgemm(1, 0, K, N, s->out_c, 1.0f, weight, K, dy, N, add_dx ? 1.0f : 0.0f, dx, N);
        return;
    }
    if (dx && !add_dx) memset(dx, 0, sizeof(float) * s->in_c * h * w);
    int step = conv_chunk_rows(oh, ow);
    for (int oy0 = 0; oy0 < oh; oy0 += step) {
        int oy1 = oy0 + step < oh ? oy0 + step : oh, cols = (oy1 - oy0) * ow;
        const float *g = dy + (size_t)oy0 * ow;
        if (dweight) {
            im2col_rows(s, h, w, oy0, oy1, ow, x, col, (size_t)cols, inner_parallel);
            sgemm(0, 1, s->out_c, K, cols, 1.0f, g, N, col, cols, 1.0f, dweight, K);
        }
        if (dx) {
            sgemm(1, 0, K, cols, s->out_c, 1.0f, weight, K, g, N, 0.0f, col, cols);
            col2im_rows(s, h, w, oy0, oy1, ow, col, (size_t)cols, dx, inner_parallel);
        }
    }
}

/* conv2d_backward (add_dx 0) and conv2d_backward_add (add_dx 1: dx += the gradient). */
static void conv_backward(const ConvSpec *s, int n, int h, int w, const float *x,
                          const float *weight, const float *dy, float *dx, int add_dx,
                          float *dweight, float *dbias);

/* The backward of conv_forward_grouped: each (image, group) slice as a dense conv; the
 * weight and bias gradients of a group accumulate over the images. */
static void conv_backward_grouped(const ConvSpec *s, int n, int h, int w, const float *x,
                                  const float *weight, const float *dy, float *dx, int add_dx,
                                  float *dweight, float *dbias) {
    const GroupLayout L = group_layout(s, h, w);
    for (int b = 0; b < n; b++)
        for (int g = 0; g < conv_groups(s); g++) {
            const size_t xo = group_in_at(&L, s, b, g), yo = group_out_at(&L, s, b, g);
            conv_backward(&L.spec, 1, h, w, x + xo, weight + g * L.weights, dy + yo,
                          dx ? dx + xo : NULL, add_dx, dweight ? dweight + g * L.weights : NULL,
                          dbias ? dbias + (size_t)g * L.spec.out_c : NULL);
        }
}

static void conv_backward(const ConvSpec *s, int n, int h, int w, const float *x,
                          const float *weight, const float *dy, float *dx, int add_dx,
                          float *dweight, float *dbias) {
    if (conv_is_depthwise(s) && conv_out_size(h, s->kh, s->stride, s->pad) > 0 &&
        conv_out_size(w, s->kw, s->stride, s->pad) > 0) {
        conv_backward_depthwise(s, n, h, w, x, weight, dy, dx, add_dx, dweight, dbias);
        return;
    }
    if (conv_groups(s) > 1) {
        conv_backward_grouped(s, n, h, w, x, weight, dy, dx, add_dx, dweight, dbias);
        return;
    }
    int oh = conv_out_size(h, s->kh, s->stride, s->pad);
    int ow = conv_out_size(w, s->kw, s->stride, s->pad);
    size_t col_size = conv_col_floats(s, oh > 0 && ow > 0 ? conv_chunk_rows(oh, ow) : 0, ow);
    size_t w_size = (size_t)s->out_c * s->in_c * s->kh * s->kw;
    size_t x_stride = (size_t)s->in_c * h * w, y_stride = (size_t)s->out_c * oh * ow;
    if (oh <= 0 || ow <= 0) { /* an empty output: no gradient reaches x or the weights */
        if (dx && !add_dx) memset(dx, 0, sizeof(float) * n * x_stride);
        return;
    }
    if (dbias) {
        OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
        for (int oc = 0; oc < s->out_c; oc++) {
            double sum = 0;
            for (int b = 0; b < n; b++) {
                const float *row = dy + b * y_stride + (size_t)oc * oh * ow;
                for (int i = 0; i < oh * ow; i++) sum += row[i];
            }
            dbias[oc] += (float)sum;
        }
    }
    if (!dx && !dweight) return;
    int batched = conv_batched(s, n, oh * ow);
    if (conv_split_batch(n) && !batched) {
        /* Each thread accumulates dweight over its images into its own partial sum
         * (after its im2col buffer in its scratch slot); the partials are then added to
         * dweight in thread order, so the result does not depend on thread timing. (Small
         * maps go through one product for the whole batch instead, below: no partials.) */
        float *partial[RN_MAX_THREADS];
        int used = 0;
        OMP_PRAGMA(omp parallel)
        {
            int t = omp_get_thread_num(), parts = omp_get_num_threads();
            float *col = rn_scratch(t, col_size + (dweight ? w_size : 0));
            float *dw = dweight ? col + col_size : NULL;
            partial[t] = dw;
            if (dw) memset(dw, 0, sizeof(float) * w_size);
            OMP_PRAGMA(omp single)
            used = parts;
            OMP_PRAGMA(omp for schedule(static))
            for (int b = 0; b < n; b++)
                conv_backward_image(s, h, w, oh, ow, x + b * x_stride, weight, dy + b * y_stride,
                                    dx ? dx + b * x_stride : NULL, add_dx, dw, col, 0);
        }
        if (dweight) {
            OMP_PRAGMA(omp parallel for schedule(static))
            for (long i = 0; i < (long)w_size; i++) {
                float sum = dweight[i];
                for (int t = 0; t < used; t++) sum += partial[t][i];
                dweight[i] = sum;
            }
        }
    } else if (batched) {
        float *buf = rn_scratch(omp_get_thread_num(), conv_batch_floats(s, n, oh * ow));
        conv_backward_batched(s, h, w, oh, ow, x, weight, dy, dx, add_dx, dweight, n, buf,
                              !omp_in_parallel());
    } else {
        float *col = rn_scratch(omp_get_thread_num(), col_size);
        int inner = !omp_in_parallel();
        for (int b = 0; b < n; b++)
            conv_backward_image(s, h, w, oh, ow, x + b * x_stride, weight, dy + b * y_stride,
                                dx ? dx + b * x_stride : NULL, add_dx, dweight, col, inner);
    }
}

void conv2d_backward(const ConvSpec *s, int n, int h, int w, const float *x, const float *weight,
                     const float *dy, float *dx, float *dweight, float *dbias) {
    conv_backward(s, n, h, w, x, weight, dy, dx, 0, dweight, dbias);
}

void conv2d_backward_add(const ConvSpec *s, int n, int h, int w, const float *x,
                         const float *weight, const float *dy, float *dx, float *dweight,
                         float *dbias) {
    conv_backward(s, n, h, w, x, weight, dy, dx, 1, dweight, dbias);
}

/* ------------------------------------------------------------------------------------ */
/* Batch norm                                                                            */
/* ------------------------------------------------------------------------------------ */

static void batchnorm_forward_train_dist(int n, int c, int hw, const float *x, const float *gamma,
                                         const float *beta, float *running_mean, float *running_var,
                                         float momentum, float eps, float *y, float *save_mean,
                                         float *save_invstd);

void batchnorm_forward_train(int n, int c, int hw, const float *x, const float *gamma,
                             const float *beta, float *running_mean, float *running_var,
                             float momentum, float eps, float *y, float *save_mean,
                             float *save_invstd) {
    if (dist_step_active()) {
        batchnorm_forward_train_dist(n, c, hw, x, gamma, beta, running_mean, running_var, momentum,
                                     eps, y, save_mean, save_invstd);
        return;
    }
    double m = (double)n * hw;
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (int ch = 0; ch < c; ch++) {
        /* two passes in double: mean, then the biased variance around it */
        double sum = 0, sq = 0;
        for (int b = 0; b < n; b++) {
            const float *p = x + ((size_t)b * c + ch) * hw;
            OMP_PRAGMA(omp simd reduction(+ : sum))
            for (int i = 0; i < hw; i++) sum += p[i];
        }
        double mean = sum / m;
        for (int b = 0; b < n; b++) {
            const float *p = x + ((size_t)b * c + ch) * hw;
            OMP_PRAGMA(omp simd reduction(+ : sq))
            for (int i = 0; i < hw; i++) {
                double d = p[i] - mean;
                sq += d * d;
            }
        }
        double var = sq / m;
        float invstd = (float)(1.0 / sqrt(var + eps));
        if (running_mean)
            running_mean[ch] = (1 - momentum) * running_mean[ch] + momentum * (float)mean;
        if (running_var) {
            double unbiased = m > 1 ? var * m / (m - 1) : var;
            running_var[ch] = (1 - momentum) * running_var[ch] + momentum * (float)unbiased;
        }
        if (save_mean) save_mean[ch] = (float)mean;
        if (save_invstd) save_invstd[ch] = invstd;
        float scale = (gamma ? gamma[ch] : 1.0f) * invstd;
        float shift = (beta ? beta[ch] : 0.0f) - (float)mean * scale;
        for (int b = 0; b < n; b++) {
            const float *p = x + ((size_t)b * c + ch) * hw;
            float *q = y + ((size_t)b * c + ch) * hw;
            OMP_PRAGMA(omp simd)
            for (int i = 0; i < hw; i++) q[i] = p[i] * scale + shift;
        }
    }
}

/* Synchronised batch norm (a data-parallel step, dist.h): the same two passes over the
 * global batch, each rank's per-channel partial sums all-reduced: sum(x) and the count,
 * then sum((x - mean)^2) around the global mean. */
static void batchnorm_forward_train_dist(int n, int c, int hw, const float *x, const float *gamma,
                                         const float *beta, float *running_mean, float *running_var,
                                         float momentum, float eps, float *y, float *save_mean,
                                         float *save_invstd) {
    double *sum = dist_scratch(2 * (size_t)c + 1), *sq = sum + c + 1;
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (int ch = 0; ch < c; ch++) {
        double s = 0;
        for (int b = 0; b < n; b++) {
            const float *p = x + ((size_t)b * c + ch) * hw;
            OMP_PRAGMA(omp simd reduction(+ : s))
            for (int i = 0; i < hw; i++) s += p[i];
        }
        sum[ch] = s;
    }
    sum[c] = (double)n * hw;
    dist_allreduce_doubles(sum, (size_t)c + 1);
    const double m = sum[c];
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (int ch = 0; ch < c; ch++) {
        double mean = sum[ch] / m, q = 0;
        for (int b = 0; b < n; b++) {
            const float *p = x + ((size_t)b * c + ch) * hw;
            OMP_PRAGMA(omp simd reduction(+ : q))
            for (int i = 0; i < hw; i++) {
                double d = p[i] - mean;
                q += d * d;
            }
        }
        sq[ch] = q;
    }
    dist_allreduce_doubles(sq, (size_t)c);
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (int ch = 0; ch < c; ch++) {
        double mean = sum[ch] / m, var = sq[ch] / m;
        float invstd = (float)(1.0 / sqrt(var + eps));
        if (running_mean)
            running_mean[ch] = (1 - momentum) * running_mean[ch] + momentum * (float)mean;
        if (running_var) {
            double unbiased = m > 1 ? var * m / (m - 1) : var;
            running_var[ch] = (1 - momentum) * running_var[ch] + momentum * (float)unbiased;
        }
        if (save_mean) save_mean[ch] = (float)mean;
        if (save_invstd) save_invstd[ch] = invstd;
        float scale = (gamma ? gamma[ch] : 1.0f) * invstd;
        float shift = (beta ? beta[ch] : 0.0f) - (float)mean * scale;
        for (int b = 0; b < n; b++) {
            const float *p = x + ((size_t)b * c + ch) * hw;
            float *q = y + ((size_t)b * c + ch) * hw;
            OMP_PRAGMA(omp simd)
            for (int i = 0; i < hw; i++) q[i] = p[i] * scale + shift;
        }
    }
}

void batchnorm_eval_affine(int c, const float *gamma, const float *beta, const float *running_mean,
                           const float *running_var, float eps, float *scale, float *shift) {
    for (int ch = 0; ch < c; ch++) {
        float invstd = (float)(1.0 / sqrt((double)running_var[ch] + eps));
        scale[ch] = (gamma ? gamma[ch] : 1.0f) * invstd;
        shift[ch] = (beta ? beta[ch] : 0.0f) - running_mean[ch] * scale[ch];
    }
}

void batchnorm_forward_eval(int n, int c, int hw, const float *x, const float *gamma,
                            const float *beta, const float *running_mean, const float *running_var,
                            float eps, float *y) {
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (int ch = 0; ch < c; ch++) {
        float scale, shift;
        batchnorm_eval_affine(1, gamma ? gamma + ch : NULL, beta ? beta + ch : NULL,
                              running_mean + ch, running_var + ch, eps, &scale, &shift);
        for (int b = 0; b < n; b++) {
            const float *p = x + ((size_t)b * c + ch) * hw;
            float *q = y + ((size_t)b * c + ch) * hw;
            OMP_PRAGMA(omp simd)
            for (int i = 0; i < hw; i++) q[i] = p[i] * scale + shift;
        }
    }
}

/* Per-channel sums both batch-norm backwards need: sum(dy) and sum(dy * xhat), with
 * xhat = (x - mean) * invstd, accumulated in double. */
static void channel_dy_sums(int n, int c, int hw, int ch, const float *x, const float *dy,
                            double mean, double invstd, double *sum_dy_out,
                            double *sum_dy_xhat_out) {
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int b = 0; b < n; b++) {
        const float *p = x + ((size_t)b * c + ch) * hw;
        const float *g = dy + ((size_t)b * c + ch) * hw;
        OMP_PRAGMA(omp simd reduction(+ : sum_dy, sum_dy_xhat))
        for (int i = 0; i < hw; i++) {
            sum_dy += g[i];
            sum_dy_xhat += g[i] * ((p[i] - mean) * invstd);
        }
    }
    *sum_dy_out = sum_dy;
    *sum_dy_xhat_out = sum_dy_xhat;
}

/* With xhat = (x - mean) * invstd over the m = n*hw values of a channel:
 *   dbeta += sum(dy), dgamma += sum(dy * xhat),
 *   dx = gamma * invstd / m * (m * dy - sum(dy) - xhat * sum(dy * xhat))               */
void batchnorm_backward_train(int n, int c, int hw, const float *x, const float *gamma,
                              const float *save_mean, const float *save_invstd, const float *dy,
                              float *dx, float *dgamma, float *dbeta) {
    double m = (double)n * hw;
    /* a data-parallel step (dist.h): dgamma and dbeta take this rank's sums (the gradient
     * all-reduce adds them up), dx the global batch's, all-reduced here */
    const int sync = dist_step_active() && dx;
    double *sums = NULL;
    if (sync) {
        sums = dist_scratch(2 * (size_t)c + 1);
        OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
        for (int ch = 0; ch < c; ch++)
            channel_dy_sums(n, c, hw, ch, x, dy, save_mean[ch], save_invstd[ch], &sums[2 * ch],
                            &sums[2 * ch + 1]);
        for (int ch = 0; ch < c; ch++) {
            if (dgamma) dgamma[ch] += (float)sums[2 * ch + 1];
            if (dbeta) dbeta[ch] += (float)sums[2 * ch];
        }
        sums[2 * c] = m;
        dist_allreduce_doubles(sums, 2 * (size_t)c + 1);
        m = sums[2 * c];
    }
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (int ch = 0; ch < c; ch++) {
        double mean = save_mean[ch], invstd = save_invstd[ch];
        double sum_dy, sum_dy_xhat;
        if (sync) {
            sum_dy = sums[2 * ch];
            sum_dy_xhat = sums[2 * ch + 1];
        } else {
            channel_dy_sums(n, c, hw, ch, x, dy, mean, invstd, &sum_dy, &sum_dy_xhat);
            if (dgamma) dgamma[ch] += (float)sum_dy_xhat;
            if (dbeta) dbeta[ch] += (float)sum_dy;
        }
        if (!dx) continue;
        float k = (float)((gamma ? gamma[ch] : 1.0f) * invstd);
        float mean_dy = (float)(sum_dy / m), mean_dy_xhat = (float)(sum_dy_xhat / m);
        float fmean = (float)mean, finvstd = (float)invstd;
        for (int b = 0; b < n; b++) {
            const float *p = x + ((size_t)b * c + ch) * hw;
            const float *g = dy + ((size_t)b * c + ch) * hw;
            float *q = dx + ((size_t)b * c + ch) * hw;
            /* One float rounding per operation, each spelled as an assignment: C99 lets
             * a float expression be evaluated wider (s390x's FLT_EVAL_METHOD is 1: in
             * double), and this difference of nearly equal terms must round as torch's
             * float32 kernel does, or Adam's first steps (about lr * sign(grad)) magnify
             * the changed low bits of near-zero gradients. */
            OMP_PRAGMA(omp simd)
            for (int i = 0; i < hw; i++) {
                float centred = p[i] - fmean;
                float xhat = centred * finvstd;
                float centred_dy = g[i] - mean_dy;
                float proj = xhat * mean_dy_xhat;
                float diff = centred_dy - proj;
                q[i] = k * diff;
            }
        }
    }
}

void batchnorm_backward_eval(int n, int c, int hw, const float *x, const float *gamma,
                             const float *running_mean, const float *running_var, float eps,
                             const float *dy, float *dx, float *dgamma, float *dbeta) {
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (int ch = 0; ch < c; ch++) {
        double mean = running_mean[ch], invstd = 1.0 / sqrt((double)running_var[ch] + eps);
        if (dgamma || dbeta) {
            double sum_dy, sum_dy_xhat;
            channel_dy_sums(n, c, hw, ch, x, dy, mean, invstd, &sum_dy, &sum_dy_xhat);
            if (dgamma) dgamma[ch] += (float)sum_dy_xhat;
            if (dbeta) dbeta[ch] += (float)sum_dy;
        }
        if (!dx) continue;
        float k = (float)((gamma ? gamma[ch] : 1.0f) * invstd);
        for (int b = 0; b < n; b++) {
            const float *g = dy + ((size_t)b * c + ch) * hw;
            float *q = dx + ((size_t)b * c + ch) * hw;
            OMP_PRAGMA(omp simd)
            for (int i = 0; i < hw; i++) q[i] = g[i] * k;
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* ReLU                                                                                  */
/* ------------------------------------------------------------------------------------ */

void relu_forward(size_t n, const float *x, float *y) {
    OMP_PRAGMA(omp parallel for simd schedule(static) if (n > 65536 && !omp_in_parallel()))
    for (long i = 0; i < (long)n; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
}

/* dx = dy where the output is positive (x > 0 exactly when y > 0); dx may alias dy. */
void relu_backward(size_t n, const float *y, const float *dy, float *dx) {
    OMP_PRAGMA(omp parallel for simd schedule(static) if (n > 65536 && !omp_in_parallel()))
    for (long i = 0; i < (long)n; i++) {
        float g = dy[i]; /* loaded unconditionally, so the loop vectorises to a blend */
        dx[i] = y[i] > 0 ? g : 0.0f;
    }
}

/* y = x * scale[c] + shift[c] plane by plane, then max(0, y) when relu: the batch norm's
 * own float operations, so the same bits as its output (and the ReLU's). */
static void affine_planes(int n, int c, int hw, const float *x, const float *scale,
                          const float *shift, int relu, float *y) {
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (long plane = 0; plane < (long)n * c; plane++) {
        const float a = scale[plane % c], b = shift[plane % c];
        const float *p = x + (size_t)plane * hw;
        float *q = y + (size_t)plane * hw;
        if (relu) {
            OMP_PRAGMA(omp simd)
            for (int i = 0; i < hw; i++) {
                float v = p[i] * a + b;
                q[i] = v > 0 ? v : 0.0f;
            }
        } else {
            OMP_PRAGMA(omp simd)
            for (int i = 0; i < hw; i++) q[i] = p[i] * a + b;
        }
    }
}

/* The batch norm's output rebuilt from its input and its scale and shift (a training plan
 * does not keep a batch norm's output that only a SiLU reads). */
void batchnorm_affine_forward(int n, int c, int hw, const float *x, const float *scale,
                              const float *shift, float *y) {
    affine_planes(n, c, hw, x, scale, shift, 0, y);
}

/* ReLU of a per-channel affine map, the ReLU after conv -> batch norm rebuilt from the conv
 * output and the batch norm's scale and shift (a training plan keeps only the conv output):
 *   forward:  y = max(0, x * scale[c] + shift[c])
 *   backward: dx = dy where x * scale[c] + shift[c] > 0, else 0 (dx may alias dy)
 * with the batch norm's own float operations, so y is bit for bit the ReLU's output. */
void relu_affine_forward(int n, int c, int hw, const float *x, const float *scale,
                         const float *shift, float *y) {
    affine_planes(n, c, hw, x, scale, shift, 1, y);
}

void relu_affine_backward(int n, int c, int hw, const float *x, const float *scale,
                          const float *shift, const float *dy, float *dx) {
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (long plane = 0; plane < (long)n * c; plane++) {
        const float a = scale[plane % c], b = shift[plane % c];
        const float *p = x + (size_t)plane * hw, *g = dy + (size_t)plane * hw;
        float *q = dx + (size_t)plane * hw;
        OMP_PRAGMA(omp simd)
        for (int i = 0; i < hw; i++) {
            float v = p[i] * a + b, gi = g[i];
            q[i] = v > 0 ? gi : 0.0f;
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* SiLU and sigmoid                                                                      */
/* ------------------------------------------------------------------------------------ */

/* silu(x) = x * sigmoid(x); d/dx = s + x * s * (1 - s) with s = sigmoid(x). Vectors of
 * VLEN elements through vexp (simd.h), the last one partial; each element's value is the
 * same whichever thread or vector holds it. */
#define ACT_LOOP(n) \
    OMP_PRAGMA(omp parallel for schedule(static) if ((n) > 65536 && !omp_in_parallel())) \
    for (long i = 0; i < (long)(n); i += VLEN)

void silu_forward(size_t n, const float *x, float *y) {
    ACT_LOOP(n) act_store(y, i, n, vsilu(act_load(x, i, n)));
}

void silu_backward(size_t n, const float *x, const float *y, const float *dy, float *dx) {
    ACT_LOOP(n) {
        VF v = act_load(x, i, n), s = vsigmoid(v);
        VF ds = vfma(vmul(v, s), vsub(vset1(1.0f), s), s);
        act_store(dx, i, n, vmul(act_load(dy, i, n), ds));
    }
}

/* sigmoid(x) = 1 / (1 + exp(-x)); d/dx = y * (1 - y), from the output. */
void sigmoid_forward(size_t n, const float *x, float *y) {
    ACT_LOOP(n) act_store(y, i, n, vsigmoid(act_load(x, i, n)));
}

void sigmoid_backward(size_t n, const float *x, const float *y, const float *dy, float *dx) {
    OMP_PRAGMA(omp parallel for simd schedule(static) if (n > 65536 && !omp_in_parallel()))
    for (long i = 0; i < (long)n; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

/* ------------------------------------------------------------------------------------ */
/* Max pool                                                                              */
/* ------------------------------------------------------------------------------------ */

/* Scans each window row by row and keeps the first maximum (a later value must be strictly
 * greater, or NaN, to win), as PyTorch does; padded positions are never candidates. */
void maxpool2d_forward(int n, int c, int h, int w, int k, int stride, int pad, const float *x,
                       float *y, int32_t *argmax) {
    int oh = conv_out_size(h, k, stride, pad), ow = conv_out_size(w, k, stride, pad);
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (long plane = 0; plane < (long)n * c; plane++) {
        const float *in = x + (size_t)plane * h * w;
        for (int oy = 0; oy < oh; oy++) {
            float *out = y + ((size_t)plane * oh + oy) * ow;
            int32_t *arg = argmax + ((size_t)plane * oh + oy) * ow;
            int y0 = oy * stride - pad, y1 = y0 + k < h ? y0 + k : h;
            if (y0 < 0) y0 = 0;
            for (int ox = 0; ox < ow; ox++) {
                int x0 = ox * stride - pad;
                out[ox] = -INFINITY;
                arg[ox] = y0 * w + (x0 < 0 ? 0 : x0);
            }
            /* The window positions in row-major order, each over the whole output row (a
             * loop the compiler vectorises): the result is the first maximum in that
             * order, or the first NaN, which nothing replaces. */
            for (int iy = y0; iy < y1; iy++)
                for (int kx = 0; kx < k; kx++) {
                    const float *row = in + (size_t)iy * w;
                    int lo, hi;
                    valid_range(ow, w, kx, stride, pad, &lo, &hi);
                    OMP_PRAGMA(omp simd)
                    for (int ox = lo; ox < hi; ox++) {
                        int ix = ox * stride - pad + kx;
                        float v = row[ix], best = out[ox];
                        int take = v > best || (isnan(v) && !isnan(best));
                        out[ox] = take ? v : best;
                        arg[ox] = take ? iy * w + ix : arg[ox];
                    }
                }
        }
    }
}

void maxpool2d_backward(int n, int c, int h, int w, int k, int stride, int pad,
                        const int32_t *argmax, const float *dy, float *dx) {
    int oh = conv_out_size(h, k, stride, pad), ow = conv_out_size(w, k, stride, pad);
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (long plane = 0; plane < (long)n * c; plane++) {
        float *g = dx + (size_t)plane * h * w;
        const float *d = dy + (size_t)plane * oh * ow;
        const int32_t *arg = argmax + (size_t)plane * oh * ow;
        memset(g, 0, sizeof(float) * h * w);
        for (int i = 0; i < oh * ow; i++) g[arg[i]] += d[i];
    }
}

/* ------------------------------------------------------------------------------------ */
/* Global average pool                                                                   */
/* ------------------------------------------------------------------------------------ */

/* The mean of a plane, summed in double as 8 interleaved partial sums (element i into sum
 * i mod 8), then added pairwise: eight independent chains of adds instead of one that waits
 * on every add's latency, the same order on every ISA. */
static float plane_mean(const float *p, int hw) {
    double part[8] = {0};
    int i = 0;
    for (; i + 8 <= hw; i += 8)
        for (int k = 0; k < 8; k++) part[k] += p[i + k];
    for (int k = 0; i + k < hw; k++) part[k] += p[i + k];
    double sum = ((part[0] + part[1]) + (part[2] + part[3])) +
                 ((part[4] + part[5]) + (part[6] + part[7]));
    return (float)(sum / hw);
}

void avgpool_global_forward(int n, int c, int hw, const float *x, float *y) {
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (long plane = 0; plane < (long)n * c; plane++)
        y[plane] = plane_mean(x + (size_t)plane * hw, hw);
}

void avgpool_global_backward(int n, int c, int hw, const float *dy, float *dx) {
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (long plane = 0; plane < (long)n * c; plane++) {
        float g = dy[plane] / (float)hw;
        float *q = dx + (size_t)plane * hw;
        OMP_PRAGMA(omp simd)
        for (int i = 0; i < hw; i++) q[i] = g;
    }
}

/* ------------------------------------------------------------------------------------ */
/* Adaptive average pool                                                                 */
/* ------------------------------------------------------------------------------------ */

/* Output cell i of `out` over an input side of `in` covers [floor(i * in / out),
 * ceil((i + 1) * in / out)), torch's AdaptiveAvgPool2d bins: they tile the input when out
 * divides in, overlap otherwise, and repeat input cells when in < out. */
static void adaptive_bin(int i, int in, int out, int *lo, int *hi) {
    *lo = (int)((long long)i * in / out);
    *hi = (int)(((long long)(i + 1) * in + out - 1) / out);
}

void adaptive_avgpool2d_forward(int n, int c, int h, int w, int oh, int ow, const float *x,
                                float *y) {
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (long plane = 0; plane < (long)n * c; plane++) {
        const float *p = x + (size_t)plane * h * w;
        float *q = y + (size_t)plane * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            int y0, y1;
            adaptive_bin(oy, h, oh, &y0, &y1);
            for (int ox = 0; ox < ow; ox++) {
                int x0, x1;
                adaptive_bin(ox, w, ow, &x0, &x1);
                double sum = 0;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++) sum += p[(size_t)iy * w + ix];
                q[oy * ow + ox] = (float)(sum / ((y1 - y0) * (x1 - x0)));
            }
        }
    }
}

/* dx[iy, ix] = sum over the bins holding (iy, ix) of dy[bin] / area(bin). */
void adaptive_avgpool2d_backward(int n, int c, int h, int w, int oh, int ow, const float *dy,
                                 float *dx) {
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel()))
    for (long plane = 0; plane < (long)n * c; plane++) {
        float *g = dx + (size_t)plane * h * w;
        const float *d = dy + (size_t)plane * oh * ow;
        memset(g, 0, sizeof(float) * h * w);
        for (int oy = 0; oy < oh; oy++) {
            int y0, y1;
            adaptive_bin(oy, h, oh, &y0, &y1);
            for (int ox = 0; ox < ow; ox++) {
                int x0, x1;
                adaptive_bin(ox, w, ow, &x0, &x1);
                float v = d[oy * ow + ox] / (float)((y1 - y0) * (x1 - x0));
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++) g[(size_t)iy * w + ix] += v;
            }
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* Linear                                                                                */
/* ------------------------------------------------------------------------------------ */

typedef void (*Gemm)(int, int, int, int, int, float, const float *, int, const float *, int, float,
                     float *, int);

/* y[n, out] = x[n, in] * weight[out, in]^T + bias */
static void linear_forward_with(Gemm gemm, int n, int in, int out, const float *x,
                                const float *weight, const float *bias, float *y) {
    gemm(0, 1, n, out, in, 1.0f, x, in, weight, in, 0.0f, y, out);
    if (bias)
        for (int b = 0; b < n; b++)
            for (int o = 0; o < out; o++) y[(size_t)b * out + o] += bias[o];
}

/* dx = dy * weight, dweight += dy^T * x, dbias += sum over the batch of dy */
static void linear_backward_with(Gemm gemm, int n, int in, int out, const float *x,
                                 const float *weight, const float *dy, float *dx, float *dweight,
                                 float *dbias) {
    if (dx) gemm(0, 0, n, in, out, 1.0f, dy, out, weight, in, 0.0f, dx, in);
    if (dweight) gemm(1, 0, out, in, n, 1.0f, dy, out, x, in, 1.0f, dweight, in);
    if (dbias)
        for (int o = 0; o < out; o++) {
            double sum = 0;
            for (int b = 0; b < n; b++) sum += dy[(size_t)b * out + o];
            dbias[o] += (float)sum;
        }
}

void linear_forward(int n, int in, int out, const float *x, const float *weight, const float *bias,
                    float *y) {
    linear_forward_with(sgemm, n, in, out, x, weight, bias, y);
}

void linear_backward(int n, int in, int out, const float *x, const float *weight, const float *dy,
                     float *dx, float *dweight, float *dbias) {
    linear_backward_with(sgemm, n, in, out, x, weight, dy, dx, dweight, dbias);
}

void linear_forward_ref(int n, int in, int out, const float *x, const float *weight,
                        const float *bias, float *y) {
    linear_forward_with(sgemm_ref, n, in, out, x, weight, bias, y);
}

void linear_backward_ref(int n, int in, int out, const float *x, const float *weight,
                         const float *dy, float *dx, float *dweight, float *dbias) {
    linear_backward_with(sgemm_ref, n, in, out, x, weight, dy, dx, dweight, dbias);
}

/* ------------------------------------------------------------------------------------ */
/* Dropout                                                                               */
/* ------------------------------------------------------------------------------------ */

/* Inverted dropout: each element is kept with probability 1 - p and scaled by 1/(1-p).
 * The mask is drawn sequentially (one rng_uniform per element) for reproducibility;
 * p <= 0 draws nothing and keeps everything. */
void dropout_forward(size_t n, float p, Rng *rng, const float *x, float *y, float *mask) {
    float keep = p < 1 ? 1.0f / (1.0f - p) : 0.0f;
    for (size_t i = 0; i < n; i++) {
        mask[i] = p <= 0 ? 1.0f : (rng_uniform(rng) < p ? 0.0f : keep);
        y[i] = x[i] * mask[i];
    }
}

void dropout_backward(size_t n, const float *mask, const float *dy, float *dx) {
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * mask[i];
}

/* Stochastic depth, torchvision's StochasticDepth(p, "row"): a whole sample kept with
 * probability 1 - p (and scaled by 1 / (1 - p)) or zeroed. */
void stochastic_depth_forward(int n, size_t per_sample, float p, Rng *rng, const float *x,
                              float *y, float *keep) {
    const float survive = 1.0f - p, scale = survive > 0 ? 1.0f / survive : 0.0f;
    for (int b = 0; b < n; b++) {
        keep[b] = rng_uniform(rng) < survive ? scale : 0.0f;
        const float k = keep[b];
        const float *xb = x + (size_t)b * per_sample;
        float *yb = y + (size_t)b * per_sample;
        OMP_PRAGMA(omp simd)
        for (size_t i = 0; i < per_sample; i++) yb[i] = xb[i] * k;
    }
}

void stochastic_depth_backward(int n, size_t per_sample, const float *keep, const float *dy,
                               float *dx) {
    for (int b = 0; b < n; b++) {
        const float k = keep[b];
        const float *g = dy + (size_t)b * per_sample;
        float *d = dx + (size_t)b * per_sample;
        OMP_PRAGMA(omp simd)
        for (size_t i = 0; i < per_sample; i++) d[i] = g[i] * k;
    }
}

/* ------------------------------------------------------------------------------------ */
/* Channel-wise scale (squeeze-and-excitation)                                           */
/* ------------------------------------------------------------------------------------ */

void channel_scale_forward(int n, int c, int hw, const float *x, const float *s, float *y) {
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel() && (long)n * c * hw > 65536))
    for (long row = 0; row < (long)n * c; row++) {
        const float k = s[row];
        const float *xr = x + (size_t)row * hw;
        float *yr = y + (size_t)row * hw;
        OMP_PRAGMA(omp simd)
        for (int i = 0; i < hw; i++) yr[i] = xr[i] * k;
    }
}

/* ds first (it reads dy), then dx: dx may be dy. */
void channel_scale_backward(int n, int c, int hw, const float *x, const float *s, const float *dy,
                            float *dx, float *ds) {
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel() && (long)n * c * hw > 65536))
    for (long row = 0; row < (long)n * c; row++) {
        const float *g = dy + (size_t)row * hw;
        if (ds) {
            const float *xr = x + (size_t)row * hw;
            double sum = 0;
            for (int i = 0; i < hw; i++) sum += (double)g[i] * xr[i];
            ds[row] = (float)sum;
        }
        if (dx) {
            const float k = s[row];
            float *d = dx + (size_t)row * hw;
            OMP_PRAGMA(omp simd)
            for (int i = 0; i < hw; i++) d[i] = g[i] * k;
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* Option-A shortcut (CIFAR ResNets)                                                     */
/* ------------------------------------------------------------------------------------ */

void shortcut_a_forward(int n, int in_c, int h, int w, int out_c, int stride, const float *x,
                        float *y) {
    int oh = (h + stride - 1) / stride, ow = (w + stride - 1) / stride;
    int lead = (out_c - in_c) / 2;
    for (int b = 0; b < n; b++)
        for (int oc = 0; oc < out_c; oc++) {
            float *q = y + ((size_t)b * out_c + oc) * oh * ow;
            int ic = oc - lead;
            if (ic < 0 || ic >= in_c) {
                memset(q, 0, sizeof(float) * oh * ow);
                continue;
            }
            const float *p = x + ((size_t)b * in_c + ic) * h * w;
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++)
                    q[oy * ow + ox] = p[(size_t)oy * stride * w + (size_t)ox * stride];
        }
}

void shortcut_a_backward(int n, int in_c, int h, int w, int out_c, int stride, const float *dy,
                         float *dx) {
    int oh = (h + stride - 1) / stride, ow = (w + stride - 1) / stride;
    int lead = (out_c - in_c) / 2;
    memset(dx, 0, sizeof(float) * n * in_c * h * w);
    for (int b = 0; b < n; b++)
        for (int ic = 0; ic < in_c; ic++) {
            const float *g = dy + ((size_t)b * out_c + ic + lead) * oh * ow;
            float *q = dx + ((size_t)b * in_c + ic) * h * w;
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++)
                    q[(size_t)oy * stride * w + (size_t)ox * stride] = g[oy * ow + ox];
        }
}

/* ------------------------------------------------------------------------------------ */
/* Residual sum and channel concatenation                                                */
/* ------------------------------------------------------------------------------------ */

#define OMP_MIN_WORK 65536 /* elementwise loops shorter than this stay on one thread */

/* y = a + b, or relu(a + b) (the end of a residual block). */
void add_forward(size_t count, const float *a, const float *b, int relu, float *y) {
    long n = (long)count;
    OMP_PRAGMA(omp parallel for simd schedule(static) if (n > OMP_MIN_WORK))
    for (long i = 0; i < n; i++) {
        float s = a[i] + b[i];
        y[i] = relu && s < 0 ? 0 : s;
    }
}

/* Backward of y = a + b, or of y = relu(a + b) when y is given: g = dy (times y > 0), and
 * each wanted input gradient (da, db not NULL) is set to g when first_*, else g is added to
 * it. One pass instead of a mask and two copies; da may alias dy. */
void add_backward(size_t count, const float *y, const float *dy, float *da, int first_a, float *db,
                  int first_b) {
    long n = (long)count;
    OMP_PRAGMA(omp parallel for simd schedule(static) if (n > OMP_MIN_WORK))
    for (long i = 0; i < n; i++) {
        float g = dy[i];
        if (y) g = y[i] > 0 ? g : 0.0f; /* a blend, not a branch: masks are random */
        if (da) da[i] = first_a ? g : da[i] + g;
        if (db) db[i] = first_b ? g : db[i] + g;
    }
}

/* d += g elementwise: a branch point summing the gradients of its consumers. */
void add_into(size_t count, const float *g, float *d) {
    long n = (long)count;
    OMP_PRAGMA(omp parallel for simd schedule(static) if (n > OMP_MIN_WORK))
    for (long i = 0; i < n; i++) d[i] += g[i];
}

/* Per sample, y = [x_0, x_1, ...] along channels, part k holding floats[k] values. */
void concat_forward(int n, int parts, const size_t *floats, const float *const *x, float *y) {
    size_t total = 0;
    for (int k = 0; k < parts; k++) total += floats[k];
    for (int s = 0; s < n; s++) {
        size_t at = 0;
        for (int k = 0; k < parts; k++) {
            memcpy(y + s * total + at, x[k] + s * floats[k], sizeof(float) * floats[k]);
            at += floats[k];
        }
    }
}

/* dx_k = part k of dy, for each k whose dx[k] is not NULL. */
void concat_backward(int n, int parts, const size_t *floats, const float *dy, float *const *dx) {
    size_t total = 0;
    for (int k = 0; k < parts; k++) total += floats[k];
    for (int s = 0; s < n; s++) {
        size_t at = 0;
        for (int k = 0; k < parts; k++) {
            if (dx[k])
                memcpy(dx[k] + s * floats[k], dy + s * total + at, sizeof(float) * floats[k]);
            at += floats[k];
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* Softmax and cross-entropy                                                             */
/* ------------------------------------------------------------------------------------ */

/* log(sum_j exp(z_j)), shifted by the maximum so that nothing overflows */
static double log_sum_exp(int k, const float *z) {
    float zmax = z[0];
    for (int j = 1; j < k; j++)
        if (z[j] > zmax) zmax = z[j];
    double sum = 0;
    for (int j = 0; j < k; j++) sum += exp((double)z[j] - zmax);
    return zmax + log(sum);
}

void softmax_rows(int n, int k, const float *logits, float *probs) {
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        double lse = log_sum_exp(k, z);
        for (int j = 0; j < k; j++) probs[(size_t)i * k + j] = (float)exp(z[j] - lse);
    }
}

/* Labels outside [0, k) are ignored (like torch's ignore_index): they add nothing to the
 * loss or its normaliser. With no counted sample the loss is 0. */
float softmax_cross_entropy_forward(int n, int k, const float *logits, const int *labels,
                                    const float *class_weights, float label_smoothing,
                                    float *probs) {
    double eps = label_smoothing, total = 0, norm = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        double lse = log_sum_exp(k, z);
        for (int j = 0; j < k; j++) probs[(size_t)i * k + j] = (float)exp(z[j] - lse);
        int y = labels[i];
        if (y < 0 || y >= k) continue;
        double wy = class_weights ? class_weights[y] : 1.0;
        /* -log p_j = lse - z_j; the smoothing term is eps/K * sum_j w_j (lse - z_j) */
        double smooth = 0;
        for (int j = 0; j < k; j++)
            smooth += (class_weights ? class_weights[j] : 1.0) * (lse - z[j]);
        total += (1 - eps) * wy * (lse - z[y]) + eps / k * smooth;
        norm += wy;
    }
    if (dist_step_active()) { /* the mean over the global batch */
        double both[2] = {total, norm};
        dist_allreduce_doubles(both, 2);
        total = both[0];
        norm = both[1];
    }
    return norm > 0 ? (float)(total / norm) : 0.0f;
}

/* d loss_i / d z_j = (1 - eps) * w_y * (p_j - [j == y]) + eps/K * (p_j * sum_k w_k - w_j),
 * divided by the normaliser sum_i w[y_i]. */
void softmax_cross_entropy_backward(int n, int k, const float *probs, const int *labels,
                                    const float *class_weights, float label_smoothing,
                                    float *dlogits) {
    double eps = label_smoothing, norm = 0, sum_w = 0;
    for (int j = 0; j < k; j++) sum_w += class_weights ? class_weights[j] : 1.0;
    for (int i = 0; i < n; i++)
        if (labels[i] >= 0 && labels[i] < k) norm += class_weights ? class_weights[labels[i]] : 1.0;
    if (dist_step_active()) dist_allreduce_doubles(&norm, 1); /* the global batch's */
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        float *g = dlogits + (size_t)i * k;
        int y = labels[i];
        if (y < 0 || y >= k || norm <= 0) {
            memset(g, 0, sizeof(float) * k);
            continue;
        }
        double wy = class_weights ? class_weights[y] : 1.0;
        for (int j = 0; j < k; j++) {
            double wj = class_weights ? class_weights[j] : 1.0;
            double d = (1 - eps) * wy * (p[j] - (j == y)) + eps / k * (p[j] * sum_w - wj);
            g[j] = (float)(d / norm);
        }
    }
}
