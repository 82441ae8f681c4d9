/* tests/test_gemm.c - sgemm against the naive sgemm_ref: every transpose case, odd sizes,
 * padded leading dimensions, alpha/beta (beta = 0 ignores NaN in C), the paths gemm.c
 * picks by shape (packed or in-place operands, narrow panels, transposed output), and
 * bit-identical results for 1 and 2 threads. */
#include "resnet.h"
#include "simd.h"
#include "test.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* One case: op(A) m x k, op(B) k x n, each leading dimension padded by `pad`. C starts
 * from c_init (NaN tests beta == 0). Returns 1 when sgemm matches sgemm_ref. */
static int gemm_case(int ta, int tb, int m, int n, int k, float alpha, float beta, int pad,
                     float c_init, uint32_t seed) {
    int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
    size_t a_len = (size_t)(ta ? k : m) * lda, b_len = (size_t)(tb ? n : k) * ldb;
    size_t c_len = (size_t)m * ldc;
    float *a = rn_alloc(a_len * sizeof(float)), *b = rn_alloc(b_len * sizeof(float));
    float *c = rn_alloc(c_len * sizeof(float)), *r = rn_alloc(c_len * sizeof(float));
    hash_fill(a, a_len, seed, 1.0f);
    hash_fill(b, b_len, seed + 1, 1.0f);
    if (!isnan(c_init)) {
        hash_fill(c, c_len, seed + 2, 1.0f);
    } else {
        for (size_t i = 0; i < c_len; i++) c[i] = c_init;
    }
    memcpy(r, c, c_len * sizeof(float));
    sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    sgemm_ref(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, r, ldc);
    /* Each element is a dot product of k terms of size <= |alpha|; the float sums differ
     * only by rounding order: allow 1e-5 relative to the magnitude sum, plus padding
     * columns of C must be untouched. */
    double scale = (fabs(alpha) * k + fabs(beta)) > 1 ? (fabs(alpha) * k + fabs(beta)) : 1;
    int ok = 1;
    for (int i = 0; i < m && ok; i++)
        for (int j = 0; j < ldc; j++) {
            float x = c[(size_t)i * ldc + j], y = r[(size_t)i * ldc + j];
            int inside = j < n;
            if (inside ? !(fabs((double)x - y) <= 1e-5 * scale) : memcmp(&x, &y, sizeof x) != 0) {
                fprintf(stderr,
                        "  ta=%d tb=%d m=%d n=%d k=%d alpha=%g beta=%g pad=%d: "
                        "C[%d,%d] = %.9g, expected %.9g\n",
                        ta, tb, m, n, k, alpha, beta, pad, i, j, x, y);
                ok = 0;
                break;
            }
        }
    rn_free(a);
    rn_free(b);
    rn_free(c);
    rn_free(r);
    return ok;
}

static void test_transposes_odd_sizes(void) {
    static const int sizes[] = {1, 2, 7, 16, 17, 33, 100};
    int ns = (int)(sizeof sizes / sizeof sizes[0]), count = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int im = 0; im < ns; im++)
                for (int in = 0; in < ns; in++)
                    for (int ik = 0; ik < ns; ik += 2) {
                        int m = sizes[im], n = sizes[in], k = sizes[ik];
                        CHECK(gemm_case(ta, tb, m, n, k, 1.0f, 0.0f, 0, 0.0f,
                                        (uint32_t)(m * 131 + n * 7 + k)));
                        count++;
                    }
    CHECK(count == 4 * 7 * 7 * 4);
}

static void test_large_and_blocked(void) {
    /* Larger than one cache block in every dimension (several K blocks accumulate). */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            CHECK(gemm_case(ta, tb, 257, 300, 700, 1.0f, 0.0f, 3, 0.0f, 11));
            CHECK(gemm_case(ta, tb, 64, 3200, 37, 1.0f, 1.0f, 0, 0.0f, 12));
            /* wide C: A is packed (not read in place), padded lda, K not a vector multiple */
            CHECK(gemm_case(ta, tb, 45, 1100, 50, 1.0f, 0.5f, 3, 0.0f, 18));
        }
    /* ResNet-like shapes: conv forward, dW (trans_b), dcol (trans_a), narrow C. */
    CHECK(gemm_case(0, 0, 64, 784, 576, 1.0f, 0.0f, 0, 0.0f, 13));
    CHECK(gemm_case(0, 1, 64, 576, 784, 1.0f, 1.0f, 0, 0.0f, 14));
    CHECK(gemm_case(1, 0, 576, 784, 64, 1.0f, 0.0f, 0, 0.0f, 15));
    CHECK(gemm_case(0, 0, 512, 49, 256, 1.0f, 0.0f, 0, 0.0f, 16));
    CHECK(gemm_case(1, 1, 300, 5, 129, 1.0f, 0.5f, 2, 0.0f, 17));
}

