/* policy_h2o.c — attention-score policies: h2o (heavy hitters by
 * accumulated attention, per head; Zhang et al. 2023, FMInference/H2O
 * utils_real_drop H2OKVCache_LayerWise), lazy_h2o (the same rule applied
 * every `interval` steps, kvpress DecodingPress's periodic pattern) and tova
 * (drop the lowest head-averaged attention of the last query, one set shared
 * by all heads; Oren et al. 2024, as kvpress TOVAPress scores it).
 *
 * h2o: every (layer, head, slot) carries acc = the sum of the softmax
 * probabilities every query has put on it since the slot entered the cache
 * (a new slot starts at 0 and collects its own step's attention, including
 * its own query's). At the start of a step a head holding
 * n > sink + heavy + recent keeps [0, sink) ∪ top-`heavy` by acc of
 * [sink, n - recent) ∪ [n - recent, n); evicted scores leave with their
 * slots. Defaults sink 0, heavy 4, recent 512 (the real-drop class defaults),
 * pos=original. lazy_h2o: same, attempted only at steps that are multiples of
 * `interval` (default 512, DecodingPress's compression_interval), and forced
 * earlier only if the cache would otherwise outgrow budget + interval.
 *
 * tova: after each layer's attention, score[j] = mean over heads of the last
 * query's probability on slot j. At the start of the next step a layer
 * holding n > budget keeps the top budget - 1 of [0, n - 1) by score plus the
 * newest slot n - 1 (kvpress forces the last token). Default budget 512,
 * pos=original. */
#include "policy_impl.h"

#include <stdio.h>
#include <string.h>

static float *slot_score(eng_policy *p, int l, int h) {
    return p->score + ((size_t)l * p->cfg.n_head + h) * p->cap;
}

/* ---- h2o / lazy_h2o */

static eng_status h2o_parse_common(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    if ((st = pol_param_int(p, "sink", 0, 0, 1 << 24, &p->sink, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "heavy", 4, 0, 1 << 24, &p->heavy, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "recent", 512, 1, 1 << 24, &p->recent, err, n_err)) != ENG_OK) return st;
    return pol_param_pos(p, 0, err, n_err);
}

static eng_status h2o_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st = h2o_parse_common(p, err, n_err);
    snprintf(p->desc, sizeof p->desc, "sink=%d,heavy=%d,recent=%d,pos=%s", p->sink, p->heavy, p->recent,
             p->pos_shift ? "shift" : "original");
    return st;
}

static eng_status lazy_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st = h2o_parse_common(p, err, n_err);
    if (st == ENG_OK) st = pol_param_int(p, "interval", 512, 1, 1 << 24, &p->interval, err, n_err);
    snprintf(p->desc, sizeof p->desc, "sink=%d,heavy=%d,recent=%d,interval=%d,pos=%s", p->sink, p->heavy,
             p->recent, p->interval, p->pos_shift ? "shift" : "original");
    return st;
}

static int h2o_budget(const eng_policy *p) { return p->sink + p->heavy + p->recent; }

static int h2o_capacity(const eng_policy *p, int n_tokens) { return pol_cap_bounded(h2o_budget(p), n_tokens); }
static int lazy_capacity(const eng_policy *p, int n_tokens) {
    return pol_cap_bounded((long)h2o_budget(p) + p->interval, n_tokens);
}

static int h2o_target(const eng_policy *p, int l, int h, int n) {
    (void)h;
    (void)l;
    return n > h2o_budget(p) ? h2o_budget(p) : n;
}

static int lazy_target(const eng_policy *p, int l, int h, int n) {
    (void)h;
    (void)l;
    int b = h2o_budget(p);
    int due = p->steps > 0 && p->steps % p->interval == 0;
    if (n + 1 > b + p->interval) due = 1;   // a multi-token chunk would outgrow budget + interval
    return due && n > b ? b : n;
}

static int h2o_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    (void)k;
    return pol_select_h2o(slot_score(p, l, h), n, p->sink, p->heavy, p->recent, keep, p->ord);
}

