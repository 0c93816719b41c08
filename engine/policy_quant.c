/* policy_quant.c — the policies that change what is stored rather than
 * which tokens stay: kivi (Liu et al. 2024, jy-yuan/KIVI: 2/4-bit
 * asymmetric quantization, keys per channel, values per token, an fp32
 * residual of recent tokens) and think (Xu et al. 2024,
 * SalesforceAIResearch/ThinK key_pruner_query_driven: query-driven pruning
 * of key channels, the pruned channels really dropped from the stored rows).
 *
 * kivi. The state's KV cache is only the fp32 residual (capacity residual
 * + 64 slots); everything older lives in a packed store carved from the
 * policy's single attach allocation, sized for the longest sequence
 * (eng_policy_capacity's n_tokens). Rule, per layer (every head alike), at
 * the start of each step among the tokens already held (equal to the
 * reference's "after the step's attention", as for eviction), with `total`
 * tokens held:
 *   keys:   the oldest total − (total mod residual) tokens are quantized, in
 *           groups of `group` consecutive tokens, each channel of a group
 *           with its own (min, scale) — KIVI's key_states_full block being
 *           quantized whenever it reaches residual_length;
 *   values: all but the newest `residual` tokens are quantized, each token
 *           in groups of `group` channels with their own (min, scale) —
 *           KIVI's sliding value_states_full.
 * Quantizer: pol_quant_minmax (min-max, round half to even). Attention
 * dequantizes the stored rows of the layer into one (NH, n_max, D) scratch
 * and runs the ordinary kernel over [dequantized | fp32 residual], which is
 * the reference's softmax([q·K̂ᵀ, q·K_fullᵀ]) · [V̂; V_full] computed once.
 *
 * think. At the end of the prompt (the first forward call), per layer and
 * head, with the last `window` prompt queries q (post-RoPE) and the n
 * prompt keys k: score[c] = mean q[c]² · mean k[c]²; the int(D·ratio)
 * lowest-scored channels are pruned (ties prune the higher channel), the
 * others kept. The keys of tokens [0, n − recent) are then stored with the
 * kept channels only (rows compacted in place to D_keep floats, channel
 * list per head); the newest `recent` prompt keys and every later key stay
 * full. Attention scatters the compacted rows back over zeros, so q·k of a
 * pruned token is exactly the dot product over its kept channels. */
#include "policy_impl.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kn.h"

/* ------------------------------------------------------------ helpers */

void pol_quant_minmax(const float *x, int n, size_t stride, int bits, unsigned char *packed, size_t first,
                      size_t code_stride, float *mn, float *scale) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        float v = x[(size_t)i * stride];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    float qmax = (float)((1u << bits) - 1u), sc = (hi - lo) / qmax;
    *mn = lo;
    *scale = sc;
    for (int i = 0; i < n; i++) {
        float c = sc > 0.0f ? rintf((x[(size_t)i * stride] - lo) / sc) : 0.0f;
        if (c < 0.0f) c = 0.0f;
        if (c > qmax) c = qmax;
        size_t bit = (first + (size_t)i * code_stride) * (size_t)bits;
        unsigned char m = (unsigned char)(((1u << bits) - 1u) << (bit & 7));
        packed[bit >> 3] = (unsigned char)((packed[bit >> 3] & ~m) | (((unsigned)c << (bit & 7)) & m));
    }
}

void pol_think_scores(const float *q, int nq, size_t q_stride, const float *k, int nk, int D, double *score) {
    for (int c = 0; c < D; c++) {
        double qs = 0.0, ks = 0.0;
        for (int i = 0; i < nq; i++) qs += (double)q[(size_t)i * q_stride + c] * q[(size_t)i * q_stride + c];
        for (int j = 0; j < nk; j++) ks += (double)k[(size_t)j * D + c] * k[(size_t)j * D + c];
        score[c] = (nq ? qs / nq : 0.0) * (nk ? ks / nk : 0.0);
    }
}

