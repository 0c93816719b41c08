/* policy_impl.h — what policy.c and the policy_<family>.c files share: the
 * eng_policy body, the per-family vtable (ggml-backend style: a const table
 * of function pointers per method family, behind the opaque handle), and the
 * pure selection helpers the tests check against naive references.
 *
 * A family file defines one or more `pol_ops` tables and touches nothing of
 * the state except through the helpers here (held counts, compaction, the
 * keys/values of a layer). Selection helpers are pure: they take scores and
 * return the kept slot indices, sorted ascending, so a test can compare them
 * with a sort-based reference on random inputs.
 *
 * Legend: L layers, NH heads, D head_dim, R rotary dims, cap slots per head,
 * B max tokens per chunk, w observation window. */
#ifndef ENGINE_POLICY_IMPL_H
#define ENGINE_POLICY_IMPL_H

#include "policy.h"

enum {
    POL_NEEDS_PROBS = 1,   /* scores from the attention probabilities of the new queries */
    POL_AT_PREFILL = 2,    /* compresses the prompt once (window queries kept during prefill) */
    POL_BOUNDED = 4,       /* never holds more than capacity(): chunks are split to fit */
    POL_SLOT_SCORES = 8,   /* keeps a float score per (layer, head, slot), compacted with the cache */
    POL_SLOT_IDS = 16,     /* keeps the token id of every (layer, head, slot), compacted with the cache */
    POL_SLIDE = 32,        /* keeps [0, a) ∪ a contiguous tail, alike in every head: compaction slides
                              the layer's base (kvcache.h) instead of moving the tail */
};

typedef struct pol_ops {
    const char *name;
    unsigned flags;
    /* read this family's params (pol_param_* helpers); fill p->desc */
    eng_status (*parse)(eng_policy *p, char *err, size_t n_err);
    int (*capacity)(const eng_policy *p, int n_tokens);
    /* slots layer l keeps at the start of this step when it holds n (n: no eviction) */
    int (*target)(const eng_policy *p, int l, int h, int n);
    /* choose keep[0..k) (ascending) for (l, h) holding n slots; return k.
     * Called only when target(l, n) < n. */
    int (*select)(eng_policy *p, int l, int h, int n, int k, int32_t *keep);
    /* after the layer's attention (scores); may be NULL */
    void (*observe)(eng_policy *p, int l, int T);
    /* at-prefill compression of layer l (end of the first call); may be NULL */
    void (*prefill)(eng_policy *p, int l);
} pol_ops;

/* Families that change what is stored (kivi, think) add a second table,
 * set by their parse: a store carved from the same single attach
 * allocation, the per-layer step hook that moves held tokens into it, and
 * the attention over it. Every member may be NULL. */
typedef struct pol_store_ops {
    /* bytes of store for a state of `cap` slots, chunks of B and sequences of n_max tokens */
    size_t (*size)(const eng_policy *p, int cap, int B, int n_max, int n_thr);
    void (*carve)(eng_policy *p, unsigned char *mem, int cap, int B, int n_thr);
    void (*reset)(eng_policy *p);                       /* a new sequence starts */
    void (*layer_begin)(eng_policy *p, int l, int T);   /* start of layer l's step, held tokens only */
    int (*attend)(eng_policy *p, int l, int T);         /* 1: wrote st->att itself */
    int (*room)(const eng_policy *p);                   /* tokens the next chunk may add */
    int64_t (*tokens)(const eng_policy *p, int l, int h);   /* tokens (l, h) holds */
    int64_t (*bytes)(const eng_policy *p);              /* K+V bytes held now */
    /* speculative rollback (policy_mark.c): bytes of layer l's per-sequence
     * store state, and its copy to (to_buf) or from buf; NULL when the store
     * does not change after the prompt (think) */
    size_t (*layer_bytes)(const eng_policy *p);
    void (*layer_copy)(eng_policy *p, int l, unsigned char *buf, int to_buf);
} pol_store_ops;

struct eng_policy {
    const pol_ops *ops;
    const pol_store_ops *store;   /* NULL unless the family changes what is stored */
    char name[32];
    char desc[256];
    eng_config cfg;
    const eng_paramset *ps;   /* during create only */
    uint64_t used;            /* params consumed by parse (bit i = ps->p[i]) */

    /* params (each family reads the ones it has) */
    int pos_shift;
    int sink, recent, heavy, interval, budget, window, kernel, pool_max, prune_after;
    double keep_ratio, beta;
    unsigned char *skip;      /* (L) 1 = layer never compressed */
    int init, sep_cap, local, cache;   /* sepllm */
    int strategy;             /* fix_size_l2: 0 keep_low, 1 keep_high, 2 random */
    uint64_t seed;            /* fix_size_l2 random */
    int n_seps;
    int32_t seps[64];         /* separator token ids (sepllm) */

