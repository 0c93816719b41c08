/* policy_norm.c — key-norm policies: knorm and l2 (the same rule under the
 * two names users know it by: kvpress KnormPress, score = -||k||, and
 * alessiodevoto/l2compress cache.py l2_compress; Devoto et al. 2024),
 * fix_size_l2 (a fixed-size cache with a protected recent tail and a choice
 * of what to keep from the rest) and hybrid (sinks + the lowest-norm middle
 * + a recent window), the last two from the seeds' KVCompress toolkit
 * (kvcompress/methods/fix_size_l2.py and h2o_l2.py).
 *
 * knorm/l2 rule (l2compress, token-by-token LM evaluation): at every step, each layer
 * not in skip_layers whose heads hold n >= prune_after slots keeps, per
 * head, the ceil(keep_ratio * n) slots with the LOWEST key L2 norm. The norm
 * is of the key as cached (post-RoPE under pos=original, pre-RoPE under
 * pos=shift; RoPE preserves the norm up to fp32 rounding). Equal norms keep
 * the older slot. Deviation: kept slots stay in position order (l2compress
 * leaves them in norm order; order changes only summation order under
 * pos=original). Defaults follow l2compress's eval_lm.py CLI, the streaming
 * LM setting: keep_ratio 0.98, prune_after 10, skip_layers "0", pos=original
 * (the function's own defaults, keep_ratio 1 / prune_after 2048, never
 * evict). With keep_ratio < 1 the cache settles near 1/(1 - keep_ratio).
 *
 * fix_size_l2 rule: a layer not in skip_layers whose heads hold n > size
 * slots protects the newest P = min(int(size * keep_ratio), n) and keeps
 * size - P of the older [0, n - P) per head: the lowest key norms
 * (keep_low), the highest (keep_high) or a uniform random subset (random,
 * seeded by seed, layer, head and step); kept slots in position order (the
 * reference sorts them back too). Defaults: the reference's (size 1024,
 * keep_ratio 0, keep_low, skip_layers "0;1"), pos=original.
 *
 * hybrid rule (h2o_l2): a layer not in skip_layers whose heads hold
 * n > sink + heavy + recent keeps [0, sink) ∪ the `heavy` lowest key norms
 * of [sink, n - recent) ∪ [n - recent, n), per head. Defaults: the
 * reference's (4 + 64 + 444 = 512, no skipped layer), pos=original. */
#include "policy_impl.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* "0;1" or "none" for the description */
static const char *skip_desc(const eng_policy *p, char *buf, size_t n) {
    size_t o = 0;
    buf[0] = 0;
    for (int l = 0; l < p->cfg.n_layer && o + 12 < n; l++)
        if (p->skip[l]) o += (size_t)snprintf(buf + o, n - o, "%s%d", o ? ";" : "", l);
    return o ? buf : "none";
}

static int any_skipped(const eng_policy *p) {
    for (int l = 0; l < p->cfg.n_layer; l++)
        if (p->skip[l]) return 1;
    return 0;
}

static eng_status knorm_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    if ((st = pol_param_real(p, "keep_ratio", 0.98, 0.0, 1.0, &p->keep_ratio, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "prune_after", 10, 0, 1 << 30, &p->prune_after, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_layers(p, "skip_layers", "0", err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_pos(p, 0, err, n_err)) != ENG_OK) return st;
    char layers[128];
    snprintf(p->desc, sizeof p->desc, "keep_ratio=%.15g,prune_after=%d,skip_layers=%s,pos=%s", p->keep_ratio,
             p->prune_after, skip_desc(p, layers, sizeof layers), p->pos_shift ? "shift" : "original");
    return ENG_OK;
}

static int knorm_capacity(const eng_policy *p, int n_tokens) { (void)p; return n_tokens; }

static int knorm_target(const eng_policy *p, int l, int h, int n) {
    (void)h;
    if (p->skip[l] || n < p->prune_after || n == 0) return n;
    int k = (int)ceil(p->keep_ratio * (double)n);
    return k < n ? k : n;
}

void pol_key_norm_scores(const eng_policy *p, int l, int h, int n, float *score) {
    const eng_kvcache *kv = &p->st->kv;
    int D = kv->head_dim;
    const float *K = eng_kvcache_k(kv, l) + (size_t)h * kv->cap * D;
    for (int j = 0; j < n; j++) {
        float ss = 0.0f;
        for (int d = 0; d < D; d++) ss += K[(size_t)j * D + d] * K[(size_t)j * D + d];
        score[j] = -sqrtf(ss);
    }
}

static int knorm_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    pol_key_norm_scores(p, l, h, n, p->tmp);
    for (int j = 0; j < n; j++) keep[j] = j;
    return pol_topk(p->tmp, keep, n, k, keep, p->ord);
}

const pol_ops pol_ops_knorm = {"knorm", 0, knorm_parse, knorm_capacity, knorm_target, knorm_select, NULL, NULL};
const pol_ops pol_ops_l2 = {"l2", 0, knorm_parse, knorm_capacity, knorm_target, knorm_select, NULL, NULL};

