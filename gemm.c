/* gemm.c - single-precision GEMM: packed panels, cache blocking, a register-blocked
 * SIMD micro-kernel (simd.h), OpenMP over the output tiles.
 *
 * C = alpha * op(A) * op(B) + beta * C is computed the way BLIS does it:
 *
 *   for jc over N in blocks of NC:
 *     for pc over K in blocks of KC:
 *       pack op(B)[pc:pc+kc, jc:jc+nc] into NR-wide panels  (lives in L2/L3)
 *       for ic over M in blocks of MC:
 *         pack op(A)[ic:ic+mc, pc:pc+kc] into MR-tall panels (lives in L2)
 *         for each MR x NR tile: micro-kernel, kc rank-1 updates in registers
 *
 * Packing turns every transpose case into the same contiguous layout, so there is one
 * kernel (transposing packs go through VLEN x VLEN register transposes). Packing only pays
 * when a panel is reused, so a row-major A feeding few columns of C (layer4 weights against
 * a 7x7 map) and a row-major B feeding few rows are read in place instead. Edge panels are
 * zero-padded; edge tiles go through a small buffer; a last panel of at most one or two
 * vectors' width runs a narrower kernel.
 *
 * Threads take contiguous runs of whole tiles along the long side of C and run this loop
 * nest on them independently (no barriers). Every element of C sees the same sequence of
 * operations whatever the path or the thread count, because K is blocked by shape alone and
 * never split: results are bit-identical for 1 or N threads, and for sgemm called inside a
 * parallel region (where it runs on the calling thread). */
#include "resnet.h"
#include "simd.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Run-time dispatch (make SIMD=auto, x86-64): this file is compiled once per instruction
 * set with RN_GEMM_VARIANT naming it (base, avx2, avx512) and -m flags to match, which
 * turns sgemm into sgemm_avx2 and so on; the base object also holds the dispatcher, the
 * public sgemm, which calls the widest variant the CPU and OS support (or the one
 * RN_SIMD_KERNEL names). Every other build compiles this file once, for its own flags. */
#ifdef RN_GEMM_VARIANT
#define GEMM_CAT_(a, b)  a##_##b
#define GEMM_CAT(a, b)   GEMM_CAT_(a, b)
#define sgemm            GEMM_CAT(sgemm, RN_GEMM_VARIANT)
#define sgemm_tiles      GEMM_CAT(sgemm_tiles, RN_GEMM_VARIANT)
#define simd_name        GEMM_CAT(simd_name, RN_GEMM_VARIANT)
#define simd_peak_gflops GEMM_CAT(simd_peak_gflops, RN_GEMM_VARIANT)
#endif
#if !defined(RN_GEMM_VARIANT) || defined(RN_GEMM_DISPATCHER)
/* Naive triple loop: the reference the fast path is tested against. */
void sgemm_ref(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
               const float *b, int ldb, float beta, float *c, int ldc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float s = 0;
            for (int p = 0; p < k; p++) {
                float av = trans_a ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                float bv = trans_b ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                s += av * bv;
            }
            float *cv = &c[(size_t)i * ldc + j];
            *cv = alpha * s + (beta == 0 ? 0 : beta * *cv);
        }
}

#endif

const char *simd_name(void) { return SIMD_NAME; }

/* The FMA peak of this kernel's vector unit: independent FMA chains on every thread (more
 * than latency x throughput of current cores: 4-cycle latency, 2 pipes -> 8 chains), about
 * 50 ms a run with AVX-512; the best of five, since a peak is a ceiling (and a machine
 * shared with other jobs lends all its cores only now and then). */
#define PEAK_CHAINS 12
#define PEAK_ITERS  20000000L

