/* policy.h — KV-cache compression policies: one interface the forward pass
 * calls per layer, so that a sweep can compare eviction methods on equal
 * terms (issue 4; specs in ../shared/docs/kv-policies.md).
 *
 * A policy is created from a name and typed params (eng_paramset, the form
 * sweeps and `kvrun ppl --policy NAME:k=v,...` produce), then attached to
 * one eng_state before its first forward. From then on the forward pass
 * calls the hooks below; the policy decides per layer and per head which
 * cached tokens stay, and the cache is compacted in place (kept slots keep
 * their relative order). All working memory is allocated when the policy is
 * attached; no hook allocates, so decoding a token costs no malloc.
 *
 * Timing (one rule for every policy, README "KV policies"):
 *   - decode-time policies evict at the START of a step, before the step's
 *     new tokens join the cache, and only among the tokens already held.
 *     This equals StreamingLLM's/H2O's "evict after the step" (the next
 *     attention spans budget + new tokens), and it means eviction only ever
 *     considers committed tokens: speculative decoding rolls back between
 *     forward calls, so everything held at the start of a call is committed.
 *   - prefill-time policies (snapkv, pyramidkv) compress once, at the end of
 *     the first forward call of a sequence (the prompt), after its exact
 *     attention (kvpress semantics).
 * Positions: pos=original caches keys after RoPE at their true positions;
 * pos=shift caches keys before RoPE and rotates them (first n_rot dims) by
 * their cache index at every attention; the new queries then sit at
 * positions cache_len + t (StreamingLLM's rule).
 *
 * Ownership: the caller frees both the policy and the state; a policy must
 * outlive every forward of the state it is attached to. Borrowed strings and
 * arrays are valid until the next call on the policy. */
#ifndef ENGINE_POLICY_H
#define ENGINE_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "eng.h"
#include "forward.h"
#include "model.h"
#include "task.h"

typedef struct eng_policy eng_policy;

/* Extra slots per head a bounded policy needs above its budget for the
 * tokens of one step (prefill chunks larger than this are split). */
#define ENG_POLICY_SLACK 64

typedef struct eng_policy_stats {
    int64_t n_steps;            /* forward chunks seen (one per token when decoding) */
    double cache_tokens_mean;   /* mean over steps of slots held per (layer, head) at the end of the step */
    int64_t cache_tokens_max;   /* max over steps, layers and heads */
    int64_t kv_bytes;           /* peak bytes of K+V actually held (all layers and heads) */
    int64_t kv_bytes_alloc;     /* bytes of K+V the state allocated */
    int64_t evictions;          /* (layer, head, token) entries evicted */
    double evicted_tokens;      /* evictions / (n_layer * n_head) */
    int triggered;              /* 1 once any entry was evicted (or quantized / channel-pruned: kivi, think) */
    int layers_differ;          /* per-layer means are not all equal */
    const double *layer_tokens_mean; /* (n_layer) mean slots per head, borrowed */
    int n_layer;
} eng_policy_stats;

/* name: full | window | streaming | h2o | lazy_h2o | knorm | l2 | tova |
 * snapkv | pyramidkv | sepllm | unified | fix_size_l2 | hybrid | cake | cam | kivi |
 * think. params may be NULL (all defaults). Unknown name:
 * ENG_ERR_UNSUPPORTED "unsupported policy 'x'"; unknown or invalid param:
 * ENG_ERR_INVAL naming it. On failure *out is NULL and err says why. */
eng_status eng_policy_create(eng_policy **out, const char *name, const eng_paramset *params,
                             const eng_config *cfg, char *err, size_t n_err);
void eng_policy_free(eng_policy *p);
/* The name the policy was created with (borrowed). */
const char *eng_policy_name(const eng_policy *p);
/* The effective params, defaults included, e.g. "sink=4,recent=512,pos=shift" (borrowed). */
const char *eng_policy_describe(const eng_policy *p);
/* KV slots per head a state needs to run a sequence of n_tokens under p
 * (n_tokens for unbounded policies; budget + ENG_POLICY_SLACK (+ interval)
 * for bounded ones, never more than n_tokens). */
int eng_policy_capacity(const eng_policy *p, int n_tokens);
/* Policies that change what is stored (kivi) size their store, at attach,
 * for the longest sequence they will hold: the n_tokens of the last
 * eng_policy_capacity call, or this value (0: the state's KV capacity). A
 * sequence that outgrows it fails with ENG_ERR_CAPACITY. */
void eng_policy_set_max_tokens(eng_policy *p, int n_tokens);
/* 1 when the policy compresses only the prompt (the first forward call). */
int eng_policy_at_prefill(const eng_policy *p);

/* Attach p to s (p == NULL detaches). Before the first forward (ENG_ERR_INVAL
 * otherwise); allocates the policy's working memory for s's shape
 * (ENG_ERR_NOMEM). Message in eng_state_errmsg(s). */
eng_status eng_state_set_policy(eng_state *s, eng_policy *p);