static void test_leading_dims_alpha_beta(void) {
    static const float alphas[] = {1.0f, -0.5f, 2.0f};
    static const float betas[] = {0.0f, 1.0f, -1.5f};
    for (int ia = 0; ia < 3; ia++)
        for (int ib = 0; ib < 3; ib++)
            for (int t = 0; t < 4; t++) {
                CHECK(gemm_case(t & 1, t >> 1, 37, 45, 29, alphas[ia], betas[ib], 5, 0.0f,
                                (uint32_t)(100 + ia * 3 + ib)));
                CHECK(gemm_case(t & 1, t >> 1, 100, 17, 257, alphas[ia], betas[ib], 1, 0.0f,
                                (uint32_t)(200 + ia * 3 + ib)));
            }
}

static void test_beta_zero_ignores_nan(void) {
    for (int t = 0; t < 4; t++) {
        CHECK(gemm_case(t & 1, t >> 1, 33, 40, 19, 1.0f, 0.0f, 2, NAN, 300));
        CHECK(gemm_case(t & 1, t >> 1, 300, 7, 64, 0.5f, 0.0f, 0, NAN, 301));
    }
}

static void test_degenerate(void) {
    /* k = 0: C = beta * C; alpha = 0: A and B are not read (NULL here). */
    float c[6] = {1, 2, 3, 4, 5, 6};
    sgemm(0, 0, 2, 3, 0, 1.0f, NULL, 1, NULL, 3, 2.0f, c, 3);
    CHECK_CLOSE(c[0], 2.0, 0);
    CHECK_CLOSE(c[5], 12.0, 0);
    sgemm(0, 0, 2, 3, 4, 0.0f, NULL, 4, NULL, 3, 0.0f, c, 3);
    CHECK_CLOSE(c[3], 0.0, 0);
    /* m = 0 or n = 0 touches nothing. */
    c[0] = 7;
    sgemm(0, 0, 0, 3, 4, 1.0f, NULL, 4, NULL, 3, 0.0f, c, 3);
    sgemm(0, 0, 2, 0, 4, 1.0f, NULL, 4, NULL, 3, 0.0f, c, 3);
    CHECK_CLOSE(c[0], 7.0, 0);
    /* a 1 x 1 x 1 product */
    float a = 3, b = -2, d = 5;
    sgemm(1, 1, 1, 1, 1, 2.0f, &a, 1, &b, 1, 1.0f, &d, 1);
    CHECK_CLOSE(d, -7.0, 0);
}

/* The same product with 1 and with 2 threads, and called from inside a parallel region
 * (where sgemm runs single-threaded in each caller, on half of the rows), must agree bit
 * for bit: an element's arithmetic depends only on k. */
static void test_thread_count_independence(void) {
#ifndef _OPENMP
    SKIP("built without OpenMP");
#else
    static const int shapes[][3] = {
        {256, 3136, 64}, {2048, 49, 512}, {100, 257, 1000}, {64, 576, 784}, {5, 1000, 700}};
    int saved = omp_get_max_threads();
    for (int s = 0; s < 5; s++)
        for (int t = 0; t < 4; t++) {
            int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], ta = t & 1, tb = t >> 1;
            int lda = ta ? m : k, ldb = tb ? k : n;
            float *a = rn_alloc((size_t)m * k * sizeof(float));
            float *b = rn_alloc((size_t)k * n * sizeof(float));
            float *c1 = rn_alloc((size_t)m * n * sizeof(float));
            float *c2 = rn_alloc((size_t)m * n * sizeof(float));
            float *c3 = rn_alloc((size_t)m * n * sizeof(float));
            hash_fill(a, (size_t)m * k, 40 + s, 1.0f);
            hash_fill(b, (size_t)k * n, 50 + s, 1.0f);
            hash_fill(c1, (size_t)m * n, 60 + s, 1.0f);
            memcpy(c2, c1, (size_t)m * n * sizeof(float));
            memcpy(c3, c1, (size_t)m * n * sizeof(float));
            omp_set_num_threads(1);
            sgemm(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, 1.0f, c1, n);
            omp_set_num_threads(2);
            sgemm(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, 1.0f, c2, n);
            /* two callers at once inside a parallel region, each on half of the rows */
            int half = m / 2;
#pragma omp parallel for num_threads(2)
            for (int part = 0; part < 2; part++) {
                int i0 = part ? half : 0, rows = part ? m - half : half;
                const float *ap = ta ? a + i0 : a + (size_t)i0 * lda;
                sgemm(ta, tb, rows, n, k, 0.5f, ap, lda, b, ldb, 1.0f, c3 + (size_t)i0 * n, n);
            }
            CHECK_MSG(memcmp(c1, c2, (size_t)m * n * sizeof(float)) == 0,
                      "1 vs 2 threads differ: m=%d n=%d k=%d ta=%d tb=%d", m, n, k, ta, tb);
            CHECK_MSG(memcmp(c1, c3, (size_t)m * n * sizeof(float)) == 0,
                      "inside a parallel region: m=%d n=%d k=%d ta=%d tb=%d", m, n, k, ta, tb);
            rn_free(a);
            rn_free(b);
            rn_free(c1);
            rn_free(c2);
            rn_free(c3);
        }
    omp_set_num_threads(saved);
