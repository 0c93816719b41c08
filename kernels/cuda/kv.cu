/* kv.cu — the KV-cache moves on the device: append the chunk's keys and
 * values after each head's held slots, and compact a head to a kept subset
 * (the eviction policies' pol_compact), both on the (NH, cap, D) layout of
 * kernels/kn.h.
 *
 * Append: one block per (token, head), threads over D; it also writes the
 * n_vis the attention kernel reads (base + t + 1). The held counts stay
 * with the caller (the engine keeps them on the host, where the policies
 * decide), so append takes them as a device array and does not update them.
 *
 * Compaction is in place, without scratch: slot i takes slot keep[i], keep
 * strictly ascending, so keep[i] >= i. Column d of a head is an independent
 * chain — the thread owning d walks i upward, reading row keep[i] before any
 * later iteration overwrites it (that row's own turn comes at i' = keep[i]
 * > i, in the same thread) — so no synchronisation is needed and no row
 * can be clobbered before it is read. score and pos follow the same chain
 * in one thread each. Faster: out-of-place gather into a second pool and a
 * pointer swap, one warp per row. */
#include "impl.cuh"

/* grid (T, NH) */
static __global__ void kv_append_kernel(float *kc, float *vc, const float *ks, const float *vs, size_t stride, int T,
                                        int D, int cap, const int32_t *base, int32_t *n_vis) {
    const int t = blockIdx.x, h = blockIdx.y;
    const int slot = base[h] + t;
    if (n_vis && threadIdx.x == 0) n_vis[(size_t)h * T + t] = slot + 1;
    if (slot < 0 || slot >= cap) return;
    const float *kr = ks + (size_t)t * stride + (size_t)h * D, *vr = vs + (size_t)t * stride + (size_t)h * D;
    float *kd = kc + ((size_t)h * cap + slot) * D, *vd = vc + ((size_t)h * cap + slot) * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        kd[d] = kr[d];
        vd[d] = vr[d];
    }
}

/* grid (NH): thread tid owns columns tid, tid + blockDim, ... of head h.
 * No __restrict__: K/V rows alias on purpose (in-place). */
static __global__ void kv_compact_kernel(float *kc, float *vc, float *score, int32_t *pos, const int32_t *keep,
                                         const int32_t *n_keep, int D, int cap) {
    const int h = blockIdx.x;
    int k = n_keep[h];
    k = k < 0 ? 0 : (k > cap ? cap : k);
    const int32_t *kp = keep + (size_t)h * cap;
    float *K = kc + (size_t)h * cap * D, *V = vc + (size_t)h * cap * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        for (int i = 0; i < k; i++) {
            const int j = kp[i];
            if (j <= i || j >= cap) continue;   // j == i: in place already; j < i: invalid, skipped
            K[(size_t)i * D + d] = K[(size_t)j * D + d];
            V[(size_t)i * D + d] = V[(size_t)j * D + d];
        }
    if (score && threadIdx.x == 0) {
        float *sc = score + (size_t)h * cap;
        for (int i = 0; i < k; i++) {
            const int j = kp[i];
            if (j > i && j < cap) sc[i] = sc[j];
        }
    }
    if (pos && threadIdx.x == blockDim.x - 1) {
        int32_t *ps = pos + (size_t)h * cap;
        for (int i = 0; i < k; i++) {
            const int j = kp[i];
            if (j > i && j < cap) ps[i] = ps[j];
        }
    }
}

extern "C" kn_status kn_cuda_kv_append(kn_cuda_ctx *c, float *k_cache, float *v_cache, const float *k_src,
                                       const float *v_src, size_t src_stride, int T, int NH, int D, int cap,
                                       const int32_t *base, int32_t *n_vis) {
    KN_ARG(c, T >= 0 && NH > 0 && NH <= 65535 && D > 0 && cap > 0 && src_stride >= (size_t)NH * D,
           "kv_append: bad shape T=%d NH=%d D=%d cap=%d src_stride=%zu", T, NH, D, cap, src_stride);
    if (T == 0) return KN_OK;
    kv_append_kernel<<<dim3((unsigned)T, (unsigned)NH), 128, 0, c->stream>>>(k_cache, v_cache, k_src, v_src,
                                                                             src_stride, T, D, cap, base, n_vis);
    KN_LAUNCHED(c, "kv_append_kernel");
    return KN_OK;
}

/* One block per (head, K or V); threads across D. Each thread moves its
 * own column d row by row, so memmove order per column is enough: from the
 * top when moving up (dst > src), from the bottom when moving down. */
static __global__ void kv_move_kernel(float *kc, float *vc, int D, int cap, int src, int dst, int rows) {
    const int h = blockIdx.x;
    float *X = (blockIdx.y == 0 ? kc : vc) + (size_t)h * cap * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        if (dst > src)
            for (int i = rows - 1; i >= 0; i--) X[(size_t)(dst + i) * D + d] = X[(size_t)(src + i) * D + d];
        else
            for (int i = 0; i < rows; i++) X[(size_t)(dst + i) * D + d] = X[(size_t)(src + i) * D + d];
    }
}

extern "C" kn_status kn_cuda_kv_move(kn_cuda_ctx *c, float *k_cache, float *v_cache, int NH, int D, int cap, int src,
                                     int dst, int rows) {
    KN_ARG(c, NH > 0 && NH <= 65535 && D > 0 && cap > 0 && rows >= 0 && src >= 0 && dst >= 0 && src + rows <= cap &&
                  dst + rows <= cap,
           "kv_move: bad range NH=%d D=%d cap=%d src=%d dst=%d rows=%d", NH, D, cap, src, dst, rows);
    if (rows == 0 || src == dst) return KN_OK;
    const int threads = D < 256 ? (D + 31) / 32 * 32 : 256;
    kv_move_kernel<<<dim3((unsigned)NH, 2u), threads, 0, c->stream>>>(k_cache, v_cache, D, cap, src, dst, rows);
    KN_LAUNCHED(c, "kv_move_kernel");
    return KN_OK;
}

extern "C" kn_status kn_cuda_kv_compact(kn_cuda_ctx *c, float *k_cache, float *v_cache, float *score, int32_t *pos,
                                        const int32_t *keep, const int32_t *n_keep, int NH, int D, int cap) {
    KN_ARG(c, NH > 0 && D > 0 && cap > 0, "kv_compact: bad shape NH=%d D=%d cap=%d", NH, D, cap);
    const int threads = D < 256 ? (D + 31) / 32 * 32 : 256;
    kv_compact_kernel<<<(unsigned)NH, threads, 0, c->stream>>>(k_cache, v_cache, score, pos, keep, n_keep, D, cap);
    KN_LAUNCHED(c, "kv_compact_kernel");
    return KN_OK;
}