static double peak_flops_once(void) {
    double t0 = rn_seconds();
    float sink = 0;
    int team = 0;
#ifdef _OPENMP
#pragma omp parallel reduction(+ : sink, team)
#endif
    {
        VF acc[PEAK_CHAINS], x = vset1(0.999999f), y = vset1(1e-7f);
        RN_UNROLL for (int j = 0; j < PEAK_CHAINS; j++) acc[j] = vset1(0.001f * j);
        for (long i = 0; i < PEAK_ITERS; i++)
            RN_UNROLL for (int j = 0; j < PEAK_CHAINS; j++) acc[j] = vfma(acc[j], x, y);
        VF s = acc[0];
        for (int j = 1; j < PEAK_CHAINS; j++) s = vadd(s, acc[j]);
        sink += vsum(s);
        team += 1;
    }
    double dt = rn_seconds() - t0;
    volatile float keep = sink; /* keeps the chains alive */
    (void)keep;
    return 2.0 * PEAK_CHAINS * VLEN * (double)PEAK_ITERS * team / dt;
}

double simd_peak_gflops(void) {
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double f = peak_flops_once();
        if (f > best) best = f;
    }
    return best * 1e-9;
}

/* Tile shape: MR rows x NV vectors. The accumulators (MR * NV vectors) plus NV loads of B
 * and one broadcast of A must fit the register file (32 zmm, 16 ymm). AVX-512: 8 x 3
 * (24 accumulators; 11 loads per 24 FMAs, where 14 x 2 needs 16 per 28, and ResNet's
 * channel counts are multiples of 8, so no row tile is partial): measured 3-5 % faster
 * ResNet-50 inference than 14 x 2, training the same. */
#if VLEN == 16
#define MR 8
#define NV 3
#elif VLEN == 8
#define MR 6
#define NV 2
#elif VLEN == 4 /* NEON's 32 registers: 24 accumulators, 3 loads of B, a broadcast of A */
#define MR 8
#define NV 3
#else
#define MR 4
#define NV 8
#endif
#define NR (NV * VLEN)

/* Cache blocks: a kc x NR panel of B stays in L1 while the MR panels of A stream past it;
 * the mc x kc block of A stays in L2; the kc x nc block of B in L2/L3. */
#define KC 320
#define MC (MR * 18)
#define NC 3072

/* Widest C (in columns) for which a row-major A is read in place rather than packed,
 * and tallest C (in rows) for which a row-major B is: the few row panels of A that reuse
 * a panel of B find its rows in L1 after the first, so packing B would only add a copy.
 * (128 with the 14 x 32 tile: the im2col chunks of 64- and 128-channel layers, 3-8 %
 * faster ResNet-50 training than 32. 256 with the 8 x 48 tile: also each thread's half of
 * the 512-channel products of small maps, which then no longer pack all of col twice;
 * training's 3x3 forward went from 57 to 61 % of peak, medians of 6 paired runs.) */
#define DIRECT_A_MAX_N 512
#define DIRECT_B_MAX_M 256

/* Below this many multiply-adds one thread is faster than waking the team. */
#define PARALLEL_MIN_MACS (1 << 20)

static int round_up(int x, int m) { return (x + m - 1) / m * m; }
static int min_int(int a, int b) { return a < b ? a : b; }

/* Split `total` into equal blocks of at most `max_block` (a multiple of `unit`): equal
 * blocks avoid a thin last block. Depends on the shape only, never on threads. */
static int block_size(int total, int max_block, int unit) {
    int nblocks = (total + max_block - 1) / max_block;
    return round_up((total + nblocks - 1) / nblocks, unit);
}

/* A matrix operand: element (r, c) of op(X) is p[r * ld + c], or p[c * ld + r] if trans. */
typedef struct {
    const float *p;
    int ld, trans;
} Operand;

/* Pack op(A)[i0:i0+rows, p0:p0+kc] as one MR-row panel: dst[p * MR + r], zero-padded.
 * May write up to VLEN floats past the panel (the next panel or the buffer's slack). */