int64_t pol_kivi_bytes(int total, int D, int bits, int group, int residual) {
    int64_t qk = total - total % residual, qv = total > residual ? total - residual : 0;
    int64_t fk = (int64_t)total - qk, fv = (int64_t)total - qv, d = D;
    int64_t kb = (qk * d * bits + 7) / 8 + (qk / group) * d * 2 * 4 + fk * d * 4;
    int64_t vb = (qv * d * bits + 7) / 8 + qv * (d / group) * 2 * 4 + fv * d * 4;
    return kb + vb;
}

/* the policy's sequence-independent no-eviction ops */
static int keep_all_target(const eng_policy *p, int l, int h, int n) {
    (void)p; (void)l; (void)h; return n; }
static int keep_all_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    (void)p; (void)l; (void)h; (void)k;
    for (int j = 0; j < n; j++) keep[j] = j;
    return n;
}

/* ------------------------------------------------------------ kivi */

#define KV_L(p) ((p)->cfg.n_layer)
#define KV_NH(p) ((p)->cfg.n_head)
#define KV_D(p) ((p)->cfg.head_dim)

static size_t kivi_code_bytes(const eng_policy *p, int N) {
    return (((size_t)N * KV_D(p) * (size_t)p->bits + 7) / 8 + 15) & ~(size_t)15;
}

static size_t kivi_size(const eng_policy *p, int cap, int B, int n_max, int n_thr) {
    (void)cap;
    size_t L = KV_L(p), NH = KV_NH(p), D = KV_D(p), G = (size_t)p->group;
    size_t N = ((size_t)n_max + G - 1) / G * G;
    size_t nf = 2 * L * NH * (N / G) * D + 2 * L * NH * N * (D / G) + 2 * NH * N * D + (size_t)n_thr * N;
    size_t ni = 2 * L + NH * (size_t)B;
    return (nf + ni) * 4 + 2 * L * NH * kivi_code_bytes(p, (int)N) + 64;
}

static void kivi_carve(eng_policy *p, unsigned char *mem, int cap, int B, int n_thr) {
    (void)cap;
    size_t L = KV_L(p), NH = KV_NH(p), D = KV_D(p), G = (size_t)p->group;
    size_t N = ((size_t)p->n_max + G - 1) / G * G;
    p->n_max = (int)N;
    float *f = (float *)mem;
    p->k_mn = f; f += L * NH * (N / G) * D;
    p->k_sc = f; f += L * NH * (N / G) * D;
    p->v_mn = f; f += L * NH * N * (D / G);
    p->v_sc = f; f += L * NH * N * (D / G);
    p->dk = f; f += NH * N * D;
    p->dv = f; f += NH * N * D;
    p->att_s = f; f += (size_t)n_thr * N;
    int32_t *i = (int32_t *)f;
    p->nq = i; i += 2 * L;
    p->nvis = i; i += NH * (size_t)B;
    unsigned char *b = (unsigned char *)(((uintptr_t)i + 15) & ~(uintptr_t)15);
    size_t cb = kivi_code_bytes(p, (int)N);
    p->qk = b; b += L * NH * cb;
    p->qv = b;
    p->store_kv_bytes = 2 * L * NH * cb + 4 * L * NH * ((N / G) * D + N * (D / G)) * sizeof(float) / 2;
    memset(p->qk, 0, 2 * L * NH * cb);
    memset(p->nq, 0, 2 * L * sizeof(int32_t));
}

static void kivi_reset(eng_policy *p) { memset(p->nq, 0, 2 * (size_t)KV_L(p) * sizeof(int32_t)); }

