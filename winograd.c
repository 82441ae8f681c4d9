/* winograd.c - 3x3 stride-1 convolutions by Winograd's minimal filtering F(4x4, 3x3)
 * (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016), the
 * eval-forward path of ResNet's 3x3 convolutions; training and the reference use im2col.
 *
 * A 4x4 tile of one output channel, from the 6x6 input tile d around it (tiles overlap by
 * 2) and the 3x3 kernel g of each input channel, is
 *
 *     Y = A^T [ sum_ic (G g G^T) .* (B^T d B) ] A          (.* elementwise, 6x6)
 *
 * Written per position xi of the 6x6 transformed tile, the sum over input channels is a
 * matrix product, so a convolution becomes 36 of them:
 *
 *     M[xi] (out_c x tiles) = U[xi]^T * V[xi] (in_c x tiles)
 *
 * with U = G g G^T (weights, transformed once: winograd_weight_transform, stored in_c x
 * out_c) and V = B^T d B (input tiles). U is stored transposed so that sgemm may as well
 * compute M[xi]^T = V[xi]^T U[xi]: with few tiles (a small map at a small batch) that puts
 * the output channels along its vectors, where the tiles would fill a fraction of them.
 * That is 36 multiply-adds per tile and channel pair where the direct convolution needs
 * 16 * 9 = 144: a quarter. The transforms cost a few additions per element. Rounding
 * differs from the direct sum (the transforms scale values by up to 8 and cancel), by about
 * 1e-6 of the output's magnitude per layer: tests bound it.
 *
 * Tiles of the whole batch are numbered (image, tile row, tile column) and processed in
 * chunks: transform a chunk's input, 36 products (sgemm), transform the output and apply
 * the epilogue (conv2d_forward_fused's: folded batch norm, residual, ReLU). A tile's result
 * does not depend on the chunk it falls in, so neither the chunking nor the thread count
 * changes a bit of the output. */
#include <string.h>

#include "resnet.h"
#include "conv_epilogue.h"
#include "parallel.h"
#include "simd.h"

#define WT  4         /* output tile: WT x WT */
#define WA  (WT + 2)  /* input tile and transformed tile: WA x WA (= WT + 3 - 1) */
#define WXI (WA * WA) /* 36 products */

