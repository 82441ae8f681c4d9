/* gemm.c - placeholder: the reference GEMM; the SIMD kernels replace sgemm(). */
#include "resnet.h"

void sgemm_ref(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
               int lda, const float *b, int ldb, float beta, float *c, int ldc) {
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

void sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
           int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    sgemm_ref(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

const char *simd_name(void) { return "scalar"; }