    /* binding to one state, sized at eng_state_set_policy */
    eng_state *st;
    int cap, n_batch;
    void *work;               /* the single working allocation */
    float *probs;             /* (NH, B, cap)   attention probabilities of the chunk */
    float *kshift;            /* (NH, cap, D)   keys rotated by cache index (pos=shift); sliding
                                 policies: (L, NH, cap, D), persistent, same rows as the cache */
    int32_t *rv0, *rv1;       /* (L, NH)        sliding pos=shift: rows [rv0, rv1) of kshift are current */
    float *sh_cos, *sh_sin;   /* (cap, R/2)     RoPE tables for positions 0..cap-1 */
    float *score;             /* (L, NH, cap)   per-slot scores (POL_SLOT_SCORES) */
    float *tmp;               /* (2, cap)       selection scratch */
    int32_t *keep;            /* (cap) */
    int32_t *ord;             /* (cap) */
    float *winq;              /* (L, w, NH*D)   last w prefill queries per layer (POL_AT_PREFILL) */
    float *wprobs;            /* (NH, w, cap) */
    float *wout;              /* (w, NH*D) */
    int32_t *wvis;            /* (NH, w) */
    int32_t *wn;              /* (L) window rows held */
    int32_t *ids;             /* (L, NH, cap)   token id per slot (POL_SLOT_IDS) */
    int32_t *n_sep;           /* (L, NH)        slots of the separator region (sepllm) */
    const int32_t *chunk_tok; /* (T) ids of the chunk being run (of row t in a policy step, forward.h) */
    const int32_t *chunk_tok0;/* (T) ids of the whole chunk */
    int64_t chunk_steps0;     /* steps when the chunk began */

    /* store-changing families (policy_quant.c): params and the store */
    int bits, group, residual, max_tokens, n_max;
    double ratio;
    size_t store_bytes;       /* bytes of the store inside work */
    size_t store_kv_bytes;    /* of which K/V data (packed codes, min/scale); the rest is per-layer scratch */
    int32_t *nq;              /* (2, L)          kivi: tokens whose K | V are quantized; think: pruned rows */
    unsigned char *qk, *qv;   /* (L, NH, n_max·D·bits/8) packed codes (kivi) */
    float *k_mn, *k_sc;       /* (L, NH, n_max/G, D) per-channel key group min and scale (kivi) */
    float *v_mn, *v_sc;       /* (L, NH, n_max, D/G) per-token value group min and scale (kivi) */
    float *dk, *dv;           /* (NH, n_max, D)  one layer's keys/values as attention reads them */
    float *att_s;             /* (n_thr, n_max)  attention scratch over n_max keys */
    int32_t *nvis;            /* (NH, B)         keys visible per query over the store */
    int32_t *chan;            /* (L, NH, D)      think: kept channels first (ascending), then pruned */
    int32_t *n_keep;          /* (L, NH)         think: kept channels */
    double *think_score;      /* (D)             think: channel scores of one head */

    /* per-sequence */
    int64_t steps;            /* chunks since the sequence started */
    int64_t last_evict;       /* step of the last lazy eviction */
    int in_prefill;           /* inside the first forward call */

    /* statistics */
    void *mem;                /* the creation allocation (skip flags, per-layer sums) */
    double *layer_sum;        /* (L) sum over steps of mean slots per head */
    double *layer_mean;       /* (L) */
    double *pref;             /* (L) cake: layer preference scores of the prompt */
    int32_t *lbudget;         /* (L) cake: non-window slots each layer keeps */
    double gamma, tau1, tau2; /* cake */
    double tok_sum;
    int64_t n_steps, tok_max, peak_slots, evictions, peak_bytes;
    int64_t ext_kv_alloc;     /* eng_policy_account_uniform: bytes of the device cache it accounts for */
    int64_t compressed;       /* (layer, head, token) entries quantized or channel-pruned */
};

/* ---- params (policy.c) ----
 * Each returns ENG_OK with the default when the key is absent, ENG_ERR_INVAL
 * naming the key on a wrong type or an out-of-range value. */
eng_status pol_param_int(eng_policy *p, const char *key, int def, int lo, int hi, int *out, char *err,
                         size_t n_err);
eng_status pol_param_real(eng_policy *p, const char *key, double def, double lo, double hi, double *out,
                          char *err, size_t n_err);
/* value must be one of `choices` ("a|b|c"); *out = its index */
eng_status pol_param_enum(eng_policy *p, const char *key, const char *choices, int def, int *out, char *err,
                          size_t n_err);
/* list of layer indices ("0;1", "0,1", an INT, or "" / "none") into p->skip */
eng_status pol_param_layers(eng_policy *p, const char *key, const char *def, char *err, size_t n_err);
/* pos=original|shift into p->pos_shift */
eng_status pol_param_pos(eng_policy *p, int def_shift, char *err, size_t n_err);

/* ---- state access (policy.c) ---- */
int32_t *pol_held(const eng_policy *p, int l);   /* (NH) slots held per head of layer l */
/* Keys of layer l as attention sees them, rotated to cache index under pos=shift. */
const float *pol_keys(eng_policy *p, int l);
/* Compact head h of layer l to keep[0..k) (ascending); per-slot scores too. */
void pol_compact(eng_policy *p, int l, int h, const int32_t *keep, int k);
/* 1 when pos=shift keys are kept rotated across steps (a POL_SLIDE family) */
int pol_shift_persistent(const eng_policy *p);
/* Forget the persistent rotated keys of layer l (-1: every layer). */
void pol_shift_invalidate(eng_policy *p, int l);