#endif
}

/* A few rows against a transposed B (a linear layer on a few images) are computed as C^T
 * with B read in place: each row must still get the bits it gets among many rows (the
 * same image alone or in a batch of 60, a batch-1 run and a batch-8 run agree). */
static void test_short_c_turned(void) {
    const int rows = 60, n = 1000, k = 700;
    float *a = rn_alloc((size_t)rows * k * sizeof(float));
    float *b = rn_alloc((size_t)n * k * sizeof(float));
    float *all = rn_alloc((size_t)rows * n * sizeof(float));
    float *few = rn_alloc((size_t)rows * n * sizeof(float));
    hash_fill(a, (size_t)rows * k, 81, 1.0f);
    hash_fill(b, (size_t)n * k, 82, 1.0f);
    sgemm(0, 1, rows, n, k, 1.0f, a, k, b, k, 0.0f, all, n);
    static const int counts[] = {1, 5, 47};
    for (int t = 0; t < 3; t++) {
        int m = counts[t];
        memset(few, 0, (size_t)m * n * sizeof(float));
        sgemm(0, 1, m, n, k, 1.0f, a, k, b, k, 0.0f, few, n);
        CHECK_MSG(memcmp(few, all, (size_t)m * n * sizeof(float)) == 0,
                  "%d rows of a transposed B differ from the same rows among %d", m, rows);
    }
    rn_free(a);
    rn_free(b);
    rn_free(all);
    rn_free(few);
}

/* sgemm_tiles: C as sgemm's (alpha 1, beta 0) bit for bit, and the callback sees every
 * element of C exactly once, already final (its value then is the finished product's),
 * with several K blocks, edge tiles, both thread counts and k = 0. */
typedef struct {
    const float *c;
    float *seen;
    int *visits;
    int n, ldc;
} TileLog;

static void log_tile(void *ctx, int i0, int rows, int j0, int cols) {
    TileLog *t = ctx;
    for (int i = i0; i < i0 + rows; i++)
        for (int j = j0; j < j0 + cols; j++) {
            t->visits[(size_t)i * t->n + j]++;
            t->seen[(size_t)i * t->n + j] = t->c[(size_t)i * t->ldc + j];
        }
}

static void test_sgemm_tiles(void) {
    static const int shapes[][3] = {{37, 1000, 700}, {300, 50, 65}, {256, 448, 64}, {1, 1, 1},
                                    {9, 17, 0}};
    for (int s = 0; s < 5; s++)
        for (int threads = 1; threads <= 2; threads++) {
            int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], ldc = n + 3;
            size_t mn = (size_t)m * n, cn = (size_t)m * ldc;
            float *a = rn_alloc(((size_t)m * k + 1) * sizeof(float));
            float *b = rn_alloc(((size_t)k * n + 1) * sizeof(float));
            float *c = rn_alloc(cn * sizeof(float)), *r = rn_alloc(cn * sizeof(float));
            float *seen = rn_alloc(mn * sizeof(float));
            int *visits = calloc(mn, sizeof(int));
            hash_fill(a, (size_t)m * k, 70 + s, 1.0f);
            hash_fill(b, (size_t)k * n, 80 + s, 1.0f);
            hash_fill(c, cn, 90, 1.0f);
            memcpy(r, c, cn * sizeof(float));
#ifdef _OPENMP
            int saved = omp_get_max_threads();
            omp_set_num_threads(threads);
#endif
            sgemm(0, 0, m, n, k, 1.0f, a, k, b, n, 0.0f, r, ldc);
            TileLog log = {c, seen, visits, n, ldc};
            sgemm_tiles(0, 0, m, n, k, a, k, b, n, c, ldc, log_tile, &log);
#ifdef _OPENMP
            omp_set_num_threads(saved);
#endif
            int once = 1, final = 1;
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    once &= visits[(size_t)i * n + j] == 1;
                    final &= memcmp(&seen[(size_t)i * n + j], &c[(size_t)i * ldc + j], 4) == 0;
                }
            CHECK_MSG(memcmp(c, r, cn * sizeof(float)) == 0,
                      "m=%d n=%d k=%d, %d threads: sgemm_tiles differs from sgemm", m, n, k,
                      threads);
            CHECK_MSG(once, "m=%d n=%d k=%d, %d threads: an element not seen exactly once", m, n,
                      k, threads);
            CHECK_MSG(final, "m=%d n=%d k=%d, %d threads: a tile seen before it was final", m, n,
                      k, threads);
            rn_free(a);
            rn_free(b);
            rn_free(c);
            rn_free(r);
            rn_free(seen);
            free(visits);
        }
}