/* ---- fix_size_l2 */

static const char *const fs_strategies[] = {"keep_low", "keep_high", "random"};

static eng_status fs_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    int seed;
    if ((st = pol_param_int(p, "size", 1024, 1, 1 << 24, &p->budget, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_real(p, "keep_ratio", 0.0, 0.0, 1.0, &p->keep_ratio, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_enum(p, "strategy", "keep_low|keep_high|random", 0, &p->strategy, err, n_err)) != ENG_OK)
        return st;
    if ((st = pol_param_int(p, "seed", 0, 0, 2147483647, &seed, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_layers(p, "skip_layers", "0;1", err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_pos(p, 0, err, n_err)) != ENG_OK) return st;
    p->seed = (uint64_t)seed;
    char layers[128];
    snprintf(p->desc, sizeof p->desc, "size=%d,keep_ratio=%.15g,strategy=%s,seed=%d,skip_layers=%s,pos=%s",
             p->budget, p->keep_ratio, fs_strategies[p->strategy], seed, skip_desc(p, layers, sizeof layers),
             p->pos_shift ? "shift" : "original");
    return ENG_OK;
}

static int fs_capacity(const eng_policy *p, int n_tokens) {
    return any_skipped(p) ? n_tokens : pol_cap_bounded(p->budget, n_tokens);
}

static int fs_target(const eng_policy *p, int l, int h, int n) {
    (void)h;
    return p->skip[l] || n <= p->budget ? n : p->budget;
}

/* protected recent tail of fix_size_l2 (the reference's int(size * keep_ratio)) */
static int fs_protected(const eng_policy *p, int n) {
    int pr = (int)((double)p->budget * p->keep_ratio);
    return pr < n ? pr : n;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int fs_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    int pr = fs_protected(p, n), zone = n - pr, want = k - pr, m = 0;
    if (want > 0) {
        if (p->strategy == 2) {   // k-subset by a partial Fisher-Yates shuffle, then position order
            uint64_t x = p->seed ^ ((uint64_t)l << 48) ^ ((uint64_t)h << 32) ^ (uint64_t)p->steps;
            for (int j = 0; j < zone; j++) p->ord[j] = j;
            for (int i = 0; i < want; i++) {
                int r = i + (int)(splitmix64(&x) % (uint64_t)(zone - i));
                int32_t t = p->ord[i];
                p->ord[i] = p->ord[r];
                p->ord[r] = t;
            }
            memcpy(keep, p->ord, (size_t)want * sizeof(int32_t));
            pol_sort_i32(keep, want);
            m = want;
        } else {
            pol_key_norm_scores(p, l, h, zone, p->tmp);
            if (p->strategy == 1)
                for (int j = 0; j < zone; j++) p->tmp[j] = -p->tmp[j];
            for (int j = 0; j < zone; j++) keep[j] = j;
            m = pol_topk(p->tmp, keep, zone, want, keep, p->ord);
        }
    }
    for (int j = zone; j < n; j++) keep[m++] = j;
    return m;
}

const pol_ops pol_ops_fix_size_l2 = {"fix_size_l2", POL_BOUNDED, fs_parse, fs_capacity, fs_target, fs_select, NULL,
                                     NULL};

/* ---- hybrid */

static eng_status hybrid_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    if ((st = pol_param_int(p, "sink", 4, 0, 1 << 24, &p->sink, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "heavy", 64, 0, 1 << 24, &p->heavy, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "recent", 444, 1, 1 << 24, &p->recent, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_layers(p, "skip_layers", "none", err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_pos(p, 0, err, n_err)) != ENG_OK) return st;
    char layers[128];
    snprintf(p->desc, sizeof p->desc, "sink=%d,heavy=%d,recent=%d,skip_layers=%s,pos=%s", p->sink, p->heavy,
             p->recent, skip_desc(p, layers, sizeof layers), p->pos_shift ? "shift" : "original");
    return ENG_OK;
}

static int hybrid_budget(const eng_policy *p) { return p->sink + p->heavy + p->recent; }

static int hybrid_capacity(const eng_policy *p, int n_tokens) {
    return any_skipped(p) ? n_tokens : pol_cap_bounded(hybrid_budget(p), n_tokens);
}

static int hybrid_target(const eng_policy *p, int l, int h, int n) {
    (void)h;
    return p->skip[l] || n <= hybrid_budget(p) ? n : hybrid_budget(p);
}

static int hybrid_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    (void)k;
    pol_key_norm_scores(p, l, h, n, p->tmp);
    return pol_select_h2o(p->tmp, n, p->sink, p->heavy, p->recent, keep, p->ord);
}

const pol_ops pol_ops_hybrid = {"hybrid", POL_BOUNDED, hybrid_parse, hybrid_capacity, hybrid_target, hybrid_select,
                                NULL, NULL};