/* ---- pure selection helpers (policy.c) ----
 * Ranking: a higher score ranks first; equal scores rank the lower (older)
 * index first. Results are ascending slot indices. */
/* keep the k best of idx[0..m) by score (score indexed by slot); writes into
 * out and returns k. ord: (m) scratch. */
int pol_topk(const float *score, const int32_t *idx, int m, int k, int32_t *out, int32_t *ord);
/* [0, sink) ∪ [n - recent, n) */
int pol_select_sink_recent(int n, int sink, int recent, int32_t *keep);
/* [0, sink) ∪ top-heavy of [sink, n - recent) by acc ∪ [n - recent, n) */
int pol_select_h2o(const float *acc, int n, int sink, int heavy, int recent, int32_t *keep, int32_t *scratch);
/* SnapKV pooling of window scores s(m) into out(m): kernel odd, zero padding
 * for avg (count_include_pad), -inf padding for max. */
void pol_pool1d(const float *s, int m, int kernel, int use_max, float *out);
/* PyramidKV per-layer heavy count (window excluded) for layer l of L. */
int pol_pyramid_cap(int budget, int window, double beta, int L, int l, int q_len);

void pol_sort_i32(int32_t *v, int n);
/* score[j] = -||K[j]||2 for the n keys of (l, h) as cached (knorm, hybrid, fix_size_l2) */
void pol_key_norm_scores(const eng_policy *p, int l, int h, int n, float *score);
/* h2o's observe: add the chunk's attention probabilities to every slot's score */
void pol_observe_acc(eng_policy *p, int l, int T);
/* separator ids: the Pythia default or param `seps` ("ID;ID;..."); *is_default set */
eng_status pol_param_seps(eng_policy *p, int *is_default, char *err, size_t n_err);
int pol_is_sep(const eng_policy *p, int32_t id);
/* a uniform draw in [0, 1) keyed by (seed, layer, head, step, i): counter-based, so
 * reproducible whatever the thread count or call order (policy_cam.c) */
double pol_uniform(uint64_t seed, int l, int h, int64_t step, int i);
/* CaM's merge probability of slot e of n: clamp(acc[e] / mean(acc[e+1 .. e+merge]), 0, 1) */
double pol_cam_prob(const float *acc, int e, int n, int merge);
/* CAKE's split of `total` non-window slots over L layers by preference
 * scores, with adjust_budgets' clipping to cap and redistribution (L <= 1024) */
void pol_cake_budgets(const double *pref, int L, int64_t total, int64_t cap, int32_t *out);

/* ---- quantization helpers (policy_quant.c) ----
 * KIVI's asymmetric min-max quantizer over the n values x[i·stride]:
 * mn = min, scale = (max − mn)/(2^bits − 1), code = clamp(rint((x − mn)/scale),
 * 0, 2^bits − 1) (round half to even; code 0 when scale is 0). Codes go to
 * the packed bit stream at element indices first + i·code_stride (bits 2, 4
 * or 8: a code never straddles a byte). */
void pol_quant_minmax(const float *x, int n, size_t stride, int bits, unsigned char *packed, size_t first,
                      size_t code_stride, float *mn, float *scale);
static inline unsigned pol_code_get(const unsigned char *packed, size_t i, int bits) {
    size_t bit = i * (size_t)bits;
    return (packed[bit >> 3] >> (bit & 7)) & ((1u << bits) - 1u);
}
/* ThinK channel scores of one head: score[c] = mean_i q_i[c]² · mean_j k_j[c]²
 * over nq query rows (q_stride apart) and nk key rows (D apart), in double. */
void pol_think_scores(const float *q, int nq, size_t q_stride, const float *k, int nk, int D, double *score);
/* kivi: K+V bytes one (layer, head) holds with `total` tokens (after the rule ran) */
int64_t pol_kivi_bytes(int total, int D, int bits, int group, int residual);

/* capacity of a policy that holds at most `budget` slots after an eviction */
static inline int pol_cap_bounded(long budget, int n_tokens) {
    long c = budget + ENG_POLICY_SLACK;
    return c < n_tokens ? (int)c : n_tokens;
}

extern const pol_ops pol_ops_full, pol_ops_window, pol_ops_streaming;
extern const pol_ops pol_ops_h2o, pol_ops_lazy_h2o, pol_ops_tova;
extern const pol_ops pol_ops_knorm, pol_ops_l2, pol_ops_fix_size_l2, pol_ops_hybrid;
extern const pol_ops pol_ops_snapkv, pol_ops_pyramidkv;
extern const pol_ops pol_ops_sepllm, pol_ops_unified;
extern const pol_ops pol_ops_cam, pol_ops_cake;
extern const pol_ops pol_ops_kivi, pol_ops_think;

#endif /* ENGINE_POLICY_IMPL_H */