void pol_observe_acc(eng_policy *p, int l, int T) {
    const eng_state *s = p->st;
    int NH = p->cfg.n_head, cap = p->cap;
    for (int h = 0; h < NH; h++) {
        float *acc = slot_score(p, l, h);
        for (int t = 0; t < T; t++) {
            const float *pr = p->probs + ((size_t)h * T + t) * cap;   // (NH, T, cap)
            int nv = s->n_vis[h * T + t];
            for (int j = 0; j < nv; j++) acc[j] += pr[j];
        }
    }
}

int eng_policy_h2o_rule(const eng_policy *p, int *sink, int *heavy, int *recent, int *interval, int *pos_shift) {
    if (p->ops != &pol_ops_h2o && p->ops != &pol_ops_lazy_h2o) return 0;
    *interval = p->ops == &pol_ops_lazy_h2o ? p->interval : 0;
    *sink = p->sink;
    *heavy = p->heavy;
    *recent = p->recent;
    *pos_shift = p->pos_shift;
    return 1;
}

int eng_policy_h2o_select(const eng_policy *p, const float *acc, int n, int32_t *keep, int32_t *scratch) {
    return pol_select_h2o(acc, n, p->sink, p->heavy, p->recent, keep, scratch);
}

const pol_ops pol_ops_h2o = {"h2o", POL_BOUNDED | POL_NEEDS_PROBS | POL_SLOT_SCORES, h2o_parse, h2o_capacity,
                             h2o_target, h2o_select, pol_observe_acc, NULL};
const pol_ops pol_ops_lazy_h2o = {"lazy_h2o", POL_BOUNDED | POL_NEEDS_PROBS | POL_SLOT_SCORES, lazy_parse,
                                  lazy_capacity, lazy_target, h2o_select, pol_observe_acc, NULL};

/* ---- tova */

static eng_status tova_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    if ((st = pol_param_int(p, "budget", 512, 1, 1 << 24, &p->budget, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_pos(p, 0, err, n_err)) != ENG_OK) return st;
    snprintf(p->desc, sizeof p->desc, "budget=%d,pos=%s", p->budget, p->pos_shift ? "shift" : "original");
    return ENG_OK;
}

static int tova_capacity(const eng_policy *p, int n_tokens) { return pol_cap_bounded(p->budget, n_tokens); }
static int tova_target(const eng_policy *p, int l, int h, int n) {
    (void)h;
    (void)l;
    return n > p->budget ? p->budget : n;
}

static int tova_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    // every head row holds the same head-averaged score, so every head keeps the same set
    for (int j = 0; j < n - 1; j++) keep[j] = j;
    int got = pol_topk(slot_score(p, l, h), keep, n - 1, k - 1, keep, p->ord);
    keep[got] = n - 1;
    return got + 1;
}

static void tova_observe(eng_policy *p, int l, int T) {
    const eng_state *s = p->st;
    int NH = p->cfg.n_head, cap = p->cap;
    int nv = s->n_vis[T - 1];   // the last query sees every slot (all heads hold the same count)
    float *m = slot_score(p, l, 0);
    for (int j = 0; j < nv; j++) {
        float sum = 0.0f;
        for (int h = 0; h < NH; h++) sum += p->probs[((size_t)h * T + T - 1) * cap + j];
        m[j] = sum / (float)NH;
    }
    for (int h = 1; h < NH; h++) memcpy(slot_score(p, l, h), m, (size_t)nv * sizeof(float));
}

int eng_policy_tova_rule(const eng_policy *p, int *budget, int *pos_shift) {
    if (p->ops != &pol_ops_tova) return 0;
    *budget = p->budget;
    *pos_shift = p->pos_shift;
    return 1;
}

int eng_policy_tova_select(const eng_policy *p, const float *score, int n, int32_t *keep, int32_t *scratch) {
    int k = n > p->budget ? p->budget : n;
    for (int j = 0; j < n - 1; j++) keep[j] = j;
    int got = pol_topk(score, keep, n - 1, k - 1, keep, scratch);
    keep[got] = n - 1;
    return got + 1;
}

const pol_ops pol_ops_tova = {"tova", POL_BOUNDED | POL_NEEDS_PROBS | POL_SLOT_SCORES, tova_parse, tova_capacity,
                              tova_target, tova_select, tova_observe, NULL};