/* The transforms for the interpolation points 0, 1, -1, 2, -2 (and infinity). */
static const float BT[WA][WA] = {
    {4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
    {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1},
};
static const double G[WA][3] = {
    {1.0 / 4, 0, 0},
    {-1.0 / 6, -1.0 / 6, -1.0 / 6},
    {-1.0 / 6, 1.0 / 6, -1.0 / 6},
    {1.0 / 24, 1.0 / 12, 1.0 / 6},
    {1.0 / 24, -1.0 / 12, 1.0 / 6},
    {0, 0, 1},
};
static const float AT[WT][WA] = {
    {1, 1, 1, 1, 1, 0},
    {0, 1, -1, 2, -2, 0},
    {0, 1, 1, 4, 4, 0},
    {0, 1, -1, 8, -8, 1},
};

int conv_winograd_eligible(const ConvSpec *s) {
    return s->kh == 3 && s->kw == 3 && s->stride == 1 && s->pad == 1 && s->groups <= 1;
}

/* With plain-C transforms (SIMD=0, and SIMD=auto, which vectorises only the GEMM) the
 * transforms cost what the products save: measured no faster than im2col + GEMM. */
int conv_winograd_pays(void) { return VLEN > 1; }

size_t winograd_weight_floats(const ConvSpec *s) { return (size_t)WXI * s->out_c * s->in_c; }

/* u[xi][ic][oc] = (G g G^T)[xi], g = weight[oc, ic] (3x3), in double then rounded once.
 * A run of output channels at a time goes through tile[][36], then out as 36 runs of
 * consecutive floats (the 36 planes are in_c * out_c floats apart: writing a tile's 36
 * values one by one would touch 36 cache lines for each). */
#define WEIGHT_RUN 16
void winograd_weight_transform(const ConvSpec *s, const float *weight, float *u) {
    int co = s->out_c, ci = s->in_c;
    OMP_PRAGMA(omp parallel for schedule(static) if (!omp_in_parallel() && ci >= 64))
    for (int ic = 0; ic < ci; ic++)
        for (int oc0 = 0; oc0 < co; oc0 += WEIGHT_RUN) {
            int run = co - oc0 < WEIGHT_RUN ? co - oc0 : WEIGHT_RUN;
            float tile[WEIGHT_RUN][WXI];
            for (int r = 0; r < run; r++) {
                const float *g = weight + ((size_t)(oc0 + r) * ci + ic) * 9;
                double gt[WA][3]; /* G g */
                for (int k = 0; k < WA; k++)
                    for (int j = 0; j < 3; j++)
                        gt[k][j] = G[k][0] * g[j] + G[k][1] * g[3 + j] + G[k][2] * g[6 + j];
                for (int k = 0; k < WA; k++)
                    for (int l = 0; l < WA; l++)
                        tile[r][k * WA + l] =
                            (float)(gt[k][0] * G[l][0] + gt[k][1] * G[l][1] + gt[k][2] * G[l][2]);
            }
            for (int xi = 0; xi < WXI; xi++) {
                float *dst = u + ((size_t)xi * ci + ic) * co + oc0;
                for (int r = 0; r < run; r++) dst[r] = tile[r][xi];
            }
        }
}

/* sum_j c[j] * x[j] over the nonzero coefficients (the tables are constants: after
 * unrolling, the zero terms and the tests vanish). */
#define COMBINE(out, c, x, len)                                                                    \
    do {                                                                                           \
        VF acc_ = vzero();                                                                         \
        RN_UNROLL for (int j_ = 0; j_ < (len); j_++) if ((c)[j_] != 0) acc_ =                      \
            vfma(vset1((c)[j_]), (x)[j_], acc_);                                                   \
        (out) = acc_;                                                                              \
    } while (0)

/* The transforms work on blocks of BLOCK consecutive tiles of a chunk, which may span tile
 * rows (and images): the passes across tiles then run on whole vectors even when a tile
 * row is short (4 tiles at 14x14). Within a block, a segment is the part in one tile row:
 * image b, tile row ty, columns tx0.., nt tiles, the block's tiles at..at+nt-1. */
#define BLOCK   64
#define BSTRIDE (BLOCK + 2 * VLEN) /* a block's row in the buffers, with a vector of slack */
typedef struct {
    int b, ty, tx0, nt, at;
} Segment;

/* The segment that starts at tile t of the batch (th x tw tiles an image), ending by end;
 * at: its place in the block that starts at tile t0. */
static Segment segment_at(int t, int end, int th, int tw, int t0) {
    Segment sg = {t / (th * tw), t / tw % th, t % tw, 0, t - t0};
    sg.nt = tw - sg.tx0 < end - t ? tw - sg.tx0 : end - t;
    return sg;
}

/* Input tiles of channel ic for the block [t0, t1) of the batch: V[xi][ic][tile] =
 * (B^T d B)[xi], stored from v (the block's place in the channel's row of V[0];
 * xi_stride floats to the next xi). For each segment, its 6 input rows are read 4 vectors
 * at a time and split into 4 phases (phase p: columns 4q + p) and transformed down the
 * rows; tile q's six columns are then phases 0-3 at q and phases 0-1 at q + 1, gathered
 * into col[k][j][tile] for the pass across, which runs over the whole block. */
static void input_transform_block(int t0, int t1, int th, int tw, int h, int w, const float *x,
                                  int ci, int ic, float *v, size_t xi_stride) {
    float col[WA][WA][BSTRIDE];
    size_t plane = (size_t)h * w;
    for (int t = t0; t < t1;) {
        Segment sg = segment_at(t, t1, th, tw, t0);
        const float *src = x + ((size_t)sg.b * ci + ic) * plane;
        int nq = sg.nt + 1, x0 = sg.tx0 * WT - 1;
        for (int q = 0; q < nq; q += VLEN) {
            VF rows[WA][4];
            RN_UNROLL for (int r = 0; r < WA; r++) {
                int iy = sg.ty * WT - 1 + r;
                RN_UNROLL for (int j = 0; j < 4; j++) rows[r][j] =
                    iy >= 0 && iy < h ? vload_part(src + (size_t)iy * w, x0 + 4 * q + j * VLEN, w)
                                      : vzero();
                vdeinterleave4(rows[r]);
            }
            /* down the rows: sum_r BT[k][r] row[r], phase by phase; phase p is column j = p
             * of tiles q.., and phases 0, 1 column j = 4, 5 of tiles q - 1.. */
            RN_UNROLL for (int p = 0; p < 4; p++) {
                VF in[WA];
                RN_UNROLL for (int r = 0; r < WA; r++) in[r] = rows[r][p];
                RN_UNROLL for (int k = 0; k < WA; k++) {
                    VF tk;
                    COMBINE(tk, BT[k], in, WA);
                    vstore(&col[k][p][sg.at + q], tk);
                    if (p < 2) vstore_part(&col[k][p + 4][sg.at], q - 1, sg.nt, tk);
                }
            }
        }
        t += sg.nt;
    }
    /* the last vector's lanes past the block's end are computed, never used: zeros */
    for (int k = 0; k < WA; k++)
        for (int j = 0; j < WA; j++) vstore(&col[k][j][t1 - t0], vzero());
    /* across: V[k][l][tile] = sum_j BT[l][j] col[k][j][tile] */
    for (int q = 0; q < t1 - t0; q += VLEN) RN_UNROLL for (int k = 0; k < WA; k++) {
            VF in[WA];
            RN_UNROLL for (int j = 0; j < WA; j++) in[j] = vload(&col[k][j][q]);
            RN_UNROLL for (int l = 0; l < WA; l++) {
                VF vl;
                COMBINE(vl, BT[l], in, WA);
                vstore(v + (size_t)(k * WA + l) * xi_stride + q, vl);
            }
        }
}

/* Output tiles of channel oc for the block [t0, t1): Y = A^T M A (m: the block's place in
 * the channel's row of M[0], xi_stride floats to the next xi) over the whole block into
 * yt[i][j][tile]; then, segment by segment, each output row's four columns of tiles are
 * interleaved back, and the epilogue (conv2d_forward_fused's, in its order: scale, shift,
 * residual, ReLU) runs on the way into y. */
static void output_transform_block(int t0, int t1, int th, int tw, int oh, int ow, const float *m,
                                   size_t xi_stride, const ConvEpilogue *e, int co, int oc,
                                   const float *residual, float *y) {
    float yt[WT][WT][BSTRIDE];
    for (int q = 0; q < t1 - t0; q += VLEN) {
        VF s[WT][WA];
        RN_UNROLL for (int l = 0; l < WA; l++) {
            VF in[WA];
            RN_UNROLL for (int k = 0; k < WA; k++) in[k] =
                vload(m + (size_t)(k * WA + l) * xi_stride + q);
            RN_UNROLL for (int i = 0; i < WT; i++) COMBINE(s[i][l], AT[i], in, WA);
        }
        RN_UNROLL for (int i = 0; i < WT; i++) RN_UNROLL for (int j = 0; j < WT; j++) {
            VF yv;
            COMBINE(yv, AT[j], s[i], WA);
            vstore(&yt[i][j][q], yv);
        }
    }
    VF sc = vset1(e->scale ? e->scale[oc] : 1.0f), sh = vset1(e->shift ? e->shift[oc] : 0.0f);
    size_t plane = (size_t)oh * ow;
    for (int t = t0; t < t1;) {
        Segment sg = segment_at(t, t1, th, tw, t0);
        size_t at = ((size_t)sg.b * co + oc) * plane;
        int x0 = sg.tx0 * WT, x1 = x0 + WT * sg.nt < ow ? x0 + WT * sg.nt : ow;
        for (int i = 0; i < WT && sg.ty * WT + i < oh; i++) {
            size_t row = at + (size_t)(sg.ty * WT + i) * ow;
            for (int q = 0; q < sg.nt; q += VLEN) {
                VF yv[WT];
                RN_UNROLL for (int j = 0; j < WT; j++) yv[j] = vload(&yt[i][j][sg.at + q]);
                vinterleave4(yv);
                RN_UNROLL for (int j = 0; j < WT; j++) {
                    int c = x0 + WT * q + j * VLEN;
                    if (c >= x1) break;
                    VF r = residual ? vload_part(residual + row, c, x1) : vzero();
                    vstore_part(y + row, c, x1,
                                epilogue_vector(e, yv[j], sc, sh, residual ? &r : NULL));
                }
            }
        }
        t += sg.nt;
    }
}

/* Largest chunk, in tiles: its V and M (36 x (in_c + out_c) x tiles floats) are about
 * 8 MB, in L3 from the input transform to the output transform (measured: 1 MB chunks
 * that stay in L2 make products too thin to pay). */
#define WINO_CHUNK_FLOATS ((size_t)1 << 21)

/* Row length of V and M for a chunk of count tiles: a vector's slack past the end. */
static int chunk_ld(int count) { return (count + 2 * VLEN - 1) / VLEN * VLEN; }

/* One chunk: tiles [first, end) of the batch (th x tw tiles an image), V and M in ws.
 * inner: loops and sgemm may use threads (the chunks run one after the other). */
static void winograd_chunk(const ConvSpec *s, int h, int w, const float *x, const float *u,
                           const ConvEpilogue *e, const float *residual, float *y, int first,
                           int end, int th, int tw, float *ws, int inner) {
    int ci = s->in_c, co = s->out_c, count = end - first, ld = chunk_ld(count);
    size_t xi_v = (size_t)ci * ld, xi_m = (size_t)co * ld;
    float *v = ws, *m = v + WXI * xi_v;
    OMP_PRAGMA(omp parallel for schedule(static) if (inner))
    for (int ic = 0; ic < ci; ic++)
        for (int t = first; t < end; t += BLOCK)
            input_transform_block(t, t + BLOCK < end ? t + BLOCK : end, th, tw, h, w, x, ci, ic,
                                  v + (size_t)ic * ld + (t - first), xi_v);
    for (int xi = 0; xi < WXI; xi++)
        sgemm(1, 0, co, count, ci, 1.0f, u + (size_t)xi * co * ci, co, v + xi * xi_v, ld, 0.0f,
              m + xi * xi_m, ld);
    OMP_PRAGMA(omp parallel for schedule(static) if (inner))
    for (int oc = 0; oc < co; oc++)
        for (int t = first; t < end; t += BLOCK)
            output_transform_block(t, t + BLOCK < end ? t + BLOCK : end, th, tw, h, w,
                                   m + (size_t)oc * ld + (t - first), xi_m, e, co, oc, residual, y);
}

void conv2d_forward_winograd(const ConvSpec *s, int n, int h, int w, const float *x, const float *u,
                             const ConvEpilogue *e, const float *residual, float *y) {
    ConvEpilogue none = {NULL, NULL, CONV_ACT_NONE};
    if (!e) e = &none;
    int th = (h + WT - 1) / WT, tw = (w + WT - 1) / WT, total = n * th * tw;
    int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    /* chunks of at most WINO_CHUNK_FLOATS of V and M, as many as a multiple of the threads
     * when there are enough tiles, in whole vectors */
    size_t per_tile = (size_t)WXI * (s->in_c + s->out_c);
    int tmax = (int)(WINO_CHUNK_FLOATS / per_tile);
    if (tmax < VLEN) tmax = VLEN;
    int chunks = (total + tmax - 1) / tmax;
    if (total >= threads * 2 * VLEN) chunks = (chunks + threads - 1) / threads * threads;
    int tc = (total + chunks - 1) / chunks;
    tc = (tc + VLEN - 1) / VLEN * VLEN;
    chunks = (total + tc - 1) / tc;
    size_t ws_floats = per_tile * chunk_ld(tc);
    if (chunks >= threads && threads > 1) {
        OMP_PRAGMA(omp parallel)
        {
            float *ws = rn_scratch(omp_get_thread_num(), ws_floats);
            OMP_PRAGMA(omp for schedule(dynamic, 1))
            for (int c = 0; c < chunks; c++) {
                int first = c * tc, end = first + tc < total ? first + tc : total;
                winograd_chunk(s, h, w, x, u, e, residual, y, first, end, th, tw, ws, 0);
            }
        }
    } else {
        float *ws = rn_scratch(omp_get_thread_num(), ws_floats);
        for (int c = 0; c < chunks; c++) {
            int first = c * tc, end = first + tc < total ? first + tc : total;
            winograd_chunk(s, h, w, x, u, e, residual, y, first, end, th, tw, ws, threads > 1);
        }
    }
}
