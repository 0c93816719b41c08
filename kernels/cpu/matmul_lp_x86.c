/* matmul_lp_x86.c — the batch-1 fp16/bf16-weight GEMV for x86-64 CPUs with
 * AVX2 + FMA (+ F16C for fp16), selected at run time by matmul_lp.c.
 *
 * Why a separate file with intrinsics: decode is a pure weight stream, and
 * the portable C version is compute-bound on the conversion and on a single
 * FMA dependency chain, reaching about a third of this machine's read
 * bandwidth. Here vcvtph2ps (or a 16-bit shift for bf16) converts 8 weights in
 * one instruction and four independent accumulators hide the FMA latency.
 * The arithmetic is still fp32 on exactly converted weights; tests compare it
 * with kn_matmul_lp_ref. */
#include "kn.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

__attribute__((target("avx2,fma,f16c"))) static inline __m256 load8(const uint16_t *p, int f16) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (f16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx2,fma,f16c"))) static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One row: dot(x, w) with 4 independent accumulators (32 weights a step). */
__attribute__((target("avx2,fma,f16c"))) static float dot_row(const float *x, const uint16_t *w, int K, int f16) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    int k = 0;
    for (; k + 64 <= K; k += 64) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), load8(w + k, f16), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), load8(w + k + 8, f16), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 16), load8(w + k + 16, f16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 24), load8(w + k + 24, f16), a3);
        a4 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 32), load8(w + k + 32, f16), a4);
        a5 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 40), load8(w + k + 40, f16), a5);
        a6 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 48), load8(w + k + 48, f16), a6);
        a7 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 56), load8(w + k + 56, f16), a7);
    }
    a0 = _mm256_add_ps(a0, a4), a1 = _mm256_add_ps(a1, a5), a2 = _mm256_add_ps(a2, a6), a3 = _mm256_add_ps(a3, a7);
    for (; k + 32 <= K; k += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), load8(w + k, f16), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), load8(w + k + 8, f16), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 16), load8(w + k + 16, f16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 24), load8(w + k + 24, f16), a3);
    }
    for (; k + 8 <= K; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), load8(w + k, f16), a0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    if (k < K) {
        float tail[8] = {0};
        kn_f16_or_bf16_to_f32(tail, w + k, (size_t)(K - k), f16);
        for (int i = 0; k + i < K; i++) s += x[k + i] * tail[i];
    }
    return s;
}

int kn_gemv_lp_x86_available(void) {
    static int cached = -1;
    if (cached < 0) {
        /* F16C is CPUID.1:ECX bit 29 (clang 14's __builtin_cpu_supports has no "f16c") */
        unsigned a, b, c, d;
        int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    }
    return cached;
}

void kn_gemv_lp_x86(float *y, const float *x, const uint16_t *w, kn_wtype wt, const float *b, int M, int K,
                    int N) {
    int f16 = wt == KN_W_F16;
    #pragma omp parallel for schedule(static)
    for (int o = 0; o < N; o++) {
        const uint16_t *wr = w + (size_t)o * K;
        for (int m = 0; m < M; m++) y[(size_t)m * N + o] = dot_row(x + (size_t)m * K, wr, K, f16) + (b ? b[o] : 0.0f);
    }
}
#else
int kn_gemv_lp_x86_available(void) { return 0; }
void kn_gemv_lp_x86(float *y, const float *x, const uint16_t *w, kn_wtype wt, const float *b, int M, int K,
                    int N) {
    (void)y, (void)x, (void)w, (void)wt, (void)b, (void)M, (void)K, (void)N;
}
#endif
