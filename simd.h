/* simd.h - a thin macro layer over the vector unit, so kernels are written once.
 *
 * VF is one vector of VLEN floats. The widest unit the compiler targets is used, read
 * from its predefined macros: AVX-512 (VLEN 16), AVX2 + FMA (VLEN 8), AArch64 NEON
 * (VLEN 4, FMA is part of the ISA), or plain C floats (VLEN 1) when RN_SIMD=0 or on other
 * CPUs. All loads and stores are unaligned.
 *
 *   vzero()           all lanes 0            vset1(x)        all lanes x
 *   vload(p)          p[0..VLEN)             vstore(p, v)    p[0..VLEN) = v
 *   vadd(a, b)        a + b                  vmul(a, b)      a * b
 *   vfma(a, b, c)     a * b + c (fused when the unit has FMA)
 *   vmax(a, b)        lane-wise maximum
 *   vsub(a, b)        a - b                  vdiv(a, b)      a / b
 *   vclamp(x, lo, hi) x held to [lo, hi]; a NaN stays NaN
 *   vround(x)         x rounded to the nearest integer (ties to even)
 *   vpow2i(k)         2^k for an integral k in [-126, 127]
 *   vexp(x)           e^x within 2 ulp for x in [-87, 88] (held there; NaN stays NaN)
 *   vsigmoid(x)       1 / (1 + e^-x)         vsilu(x)        x / (1 + e^-x)
 *   vsum(v)           sum of the lanes (a float)
 *   vload_even(p)     p[0], p[2], ..., p[2 * VLEN - 2] (reads p[0..2 * VLEN - 1) only)
 *   veven(a, b)       lanes 0, 2, 4, ... of a followed by b (2 VLEN lanes): VLEN of them
 *   vprefetch(p)      a hint to bring p's cache line in (any unit; nothing without GCC/clang)
 *   vtranspose(r)     r is VF[VLEN], a VLEN x VLEN block (row i in r[i]): transpose it
 *   vload_part(row, start, n)      lane i: row[start + i] where 0 <= start + i < n, else 0
 *                                  (reads nothing outside row[0..n))
 *   vstore_part(row, start, n, v)  row[start + i] = lane i where 0 <= start + i < n
 *   vdeinterleave4(v)  v is VF[4] holding p[0..4 VLEN): afterwards v[k] = p[k], p[k + 4], ...
 *   vinterleave4(v)    the inverse: v[k] lane i goes to p[4 i + k], p = v's 4 VLEN floats
 */
#ifndef RN_SIMD_H
#define RN_SIMD_H

#if !defined(RN_SIMD) || RN_SIMD
#if defined(__AVX512F__)
#define RN_SIMD_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#define RN_SIMD_AVX2 1
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define RN_SIMD_NEON 1
#endif
#endif

#if defined(RN_SIMD_AVX512)
#include <immintrin.h>
#define SIMD_NAME "avx512"
#define VLEN      16
typedef __m512 VF;
#define vzero()       _mm512_setzero_ps()
#define vset1(x)      _mm512_set1_ps(x)
#define vload(p)      _mm512_loadu_ps(p)
#define vstore(p, v)  _mm512_storeu_ps((p), (v))
#define vadd(a, b)    _mm512_add_ps((a), (b))
#define vmul(a, b)    _mm512_mul_ps((a), (b))
#define vfma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define vmax(a, b)    _mm512_max_ps((a), (b))
#define vsub(a, b)    _mm512_sub_ps((a), (b))
#define vdiv(a, b)    _mm512_div_ps((a), (b))
/* max/min return their second operand when either is NaN: x goes second */
#define vclamp(x, lo, hi) _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), (x)))
#define vround(x)     _mm512_roundscale_ps((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vpow2i(k) \
    _mm512_castsi512_ps(_mm512_slli_epi32( \
        _mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23))