static void pack_a_panel(Operand a, int i0, int rows, int p0, int kc, float *dst) {
    if (rows < MR) memset(dst, 0, sizeof(float) * MR * kc);
    if (a.trans) { /* op(A)[i, p] = a[p * ld + i]: rows are contiguous per p */
        for (int p = 0; p < kc; p++) {
            const float *src = a.p + (size_t)(p0 + p) * a.ld + i0;
            for (int r = 0; r < rows; r++) dst[p * MR + r] = src[r];
        }
        return;
    }
    /* op(A)[i, p] = a[i * ld + p]: transpose VLEN x VLEN blocks in registers (rows past
     * MR are zero); each store spills VLEN - MR floats that the next one overwrites. */
    int p = 0;
#if VLEN > 1 && MR <= VLEN
    if (rows == MR)
        for (; p + VLEN <= kc; p += VLEN) {
            VF blk[VLEN];
            RN_UNROLL for (int r = 0; r < VLEN; r++) blk[r] =
                r < MR ? vload(a.p + (size_t)(i0 + r) * a.ld + p0 + p) : vzero();
            vtranspose(blk);
            RN_UNROLL for (int q = 0; q < VLEN; q++) vstore(dst + (p + q) * MR, blk[q]);
        }
#endif
    for (int r = 0; r < rows; r++) {
        const float *src = a.p + (size_t)(i0 + r) * a.ld + p0;
        for (int q = p; q < kc; q++) dst[q * MR + r] = src[q];
    }
}

/* Pack op(B)[p0:p0+kc, j0:j0+cols] as one NR-wide panel: dst[p * NR + c], zero-padded. */
static void pack_b_panel(Operand b, int p0, int kc, int j0, int cols, float *dst) {
    if (cols < NR) memset(dst, 0, sizeof(float) * NR * kc);
    if (!b.trans) { /* op(B)[p, j] = b[p * ld + j]: row copies */
        const float *src = b.p + (size_t)p0 * b.ld + j0;
        if (cols == NR) /* NV vector moves a row: a memcpy call per 128 bytes costs more */
            for (int p = 0; p < kc; p++, src += b.ld) {
                /* kc rows are kc streams: fetch the next panel's part of this row */
                RN_UNROLL for (int q = 0; q < NR; q += LINE_FLOATS) vprefetch(src + NR + q);
                RN_UNROLL for (int v = 0; v < NV; v++)
                    vstore(dst + p * NR + v * VLEN, vload(src + v * VLEN));
            }
        else
            for (int p = 0; p < kc; p++, src += b.ld)
                memcpy(dst + p * NR, src, sizeof(float) * cols);
        return;
    }
    /* op(B)[p, j] = b[j * ld + p]: transpose VLEN x VLEN blocks in registers */
    int p = 0;
#if VLEN > 1
    if (cols == NR)
        for (; p + VLEN <= kc; p += VLEN) RN_UNROLL for (int v = 0; v < NV; v++) {
                VF blk[VLEN];
                RN_UNROLL for (int c = 0; c < VLEN; c++) blk[c] =
                    vload(b.p + (size_t)(j0 + v * VLEN + c) * b.ld + p0 + p);
                vtranspose(blk);
                RN_UNROLL for (int q = 0; q < VLEN; q++)
                    vstore(dst + (p + q) * NR + v * VLEN, blk[q]);
            }
#endif
    for (int c = 0; c < cols; c++) {
        const float *src = b.p + (size_t)(j0 + c) * b.ld + p0;
        for (int q = p; q < kc; q++) dst[q * NR + c] = src[q];
    }
}

/* kc rank-1 updates of the first nv vectors of the MR x NR accumulators:
 * acc += A[:, p] B[p, :], with A element (r, p) at ap[r * a_rs + p * a_ps] and row p of B
 * at bp + p * b_ps (packed panels, or rows read in place). Step p also prefetches row p of
 * the next B panel, pf + p * b_ps (pf == bp: nothing new). Inlined with constant a_rs,
 * a_ps and nv. */
RN_INLINE void kernel_updates(int kc, const float *ap, size_t a_rs, size_t a_ps, const float *bp,
                              size_t b_ps, const float *pf, VF acc[MR][NV], int nv) {
    for (int p = 0; p < kc; p++) {
        RN_UNROLL for (int q = 0; q < NR; q += LINE_FLOATS) vprefetch(pf + q);
        pf += b_ps;
        VF bv[NV];
        RN_UNROLL for (int v = 0; v < nv; v++) bv[v] = vload(bp + v * VLEN);
        RN_UNROLL for (int r = 0; r < MR; r++) {
            VF av = vset1(ap[r * a_rs]);
            RN_UNROLL for (int v = 0; v < nv; v++) acc[r][v] = vfma(av, bv[v], acc[r][v]);
        }
        ap += a_ps;
        bp += b_ps;
    }
}

