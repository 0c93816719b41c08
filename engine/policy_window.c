/* policy_window.c — the position-only policies: full (no eviction, the
 * baseline every other policy must equal when its budget is not reached),
 * window (the most recent `recent` tokens) and streaming (StreamingLLM:
 * `sink` initial tokens + the most recent `recent`; Xiao et al. 2023,
 * streaming_llm/kv_cache.py StartRecentKVCache).
 *
 * Rule (streaming; window is sink = 0): at the start of a step, a (layer,
 * head) holding n > sink + recent slots keeps [0, sink) ∪ [n - recent, n).
 * Defaults: streaming sink 4, recent 512 (the class defaults), pos=shift
 * (pre-RoPE keys re-rotated by cache index, as the reference does for
 * GPT-NeoX); window recent 512, pos=original. full takes only pos. */
#include "policy_impl.h"

#include <stdio.h>

/* ---- full */

static eng_status full_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st = pol_param_pos(p, 0, err, n_err);
    snprintf(p->desc, sizeof p->desc, "pos=%s", p->pos_shift ? "shift" : "original");
    return st;
}
static int full_capacity(const eng_policy *p, int n_tokens) { (void)p; return n_tokens; }
static int full_target(const eng_policy *p, int l, int h, int n) {
    (void)h; (void)p; (void)l; return n; }
static int full_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    (void)p; (void)l; (void)h; (void)k;
    for (int j = 0; j < n; j++) keep[j] = j;
    return n;
}

const pol_ops pol_ops_full = {"full", 0, full_parse, full_capacity, full_target, full_select, NULL, NULL};

/* ---- window and streaming */

static eng_status streaming_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    if ((st = pol_param_int(p, "sink", 4, 0, 1 << 24, &p->sink, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "recent", 512, 1, 1 << 24, &p->recent, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_pos(p, 1, err, n_err)) != ENG_OK) return st;
    snprintf(p->desc, sizeof p->desc, "sink=%d,recent=%d,pos=%s", p->sink, p->recent,
             p->pos_shift ? "shift" : "original");
    return ENG_OK;
}

static eng_status window_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    p->sink = 0;
    if ((st = pol_param_int(p, "recent", 512, 1, 1 << 24, &p->recent, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_pos(p, 0, err, n_err)) != ENG_OK) return st;
    snprintf(p->desc, sizeof p->desc, "recent=%d,pos=%s", p->recent, p->pos_shift ? "shift" : "original");
    return ENG_OK;
}

static int sr_capacity(const eng_policy *p, int n_tokens) { return pol_cap_bounded((long)p->sink + p->recent, n_tokens); }
static int sr_target(const eng_policy *p, int l, int h, int n) {
    (void)h;
    (void)l;
    return n > p->sink + p->recent ? p->sink + p->recent : n;
}
static int sr_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    (void)l; (void)h; (void)k;
    return pol_select_sink_recent(n, p->sink, p->recent, keep);
}

const pol_ops pol_ops_window = {"window", POL_BOUNDED | POL_SLIDE, window_parse, sr_capacity, sr_target, sr_select, NULL, NULL};
const pol_ops pol_ops_streaming = {"streaming", POL_BOUNDED | POL_SLIDE, streaming_parse, sr_capacity, sr_target, sr_select,
                                   NULL, NULL};
