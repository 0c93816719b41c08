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
 * reference does not apply (batch 1). */
#include "policy_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int32_t g_pythia_seps[] = {15,   13,   32,   2,    28,   27,   209,   186,   187,  964,
                                        1157, 3736, 2195, 3706, 1163, 2490, 50276, 586, 4928, 50275};

static eng_status sep_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
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
    p->n_seps = (int)(sizeof g_pythia_seps / sizeof g_pythia_seps[0]);
    memcpy(p->seps, g_pythia_seps, sizeof g_pythia_seps);
    int is_default = 1;
    for (int i = 0; p->ps && i < p->ps->n; i++) {
        const eng_param *q = &p->ps->p[i];
        if (!q->key || strcmp(q->key, "seps")) continue;
        p->used |= (uint64_t)1 << i;
        is_default = 0;
        p->n_seps = 0;
        if (q->type == ENG_PARAM_INT) {
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
            eng_errf(err, n_err, "policy 'sepllm': param 'seps' must list up to 64 token ids separated by ';'");
            return ENG_ERR_INVAL;
        }
    }
    snprintf(p->desc, sizeof p->desc, "init=%d,sep_cap=%d,local=%d,cache=%d,seps=%s,pos=%s", p->init, p->sep_cap,
             p->local, p->cache, is_default ? "pythia" : "custom", p->pos_shift ? "shift" : "original");
    return ENG_OK;
}

static int is_sep(const eng_policy *p, int32_t id) {
    for (int i = 0; i < p->n_seps; i++)
        if (p->seps[i] == id) return 1;
    return 0;
}

/* separators that would survive: the region plus the past window's separators */
static int sep_count(const eng_policy *p, int l, int h, int n) {
    const int32_t *id = p->ids + ((size_t)l * p->cfg.n_head + h) * p->cap;
    int ns = p->n_sep[l * p->cfg.n_head + h], c = ns;
    for (int j = p->init + ns; j < n - p->local; j++) c += is_sep(p, id[j]);
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
        if (j < p->init + *ns || is_sep(p, id[j])) keep[m++] = j;
    int nc = m - c0, drop = nc > p->sep_cap ? nc - p->sep_cap : 0;
    if (drop) memmove(keep + c0, keep + c0 + drop, (size_t)(nc - drop) * sizeof(int32_t));
    m -= drop;
    *ns = nc - drop;
    for (int j = n - p->local; j < n; j++) keep[m++] = j;
    return m;
}

const pol_ops pol_ops_sepllm = {"sepllm", POL_BOUNDED | POL_SLOT_IDS, sep_parse, sep_capacity, sep_target,
                                sep_select, NULL, NULL};