#define vsum(v)       _mm512_reduce_add_ps(v)
/* from a = p[0..16) and b = p[15..31): a[0], a[2], ..., a[14], b[1], b[3], ..., b[15] */
static inline __m512 vload_even(const float *p) {
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_permutex2var_ps(_mm512_loadu_ps(p), even, _mm512_loadu_ps(p + 15));
}
static inline __m512 veven(__m512 a, __m512 b) {
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(a, even, b);
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

/* The lanes i of a vector at row + start with 0 <= start + i < n, as a mask. */
static inline __mmask16 vpart_mask(int start, int n) {
    int l = start < 0 ? -start : 0, h = n - start < 16 ? n - start : 16;
    return h <= l ? 0 : (__mmask16)(((1u << h) - 1) & ~((1u << l) - 1));
}
/* masked lanes never fault; before the row's start, an expand-load fills lanes lo.. */
static inline __m512 vload_part(const float *row, int start, int n) {
    __mmask16 m = vpart_mask(start, n);
    if (!m) return _mm512_setzero_ps();
    return start >= 0 ? _mm512_maskz_loadu_ps(m, row + start) : _mm512_maskz_expandloadu_ps(m, row);
}
static inline void vstore_part(float *row, int start, int n, __m512 v) {
    __mmask16 m = vpart_mask(start, n);
    if (!m) return;
    if (start >= 0)
        _mm512_mask_storeu_ps(row + start, m, v);
    else
        _mm512_mask_compressstoreu_ps(row, m, v);
}
/* (a, b) -> phases 0 and 1 of their 32 floats (8 each), phases 2 and 3; the same for
 * (c, d); then the halves joined. vinterleave4 runs the same permutations backwards. */
static inline void vdeinterleave4(__m512 v[4]) {
    const __m512i p01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i p23 =
        _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
    const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i hi =
        _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    __m512 ab01 = _mm512_permutex2var_ps(v[0], p01, v[1]);
    __m512 ab23 = _mm512_permutex2var_ps(v[0], p23, v[1]);
    __m512 cd01 = _mm512_permutex2var_ps(v[2], p01, v[3]);
    __m512 cd23 = _mm512_permutex2var_ps(v[2], p23, v[3]);
    v[0] = _mm512_permutex2var_ps(ab01, lo, cd01);
    v[1] = _mm512_permutex2var_ps(ab01, hi, cd01);
    v[2] = _mm512_permutex2var_ps(ab23, lo, cd23);
    v[3] = _mm512_permutex2var_ps(ab23, hi, cd23);
}
static inline void vinterleave4(__m512 v[4]) {
    const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i hi =
        _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    /* q01 lane 4i + k (k = 0, 1) and q23 (k = 2, 3): phase k, element i, from ab or cd */
    const __m512i q0 = _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
    const __m512i q1 =
        _mm512_setr_epi32(4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31);
    __m512 ab01 = _mm512_permutex2var_ps(v[0], lo, v[1]); /* p0[0..8) p1[0..8) */
    __m512 cd01 = _mm512_permutex2var_ps(v[0], hi, v[1]); /* p0[8..16) p1[8..16) */
    __m512 ab23 = _mm512_permutex2var_ps(v[2], lo, v[3]);
    __m512 cd23 = _mm512_permutex2var_ps(v[2], hi, v[3]);
    v[0] = _mm512_permutex2var_ps(ab01, q0, ab23);
    v[1] = _mm512_permutex2var_ps(ab01, q1, ab23);
    v[2] = _mm512_permutex2var_ps(cd01, q0, cd23);
    v[3] = _mm512_permutex2var_ps(cd01, q1, cd23);
}

#elif defined(RN_SIMD_AVX2)
#include <immintrin.h>
#define SIMD_NAME     "avx2"
#define VLEN          8
typedef __m256 VF;
#define vzero()       _mm256_setzero_ps()
#define vset1(x)      _mm256_set1_ps(x)
#define vload(p)      _mm256_loadu_ps(p)
#define vstore(p, v)  _mm256_storeu_ps((p), (v))
#define vadd(a, b)    _mm256_add_ps((a), (b))
#define vmul(a, b)    _mm256_mul_ps((a), (b))
#define vfma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define vmax(a, b)    _mm256_max_ps((a), (b))
#define vsub(a, b)    _mm256_sub_ps((a), (b))
#define vdiv(a, b)    _mm256_div_ps((a), (b))
#define vclamp(x, lo, hi) _mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), (x)))
#define vround(x)     _mm256_round_ps((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vpow2i(k) \
    _mm256_castsi256_ps(_mm256_slli_epi32( \
        _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23))
static inline float vsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
#define vsum(v)       vsum_avx2(v)
/* from a = p[0..8) and b = p[7..15): a0 a2 b1 b3 | a4 a6 b5 b7 within the 128-bit lanes,
 * then the 64-bit pairs reordered */
static inline __m256 vload_even(const float *p) {
    __m256 t =
        _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 7), _MM_SHUFFLE(3, 1, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}
/* a0 a2 b0 b2 | a4 a6 b4 b6 within the 128-bit lanes, then the 64-bit pairs reordered */
static inline __m256 veven(__m256 a, __m256 b) {
    __m256 t = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
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

#elif defined(RN_SIMD_NEON)
#include <arm_neon.h>
#define SIMD_NAME     "neon"
#define VLEN          4
typedef float32x4_t VF;
#define vzero()       vdupq_n_f32(0.0f)
#define vset1(x)      vdupq_n_f32(x)
#define vload(p)      vld1q_f32(p)
#define vstore(p, v)  vst1q_f32((p), (v))
#define vadd(a, b)    vaddq_f32((a), (b))
#define vmul(a, b)    vmulq_f32((a), (b))
#define vfma(a, b, c) vfmaq_f32((c), (a), (b))
/* maxNum: a NaN in a gives b, as the other units' vmax(x, 0) gives 0 for ReLU */
#define vmax(a, b)    vmaxnmq_f32((a), (b))
#define vsub(a, b)    vsubq_f32((a), (b))
#define vdiv(a, b)    vdivq_f32((a), (b))
/* vmaxq/vminq (not the Num forms) return NaN when either is NaN */
#define vclamp(x, lo, hi) vminq_f32(vmaxq_f32((x), vdupq_n_f32(lo)), vdupq_n_f32(hi))
#define vround(x)     vrndnq_f32(x)
#define vpow2i(k) \
    vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(k), vdupq_n_s32(127)), 23))
