/* matmul_lp.c — y = x·wᵀ + b with w kept in the checkpoint's 16-bit dtype
 * (fp16 or bf16), converted to fp32 on the fly.
 *
 * Why: at batch 1 decode is memory-bound, and reading 2-byte weights moves
 * half the bytes of an fp32 copy. The conversion is exact (every fp16/bf16
 * value is an fp32 value) and the arithmetic stays fp32, so the results are
 * those of the upcast model HF computes with — only the summation order
 * differs, as it does between any two BLAS libraries.
 *
 * Small M (decode, speculative verification): one pass over each weight row
 * serves all M inputs; rows are split across OpenMP threads. Large M
 * (prefill): tiles of KN_LP_TILE rows are converted into the caller's
 * scratch and handed to sgemm. Conversion is plain C written so the compiler
 * vectorises it; the hot loops are also compiled for AVX2+FMA and chosen at
 * run time when the CPU has them (no intrinsics). */
#include "kn.h"

#include <cblas.h>
#include <string.h>

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Exact IEEE half -> float, branch-free: shift the exponent/mantissa into
 * place and rescale by 2^112 (which also normalises subnormals); Inf/NaN get
 * the all-ones float exponent. */
static inline float f16_to_f32(uint16_t h) {
    uint32_t em = (uint32_t)(h & 0x7fffu) << 13;
    uint32_t fu = f32_bits(bits_f32(em) * 0x1p112f);          /* mantissa kept, exponent rebased */
    uint32_t inf = em >= (0x7c00u << 13) ? 0x7f800000u : 0u;  /* Inf/NaN: all-ones exponent */
    return bits_f32(fu | inf | (uint32_t)(h & 0x8000u) << 16);
}
static inline float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

void kn_f16_or_bf16_to_f32(float *dst, const uint16_t *src, size_t n, int f16) {
    if (f16) kn_f16_to_f32(dst, src, n);
    else kn_bf16_to_f32(dst, src, n);
}

void kn_f16_to_f32(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(src[i]);
}
void kn_bf16_to_f32(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}

#define KN_GEMV_MAX_M 8

/* y[m][o] = b[o] + sum_k x[m][k] w[o][k] for M <= KN_GEMV_MAX_M. */
#define DEFINE_GEMV(NAME, CONV, ATTR)                                                              \
    ATTR static void NAME(float *y, const float *x, const uint16_t *w, const float *b, int M,      \
                          int K, int N) {                                                          \
        _Pragma("omp parallel for schedule(static)") for (int o = 0; o < N; o++) {                \
            const uint16_t *wr = w + (size_t)o * K;                                                \
            float acc[KN_GEMV_MAX_M] = {0};                                                        \
            for (int m = 0; m < M; m++) {                                                          \
                const float *xr = x + (size_t)m * K;                                               \
                float a = 0.0f;                                                                    \
                _Pragma("omp simd reduction(+ : a)") for (int k = 0; k < K; k++) a += xr[k] * CONV(wr[k]); \
                acc[m] = a;                                                                        \
            }                                                                                      \
            for (int m = 0; m < M; m++) y[(size_t)m * N + o] = acc[m] + (b ? b[o] : 0.0f);         \
        }                                                                                          \
    }

DEFINE_GEMV(gemv_f16_generic, f16_to_f32, )
DEFINE_GEMV(gemv_bf16_generic, bf16_to_f32, )
DEFINE_GEMV(gemv_f16_avx2, f16_to_f32, __attribute__((target("avx2,fma"))))
DEFINE_GEMV(gemv_bf16_avx2, bf16_to_f32, __attribute__((target("avx2,fma"))))

static int g_use_x86 = 1;
void kn_set_portable(int on) { g_use_x86 = !on; }

static int have_avx2(void) {
    static int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return cached;
}

void kn_matmul_lp(float *y, const float *x, const uint16_t *w, kn_wtype wt, const float *b, int M, int K,
                  int N, float *scratch) {
    if (M <= KN_GEMV_MAX_M && g_use_x86 && kn_gemv_lp_x86_available()) {
        kn_gemv_lp_x86(y, x, w, wt, b, M, K, N);
        return;
    }
    if (M <= KN_GEMV_MAX_M) {
        int fast = have_avx2();
        if (wt == KN_W_F16) (fast ? gemv_f16_avx2 : gemv_f16_generic)(y, x, w, b, M, K, N);
        else (fast ? gemv_bf16_avx2 : gemv_bf16_generic)(y, x, w, b, M, K, N);
        return;
    }
    for (int n0 = 0; n0 < N; n0 += KN_LP_TILE) {
        int tn = N - n0 < KN_LP_TILE ? N - n0 : KN_LP_TILE;
        const uint16_t *wt0 = w + (size_t)n0 * K;
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < tn; r++) {
            if (wt == KN_W_F16) kn_f16_to_f32(scratch + (size_t)r * K, wt0 + (size_t)r * K, (size_t)K);
            else kn_bf16_to_f32(scratch + (size_t)r * K, wt0 + (size_t)r * K, (size_t)K);
        }
        float beta = 0.0f;
        if (b) {
            for (int i = 0; i < M; i++) memcpy(y + (size_t)i * N + n0, b + n0, (size_t)tn * sizeof(float));
            beta = 1.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, tn, K, 1.0f, x, K, scratch, K, beta, y + n0, N);
    }
}

void kn_matmul_lp_ref(float *y, const float *x, const uint16_t *w, kn_wtype wt, const float *b, int M, int K,
                      int N) {
    for (int i = 0; i < M; i++)
        for (int o = 0; o < N; o++) {
            double acc = b ? b[o] : 0.0;
            for (int k = 0; k < K; k++) {
                uint16_t h = w[(size_t)o * K + k];
                acc += (double)x[(size_t)i * K + k] * (wt == KN_W_F16 ? f16_to_f32(h) : bf16_to_f32(h));
            }
            y[(size_t)i * N + o] = (float)acc;
        }
}
