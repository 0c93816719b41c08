/* policy_cam.c — CaM, cache merging (Zhang et al., ICML 2024): a
 * StreamingLLM cache in which a token about to be evicted may first have its
 * value merged into the values of the tokens that follow it, so that what it
 * carried is not simply lost.
 *
 * Rule (the authors' real-eviction version, zyxxmu/cam
 * generate_task/streaming_llm/kv_cache_cam.py StartRecentKVCache_cam, the
 * formula kvpress's CAMPress also follows): every (layer, head, slot) carries
 * H2O's accumulated attention acc (the sum of every query's probability on
 * it since it entered). At the start of a step a head holding
 * n > sink + recent evicts the slots e = sink, sink + 1, ... (the oldest
 * non-sink tokens), in that order, until sink + recent remain; for each e:
 *     p = clamp(acc[e] / mean(acc[e+1 .. e+merge]), 0, 1)   (0 if NaN)
 *     with probability p:  v[e+1 .. e+merge] += v[e] / merge
 * (successors clipped at the newest slot; the divisor stays `merge`). Keys
 * are never merged; each head draws its own Bernoulli. The draws come from a
 * counter-based generator keyed by (seed, layer, head, step, e), so a job is
 * reproducible whatever the thread count (the reference uses torch's
 * unseeded global RNG). Defaults: the class defaults sink 4, recent 512,
 * merge 16 (merge_num), pos=shift (the reference stores keys un-rotated and
 * re-rotates them by cache index, as StreamingLLM does). When a chunk of
 * several tokens makes more than one eviction due at once, the merges run
 * oldest first, exactly as one eviction per step would order them. */
#include "policy_impl.h"

#include <math.h>
#include <stdio.h>

static eng_status cam_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    int seed;
    if ((st = pol_param_int(p, "sink", 4, 0, 1 << 24, &p->sink, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "recent", 512, 1, 1 << 24, &p->recent, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "merge", 16, 1, 1 << 16, &p->window, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "seed", 0, 0, 2147483647, &seed, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_pos(p, 1, err, n_err)) != ENG_OK) return st;
    p->seed = (uint64_t)seed;
    snprintf(p->desc, sizeof p->desc, "sink=%d,recent=%d,merge=%d,seed=%d,pos=%s", p->sink, p->recent, p->window,
             seed, p->pos_shift ? "shift" : "original");
    return ENG_OK;
}

static int cam_capacity(const eng_policy *p, int n_tokens) {
    return pol_cap_bounded((long)p->sink + p->recent, n_tokens);
}

static int cam_target(const eng_policy *p, int l, int h, int n) {
    (void)l;
    (void)h;
    return n > p->sink + p->recent ? p->sink + p->recent : n;
}

double pol_uniform(uint64_t seed, int l, int h, int64_t step, int i) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)(uint32_t)l << 40) ^ ((uint64_t)(uint32_t)h << 20) ^
                 (uint64_t)(uint32_t)i;
    z += (uint64_t)step * 0xD1B54A32D192ED03ull;
    for (int r = 0; r < 2; r++) {   // splitmix64 finalizer, twice: every input bit reaches every output bit
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
    }
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);   // 53 bits -> [0, 1)
}

double pol_cam_prob(const float *acc, int e, int n, int merge) {
    int hi = e + 1 + merge < n ? e + 1 + merge : n;
    if (hi <= e + 1) return 0.0;
    double mean = 0.0;
    for (int j = e + 1; j < hi; j++) mean += acc[j];
    mean /= (double)(hi - e - 1);
    double pr = (double)acc[e] / mean;
    if (isnan(pr) || pr < 0.0) return 0.0;
    return pr > 1.0 ? 1.0 : pr;
}

static int cam_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    const eng_kvcache *kv = &p->st->kv;
    int D = kv->head_dim, merge = p->window;
    float *V = eng_kvcache_v(kv, l) + (size_t)h * kv->cap * D;
    const float *acc = p->score + ((size_t)l * p->cfg.n_head + h) * p->cap;
    for (int i = 0; i < n - k; i++) {
        int e = p->sink + i, hi = e + 1 + merge < n ? e + 1 + merge : n;
        if (pol_uniform(p->seed, l, h, p->steps, i) >= pol_cam_prob(acc, e, n, merge)) continue;
        const float *ve = V + (size_t)e * D;
        for (int j = e + 1; j < hi; j++)
            for (int d = 0; d < D; d++) V[(size_t)j * D + d] += ve[d] / (float)merge;
    }
    return pol_select_sink_recent(n, p->sink, p->recent, keep);
}

const pol_ops pol_ops_cam = {"cam", POL_BOUNDED | POL_NEEDS_PROBS | POL_SLOT_SCORES | POL_SLIDE, cam_parse, cam_capacity,
                             cam_target, cam_select, pol_observe_acc, NULL};