#define vsum(v)       vaddvq_f32(v)
/* from a = p[0..4) and b = p[3..7): a0 a2 | b1 b3 */
static inline float32x4_t vload_even(const float *p) {
    float32x4_t a = vld1q_f32(p), b = vld1q_f32(p + 3);
    return vcombine_f32(vget_low_f32(vuzp1q_f32(a, a)), vget_low_f32(vuzp2q_f32(b, b)));
}
#define veven(a, b) vuzp1q_f32((a), (b))
/* 2x2 transposes of lanes (trn1/trn2), then of lane pairs (as 64-bit lanes) */
static inline void vtranspose(float32x4_t r[4]) {
    float32x4_t t0 = vtrn1q_f32(r[0], r[1]), t1 = vtrn2q_f32(r[0], r[1]);
    float32x4_t t2 = vtrn1q_f32(r[2], r[3]), t3 = vtrn2q_f32(r[2], r[3]);
    float64x2_t d0 = vreinterpretq_f64_f32(t0), d1 = vreinterpretq_f64_f32(t1);
    float64x2_t d2 = vreinterpretq_f64_f32(t2), d3 = vreinterpretq_f64_f32(t3);
    r[0] = vreinterpretq_f32_f64(vtrn1q_f64(d0, d2));
    r[1] = vreinterpretq_f32_f64(vtrn1q_f64(d1, d3));
    r[2] = vreinterpretq_f32_f64(vtrn2q_f64(d0, d2));
    r[3] = vreinterpretq_f32_f64(vtrn2q_f64(d1, d3));
}
/* With 4 lanes, v[k] = p[k], p[k + 4], p[k + 8], p[k + 12] is the 4x4 transpose of the
 * rows v[0..4), and so is its inverse. */
static inline void vdeinterleave4(float32x4_t v[4]) { vtranspose(v); }
static inline void vinterleave4(float32x4_t v[4]) { vtranspose(v); }

