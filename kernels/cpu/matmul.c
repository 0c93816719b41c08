/* matmul.c — y = x·wᵀ + b for nn.Linear weights stored [out, in] row-major.
 *
 * kn_matmul goes to OpenBLAS: sgemv for one row (decode), sgemm for many
 * (prefill). The bias is written into y first and BLAS accumulates onto it
 * (beta = 1), so no extra pass over y. kn_matmul_ref is the naive reference
 * with double accumulation. In batch-invariant mode (tests) every row goes
 * through sgemv, so a row's result does not depend on the rows batched with
 * it: a verification pass then rounds exactly like one-token decoding. */
#include "kn.h"

#include <cblas.h>
#include <string.h>

static int g_batch_invariant;

void kn_set_batch_invariant(int on) { g_batch_invariant = on; }

void kn_matmul(float *y, const float *x, const float *w, const float *b, int M, int K, int N) {
    float beta = 0.0f;
    if (b) {
        for (int i = 0; i < M; i++) memcpy(y + (size_t)i * N, b, (size_t)N * sizeof(float));
        beta = 1.0f;
    }
    if (M == 1 || g_batch_invariant)
        for (int i = 0; i < M; i++)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, w, K, x + (size_t)i * K, 1, beta, y + (size_t)i * N, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, beta, y, N);
}

void kn_matmul_ref(float *y, const float *x, const float *w, const float *b, int M, int K, int N) {
    for (int i = 0; i < M; i++)
        for (int o = 0; o < N; o++) {
            double acc = b ? b[o] : 0.0;
            const float *xr = x + (size_t)i * K, *wr = w + (size_t)o * K;
            for (int k = 0; k < K; k++) acc += (double)xr[k] * wr[k];
            y[(size_t)i * N + o] = (float)acc;
        }
}