/* kernel_updates with A's strides as constants: a packed panel (a_rs == 1: rows 1 apart,
 * steps MR apart) or rows read in place (a_rs apart, steps 1 apart). */
RN_INLINE void tile_updates(int kc, const float *ap, size_t a_rs, const float *bp, size_t b_ps,
                            const float *pf, VF acc[MR][NV], int nv) {
    if (a_rs == 1)
        kernel_updates(kc, ap, 1, MR, bp, b_ps, pf, acc, nv);
    else
        kernel_updates(kc, ap, a_rs, 1, bp, b_ps, pf, acc, nv);
}

/* The micro-kernel: acc[MR x NR] = sum_p A[:, p] B[p, :] held in registers, then
 * C = alpha * acc + beta * C on the valid rows x cols of the tile. A is a packed panel
 * (a_rs == 1) or MR full rows of a row-major A read in place (a_rs = lda); B is a packed
 * panel (b_ps = NR) or NR full columns of a row-major B read in place (b_ps = ldb), and
 * b_next the panel to prefetch alongside (bp: none).
 * C element (r, c) lives at c[r * rs + c * cs]; beta == 0 never reads C. */
static void micro_kernel(int kc, const float *ap, size_t a_rs, const float *bp, size_t b_ps,
                         const float *b_next, int rows, int cols, float alpha, float beta, float *c,
                         size_t rs, size_t cs) {
    VF acc[MR][NV];
    RN_UNROLL for (int r = 0; r < MR; r++) RN_UNROLL for (int v = 0; v < NV; v++) acc[r][v] =
        vzero();
    /* vectors of B: the full tile, or a last panel one or two vectors wide (e.g. 9 columns) */
    int nv = cols <= VLEN ? 1 : NV > 2 && cols <= 2 * VLEN ? 2 : NV;
    if (nv == NV)
        tile_updates(kc, ap, a_rs, bp, b_ps, b_next, acc, NV);
    else if (nv == 2)
        tile_updates(kc, ap, a_rs, bp, b_ps, b_next, acc, 2);
    else
        tile_updates(kc, ap, a_rs, bp, b_ps, b_next, acc, 1);
    /* Edge tiles and strided C go through a buffer with the same vector arithmetic, so an
     * element's result never depends on where its tile sits. */
    int direct = rows == MR && cols == NR && cs == 1;
    float tile[MR * NR];
    float *out = direct ? c : tile;
    size_t ld = direct ? rs : NR;
    if (!direct && beta != 0) {
        memset(tile, 0, sizeof tile);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < cols; j++) tile[r * NR + j] = c[r * rs + j * cs];
    }
    VF valpha = vset1(alpha), vbeta = vset1(beta);
    RN_UNROLL for (int r = 0; r < MR; r++) RN_UNROLL for (int v = 0; v < NV; v++) {
        float *op = out + r * ld + v * VLEN;
        VF y = vmul(valpha, acc[r][v]);
        if (beta != 0) y = vadd(y, vmul(vbeta, vload(op)));
        vstore(op, y);
    }
    if (!direct)
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < cols; j++) c[r * rs + j * cs] = tile[r * NR + j];
}

/* Packing buffer of the calling thread, grown to the largest request and then reused
 * (a thread-local pointer, so concurrent callers inside a parallel region never share). */
static __thread float *pack_buf;
static __thread size_t pack_cap;

static float *pack_buffer(size_t floats) {
    if (floats > pack_cap) {
        rn_free(pack_buf);
        pack_buf = rn_alloc(floats * sizeof(float));
        pack_cap = floats;
    }
    return pack_buf;
}

/* Element (r, c) of op(X). */
static const float *operand_at(Operand x, int r, int c) {
    return x.trans ? x.p + (size_t)c * x.ld + r : x.p + (size_t)r * x.ld + c;
}

