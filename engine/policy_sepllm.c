/* policy_sepllm.c — SepLLM (Chen et al. 2024, HKUDS/SepLLM
 * Streaming-SepLLM/sepllm_kv_cache/kv_cache_manager.py): keep the initial
 * tokens, the separator tokens ("." "," "\n" ...) of the evicted stretch,
 * and a local window.
 *
 * Cache layout per (layer, head), in slot order: [init] [separator region:
 * n_sep slots] [past window] [local window: `local` slots]. Rule: at the
 * start of a step, a head holding n > cache keeps [0, init), the newest
 * sep_cap of (the separator region ∪ the past-window slots whose token id is
 * a separator), and [n − local, n); the separator region becomes those
 * kept separators (SEP_ACCUMULATION + USE_MAX_SEP_CACHE). Every layer and
 * head holds the same set. Defaults: the GPT-NeoX demo script
 * (eval_sepllm_on_gpt_neox_20K_demo.sh): init 4, sep_cap 64, local 896,
 * cache 1280, pos=shift; separator ids: the Pythia list of doc b.8 (param
 * `seps`, ';'-separated ids, replaces it). The batch-minimum trimming of the
 * reference does not apply (batch 1).
 *
 * unified (this project's composition, named by the issue "init +
 * separators + heavy + local"; no reference code exists): SepLLM's regions
 * with H2O's heavy hitters filling the rest. Every (layer, head, slot) keeps
 * its token id and H2O's accumulated attention. At the start of a due step a
 * head holding n > sink + sep + heavy + recent keeps [0, sink) ∪ the newest
 * `sep` separator tokens of [sink, n − recent) ∪ the top-ranked by
 * accumulated attention of the other slots of [sink, n − recent), as many as
 * fill the budget (heavy, plus the separator slots left unused) ∪
 * [n − recent, n). Due: every `interval` steps (lazy_h2o's rule; 1 = every
 * step). Defaults: sink 4, sep 64, heavy 64, recent 380 (512 in all),
 * interval 1, pos=original, separator ids as sepllm. */
#include "policy_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int32_t g_pythia_seps[] = {15,   13,   32,   2,    28,   27,   209,   186,   187,  964,
                                        1157, 3736, 2195, 3706, 1163, 2490, 50276, 586, 4928, 50275};

eng_status pol_param_seps(eng_policy *p, int *is_default, char *err, size_t n_err) {
    p->n_seps = (int)(sizeof g_pythia_seps / sizeof g_pythia_seps[0]);
    memcpy(p->seps, g_pythia_seps, sizeof g_pythia_seps);
    *is_default = 1;
    for (int i = 0; p->ps && i < p->ps->n; i++) {
        const eng_param *q = &p->ps->p[i];
        if (!q->key || strcmp(q->key, "seps")) continue;
        p->used |= (uint64_t)1 << i;
        *is_default = 0;
        p->n_seps = 0;
        if (q->type == ENG_PARAM_INT && q->i >= 0 && q->i <= INT32_MAX) {
            p->seps[p->n_seps++] = (int32_t)q->i;
            continue;
        }
        const char *s = q->type == ENG_PARAM_STR ? q->s : NULL;
        while (s && *s && p->n_seps < 64) {
            char *end;
            long v = strtol(s, &end, 10);
            if (end == s || v < 0 || v > INT32_MAX) break;
            p->seps[p->n_seps++] = (int32_t)v;
            s = end + (*end == ';' || *end == ',');
        }
        if (!s || *s || p->n_seps == 0) {
            eng_errf(err, n_err, "policy '%s': param 'seps' must list up to 64 token ids separated by ';'", p->name);
            return ENG_ERR_INVAL;
        }
    }
    return ENG_OK;
}

static eng_status sep_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    int is_default;
    if ((st = pol_param_int(p, "init", 4, 0, 1 << 24, &p->init, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "sep_cap", 64, 0, 1 << 24, &p->sep_cap, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "local", 896, 1, 1 << 24, &p->local, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "cache", 1280, 2, 1 << 24, &p->cache, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_pos(p, 1, err, n_err)) != ENG_OK) return st;
    if (p->cache < p->init + p->sep_cap + p->local) {
        eng_errf(err, n_err, "policy 'sepllm': param 'cache' (%d) must be >= init + sep_cap + local (%d)", p->cache,
                 p->init + p->sep_cap + p->local);
        return ENG_ERR_INVAL;
    }
    if ((st = pol_param_seps(p, &is_default, err, n_err)) != ENG_OK) return st;
    snprintf(p->desc, sizeof p->desc, "init=%d,sep_cap=%d,local=%d,cache=%d,seps=%s,pos=%s", p->init, p->sep_cap,
             p->local, p->cache, is_default ? "pythia" : "custom", p->pos_shift ? "shift" : "original");
    return ENG_OK;
}

int pol_is_sep(const eng_policy *p, int32_t id) {
    for (int i = 0; i < p->n_seps; i++)
        if (p->seps[i] == id) return 1;
    return 0;
}

