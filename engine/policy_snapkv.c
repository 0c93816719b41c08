/* policy_snapkv.c — prefill-time policies that score the prompt by the
 * attention of its last `window` queries: snapkv (Li et al. 2024,
 * FasterDecoding/SnapKV snapkv_utils.py) and pyramidkv (Cai et al. 2024,
 * KVCache-Factory pyramidkv_utils.py PyramidKVCluster: SnapKV scoring with a
 * per-layer budget that shrinks with depth).
 *
 * Rule, run once at the end of the first forward call (the prompt, of
 * length n), per layer and head, after the prompt's own exact attention:
 *   1. A = softmax(Q[n-w:] Kᵀ/√D) with the causal mask inside the window,
 *      fp32 (kn_attention over the cached keys; positions as cached);
 *   2. s[j] = Σ over the w window rows of A[i, j], for j < n - w;
 *   3. s = pool1d(s, kernel, stride 1, padding kernel/2): avg counts the
 *      zero padding (PyTorch's count_include_pad), max pads with -inf;
 *   4. keep top-c of [0, n - w) by s, plus the window [n - w, n).
 * snapkv: no-op if n < budget, else c = budget - w (the budget includes the
 * window). Defaults window 32, kernel 5, pooling avg, budget 2048 (the
 * original init_snapkv). pyramidkv: no-op if n < budget; c = budget - w if
 * n < 2(budget - w); else c_l from the KVF schedule (pol_pyramid_cap, doc
 * b.4). Defaults window 8, kernel 7, pooling max, budget 512, beta 20 (KVF's
 * run_longbench.py). Ties keep the older slot; kept slots stay in position
 * order. Later tokens are appended without eviction (capacity = n_tokens). */
#include "policy_impl.h"

#include <stdio.h>

static eng_status snap_parse_common(eng_policy *p, int def_w, int def_k, int def_max, int def_b, char *err,
                                    size_t n_err) {
    eng_status st;
    if ((st = pol_param_int(p, "window", def_w, 1, 1 << 16, &p->window, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "kernel", def_k, 1, 1 << 10, &p->kernel, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_enum(p, "pooling", "avg|max", def_max, &p->pool_max, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "budget", def_b, 2, 1 << 24, &p->budget, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_pos(p, 0, err, n_err)) != ENG_OK) return st;
    if (p->kernel % 2 == 0) {
        eng_errf(err, n_err, "policy '%s': param 'kernel' must be odd (got %d)", p->name, p->kernel);
        return ENG_ERR_INVAL;
    }
    if (p->budget <= p->window) {
        eng_errf(err, n_err, "policy '%s': param 'budget' (%d) must exceed 'window' (%d)", p->name, p->budget,
                 p->window);
        return ENG_ERR_INVAL;
    }
    return ENG_OK;
}

static eng_status snapkv_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st = snap_parse_common(p, 32, 5, 0, 2048, err, n_err);
    snprintf(p->desc, sizeof p->desc, "window=%d,kernel=%d,pooling=%s,budget=%d,pos=%s", p->window, p->kernel,
             p->pool_max ? "max" : "avg", p->budget, p->pos_shift ? "shift" : "original");
    return st;
}

static eng_status pyramid_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st = snap_parse_common(p, 8, 7, 1, 512, err, n_err);
    if (st == ENG_OK) st = pol_param_real(p, "beta", 20.0, 1e-9, 1e9, &p->beta, err, n_err);
    snprintf(p->desc, sizeof p->desc, "window=%d,kernel=%d,pooling=%s,budget=%d,beta=%g,pos=%s", p->window,
             p->kernel, p->pool_max ? "max" : "avg", p->budget, p->beta, p->pos_shift ? "shift" : "original");
    return st;
}

static int snap_capacity(const eng_policy *p, int n_tokens) { (void)p; return n_tokens; }
static int snap_target(const eng_policy *p, int l, int h, int n) {
    (void)h; (void)p; (void)l; return n; }
static int snap_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    (void)p; (void)l; (void)h; (void)k;
    for (int j = 0; j < n; j++) keep[j] = j;
    return n;
}

/* heavy slots layer l keeps out of a prompt of n (n - w: no compression) */
static int snap_heavy(const eng_policy *p, int l, int n) {
    int w = p->window;
    if (n < p->budget || n <= w) return n - w;
    if (p->ops == &pol_ops_snapkv) return p->budget - w;
    return pol_pyramid_cap(p->budget, w, p->beta, p->cfg.n_layer, l, n);
}

static void snap_prefill(eng_policy *p, int l) {
    eng_state *s = p->st;
    const eng_config *c = &p->cfg;
    int NH = c->n_head, D = c->head_dim, cap = p->cap, w = p->window;
    int32_t *held = pol_held(p, l);
    if (p->wn[l] < w) return;   // fewer prompt queries than the window: nothing to score
    int any = 0;
    for (int h = 0; h < NH; h++) any |= snap_heavy(p, l, held[h]) < held[h] - w;
    if (!any) return;
    // 1. window attention: query i (position n - w + i) sees keys [0, n - w + i]
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < w; i++) p->wvis[h * w + i] = held[h] - w + i + 1;
    const float *K = pol_keys(p, l);
    kn_attention(p->wout, p->winq + (size_t)l * w * c->n_embd, (size_t)c->n_embd, K, eng_kvcache_v(&s->kv, l), w,
                 NH, D, cap, p->wvis, s->att_scratch, p->wprobs);
    for (int h = 0; h < NH; h++) {
        int n = held[h], m = n - w, heavy = snap_heavy(p, l, n);
        if (heavy >= m) continue;
        // 2. column sums over the window rows, 3. pooling, 4. top-heavy + the window
        float *sum = p->tmp, *pooled = p->tmp + cap;
        for (int j = 0; j < m; j++) sum[j] = 0.0f;
        for (int i = 0; i < w; i++) {
            const float *row = p->wprobs + ((size_t)h * w + i) * cap;
            for (int j = 0; j < m; j++) sum[j] += row[j];
        }
        pol_pool1d(sum, m, p->kernel, p->pool_max, pooled);
        int32_t *keep = p->keep;
        for (int j = 0; j < m; j++) keep[j] = j;
        int k = pol_topk(pooled, keep, m, heavy, keep, p->ord);
        for (int j = m; j < n; j++) keep[k++] = j;
        pol_compact(p, l, h, keep, k);
    }
}

const pol_ops pol_ops_snapkv = {"snapkv", POL_AT_PREFILL, snapkv_parse, snap_capacity, snap_target, snap_select,
                                NULL, snap_prefill};
const pol_ops pol_ops_pyramidkv = {"pyramidkv", POL_AT_PREFILL, pyramid_parse, snap_capacity, snap_target,
                                   snap_select, NULL, snap_prefill};
