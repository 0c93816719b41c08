/* attention.cu — scaled-dot-product attention of T queries over a per-head
 * KV cache, the contract of kn_attention (kn.h): out(T, NH·D), q rows
 * q_stride apart, k, v(NH, cap, D), n_vis(NH·T) keys visible to each
 * (head, query) — causal prefill passes base + t + 1, decode T = 1 — and
 * the optional probs(NH, T, cap) the attention-scoring policies read.
 *
 * One block (128 threads) per (head, query) row and key range. Keys come
 * in tiles of 64: each warp takes one key at a time and reduces q·k across
 * its lanes (coalesced reads of the key row, q in shared memory); the tile's
 * scores then update an online softmax (running max m, running sum l,
 * rescale factor exp(m_old - m_new)), and each thread accumulates one or
 * two of the D ≤ 256 output dims over the tile's value rows. Nothing of
 * size cap is materialised unless probs is asked for: then the raw scores
 * go to probs during the pass and are turned into exp(s - m)/l at the end.
 *
 * Split-K (flash-decoding): when NH·T rows cannot fill the device (decode),
 * the keys are cut into n_split ranges, grid (rows, n_split); each block
 * writes its (m, l, o[D]) to the arena and a combine kernel merges them with
 * weights exp(m_s - M). Splits are chosen on the host from cap, the SM count
 * and the arena size; with n_split == 1 the block finishes the row itself.
 * Softmax in fp32 with max subtraction, expf (not __expf), scale 1/sqrtf(D)
 * as the CPU computes it; the results differ from kn_attention_ref by fp32
 * summation order only. Faster: several queries per block sharing K/V tiles
 * and tensor-core QKᵀ for prefill (FlashAttention-2), vector loads and
 * several keys per warp for decode. */
#include "impl.cuh"

#include <math.h>

#define ATT_THREADS 128
#define ATT_WARPS (ATT_THREADS / 32)
#define ATT_TILE 64        /* keys per tile (<= ATT_THREADS) */
#define ATT_DMAX 256       /* head_dim limit: two output dims per thread */
#define ATT_MIN_KEYS 256   /* a split covers at least this many key slots */
#define ATT_MAX_SPLIT 64

struct att_params {
    float *out;              /* (T, NH·D) */
    const float *q;          /* (T rows, q_stride) */
    size_t q_stride;
    const float *k, *v;      /* (NH, cap, D) */
    const int32_t *n_vis;    /* (NH·T) */
    float *probs;            /* (NH, T, cap) or NULL */
    float *part;             /* (NH·T, n_split, D + 2): m, l, o[D] per split */
    int T, NH, D, cap;
    int n_split, chunk;      /* split s covers keys [s·chunk, (s+1)·chunk) */
    float scale;
};

/* Keys visible to a row, clamped to [0, cap]. */
static __device__ __forceinline__ int visible(const int32_t *n_vis, int row, int cap) {
    const int n = n_vis[row];
    return n < 0 ? 0 : (n > cap ? cap : n);
}

/* grid (NH·T, n_split); row = h·T + t. */
static __global__ void __launch_bounds__(ATT_THREADS) attn_kernel(att_params p) {
    __shared__ float qs[ATT_DMAX];
    __shared__ float ps[ATT_TILE];
    const int row = blockIdx.x, split = blockIdx.y;
    const int h = row / p.T, t = row - h * p.T;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int d0 = tid, d1 = tid + ATT_THREADS;
    const int n = visible(p.n_vis, row, p.cap);
    const int j0 = split * p.chunk, j1 = min(n, j0 + p.chunk);

    const float *qr = p.q + (size_t)t * p.q_stride + (size_t)h * p.D;
    for (int d = tid; d < p.D; d += ATT_THREADS) qs[d] = qr[d];
    __syncthreads();
    const float *kh = p.k + (size_t)h * p.cap * p.D, *vh = p.v + (size_t)h * p.cap * p.D;
    float *prow = p.probs ? p.probs + (size_t)row * p.cap : NULL;

    float m = -INFINITY, l = 0.0f, o0 = 0.0f, o1 = 0.0f;
    for (int jt = j0; jt < j1; jt += ATT_TILE) {
        const int nt = min(ATT_TILE, j1 - jt);
        for (int i = warp; i < nt; i += ATT_WARPS) {   // scores: one key per warp
            const float *kr = kh + (size_t)(jt + i) * p.D;
            float acc = 0.0f;
            for (int d = lane; d < p.D; d += 32) acc += qs[d] * kr[d];
            acc = kn_warp_sum(acc);
            if (lane == 0) {
                const float s = acc * p.scale;
                ps[i] = s;
                if (prow) prow[jt + i] = s;   // raw score; normalised at the end
            }
        }
        __syncthreads();
        float mt = -INFINITY;   // every thread reads the tile (shared broadcast), all agree on m, l
        for (int i = 0; i < nt; i++) mt = fmaxf(mt, ps[i]);
        const float m_new = fmaxf(m, mt);
        const float alpha = expf(m - m_new);   // 0 on the first tile (m = -inf)
        __syncthreads();
        if (tid < nt) ps[tid] = expf(ps[tid] - m_new);
        __syncthreads();
        float lt = 0.0f, a0 = 0.0f, a1 = 0.0f;
        for (int i = 0; i < nt; i++) {
            const float e = ps[i];
            const float *vr = vh + (size_t)(jt + i) * p.D;
            lt += e;
            if (d0 < p.D) a0 += e * vr[d0];
            if (d1 < p.D) a1 += e * vr[d1];
        }
        l = l * alpha + lt;
        o0 = o0 * alpha + a0;
        o1 = o1 * alpha + a1;
        m = m_new;
        __syncthreads();   // ps is rewritten by the next tile
    }

    if (p.n_split == 1) {
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;   // n == 0: zeros, as kn_attention
        float *orow = p.out + (size_t)t * p.NH * p.D + (size_t)h * p.D;
        if (d0 < p.D) orow[d0] = o0 * inv;
        if (d1 < p.D) orow[d1] = o1 * inv;
        // raw scores were written before the loop's last __syncthreads: visible to the block
        if (prow)
            for (int j = tid; j < n; j += ATT_THREADS) prow[j] = expf(prow[j] - m) * inv;
        return;
    }
    float *pp = p.part + ((size_t)row * p.n_split + split) * (size_t)(p.D + 2);
    if (tid == 0) {
        pp[0] = m;   // -inf and l = 0 for a split past n
        pp[1] = l;
    }
    if (d0 < p.D) pp[2 + d0] = o0;
    if (d1 < p.D) pp[2 + d1] = o1;
}