/* separators that would survive: the region plus the past window's separators */
static int sep_count(const eng_policy *p, int l, int h, int n) {
    const int32_t *id = p->ids + ((size_t)l * p->cfg.n_head + h) * p->cap;
    int ns = p->n_sep[l * p->cfg.n_head + h], c = ns;
    for (int j = p->init + ns; j < n - p->local; j++) c += pol_is_sep(p, id[j]);
    return c;
}

static int sep_capacity(const eng_policy *p, int n_tokens) { return pol_cap_bounded(p->cache, n_tokens); }

static int sep_target(const eng_policy *p, int l, int h, int n) {
    if (n <= p->cache) return n;
    int c = sep_count(p, l, h, n);
    return p->init + (c < p->sep_cap ? c : p->sep_cap) + p->local;
}

static int sep_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    (void)k;
    const int32_t *id = p->ids + ((size_t)l * p->cfg.n_head + h) * p->cap;
    int32_t *ns = &p->n_sep[l * p->cfg.n_head + h];
    int m = 0;
    for (int j = 0; j < p->init; j++) keep[m++] = j;
    // candidates in slot order: the region, then the past window's separators; keep the newest sep_cap
    int c0 = m;
    for (int j = p->init; j < n - p->local; j++)
        if (j < p->init + *ns || pol_is_sep(p, id[j])) keep[m++] = j;
    int nc = m - c0, drop = nc > p->sep_cap ? nc - p->sep_cap : 0;
    if (drop) memmove(keep + c0, keep + c0 + drop, (size_t)(nc - drop) * sizeof(int32_t));
    m -= drop;
    *ns = nc - drop;
    for (int j = n - p->local; j < n; j++) keep[m++] = j;
    return m;
}

const pol_ops pol_ops_sepllm = {"sepllm", POL_BOUNDED | POL_SLOT_IDS, sep_parse, sep_capacity, sep_target,
                                sep_select, NULL, NULL};

/* ---- unified */

static eng_status uni_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    int is_default;
    if ((st = pol_param_int(p, "sink", 4, 0, 1 << 24, &p->sink, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "sep", 64, 0, 1 << 24, &p->sep_cap, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "heavy", 64, 0, 1 << 24, &p->heavy, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "recent", 380, 1, 1 << 24, &p->recent, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "interval", 1, 1, 1 << 24, &p->interval, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_pos(p, 0, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_seps(p, &is_default, err, n_err)) != ENG_OK) return st;
    snprintf(p->desc, sizeof p->desc, "sink=%d,sep=%d,heavy=%d,recent=%d,interval=%d,seps=%s,pos=%s", p->sink,
             p->sep_cap, p->heavy, p->recent, p->interval, is_default ? "pythia" : "custom",
             p->pos_shift ? "shift" : "original");
    return ENG_OK;
}

static int uni_budget(const eng_policy *p) { return p->sink + p->sep_cap + p->heavy + p->recent; }

static int uni_capacity(const eng_policy *p, int n_tokens) {
    return pol_cap_bounded((long)uni_budget(p) + p->interval - 1, n_tokens);
}

static int uni_target(const eng_policy *p, int l, int h, int n) {
    (void)l;
    (void)h;
    int b = uni_budget(p);
    int due = p->interval == 1 || (p->steps > 0 && p->steps % p->interval == 0);
    if (n + 1 > b + p->interval - 1) due = 1;   // a multi-token chunk would outgrow budget + interval - 1
    return due && n > b ? b : n;
}

static int uni_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    size_t row = ((size_t)l * p->cfg.n_head + h) * p->cap;
    const int32_t *id = p->ids + row;
    const float *acc = p->score + row;
    int lo = p->sink, hi = n - p->recent, ns = 0;
    // the newest `sep` separators of [lo, hi): walk back from hi, marking them in tmp (1 = kept separator)
    float *mark = p->tmp;
    for (int j = lo; j < hi; j++) mark[j] = 0.0f;
    for (int j = hi - 1; j >= lo && ns < p->sep_cap; j--)
        if (pol_is_sep(p, id[j])) {
            mark[j] = 1.0f;
            ns++;
        }
    // the other slots of [lo, hi) compete for what is left of the budget
    int m = 0;
    for (int j = lo; j < hi; j++)
        if (mark[j] == 0.0f) keep[m++] = j;
    int want = k - p->sink - ns - p->recent;
    int got = pol_topk(acc, keep, m, want, keep, p->ord);
    for (int i = 0; i < got; i++) mark[keep[i]] = 1.0f;
    int o = 0;
    for (int j = 0; j < lo; j++) keep[o++] = j;
    for (int j = lo; j < hi; j++)
        if (mark[j] != 0.0f) keep[o++] = j;
    for (int j = hi; j < n; j++) keep[o++] = j;
    return o;
}

const pol_ops pol_ops_unified = {"unified", POL_BOUNDED | POL_NEEDS_PROBS | POL_SLOT_SCORES | POL_SLOT_IDS,
                                 uni_parse, uni_capacity, uni_target, uni_select, pol_observe_acc, NULL};