/* simd.h's macro layer against its definitions, lane by lane, on this build's unit. */
static void test_simd_macros(void) {
    float p[4 * VLEN], q[4 * VLEN];
    for (int i = 0; i < 4 * VLEN; i++) p[i] = (float)(i + 1) * (i % 2 ? -0.5f : 1.0f);
    vstore(q, vfma(vload(p), vload(p + VLEN), vset1(2.0f)));
    for (int i = 0; i < VLEN; i++) CHECK(q[i] == fmaf(p[i], p[VLEN + i], 2.0f));
    float s = vsum(vload(p)), want = 0;
    for (int i = 0; i < VLEN; i++) want += p[i];
    CHECK(s == want); /* small integers and halves: exact in any order */
    vstore(q, vload_even(p));
    for (int i = 0; i < VLEN; i++) CHECK(q[i] == p[2 * i]);
    VF r[VLEN];
    float blk[VLEN * VLEN];
    for (int i = 0; i < VLEN; i++) r[i] = vload(p + i); /* row i: p[i..i + VLEN) */
    vtranspose(r);
    for (int i = 0; i < VLEN; i++) vstore(blk + i * VLEN, r[i]);
    for (int i = 0; i < VLEN; i++)
        for (int j = 0; j < VLEN; j++) CHECK(blk[i * VLEN + j] == p[j + i]);
    VF v[4];
    for (int k = 0; k < 4; k++) v[k] = vload(p + k * VLEN);
    vdeinterleave4(v);
    for (int k = 0; k < 4; k++) {
        vstore(q, v[k]);
        for (int i = 0; i < VLEN; i++) CHECK(q[i] == p[4 * i + k]);
    }
    vinterleave4(v);
    for (int k = 0; k < 4; k++) {
        vstore(q, v[k]);
        for (int i = 0; i < VLEN; i++) CHECK(q[i] == p[k * VLEN + i]);
    }
    for (int start = -VLEN - 1; start <= 3 * VLEN; start++) {
        int n = 2 * VLEN - 1;
        vstore(q, vload_part(p, start, n));
        for (int i = 0; i < VLEN; i++)
            CHECK(q[i] == (start + i >= 0 && start + i < n ? p[start + i] : 0.0f));
        float row[4 * VLEN];
        for (int i = 0; i < 4 * VLEN; i++) row[i] = -7.0f;
        vstore_part(row, start, n, vset1(3.0f));
        for (int i = 0; i < 4 * VLEN; i++)
            CHECK(row[i] == (i >= start && i < start + VLEN && i < n ? 3.0f : -7.0f));
    }
    /* ReLU as vmax(x, 0): negatives and NaN give 0 on every unit */
    for (int i = 0; i < VLEN; i++) q[i] = i % 3 == 0 ? NAN : i % 3 == 1 ? -1.0f : 2.5f;
    vstore(q, vmax(vload(q), vzero()));
    for (int i = 0; i < VLEN; i++) CHECK(q[i] == (i % 3 == 2 ? 2.5f : 0.0f));
}

static void test_simd_name(void) {
    const char *s = simd_name();
    CHECK(!strcmp(s, "avx512") || !strcmp(s, "avx2") || !strcmp(s, "neon") || !strcmp(s, "scalar"));
#if defined(RN_SIMD) && RN_SIMD == 0
    CHECK(!strcmp(s, "scalar"));
#elif defined(__aarch64__) && defined(__ARM_NEON)
    CHECK(!strcmp(s, "neon")); /* SIMD=1 on AArch64 runs the NEON kernels */
#endif
    printf("     simd: %s\n", s);
}

int main(void) {
    (void)test_shared_dir; /* test.h helpers this file does not need */
    (void)max_rel_diff;
    RUN(test_transposes_odd_sizes);
    RUN(test_large_and_blocked);
    RUN(test_leading_dims_alpha_beta);
    RUN(test_beta_zero_ignores_nan);
    RUN(test_degenerate);
    RUN(test_thread_count_independence);
    RUN(test_short_c_turned);
    RUN(test_sgemm_tiles);
    RUN(test_simd_macros);
    RUN(test_simd_name);
    return test_summary();
}
