/* kv_ops.c — references for the KV-cache moves and the key-scoring
 * reductions the policies use (append, in-place compaction, key L2 norms,
 * accumulated attention, 1-D pooling), written as plain loops in the order
 * engine/forward.c and engine/policy*.c compute them, so the CUDA versions
 * (kernels/cuda/kv.cu, scores.cu) have one yardstick. Contracts in kn.h. */
#include "kn.h"

#include <math.h>
#include <string.h>

void kn_kv_append_ref(float *k_cache, float *v_cache, const float *k_src, const float *v_src, size_t src_stride,
                      int T, int NH, int D, int cap, const int32_t *base, int32_t *n_vis) {
    for (int h = 0; h < NH; h++)
        for (int t = 0; t < T; t++) {
            int slot = base[h] + t;
            if (n_vis) n_vis[h * T + t] = slot + 1;
            if (slot < 0 || slot >= cap) continue;
            size_t dst = ((size_t)h * cap + slot) * D, src = (size_t)t * src_stride + (size_t)h * D;
            memcpy(k_cache + dst, k_src + src, (size_t)D * sizeof(float));
            memcpy(v_cache + dst, v_src + src, (size_t)D * sizeof(float));
        }
}

void kn_kv_move_ref(float *k_cache, float *v_cache, int NH, int D, int cap, int src, int dst, int rows) {
    if (rows <= 0 || src == dst || src < 0 || dst < 0 || src + rows > cap || dst + rows > cap) return;
    for (int h = 0; h < NH; h++) {
        size_t off = (size_t)h * cap * D;
        memmove(k_cache + off + (size_t)dst * D, k_cache + off + (size_t)src * D, (size_t)rows * D * sizeof(float));
        memmove(v_cache + off + (size_t)dst * D, v_cache + off + (size_t)src * D, (size_t)rows * D * sizeof(float));
    }
}

void kn_fill_rows_ref(float *x, int rows, size_t stride, int from, int to, float v) {
    for (int r = 0; r < rows; r++)
        for (int j = from < 0 ? 0 : from; j < to; j++) x[(size_t)r * stride + j] = v;
}

void kn_kv_compact_ref(float *k_cache, float *v_cache, float *score, int32_t *pos, const int32_t *keep,
                       const int32_t *n_keep, int NH, int D, int cap) {
    for (int h = 0; h < NH; h++) {
        int k = n_keep[h] < 0 ? 0 : (n_keep[h] > cap ? cap : n_keep[h]);
        const int32_t *kp = keep + (size_t)h * cap;
        float *K = k_cache + (size_t)h * cap * D, *V = v_cache + (size_t)h * cap * D;
        for (int i = 0; i < k; i++) {
            int j = kp[i];
            if (j <= i || j >= cap) continue;   // ascending: a forward copy never overwrites a slot still to be read
            memcpy(K + (size_t)i * D, K + (size_t)j * D, (size_t)D * sizeof(float));
            memcpy(V + (size_t)i * D, V + (size_t)j * D, (size_t)D * sizeof(float));
            if (score) score[(size_t)h * cap + i] = score[(size_t)h * cap + j];
            if (pos) pos[(size_t)h * cap + i] = pos[(size_t)h * cap + j];
        }
    }
}

void kn_key_norms_ref(float *norms, const float *k, const int32_t *n_held, int NH, int D, int cap) {
    for (int h = 0; h < NH; h++)
        for (int j = 0; j < n_held[h] && j < cap; j++) {
            const float *kr = k + ((size_t)h * cap + j) * D;
            double ss = 0.0;
            for (int d = 0; d < D; d++) ss += (double)kr[d] * kr[d];
            norms[(size_t)h * cap + j] = (float)sqrt(ss);
        }
}

void kn_attn_accum_ref(float *acc, const float *probs, const int32_t *n_vis, int T, int NH, int cap,
                       int accumulate) {
    for (int h = 0; h < NH; h++)
        for (int j = 0; j < cap; j++) {
            float s = accumulate ? acc[(size_t)h * cap + j] : 0.0f;
            int any = 0;
            for (int t = 0; t < T; t++)
                if (j < n_vis[h * T + t]) {
                    s += probs[((size_t)h * T + t) * cap + j];
                    any = 1;
                }
            if (any) acc[(size_t)h * cap + j] = s;
        }
}

void kn_attn_head_mean_ref(float *out, const float *probs, const int32_t *n_vis, int T, int NH, int cap) {
    int nv = n_vis[T - 1];
    for (int j = 0; j < nv && j < cap; j++) {
        float sum = 0.0f;
        for (int h = 0; h < NH; h++) sum += probs[((size_t)h * T + T - 1) * cap + j];
        out[j] = sum / (float)NH;
    }
}

void kn_pool1d_ref(float *out, const float *in, int rows, int m, size_t stride, const int32_t *len, int kernel,
                   int use_max) {
    int pad = kernel / 2;
    for (int r = 0; r < rows; r++) {
        int n = len ? (len[r] < m ? len[r] : m) : m;
        const float *s = in + (size_t)r * stride;
        for (int i = 0; i < n; i++) {
            int a = i - pad < 0 ? 0 : i - pad, b = i + pad >= n ? n - 1 : i + pad;
            float v;
            if (use_max) {
                v = -INFINITY;
                for (int j = a; j <= b; j++) if (s[j] > v) v = s[j];
            } else {
                v = 0.0f;
                for (int j = a; j <= b; j++) v += s[j];
                v = v / (float)kernel;   // zero padding counts (count_include_pad)
            }
            out[(size_t)r * stride + i] = v;
        }
    }
}
