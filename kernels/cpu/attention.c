/* attention.c — causal scaled-dot-product attention over a KV cache.
 *
 * One (head, query) pair per OpenMP iteration: scores against the visible
 * keys into the thread's scratch row, a max-subtracted fp32 softmax, then the
 * probability-weighted sum of value rows. `omp simd` reductions let the
 * compiler vectorise the dot products without -ffast-math. The cache layout
 * (NH, cap, D) keeps each head's keys contiguous, which is what both the
 * dot-product loop and the policies' compaction want. */
#include "kn.h"

#include <math.h>
#include <omp.h>
#include <string.h>

static void attend_one(float *o, const float *qv, const float *kh, const float *vh, int D, int n,
                       float scale, float *s, float *p_out) {
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        const float *kr = kh + (size_t)j * D;
        float acc = 0.0f;
        #pragma omp simd reduction(+ : acc)
        for (int d = 0; d < D; d++) acc += qv[d] * kr[d];
        s[j] = acc * scale;
        if (s[j] > mx) mx = s[j];
    }
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        s[j] = expf(s[j] - mx);
        sum += s[j];
    }
    float inv = 1.0f / sum;
    for (int d = 0; d < D; d++) o[d] = 0.0f;
    for (int j = 0; j < n; j++) {
        float pj = s[j] * inv;
        const float *vr = vh + (size_t)j * D;
        #pragma omp simd
        for (int d = 0; d < D; d++) o[d] += pj * vr[d];
        if (p_out) p_out[j] = pj;
    }
}

void kn_attention(float *out, const float *q, size_t q_stride, const float *k, const float *v,
                  int T, int NH, int D, int cap, const int32_t *n_vis, float *scratch, float *probs) {
    float scale = 1.0f / sqrtf((float)D);
    #pragma omp parallel for collapse(2) schedule(dynamic, 1) if (T * NH > 1)
    for (int h = 0; h < NH; h++)
        for (int t = 0; t < T; t++) {
            float *s = scratch + (size_t)omp_get_thread_num() * cap;
            int n = n_vis[h * T + t];
            float *p_out = probs ? probs + ((size_t)h * T + t) * cap : NULL;
            attend_one(out + (size_t)t * NH * D + (size_t)h * D, q + (size_t)t * q_stride + (size_t)h * D,
                       k + (size_t)h * cap * D, v + (size_t)h * cap * D, D, n, scale, s, p_out);
        }
}

void kn_attention_ref(float *out, const float *q, size_t q_stride, const float *k, const float *v,
                      int T, int NH, int D, int cap, const int32_t *n_vis, float *probs) {
    double scale = 1.0 / sqrt((double)D);
    for (int h = 0; h < NH; h++)
        for (int t = 0; t < T; t++) {
            int n = n_vis[h * T + t];
            const float *qv = q + (size_t)t * q_stride + (size_t)h * D;
            double mx = -INFINITY, sum = 0.0;
            for (int j = 0; j < n; j++) {
                double acc = 0.0;
                for (int d = 0; d < D; d++) acc += (double)qv[d] * k[((size_t)h * cap + j) * D + d];
                if (acc * scale > mx) mx = acc * scale;
            }
            double o[512] = {0};   /* D <= 512: every Pythia head_dim is <= 256 */
            for (int j = 0; j < n; j++) {
                double acc = 0.0;
                for (int d = 0; d < D; d++) acc += (double)qv[d] * k[((size_t)h * cap + j) * D + d];
                double e = exp(acc * scale - mx);
                sum += e;
                for (int d = 0; d < D && d < 512; d++) o[d] += e * v[((size_t)h * cap + j) * D + d];
                if (probs) probs[((size_t)h * T + t) * cap + j] = (float)e;
            }
            for (int d = 0; d < D && d < 512; d++) out[(size_t)t * NH * D + (size_t)h * D + d] = (float)(o[d] / sum);
            if (probs)
                for (int j = 0; j < n; j++) probs[((size_t)h * T + t) * cap + j] = (float)(probs[((size_t)h * T + t) * cap + j] / sum);
        }
}
