/* policy_norm.c — key-norm policies: knorm and l2 (the same rule under the
 * two names users know it by: kvpress KnormPress, score = -||k||, and
 * alessiodevoto/l2compress cache.py l2_compress; Devoto et al. 2024).
 *
 * Rule (l2compress, token-by-token LM evaluation): at every step, each layer
 * not in skip_layers whose heads hold n >= prune_after slots keeps, per
 * head, the ceil(keep_ratio * n) slots with the LOWEST key L2 norm. The norm
 * is of the key as cached (post-RoPE under pos=original, pre-RoPE under
 * pos=shift; RoPE preserves the norm up to fp32 rounding). Equal norms keep
 * the older slot. Deviation: kept slots stay in position order (l2compress
 * leaves them in norm order; order changes only summation order under
 * pos=original). Defaults follow l2compress's eval_lm.py CLI, the streaming
 * LM setting: keep_ratio 0.98, prune_after 10, skip_layers "0", pos=original
 * (the function's own defaults, keep_ratio 1 / prune_after 2048, never
 * evict). With keep_ratio < 1 the cache settles near 1/(1 - keep_ratio). */
#include "policy_impl.h"

#include <math.h>
#include <stdio.h>

static eng_status knorm_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    if ((st = pol_param_real(p, "keep_ratio", 0.98, 0.0, 1.0, &p->keep_ratio, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "prune_after", 10, 0, 1 << 30, &p->prune_after, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_layers(p, "skip_layers", "0", err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_pos(p, 0, err, n_err)) != ENG_OK) return st;
    char layers[128] = "";
    size_t o = 0;
    for (int l = 0; l < p->cfg.n_layer && o + 12 < sizeof layers; l++)
        if (p->skip[l]) o += (size_t)snprintf(layers + o, sizeof layers - o, "%s%d", o ? ";" : "", l);
    snprintf(p->desc, sizeof p->desc, "keep_ratio=%.15g,prune_after=%d,skip_layers=%s,pos=%s", p->keep_ratio,
             p->prune_after, o ? layers : "none", p->pos_shift ? "shift" : "original");
    return ENG_OK;
}

static int knorm_capacity(const eng_policy *p, int n_tokens) { (void)p; return n_tokens; }

static int knorm_target(const eng_policy *p, int l, int h, int n) {
    (void)h;
    if (p->skip[l] || n < p->prune_after || n == 0) return n;
    int k = (int)ceil(p->keep_ratio * (double)n);
    return k < n ? k : n;
}

static int knorm_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    const eng_kvcache *kv = &p->st->kv;
    int D = kv->head_dim;
    const float *K = eng_kvcache_k(kv, l) + (size_t)h * kv->cap * D;
    float *score = p->tmp;
    for (int j = 0; j < n; j++) {
        float ss = 0.0f;
        for (int d = 0; d < D; d++) ss += K[(size_t)j * D + d] * K[(size_t)j * D + d];
        score[j] = -sqrtf(ss);
        keep[j] = j;
    }
    return pol_topk(score, keep, n, k, keep, p->ord);
}

const pol_ops pol_ops_knorm = {"knorm", 0, knorm_parse, knorm_capacity, knorm_target, knorm_select, NULL, NULL};
const pol_ops pol_ops_l2 = {"l2", 0, knorm_parse, knorm_capacity, knorm_target, knorm_select, NULL, NULL};