/* staging slot j of head h holds token nq_v + j */
static void kivi_layer_begin(eng_policy *p, int l, int T) {
    (void)T;
    eng_kvcache *kv = &p->st->kv;
    int L = KV_L(p), NH = KV_NH(p), D = KV_D(p), G = p->group, R = p->residual, cap = kv->cap;
    int32_t *held = pol_held(p, l), *nqk = &p->nq[l], *nqv = &p->nq[L + l];
    int total = *nqv + held[0];
    size_t N = (size_t)p->n_max, cb = kivi_code_bytes(p, p->n_max);
    if (*nqk > total) *nqk = total - total % R;   // rolled back below a quantized block (defensive)
    int kt = total - total % R, vt = total - R;
    for (int h = 0; h < NH; h++) {
        size_t lh = (size_t)l * NH + h;
        float *K = eng_kvcache_k(kv, l) + (size_t)h * cap * D, *V = eng_kvcache_v(kv, l) + (size_t)h * cap * D;
        // keys: whole residual blocks, per channel over groups of G tokens
        for (int j0 = *nqk; j0 < kt; j0 += G) {
            const float *rows = K + (size_t)(j0 - *nqv) * D;
            float *mn = p->k_mn + (lh * (N / G) + (size_t)(j0 / G)) * D, *sc = p->k_sc + (mn - p->k_mn);
            for (int c = 0; c < D; c++)
                pol_quant_minmax(rows + c, G, (size_t)D, p->bits, p->qk + lh * cb, (size_t)j0 * D + c, (size_t)D,
                                 mn + c, sc + c);
        }
        // values: all but the newest R, per token over groups of G channels
        if (vt > *nqv) {
            for (int j = *nqv; j < vt; j++) {
                const float *row = V + (size_t)(j - *nqv) * D;
                float *mn = p->v_mn + (lh * N + (size_t)j) * (size_t)(D / G), *sc = p->v_sc + (mn - p->v_mn);
                for (int g = 0; g < D / G; g++)
                    pol_quant_minmax(row + (size_t)g * G, G, 1, p->bits, p->qv + lh * cb, (size_t)j * D + (size_t)g * G,
                                     1, mn + g, sc + g);
            }
            int d = vt - *nqv, keep = held[h] - d;
            int32_t *pos = eng_kvcache_pos(kv, l, h);
            memmove(K, K + (size_t)d * D, (size_t)keep * D * sizeof(float));
            memmove(V, V + (size_t)d * D, (size_t)keep * D * sizeof(float));
            memmove(pos, pos + d, (size_t)keep * sizeof(int32_t));
            held[h] = keep;
        }
    }
    p->compressed += (int64_t)NH * ((kt > *nqk ? kt - *nqk : 0) + (vt > *nqv ? vt - *nqv : 0));
    if (kt > *nqk) *nqk = kt;
    if (vt > *nqv) *nqv = vt;
}

/* the dequantized rows of (l, h): keys [0, nq_k), values [0, nq_v) */
static void kivi_dequant(const eng_policy *p, int l, int h, float *dk, float *dv) {
    int NH = KV_NH(p), D = KV_D(p), G = p->group, L = KV_L(p);
    size_t lh = (size_t)l * NH + h, N = (size_t)p->n_max, cb = kivi_code_bytes(p, p->n_max);
    const unsigned char *qk = p->qk + lh * cb, *qv = p->qv + lh * cb;
    for (int j = 0; j < p->nq[l]; j++) {
        const float *mn = p->k_mn + (lh * (N / G) + (size_t)(j / G)) * D, *sc = p->k_sc + (mn - p->k_mn);
        for (int c = 0; c < D; c++) dk[(size_t)j * D + c] = (float)pol_code_get(qk, (size_t)j * D + c, p->bits) * sc[c] + mn[c];
    }
    for (int j = 0; j < p->nq[L + l]; j++) {
        const float *mn = p->v_mn + (lh * N + (size_t)j) * (size_t)(D / G), *sc = p->v_sc + (mn - p->v_mn);
        for (int c = 0; c < D; c++)
            dv[(size_t)j * D + c] = (float)pol_code_get(qv, (size_t)j * D + c, p->bits) * sc[c / G] + mn[c / G];
    }
}