/* sgemm_tiles' callback and where this thread's part of C starts in the whole product. */
typedef struct {
    GemmTileFn fn;
    void *ctx;
    int i0, j0;
} TileHook;

/* The blocked product of one thread on its own part of C, with its own packing buffer.
 * C element (i, j) lives at c[i * rs + j * cs]. hook->fn (if any) gets each mc x nc block
 * of C once its last K block is in. */
static void gemm_blocks(Operand a, Operand b, int m, int n, int k, float alpha, float beta,
                        float *c, size_t rs, size_t cs, const TileHook *hook) {
    int nc_max = block_size(n, NC, NR), kc_max = block_size(k, KC, 1);
    int mc_max = block_size(m, MC, MR);
    /* A row-major A used by few columns is read in place: packing it would cost more than
     * the products it feeds (e.g. layer4 weights against a 7x7 image). */
    int direct_a = !a.trans && n <= DIRECT_A_MAX_N;
    int direct_b = !b.trans && m <= DIRECT_B_MAX_M;
    size_t a_floats = (size_t)mc_max * kc_max + VLEN; /* + slack for pack_a_panel */
    float *ap = pack_buffer(a_floats + (size_t)nc_max * kc_max), *bp = ap + a_floats;
    for (int jc = 0; jc < n; jc += nc_max) {
        int nc = min_int(nc_max, n - jc);
        for (int pc = 0; pc < k; pc += kc_max) {
            int kc = min_int(kc_max, k - pc);
            float beta_block = pc == 0 ? beta : 1.0f; /* later K blocks accumulate */
            for (int jr = 0; jr < nc; jr += NR)
                if (!direct_b || nc - jr < NR)
                    pack_b_panel(b, pc, kc, jc + jr, min_int(NR, nc - jr), bp + (size_t)jr * kc);
            for (int ic = 0; ic < m; ic += mc_max) {
                int mc = min_int(mc_max, m - ic);
                for (int ir = 0; ir < mc; ir += MR)
                    if (!direct_a || mc - ir < MR)
                        pack_a_panel(a, ic + ir, min_int(MR, mc - ir), pc, kc,
                                     ap + (size_t)ir * kc);
                /* a kc x NR panel of B stays in L1 while the panels of A pass by */
                for (int jr = 0; jr < nc; jr += NR) {
                    int j = jc + jr, cols = min_int(NR, n - j);
                    const float *bpanel = bp + (size_t)jr * kc, *b_next = NULL;
                    size_t b_ps = NR;
                    if (direct_b && cols == NR) {
                        bpanel = operand_at(b, pc, j);
                        b_ps = (size_t)b.ld;
                        /* B's rows in place are kc separate streams, too many for the
                         * hardware prefetcher: the first tile fetches the next panel */
                        if (n - j >= 2 * NR) b_next = operand_at(b, pc, j + NR);
                    }
                    for (int ir = 0; ir < mc; ir += MR) {
                        int i = ic + ir, rows = min_int(MR, m - i);
                        const float *apanel = ap + (size_t)ir * kc;
                        size_t a_rs = 1;
                        if (direct_a && rows == MR) {
                            apanel = operand_at(a, i, pc);
                            a_rs = (size_t)a.ld;
                        }
                        micro_kernel(kc, apanel, a_rs, bpanel, b_ps,
                                     ir == 0 && b_next ? b_next : bpanel, rows, cols, alpha,
                                     beta_block, c + i * rs + j * cs, rs, cs);
                    }
                }
                if (hook->fn && pc + kc == k) /* the mc x nc block is final, in L2 */
                    hook->fn(hook->ctx, hook->i0 + ic, mc, hook->j0 + jc, nc);
            }
        }
    }
}

/* One product, split among threads by gemm_part. */
typedef struct {
    Operand a, b;
    int m, n, k;
    float alpha, beta;
    float *c;
    size_t rs, cs;
    int split_n; /* threads split the columns of C (else its rows) */
    GemmTileFn tile_fn;
    void *tile_ctx;
} GemmJob;

