/* simd.h - a thin macro layer over the vector unit, so kernels are written once.
 *
 * VF is one vector of VLEN floats. The widest unit the compiler targets is used:
 * AVX-512 (VLEN 16), AVX2 + FMA (VLEN 8), or plain C floats (VLEN 1) when RN_SIMD=0
 * or on other CPUs. All loads and stores are unaligned.
 *
 *   vzero()           all lanes 0            vset1(x)        all lanes x
 *   vload(p)          p[0..VLEN)             vstore(p, v)    p[0..VLEN) = v
 *   vadd(a, b)        a + b                  vmul(a, b)      a * b
 *   vfma(a, b, c)     a * b + c (fused when the unit has FMA)
 *   vmax(a, b)        lane-wise maximum
 *   vsum(v)           sum of the lanes (a float)
 *   vload_even(p)     p[0], p[2], ..., p[2 * VLEN - 2] (reads p[0..2 * VLEN - 1) only)
 *   vprefetch(p)      a hint to bring p's cache line in (any unit; nothing without GCC/clang)
 *   vtranspose(r)     r is VF[VLEN], a VLEN x VLEN block (row i in r[i]): transpose it
 */
#ifndef RN_SIMD_H
#define RN_SIMD_H

#if !defined(RN_SIMD) || RN_SIMD
#if defined(__AVX512F__)
#define RN_SIMD_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#define RN_SIMD_AVX2 1
#endif
#endif

#if defined(RN_SIMD_AVX512)
#include <immintrin.h>
#define SIMD_NAME "avx512"
#define VLEN 16
typedef __m512 VF;
#define vzero() _mm512_setzero_ps()
#define vset1(x) _mm512_set1_ps(x)
#define vload(p) _mm512_loadu_ps(p)
#define vstore(p, v) _mm512_storeu_ps((p), (v))
#define vadd(a, b) _mm512_add_ps((a), (b))
#define vmul(a, b) _mm512_mul_ps((a), (b))
#define vfma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define vmax(a, b) _mm512_max_ps((a), (b))
#define vsum(v) _mm512_reduce_add_ps(v)
/* from a = p[0..16) and b = p[15..31): a[0], a[2], ..., a[14], b[1], b[3], ..., b[15] */
static inline __m512 vload_even(const float *p) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23, 25, 27,
                                           29, 31);
    return _mm512_permutex2var_ps(_mm512_loadu_ps(p), even, _mm512_loadu_ps(p + 15));
}
/* 4x4 transposes inside each 128-bit lane (unpack, shuffle), then a 4x4 transpose of the
 * lanes across vectors 4 apart (two rounds of shuffle_f32x4). */
static inline void vtranspose(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int s = 0; s < 4; s++) {
        t[s] = _mm512_shuffle_f32x4(r[s], r[4 + s], 0x88);
        t[4 + s] = _mm512_shuffle_f32x4(r[s], r[4 + s], 0xdd);
        t[8 + s] = _mm512_shuffle_f32x4(r[8 + s], r[12 + s], 0x88);
        t[12 + s] = _mm512_shuffle_f32x4(r[8 + s], r[12 + s], 0xdd);
    }
    for (int s = 0; s < 4; s++) {
        r[s] = _mm512_shuffle_f32x4(t[s], t[8 + s], 0x88);
        r[8 + s] = _mm512_shuffle_f32x4(t[s], t[8 + s], 0xdd);
        r[4 + s] = _mm512_shuffle_f32x4(t[4 + s], t[12 + s], 0x88);
        r[12 + s] = _mm512_shuffle_f32x4(t[4 + s], t[12 + s], 0xdd);
    }
}

#elif defined(RN_SIMD_AVX2)
#include <immintrin.h>
#define SIMD_NAME "avx2"
#define VLEN 8
typedef __m256 VF;
#define vzero() _mm256_setzero_ps()
#define vset1(x) _mm256_set1_ps(x)
#define vload(p) _mm256_loadu_ps(p)
#define vstore(p, v) _mm256_storeu_ps((p), (v))
#define vadd(a, b) _mm256_add_ps((a), (b))
#define vmul(a, b) _mm256_mul_ps((a), (b))
#define vfma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define vmax(a, b) _mm256_max_ps((a), (b))
static inline float vsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
#define vsum(v) vsum_avx2(v)
/* from a = p[0..8) and b = p[7..15): a0 a2 b1 b3 | a4 a6 b5 b7 within the 128-bit lanes,
 * then the 64-bit pairs reordered */
static inline __m256 vload_even(const float *p) {
    __m256 t = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 7),
                                 _MM_SHUFFLE(3, 1, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}
/* 4x4 transposes inside each 128-bit lane, then swap the lanes of vectors 4 apart. */
static inline void vtranspose(__m256 r[8]) {
    __m256 t[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int s = 0; s < 4; s++) {
        __m256 lo = _mm256_permute2f128_ps(r[s], r[4 + s], 0x20);
        r[4 + s] = _mm256_permute2f128_ps(r[s], r[4 + s], 0x31);
        r[s] = lo;
    }
}

#else
#define SIMD_NAME "scalar"
#define VLEN 1
typedef float VF;
#define vzero() 0.0f
#define vset1(x) ((float)(x))
#define vload(p) (*(p))
#define vstore(p, v) (*(p) = (v))
#define vadd(a, b) ((a) + (b))
#define vmul(a, b) ((a) * (b))
#define vfma(a, b, c) ((a) * (b) + (c))
#define vmax(a, b) ((a) > (b) ? (a) : (b))
#define vsum(v) (v)
#define vload_even(p) (*(p))
static inline void vtranspose(float r[1]) { (void)r; }
#endif

/* A hint to fetch the cache line holding p (for reading, into all levels); nothing where
 * the compiler has no such builtin. Loops over a run step LINE_FLOATS (64-byte lines). */
#if defined(__GNUC__) || defined(__clang__)
#define vprefetch(p) __builtin_prefetch((p), 0, 3)
#else
#define vprefetch(p) ((void)(p))
#endif
#define LINE_FLOATS (64 / (int)sizeof(float))

/* Full unrolling of short constant-count loops (gcc and clang both read this). */
#define RN_UNROLL _Pragma("GCC unroll 32")

#endif /* RN_SIMD_H */