static int kivi_attend(eng_policy *p, int l, int T) {
    eng_state *s = p->st;
    eng_kvcache *kv = &s->kv;
    int L = KV_L(p), NH = KV_NH(p), D = KV_D(p), cap = kv->cap, nqk = p->nq[l], nqv = p->nq[L + l];
    if (nqk == 0 && nqv == 0) return 0;   // all fp32: the ordinary attention over the cache
    size_t N = (size_t)p->n_max;
    const int32_t *held = pol_held(p, l);
    for (int h = 0; h < NH; h++) {
        float *dk = p->dk + (size_t)h * N * D, *dv = p->dv + (size_t)h * N * D;
        const float *K = eng_kvcache_k(kv, l) + (size_t)h * cap * D, *V = eng_kvcache_v(kv, l) + (size_t)h * cap * D;
        kivi_dequant(p, l, h, dk, dv);
        int total = nqv + held[h];
        memcpy(dk + (size_t)nqk * D, K + (size_t)(nqk - nqv) * D, (size_t)(total - nqk) * D * sizeof(float));
        memcpy(dv + (size_t)nqv * D, V, (size_t)(total - nqv) * D * sizeof(float));
        for (int t = 0; t < T; t++) p->nvis[h * T + t] = s->n_vis[h * T + t] + nqv;
    }
    size_t C = (size_t)p->cfg.n_embd;
    kn_attention(s->att, s->qkv, 3 * C, p->dk, p->dv, T, NH, D, (int)N, p->nvis, p->att_s, NULL);
    return 1;
}

static int kivi_room(const eng_policy *p) {
    int L = KV_L(p), R = p->residual, most_after = 0, most_total = 0;
    for (int l = 0; l < L; l++) {
        int n = pol_held(p, l)[0], total = p->nq[L + l] + n, vt = total - R;
        int after = vt > p->nq[L + l] ? total - vt : n;
        if (after > most_after) most_after = after;
        if (total > most_total) most_total = total;
    }
    int room = p->cap - most_after, left = p->n_max - most_total;
    return room < left ? room : left;
}

static int64_t kivi_tokens(const eng_policy *p, int l, int h) { return p->nq[KV_L(p) + l] + pol_held(p, l)[h]; }

static int64_t kivi_bytes(const eng_policy *p) {
    int64_t b = 0;
    for (int l = 0; l < KV_L(p); l++)
        b += KV_NH(p) * pol_kivi_bytes((int)kivi_tokens(p, l, 0), KV_D(p), p->bits, p->group, p->residual);
    return b;
}

/* Layer l's store as a mark keeps it: the two quantized counts, then per
 * head the packed codes and the min/scale of the quantized tokens only
 * (the rest of the buffer zeroed, so two equal states copy to equal bytes;
 * what lies beyond the counts in the live store is never read). */
static size_t kivi_layer_bytes(const eng_policy *p) {
    size_t NH = KV_NH(p), D = KV_D(p), G = (size_t)p->group, N = (size_t)p->n_max;
    return 2 * sizeof(int32_t) + 2 * NH * kivi_code_bytes(p, (int)N) + 2 * NH * ((N / G) * D + N * (D / G)) * sizeof(float);
}

static void kivi_layer_copy(eng_policy *p, int l, unsigned char *buf, int to_buf) {
    size_t L = KV_L(p), NH = KV_NH(p), D = KV_D(p), G = (size_t)p->group, N = (size_t)p->n_max;
    size_t cb = kivi_code_bytes(p, (int)N), bits = (size_t)p->bits;
    int32_t *nq = (int32_t *)buf;
    if (to_buf) {
        memset(buf, 0, kivi_layer_bytes(p));
        nq[0] = p->nq[l];
        nq[1] = p->nq[L + (size_t)l];
    } else {
        p->nq[l] = nq[0];
        p->nq[L + (size_t)l] = nq[1];
    }
    size_t nk = (size_t)nq[0], nv = (size_t)nq[1];   // D·bits is a whole number of bytes (D even, bits 2/4/8)
    unsigned char *o = buf + 2 * sizeof(int32_t);
    for (size_t h = 0; h < NH; h++) {
        size_t lh = (size_t)l * NH + h;
        struct { void *at; size_t used, full; } part[] = {
            {p->qk + lh * cb, nk * D * bits / 8, cb},
            {p->qv + lh * cb, nv * D * bits / 8, cb},
            {p->k_mn + lh * (N / G) * D, nk / G * D * sizeof(float), (N / G) * D * sizeof(float)},
            {p->k_sc + lh * (N / G) * D, nk / G * D * sizeof(float), (N / G) * D * sizeof(float)},
            {p->v_mn + lh * N * (D / G), nv * (D / G) * sizeof(float), N * (D / G) * sizeof(float)},
            {p->v_sc + lh * N * (D / G), nv * (D / G) * sizeof(float), N * (D / G) * sizeof(float)},
        };
        for (size_t i = 0; i < sizeof part / sizeof part[0]; o += part[i].full, i++)
            memcpy(to_buf ? o : part[i].at, to_buf ? part[i].at : o, part[i].used);
    }
}