/* Part `part` of `parts`: a contiguous run of whole tiles along the longer side of C, so
 * the tile grid (and every element's arithmetic) is the same for any thread count. Each
 * part packs the shorter side's operand for itself and never waits for the others. */
static void gemm_part(const GemmJob *g, int part, int parts) {
    int unit = g->split_n ? NR : MR, len = g->split_n ? g->n : g->m;
    int tiles = (len + unit - 1) / unit;
    int first = (int)((long)tiles * part / parts) * unit;
    int last = min_int((int)((long)tiles * (part + 1) / parts) * unit, len);
    if (last <= first) return;
    TileHook hook = {g->tile_fn, g->tile_ctx, g->split_n ? 0 : first, g->split_n ? first : 0};
    if (g->split_n)
        gemm_blocks(g->a, (Operand){operand_at(g->b, 0, first), g->b.ld, g->b.trans}, g->m,
                    last - first, g->k, g->alpha, g->beta, g->c + first * g->cs, g->rs, g->cs,
                    &hook);
    else
        gemm_blocks((Operand){operand_at(g->a, first, 0), g->a.ld, g->a.trans}, g->b, last - first,
                    g->n, g->k, g->alpha, g->beta, g->c + first * g->rs, g->rs, g->cs, &hook);
}

/* Padded work of an m x n product in micro-tiles: the MR x NR grid the kernel runs. */
static double padded_work(int m, int n) { return (double)round_up(m, MR) * round_up(n, NR); }

static void gemm_run(GemmJob *job);

void sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
           const float *b, int ldb, float beta, float *c, int ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0) { /* C = beta * C, without touching A and B */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float *cp = &c[(size_t)i * ldc + j];
                *cp = beta == 0 ? 0.0f : beta * *cp;
            }
        return;
    }
    Operand opa = {a, lda, trans_a}, opb = {b, ldb, trans_b};
    size_t rs = (size_t)ldc, cs = 1;
    /* A narrow C with a transposed A (e.g. dcol = W^T dY on a 3x3 map: 4608 x 9) wastes
     * most of its column panels; computing C^T = op(B)^T op(A)^T instead puts the long
     * side along the vectors and packs both operands without transposing. Each element
     * still sees the same products in the same order. (A row-major A is read in place
     * instead, which beats both.) */
    if (trans_a && padded_work(n, m) < 0.9 * padded_work(m, n)) {
        Operand t = {b, ldb, !trans_b};
        opb = (Operand){a, lda, !trans_a};
        opa = t;
        int tmp = m;
        m = n;
        n = tmp;
        rs = 1;
        cs = (size_t)ldc;
    } else if (!trans_a && trans_b && m < NR && n >= NR) {
        /* A short C with a transposed B (a linear layer on a few images: 1 x 1000 from
         * 1000 x 1280 weights) would pack all of B through register transposes to make a
         * few rows; C^T = op(B)^T op(A)^T reads B in place and transposes A's few rows. */
        opa = (Operand){b, ldb, 0};
        opb = (Operand){a, lda, 1};
        int tmp = m;
        m = n;
        n = tmp;
        rs = 1;
        cs = (size_t)ldc;
    }
    GemmJob job = {opa, opb, m, n, k, alpha, beta, c, rs, cs, n >= m, NULL, NULL};
    gemm_run(&job);
}

/* C = op(A) op(B), then fn on every block of C as soon as it is final, on the thread that
 * computed it (the epilogue of a convolution while the block is in L2). Never transposed
 * to C^T, so fn sees C's own rows and columns. */
void sgemm_tiles(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda,
                 const float *b, int ldb, float *c, int ldc, GemmTileFn fn, void *ctx) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        sgemm(trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
        fn(ctx, 0, m, 0, n);
        return;
    }
    GemmJob job = {{a, lda, trans_a}, {b, ldb, trans_b}, m, n, k, 1.0f, 0.0f, c, (size_t)ldc, 1,
                   n >= m, fn, ctx};
    gemm_run(&job);
}