void eng_policy_stats_get(const eng_policy *p, eng_policy_stats *st);
/* 1 when p was created for a model of c's shape (layers, heads, head_dim,
 * rotary dims); 1 when p is attached to a CPU state (eng_state_set_policy). */
int eng_policy_fits(const eng_policy *p, const eng_config *c);
int eng_policy_attached(const eng_policy *p);
/* For the device's own cache (engine/forward_gpu.c, no policy hooks there),
 * which runs full, window and streaming itself: 1 and their rule — keep
 * [0, sink) and the last `recent` (-1: everything, full), keys rotated by
 * cache index when pos_shift — for those three; 0 for any other policy. */
int eng_policy_sink_recent(const eng_policy *p, int *sink, int *recent, int *pos_shift);
/* The same for h2o and lazy_h2o: 1 and the rule (keep [0, sink), the
 * `heavy` best of the middle by accumulated attention, the last `recent`;
 * interval 0 for h2o, lazy_h2o's otherwise: evict only at steps that are
 * multiples of it, or when the cache would outgrow budget + interval), 0
 * for any other policy; and the selection for one head holding n slots with
 * accumulated attention acc(n): kept slots ascending into keep, their count
 * returned; scratch: (n) ints. */
int eng_policy_h2o_rule(const eng_policy *p, int *sink, int *heavy, int *recent, int *interval, int *pos_shift);
int eng_policy_h2o_select(const eng_policy *p, const float *acc, int n, int32_t *keep, int32_t *scratch);
/* And for tova: 1 and its budget for a "tova" policy, 0 otherwise; its
 * selection for a layer holding n > budget slots with score(n) (the head
 * mean of the last query's attention): the top budget - 1 of [0, n - 1) and
 * slot n - 1, ascending into keep (the same set for every head). */
int eng_policy_tova_rule(const eng_policy *p, int *budget, int *pos_shift);
int eng_policy_tova_select(const eng_policy *p, const float *score, int n, int32_t *keep, int32_t *scratch);
/* Account one step of an unattached policy as step_end would: every head of
 * every layer holds n_held slots after `evicted` were dropped from each at
 * the step's start; kv_alloc bytes of cache allocated. A no-op for a policy
 * attached to a CPU state (it accounts for itself). */
void eng_policy_account_uniform(eng_policy *p, int64_t n_held, int64_t evicted, int64_t kv_alloc);
/* Clear the accumulated statistics (not the per-sequence state). */
void eng_policy_stats_reset(eng_policy *p);

/* "streaming:sink=4,recent=508,pos=shift" -> name "streaming" + params.
 * Values: integers -> INT, other numbers -> REAL, true/false -> BOOL, else
 * STR (lists such as skip_layers use ';' between items: "0;1"). Keys and
 * strings are stored in buf. ENG_ERR_INVAL with err on a malformed spec. */
eng_status eng_policy_parse_spec(const char *spec, eng_paramset *ps, char *name_out, size_t n_name, char *buf,
                                 size_t n_buf, char *err, size_t n_err);

/* ---- forward-pass hooks (engine-internal; called by forward.c only) ----
 * Per forward call: call_begin; per chunk: room (tokens the chunk may add),
 * then per layer: layer_evict -> rope_qk -> (append) -> attn_keys/probs ->
 * (attention) -> layer_observe; after the chunk: step_end. */
void eng_policy_unbind(eng_policy *p);   /* the state is going away */
void eng_policy_call_begin(eng_policy *p);
void eng_policy_chunk_tokens(eng_policy *p, const int32_t *tok, int T);
/* Row t of the chunk's T runs next as a step of its own (eng_state.policy_steps). */
void eng_policy_substep(eng_policy *p, int t, int T);
int eng_policy_room(const eng_policy *p);
int eng_policy_bounded(const eng_policy *p);
void eng_policy_layer_evict(eng_policy *p, int l, int T);
/* 1 when this policy handled the RoPE of q and k itself (pos=shift). */
int eng_policy_rope_qk(eng_policy *p, int l, int T);
/* Keys attention should read for layer l: the cache (pos=original) or the
 * cache rotated by cache index into scratch (pos=shift); (NH, cap, D). */
const float *eng_policy_attn_keys(eng_policy *p, int l, int T);
/* (NH, T, cap) buffer for kn_attention's probs, or NULL if not needed. */
float *eng_policy_probs(eng_policy *p);
/* 1 when the policy ran layer l's attention itself into the state's att
 * buffer (kivi over its quantized store, think over its pruned keys). */
int eng_policy_attend(eng_policy *p, int l, int T);
void eng_policy_layer_observe(eng_policy *p, int l, int T);
void eng_policy_step_end(eng_policy *p, int T, int last_chunk);
/* The cache lost its last slots (eng_state_rollback) or was restored (marks). */
void eng_policy_cache_changed(eng_policy *p);

#endif /* ENGINE_POLICY_H */