static const pol_store_ops kivi_store = {kivi_size,  kivi_carve, kivi_reset,       kivi_layer_begin, kivi_attend,
                                         kivi_room,  kivi_tokens, kivi_bytes, kivi_layer_bytes, kivi_layer_copy};

static eng_status kivi_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    int D = KV_D(p);
    if ((st = pol_param_int(p, "bits", 2, 2, 8, &p->bits, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "group", 32, 1, 4096, &p->group, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "residual", 32, 1, 1 << 24, &p->residual, err, n_err)) != ENG_OK) return st;
    p->store = &kivi_store;
    snprintf(p->desc, sizeof p->desc, "bits=%d,group=%d,residual=%d", p->bits, p->group, p->residual);
    if (p->bits != 2 && p->bits != 4 && p->bits != 8) {
        eng_errf(err, n_err, "policy 'kivi': param 'bits' must be 2, 4 or 8 (got %d)", p->bits);
        return ENG_ERR_INVAL;
    }
    if (D % p->group != 0) {
        eng_errf(err, n_err, "policy 'kivi': param 'group' (%d) must divide head_dim (%d): values are grouped along channels",
                 p->group, D);
        return ENG_ERR_INVAL;
    }
    if (p->residual % p->group != 0) {
        eng_errf(err, n_err, "policy 'kivi': param 'residual' (%d) must be a multiple of 'group' (%d)", p->residual,
                 p->group);
        return ENG_ERR_INVAL;
    }
    return ENG_OK;
}

static int kivi_capacity(const eng_policy *p, int n_tokens) { return pol_cap_bounded(p->residual, n_tokens); }

const pol_ops pol_ops_kivi = {"kivi", POL_BOUNDED, kivi_parse, kivi_capacity, keep_all_target, keep_all_select,
                              NULL, NULL};

/* ------------------------------------------------------------ think */

static size_t think_size(const eng_policy *p, int cap, int B, int n_max, int n_thr) {
    (void)B; (void)n_max; (void)n_thr;
    size_t L = KV_L(p), NH = KV_NH(p), D = KV_D(p);
    return (NH * (size_t)cap * D + L * NH * D + L * NH + L) * 4 + D * sizeof(double) + 64;
}

static void think_carve(eng_policy *p, unsigned char *mem, int cap, int B, int n_thr) {
    (void)B; (void)n_thr;
    size_t L = KV_L(p), NH = KV_NH(p), D = KV_D(p);
    double *d = (double *)mem;
    p->think_score = d;
    float *f = (float *)(d + D);
    p->dk = f; f += NH * (size_t)cap * D;
    int32_t *i = (int32_t *)f;
    p->chan = i; i += L * NH * D;
    p->n_keep = i; i += L * NH;
    p->nq = i;
    p->store_kv_bytes = 0;   // pruned rows stay in the state's cache
    memset(p->nq, 0, L * sizeof(int32_t));
}

static void think_reset(eng_policy *p) { memset(p->nq, 0, (size_t)KV_L(p) * sizeof(int32_t)); }