#else
#include <math.h>
#include <stdint.h>
#include <string.h>
#define SIMD_NAME     "scalar"
#define VLEN          1
typedef float VF;
#define vzero()       0.0f
#define vset1(x)      ((float)(x))
#define vload(p)      (*(p))
#define vstore(p, v)  (*(p) = (v))
#define vadd(a, b)    ((a) + (b))
#define vmul(a, b)    ((a) * (b))
#define vfma(a, b, c) ((a) * (b) + (c))
#define vmax(a, b)    ((a) > (b) ? (a) : (b))
#define vsub(a, b)    ((a) - (b))
#define vdiv(a, b)    ((a) / (b))
static inline float vclamp(float x, float lo, float hi) { return x < lo ? lo : x > hi ? hi : x; }
#define vround(x)     rintf(x)
/* the exponent field set directly, as the vector units do; a NaN k gives 1 (its x is NaN) */
static inline float vpow2i(float k) {
    int32_t bits = (int32_t)((uint32_t)((k == k ? (int32_t)k : 0) + 127) << 23);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
#define vsum(v)       (v)
#define vload_even(p) (*(p))
#define veven(a, b)   ((void)(b), (a))
static inline void vtranspose(float r[1]) { (void)r; }
#endif

/* The same through memory, for AVX2, NEON and plain C (the compiler vectorises what it can). */
#if !defined(RN_SIMD_AVX512)
static inline VF vload_part(const float *row, int start, int n) {
    float t[VLEN];
    for (int i = 0; i < VLEN; i++) t[i] = start + i >= 0 && start + i < n ? row[start + i] : 0.0f;
    return vload(t);
}
static inline void vstore_part(float *row, int start, int n, VF v) {
    float t[VLEN];
    vstore(t, v);
    for (int i = 0; i < VLEN; i++)
        if (start + i >= 0 && start + i < n) row[start + i] = t[i];
}
#endif
#if !defined(RN_SIMD_AVX512) && !defined(RN_SIMD_NEON)
static inline void vdeinterleave4(VF v[4]) {
    float t[4 * VLEN], u[4 * VLEN];
    for (int k = 0; k < 4; k++) vstore(t + k * VLEN, v[k]);
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < VLEN; i++) u[k * VLEN + i] = t[4 * i + k];
    for (int k = 0; k < 4; k++) v[k] = vload(u + k * VLEN);
}
static inline void vinterleave4(VF v[4]) {
    float t[4 * VLEN], u[4 * VLEN];
    for (int k = 0; k < 4; k++) vstore(t + k * VLEN, v[k]);
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < VLEN; i++) u[4 * i + k] = t[k * VLEN + i];
    for (int k = 0; k < 4; k++) v[k] = vload(u + k * VLEN);
}
#endif

/* e^x = 2^k e^r with k = round(x log2(e)) and r = x - k ln(2) (|r| <= ln(2) / 2, ln(2) in two
 * parts so that k ln(2) is exact: Cody and Waite), e^r from Cephes' degree-7 minimax
 * polynomial 1 + r + r^2 P(r). x is held to [-87, 88], so k is in [-126, 127] and 2^k a
 * normal float: e^-87 is 1.6e-38 (not the denormals below), e^88 is 1.7e38 (not inf). */
static inline VF vexp(VF x) {
    x = vclamp(x, -87.0f, 88.0f);
    VF k = vround(vmul(x, vset1(1.44269504088896341f)));
    VF r = vfma(k, vset1(-0.693359375f), x);
    r = vfma(k, vset1(2.12194440e-4f), r);
    VF p = vset1(1.9875691500e-4f);
    p = vfma(p, r, vset1(1.3981999507e-3f));
    p = vfma(p, r, vset1(8.3334519073e-3f));
    p = vfma(p, r, vset1(4.1665795894e-2f));
    p = vfma(p, r, vset1(1.6666665459e-1f));
    p = vfma(p, r, vset1(5.0000001201e-1f));
    p = vfma(p, vmul(r, r), vadd(r, vset1(1.0f)));
    return vmul(p, vpow2i(k));
}

/* sigmoid(x) = 1 / (1 + e^-x) and silu(x) = x * sigmoid(x), computed as x / (1 + e^-x). Every
 * kernel that applies them (the layers, the convolutions' epilogues) uses these, so a fused
 * activation gives the same bits as the layer on its own. */
static inline VF vsigmoid(VF x) {
    return vdiv(vset1(1.0f), vadd(vset1(1.0f), vexp(vsub(vzero(), x))));
}
static inline VF vsilu(VF x) { return vdiv(x, vadd(vset1(1.0f), vexp(vsub(vzero(), x)))); }

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

/* A kernel's helper inlined wherever it is called, so that its constant arguments (tile
 * and kernel sizes) unroll its loops. */
#if defined(__GNUC__) || defined(__clang__)
#define RN_INLINE static inline __attribute__((always_inline))
#else
#define RN_INLINE static inline
#endif

#endif /* RN_SIMD_H */