/* The job on as many threads as pay (none inside a parallel region). */
static void gemm_run(GemmJob *job) {
    int m = job->m, n = job->n, threads = 1;
#ifdef _OPENMP
    if (!omp_in_parallel() && (double)m * n * job->k >= PARALLEL_MIN_MACS)
        threads = omp_get_max_threads();
#endif
    int tiles = job->split_n ? (n + NR - 1) / NR : (m + MR - 1) / MR;
    if (threads > tiles) threads = tiles;
    if (threads <= 1) {
        gemm_part(job, 0, 1);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    gemm_part(job, omp_get_thread_num(), omp_get_num_threads());
#endif
}

#ifdef RN_GEMM_DISPATCHER
#undef sgemm
#undef sgemm_tiles
#undef simd_name
#undef simd_peak_gflops
#include <pthread.h>
#include <stdio.h>

typedef void (*SgemmFn)(int, int, int, int, int, float, const float *, int, const float *, int,
                        float, float *, int);
typedef void (*SgemmTilesFn)(int, int, int, int, int, const float *, int, const float *, int,
                             float *, int, GemmTileFn, void *);
typedef struct {
    const char *name;
    SgemmFn gemm;
    SgemmTilesFn gemm_tiles;
    const char *(*name_fn)(void);
    double (*peak)(void);
    int (*supported)(void);
} GemmKernel;

void sgemm_avx512(int, int, int, int, int, float, const float *, int, const float *, int, float,
                  float *, int);
void sgemm_avx2(int, int, int, int, int, float, const float *, int, const float *, int, float,
                float *, int);
void sgemm_tiles_avx512(int, int, int, int, int, const float *, int, const float *, int, float *,
                        int, GemmTileFn, void *);
void sgemm_tiles_avx2(int, int, int, int, int, const float *, int, const float *, int, float *,
                      int, GemmTileFn, void *);
const char *simd_name_avx512(void);
const char *simd_name_avx2(void);
double simd_peak_gflops_avx512(void);
double simd_peak_gflops_avx2(void);

/* __builtin_cpu_supports also checks that the OS saves the wider registers. */
static int has_avx512(void) { return __builtin_cpu_supports("avx512f"); }
static int has_avx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static int has_base(void) { return 1; }

static const GemmKernel kernels[] = {
    {"avx512", sgemm_avx512, sgemm_tiles_avx512, simd_name_avx512, simd_peak_gflops_avx512,
     has_avx512},
    {"avx2", sgemm_avx2, sgemm_tiles_avx2, simd_name_avx2, simd_peak_gflops_avx2, has_avx2},
    {"scalar", sgemm_base, sgemm_tiles_base, simd_name_base, simd_peak_gflops_base, has_base},
};
#define N_KERNELS ((int)(sizeof kernels / sizeof kernels[0]))

static const GemmKernel *chosen;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

/* The widest supported kernel, or the one RN_SIMD_KERNEL names when the CPU has it. */
static void choose_kernel(void) {
    const char *want = getenv("RN_SIMD_KERNEL");
    __builtin_cpu_init();
    for (int i = 0; i < N_KERNELS && want && *want; i++)
        if (!strcmp(want, kernels[i].name)) {
            if (kernels[i].supported())
                chosen = &kernels[i];
            else
                fprintf(stderr, "resnet-c: RN_SIMD_KERNEL=%s: this CPU lacks it\n", want);
        }
    if (want && *want && !chosen)
        fprintf(stderr,
                "resnet-c: RN_SIMD_KERNEL=%s not used (expected avx512, avx2 or "
                "scalar); taking the widest this CPU has\n",
                want);
    for (int i = 0; i < N_KERNELS && !chosen; i++)
        if (kernels[i].supported()) chosen = &kernels[i];
}

static const GemmKernel *kernel(void) {
    pthread_once(&chosen_once, choose_kernel);
    return chosen;
}

void sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
           const float *b, int ldb, float beta, float *c, int ldc) {
    kernel()->gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void sgemm_tiles(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda,
                 const float *b, int ldb, float *c, int ldc, GemmTileFn fn, void *ctx) {
    kernel()->gemm_tiles(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, fn, ctx);
}

const char *simd_name(void) { return kernel()->name_fn(); }

double simd_peak_gflops(void) { return kernel()->peak(); }
#endif