static void think_prefill(eng_policy *p, int l) {
    eng_kvcache *kv = &p->st->kv;
    int NH = KV_NH(p), D = KV_D(p), cap = kv->cap, w = p->window, prune = (int)(D * p->ratio), Dk = D - prune;
    const int32_t *held = pol_held(p, l);
    int n = held[0], rows = n - p->recent;
    p->nq[l] = 0;
    if (prune <= 0 || rows <= 0 || p->wn[l] == 0) return;
    size_t C = (size_t)p->cfg.n_embd;
    for (int h = 0; h < NH; h++) {
        float *K = eng_kvcache_k(kv, l) + (size_t)h * cap * D;
        double *sc = p->think_score;
        pol_think_scores(p->winq + (size_t)l * w * C + (size_t)h * D, p->wn[l], C, K, n, D, sc);
        // rank channels: higher score first, equal scores keep the lower channel (insertion sort, D <= 512)
        int32_t *ch = p->chan + ((size_t)l * NH + h) * D;
        for (int c = 0; c < D; c++) {
            int i = c;
            while (i > 0 && (sc[ch[i - 1]] < sc[c] || (isnan(sc[ch[i - 1]]) && !isnan(sc[c])))) {
                ch[i] = ch[i - 1];
                i--;
            }
            ch[i] = c;
        }
        pol_sort_i32(ch, Dk);
        pol_sort_i32(ch + Dk, prune);
        p->n_keep[(size_t)l * NH + h] = Dk;
        // compact the pruned rows in place: row j moves to j·Dk (reads stay ahead of writes)
        for (int j = 0; j < rows; j++) {
            const float *src = K + (size_t)j * D;
            float *dst = K + (size_t)j * Dk;
            for (int i = 0; i < Dk; i++) dst[i] = src[ch[i]];
        }
    }
    p->nq[l] = rows;
    p->compressed += (int64_t)NH * rows;
}

static int think_attend(eng_policy *p, int l, int T) {
    eng_state *s = p->st;
    eng_kvcache *kv = &s->kv;
    int NH = KV_NH(p), D = KV_D(p), cap = kv->cap, rows = p->nq[l];
    if (rows == 0) return 0;
    const int32_t *held = pol_held(p, l);
    for (int h = 0; h < NH; h++) {
        const float *K = eng_kvcache_k(kv, l) + (size_t)h * cap * D;
        const int32_t *ch = p->chan + ((size_t)l * NH + h) * D;
        int Dk = p->n_keep[(size_t)l * NH + h];
        float *dst = p->dk + (size_t)h * cap * D;
        for (int j = 0; j < rows; j++) {
            float *r = dst + (size_t)j * D;
            memset(r, 0, (size_t)D * sizeof(float));
            for (int i = 0; i < Dk; i++) r[ch[i]] = K[(size_t)j * Dk + i];
        }
        memcpy(dst + (size_t)rows * D, K + (size_t)rows * D, (size_t)(held[h] - rows) * D * sizeof(float));
    }
    size_t C = (size_t)p->cfg.n_embd;
    kn_attention(s->att, s->qkv, 3 * C, p->dk, eng_kvcache_v(kv, l), T, NH, D, cap, s->n_vis, s->att_scratch, NULL);
    return 1;
}

static int64_t think_bytes(const eng_policy *p) {
    int NH = KV_NH(p), D = KV_D(p);
    int64_t b = 0;
    for (int l = 0; l < KV_L(p); l++) {
        const int32_t *held = pol_held(p, l);
        for (int h = 0; h < NH; h++) {
            int64_t rows = p->nq[l], dk = rows ? p->n_keep[(size_t)l * NH + h] : D;
            b += (rows * dk + ((int64_t)held[h] - rows) * D + (int64_t)held[h] * D) * (int64_t)sizeof(float);
        }
    }
    return b;
}

static const pol_store_ops think_store = {think_size, think_carve, think_reset, NULL,      think_attend,
                                          NULL,       NULL,        think_bytes, NULL, NULL};

static eng_status think_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    if ((st = pol_param_real(p, "ratio", 0.4, 0.0, 0.999999, &p->ratio, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "recent", 32, 0, 1 << 24, &p->recent, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "window", 32, 1, 1 << 16, &p->window, err, n_err)) != ENG_OK) return st;
    p->store = &think_store;
    snprintf(p->desc, sizeof p->desc, "ratio=%g,recent=%d,window=%d", p->ratio, p->recent, p->window);
    return ENG_OK;
}

static int think_capacity(const eng_policy *p, int n_tokens) { (void)p; return n_tokens; }

const pol_ops pol_ops_think = {"think", POL_AT_PREFILL, think_parse, think_capacity, keep_all_target, keep_all_select,
                               NULL, think_prefill};
