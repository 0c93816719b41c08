/* forward.h — the GPT-NeoX forward pass on the CPU backend, with a KV cache.
 *
 * eng_state is llama2.c's "RunState": everything that changes while a
 * sequence is processed — the KV cache, activations for one chunk of up to
 * n_batch tokens, RoPE and attention scratch — carved from allocations made
 * once in eng_state_init. eng_forward never allocates, so decoding a token
 * costs no malloc. A prompt longer than n_batch is processed in chunks;
 * decode is the same call with one token.
 *
 * Numerics follow HF transformers (eager, fp32): LayerNorm with biased
 * variance, per-head [Q;K;V] (rows permuted at load), partial rotate-half
 * RoPE on the first n_rot dims in fp32, causal softmax attention in fp32,
 * exact-erf GELU, parallel residual x + attn(ln1(x)) + mlp(ln2(x)) (or the
 * sequential form when use_parallel_residual is false), final LayerNorm,
 * untied embed_out without bias. */
#ifndef ENGINE_FORWARD_H
#define ENGINE_FORWARD_H

#include "kvcache.h"
#include "model.h"

/* Called with the residual stream at each stage, for golden comparisons:
 * stage 0 = embeddings, 1..L = output of layer stage-1, L+1 = final LN.
 * x is (T, C) for the T tokens of the chunk starting at position pos0. */
struct eng_policy;   /* policy.h */

typedef void (*eng_trace_fn)(void *ud, int stage, const float *x, int T, int C, int32_t pos0);

typedef struct eng_state {
    const eng_model *model;
    eng_kvcache kv;
    int n_batch;       /* max tokens per forward chunk */
    int32_t n_past;    /* absolute position of the next token */
    /* activations, one chunk (B = n_batch rows) */
    float *x;          /* (B, C) residual stream */
    float *h;          /* (B, C) LayerNorm output */
    float *qkv;        /* (B, 3C) [Q;K;V], heads contiguous inside each */
    float *att;        /* (B, C) merged attention heads */
    float *ao;         /* (B, C) attention.dense output */
    float *ff;         /* (B, F) MLP hidden */
    float *mo;         /* (B, C) MLP output */
    float *logits;     /* (B, V) a buffer callers may pass to eng_forward */
    int32_t *pos;      /* (B) positions of the chunk's tokens */
    int32_t *n_vis;    /* (NH, B) keys visible per head and query */
    float *inv_freq;   /* (R/2) */
    float *rope_cos;   /* (B, R/2) */
    float *rope_sin;   /* (B, R/2) */
    float *att_scratch;/* (n_threads, cap) */
    float *lp_scratch; /* (KN_LP_TILE, max(C, F)) 16-bit weight tiles for prefill; unused for fp32 */
    int n_threads;
    void *mem;         /* the single activation allocation */
    eng_trace_fn trace;
    void *trace_ud;
    struct eng_policy *policy; /* KV policy (policy.h), NULL: keep everything; not owned */
    struct eng_gpu_state *dev; /* offload mode (forward_gpu.h): dense math on this device, NULL: all on
                                  the CPU; not owned */
    int policy_steps;  /* 1: under a policy, every token of a multi-token call is its own
                          policy step (evict, append, attend, score), exactly as if the
                          tokens came one call each; matmuls stay batched (spec.c) */
    struct eng_state_mark *mark; /* policy_mark.h: save at row mark_row of the next call */
    int mark_row;      /* in the call; mark_chunk_row: in the current chunk */
    int mark_chunk_row;
    char err[256];
} eng_state;

/* n_ctx: KV capacity in tokens; n_batch: max tokens per chunk (prefill).
 * On failure *out is NULL and err says why. */
eng_status eng_state_init(eng_state **out, const eng_model *m, int n_ctx, int n_batch,
                          char *err, size_t n_err);
void eng_state_free(eng_state *s);
/* Empty the cache and restart at position 0. */
void eng_state_reset(eng_state *s);

/* Run tokens[0..n) at positions n_past.. and append them to the cache.
 * logits: NULL for none; else (n, V) when all_logits, or (V) for the last
 * token. ENG_ERR_INVAL for a token id outside [0, V); ENG_ERR_CAPACITY when
 * the cache cannot hold n more tokens (nothing is changed then). With a
 * bounded KV policy (policy.h) chunks are cut to what fits after the
 * policy's eviction, and ENG_ERR_CAPACITY means a chunk could not fit. */
eng_status eng_forward(eng_state *s, const int32_t *tokens, int n, float *logits, int all_logits);

/* Forget the last n tokens (speculative decoding rollback): every head's
 * cache drops its last n slots and n_past goes back by n. ENG_ERR_INVAL
 * (nothing changed) when fewer than n tokens are held. Under a KV policy the
 * last n slots are the last n tokens only while n <= the tokens of the last
 * forward call (eviction runs at the start of a call, never on its tokens). */
eng_status eng_state_rollback(eng_state *s, int n);

const char *eng_state_errmsg(const eng_state *s);

#endif /* ENGINE_FORWARD_H */