/* grid (NH·T): merges the splits of one row, then normalises its probs. */
static __global__ void __launch_bounds__(ATT_THREADS) attn_combine_kernel(att_params p) {
    const int row = blockIdx.x, tid = threadIdx.x;
    const int h = row / p.T, t = row - h * p.T;
    const int d0 = tid, d1 = tid + ATT_THREADS;
    const size_t w = (size_t)p.D + 2;
    const float *pr = p.part + (size_t)row * p.n_split * w;
    /* a split with no visible key has l == 0 exactly and is skipped; a NaN
     * (corrupt key or query) is kept, so it reaches the output as on the CPU */
    float M = -INFINITY;
    for (int s = 0; s < p.n_split; s++)
        if (pr[s * w + 1] != 0.0f) M = fmaxf(M, pr[s * w]);
    float L = 0.0f, a0 = 0.0f, a1 = 0.0f;
    for (int s = 0; s < p.n_split; s++) {
        const float *ps = pr + s * w;
        if (ps[1] == 0.0f) continue;
        const float f = expf(ps[0] - M);
        L += ps[1] * f;
        if (d0 < p.D) a0 += ps[2 + d0] * f;
        if (d1 < p.D) a1 += ps[2 + d1] * f;
    }
    const float inv = L > 0.0f ? 1.0f / L : 0.0f;
    float *orow = p.out + (size_t)t * p.NH * p.D + (size_t)h * p.D;
    if (d0 < p.D) orow[d0] = a0 * inv;
    if (d1 < p.D) orow[d1] = a1 * inv;
    if (p.probs) {
        float *prow = p.probs + (size_t)row * p.cap;
        const int n = visible(p.n_vis, row, p.cap);
        for (int j = tid; j < n; j += ATT_THREADS) prow[j] = expf(prow[j] - M) * inv;
    }
}

/* Key ranges per row: enough blocks for ~4 waves of the device when the
 * rows alone do not give them, each range >= ATT_MIN_KEYS slots, and the
 * partials within the arena. */
static void plan_splits(const kn_cuda_ctx *c, size_t rows, int D, int cap, int *n_split, int *chunk) {
    size_t want = (size_t)c->n_sm * 4, ns = 1;
    if (rows < want) {
        ns = (want + rows - 1) / rows;
        size_t by_keys = ((size_t)cap + ATT_MIN_KEYS - 1) / ATT_MIN_KEYS;
        size_t fit = c->arena_bytes / (rows * ((size_t)D + 2) * sizeof(float));
        if (ns > by_keys) ns = by_keys;
        if (ns > ATT_MAX_SPLIT) ns = ATT_MAX_SPLIT;
        if (ns > fit) ns = fit;
        if (ns < 1) ns = 1;
    }
    size_t ch = ((size_t)cap + ns - 1) / ns;
    ch = (ch + ATT_TILE - 1) / ATT_TILE * ATT_TILE;
    ns = ((size_t)cap + ch - 1) / ch;   // rounding the chunk up may leave fewer splits
    *n_split = (int)ns;
    *chunk = ns == 1 ? cap : (int)ch;
}

extern "C" kn_status kn_cuda_attention(kn_cuda_ctx *c, float *out, const float *q, size_t q_stride, const float *k,
                                       const float *v, int T, int NH, int D, int cap, const int32_t *n_vis,
                                       float *probs) {
    KN_ARG(c, T >= 0 && NH > 0 && cap > 0 && D > 0 && q_stride >= (size_t)NH * D,
           "attention: bad shape T=%d NH=%d D=%d cap=%d q_stride=%zu", T, NH, D, cap, q_stride);
    if (D > ATT_DMAX) return kn_cuda_errf(c, KN_ERR_UNSUPPORTED, "attention: head_dim %d > %d", D, ATT_DMAX);
    if (T == 0) return KN_OK;
    const size_t rows = (size_t)NH * T;
    KN_ARG(c, rows <= 0x7fffffffu, "attention: %zu rows exceed the grid", rows);
    att_params p;
    p.out = out;
    p.q = q;
    p.q_stride = q_stride;
    p.k = k;
    p.v = v;
    p.n_vis = n_vis;
    p.probs = probs;
    p.part = (float *)c->arena;
    p.T = T;
    p.NH = NH;
    p.D = D;
    p.cap = cap;
    p.scale = 1.0f / sqrtf((float)D);
    plan_splits(c, rows, D, cap, &p.n_split, &p.chunk);
    attn_kernel<<<dim3((unsigned)rows, (unsigned)p.n_split), ATT_THREADS, 0, c->stream>>>(p);
    KN_LAUNCHED(c, "attn_kernel");
    if (p.n_split > 1) {
        attn_combine_kernel<<<(unsigned)rows, ATT_THREADS, 0, c->stream>>>(p);
        KN_LAUNCHED(c, "attn_combine_kernel");
    }
    return KN_OK;
}
