/* forward_gpu.h — the GPT-NeoX forward pass on the CUDA backend: a device
 * twin of eng_state (forward.h) for one model.
 *
 * eng_gpu_state owns a kn_cuda_ctx and every device buffer the pass needs,
 * allocated in eng_gpu_state_init, one allocation per lifetime class:
 * the weights (uploaded once; a checkpoint kept 16-bit stays 16-bit on the
 * device, fp32 stays fp32), the KV cache ((NH, cap, D) per layer, the CPU
 * layout), and the activations of one chunk of n_batch rows together with
 * the RoPE tables and the small int buffers. eng_gpu_forward allocates
 * nothing: a decoded token costs a 4-byte-per-row upload, the ops, and the
 * download of its logits.
 *
 * eng_gpu_forward runs the same ops in the same order as engine/forward.c
 * (embedding, ln1, QKV matmul, RoPE on q and k at the true positions, KV
 * append, attention over n_vis keys, dense, parallel or sequential residual,
 * ln2, fc1, GELU, fc2, final LayerNorm, embed_out for the last row or every
 * row), each one a call through the `const kn_cuda_api *` table of
 * kernels/kn_cuda.h. The engine never includes a CUDA header and never links
 * CUDA: the table comes from kn_cuda_load() (libkvcuda.so, dlopen'd) or,
 * in tests, from a host-memory mock built on the CPU ops (tests/cuda_mock.c),
 * which is how the orchestration is proven on machines without a GPU.
 *
 * The device cache runs full, window, streaming, h2o, lazy_h2o and tova
 * itself (eng_gpu_state_set_policy, forward_gpu_policy.c); any other policy
 * is refused (ENG_ERR_UNSUPPORTED) and runs in offload mode (at the end of
 * this header), where the host keeps the cache and the policy's code. Under
 * h2o/lazy_h2o/tova a call that fails mid-chunk leaves the state refusing
 * forwards until eng_gpu_state_reset (its scores took part of the chunk's
 * attention). Errors:
 * a failing op returns ENG_ERR_CUDA (ENG_ERR_INVAL / ENG_ERR_UNSUPPORTED for
 * an argument or shape the backend rejects) and eng_gpu_state_errmsg names
 * the op, the layer and the backend's own message. After such a failure
 * the tokens of the call's earlier chunks stay in the cache (n_past says how
 * many); after an asynchronous CUDA fault the context is unusable and the
 * state should be freed.
 *
 * Legend: L layers, C n_embd, NH heads, D head_dim, R rotary dims, F n_ff,
 * V vocab, B n_batch rows, cap KV slots per head. */
#ifndef ENGINE_FORWARD_GPU_H
#define ENGINE_FORWARD_GPU_H

#include "eng.h"
#include "kn_cuda.h"
#include "model.h"

struct eng_policy;   /* policy.h */

/* The model's parameters on the device (same shapes as eng_weights; the
 * matrices in `wtype`, everything else fp32). */
typedef struct eng_gpu_weights {
    kn_wtype wtype;
    const void *embed_in;            /* (V, C) */
    const float *ln1_w, *ln1_b;      /* (L, C) */
    const float *ln2_w, *ln2_b;      /* (L, C) */
    const void *qkv_w;               /* (L, 3C, C) rows [Q;K;V] as on the host */
    const float *qkv_b;              /* (L, 3C) */
    const void *o_w;                 /* (L, C, C) */
    const float *o_b;                /* (L, C) */
    const void *fc1_w;               /* (L, F, C) */
    const float *fc1_b;              /* (L, F) */
    const void *fc2_w;               /* (L, C, F) */
    const float *fc2_b;              /* (L, C) */
    const float *lnf_w, *lnf_b;      /* (C) */
    const void *embed_out;           /* (V, C) */
} eng_gpu_weights;

typedef struct eng_gpu_state {
    const eng_model *model;
    const kn_cuda_api *api;
    kn_cuda_ctx *ctx;
    int device;
    int cap;           /* KV slots per head (n_ctx); 0: offload mode, no device cache */
    int n_batch;       /* max tokens per forward chunk */
    int32_t n_past;    /* absolute position of the next token */
    int32_t n_held;    /* slots held by every head of every layer */
    eng_gpu_weights w;
    /* device buffers, by lifetime class */
    void *d_weights;   /* the weights, uploaded once */
    float *d_kv;       /* (2, L, NH, cap, D): keys of every layer, then values */
    void *d_act;       /* activations + tables + ints of one chunk */
    float *x;          /* (B, C) residual stream */
    float *h;          /* (B, C) LayerNorm output */
    float *qkv;        /* (B, 3C) [Q;K;V], heads contiguous inside each */
    float *att;        /* (B, C) merged attention heads */
    float *ao;         /* (B, C) attention.dense output */
    float *ff;         /* (B, F) MLP hidden */
    float *mo;         /* (B, C) MLP output */
    float *d_logits;   /* (B, V) */
    float *inv_freq;   /* (R/2) */
    float *rope_cos;   /* (B, R/2) */
    float *rope_sin;   /* (B, R/2) */
    int32_t *d_ints;   /* tok(B), pos(B), base(NH): one upload per chunk */
    int32_t *n_vis;    /* (NH, B) keys visible per head and query */
    /* host side, allocated once */
    int32_t *h_ints;   /* staging for d_ints, same layout */
    float *logits;     /* (B, V) a host buffer callers may pass to eng_gpu_forward */
    size_t weight_bytes, kv_bytes, act_bytes;
    /* the single-token step as a CUDA graph (eng_gpu_forward) */
    int graph_on;            /* 1: T == 1 chunks use the graph; 0: eager (graph_status says why) */
    int graph_capable;       /* graphs are possible at all (env, pinned staging, no failed capture) */
    int graph_warm;          /* 1 once an eager T == 1 chunk with logits ran: the capture waits for it */
    kn_cuda_graph *graph;    /* captured on the T == 1 chunk after the warm-up, replayed after; NULL before */
    kn_cuda_graph **graphs;  /* moving window: one graph per window base (cap entries, captured on first use),
                                since the window's offsets are baked into a graph's launches; NULL: `graph` */
    int n_graphs;            /* graphs captured so far */
    void *h_pinned;          /* the one host_alloc (pinned) behind g_logits and g_ints */
    float *g_logits;         /* (V) the graph's logits download */
    int32_t *g_ints;         /* d_ints' layout: the graph's upload source, rewritten before each replay */
    char graph_status[320];  /* "on", "on (one graph per window position)", "off (KV_CUDA_GRAPHS=0)", "off (<reason>)" */
    /* the KV policy the device cache runs itself (eng_gpu_state_set_policy):
     * full, window or streaming. Held rows are a window [base, base+n_held)
     * of each head's slab; an eviction moves the sink rows up and advances
     * base, and when the next chunk would pass cap the window moves back to
     * row 0 (at most once per ENG_POLICY_SLACK tokens). */
    struct eng_policy *policy; /* borrowed; NULL: none (no statistics) */
    int sink, recent;  /* recent -1: keep everything (full) */
    int pos_shift;     /* 1: keys cached before RoPE, rotated by cache index at attention */
    int32_t base;      /* the window's first row */
    int32_t shift_base;/* 0: the shift tables are built (they depend on nothing that changes), -1: not yet */
    void *d_pol;       /* pos=shift: the policy's one device allocation, else NULL */
    float *ks;         /* (NH, cap, D) one layer's keys rotated by cache index */
    float *shift_cos, *shift_sin; /* (NH·cap, R/2) the rotation of every row: row j by angle j */
    int32_t *shift_pos;/* (NH·cap) device: row j of every head -> j */
    int32_t *h_shift_pos; /* host staging of shift_pos (one host allocation) */
    /* h2o on the device cache: scores accumulated by attn_accum after every
     * layer's attention (probs from the attention op); at a step's start the
     * scores come down, the host picks each (layer, head)'s kept rows with
     * the policy's own selection, and one kv_compact over all layers' heads
     * applies them. */
    int h2o, heavy;    /* h2o: budget sink + heavy + recent, window never moves (also set for tova) */
    int tova;          /* tova: score = head mean of the last query (rows (L, cap) of d_score), budget = heavy,
                          one kept set per layer */
    int interval;      /* lazy_h2o: evict only at steps that are multiples of this (0: h2o, every step) */
    int64_t pol_steps; /* policy steps (chunks) of the sequence so far, for lazy_h2o */
    int scores_stale;  /* 1: zero every score before the next chunk (a new sequence) */
    int needs_reset;   /* 1: a call failed mid-chunk under a score policy; forwards refused until a reset */
    void *d_h2o;       /* the h2o device allocation: */
    float *d_score;    /* (L, NH, cap) accumulated attention, 0 past n_held; tova: rows (L, cap) */
    float *d_probs;    /* (NH, B, cap) one layer's attention probabilities */
    int32_t *d_keep;   /* (L·NH, cap) kept rows of an eviction, ascending */
    int32_t *d_nkeep;  /* (L·NH) */
    void *h_h2o;       /* the h2o host allocation: */
    float *h_score;    /* (L, NH, cap) */
    int32_t *h_keep, *h_nkeep, *h_ord; /* (L·NH, cap), (L·NH), (cap) */
    int layer;         /* layer of the op running (-1 outside the layer loop), for errors */
    char err[512];
} eng_gpu_state;

/* Creates the context on `device` of `api`, uploads m's weights, allocates
 * the KV cache for n_ctx tokens (none for n_ctx 0: offload mode, below) and
 * the activations for chunks of n_batch tokens (clamped to n_ctx > 0). The caller keeps m alive while gs lives (the
 * host weights are not used after init, the config is). On failure *out is
 * NULL and err names the step, the sizes and the backend's message. */
eng_status eng_gpu_state_init(eng_gpu_state **out, const kn_cuda_api *api, const eng_model *m, int device,
                              int n_ctx, int n_batch, char *err, size_t n_err);
void eng_gpu_state_free(eng_gpu_state *gs);
/* Empty the cache and restart at position 0 (no device work). */
void eng_gpu_state_reset(eng_gpu_state *gs);
/* Forget the last n tokens, as eng_state_rollback (under a device-cache
 * policy: n no more than the last call's tokens, eviction runs at a call's
 * start); ENG_ERR_INVAL (nothing changed) when fewer than n are held. */
eng_status eng_gpu_state_rollback(eng_gpu_state *gs, int n);
/* Before the first forward. full, window and streaming run on the device
 * cache itself (eng_policy_sink_recent: same rule, positions and chunking
 * as the CPU hooks; h2o, lazy_h2o and tova too, eng_policy_h2o_rule /
 * eng_policy_tova_rule, with their attention scores kept on the device; the policy's statistics are kept through
 * eng_policy_account_uniform); the state then needs n_ctx >=
 * eng_policy_capacity. pos=shift makes the policy's one device allocation
 * (rotated keys of one layer + per-row rotation tables). Under a window or
 * streaming policy a decode step replays the graph of the window's current
 * base (at most cap - budget of them, each captured the first time its base
 * comes round; the eviction's row move and the rotation tables run eagerly
 * before it). Any other policy:
 * ENG_ERR_UNSUPPORTED — it runs in offload mode (below). NULL detaches. */
eng_status eng_gpu_state_set_policy(eng_gpu_state *gs, struct eng_policy *p);
/* 1 when set_policy accepts p (NULL, full, window, streaming, h2o,
 * lazy_h2o, tova): the device cache runs it; 0: offload mode's. */
int eng_gpu_policy_supported(const struct eng_policy *p);

/* eng_forward on the device: tokens[0..n) at positions n_past.., appended
 * to the cache. logits (host memory): NULL for none; else (n, V) when
 * all_logits, or (V) for the last token. ENG_ERR_INVAL for a token id
 * outside [0, V) and ENG_ERR_CAPACITY when n more tokens do not fit (state
 * unchanged in both cases); ENG_ERR_CUDA etc. from a failing op.
 * A call of one token (a decode step) runs as a CUDA graph: the first such
 * call with logits runs eagerly (it warms cuBLAS and loads the kernels),
 * the next captures the step and every later one replays it in one launch;
 * token, position and held count reach the graph through pinned staging
 * (g_ints), so rollback and reset keep working. The graph computes the
 * logits whether asked or not. KV_CUDA_GRAPHS=0 (read at init) turns this
 * off; a failed capture turns it off for the state's lifetime
 * (eng_gpu_state_graph_status says why) and the step runs eagerly. */
eng_status eng_gpu_forward(eng_gpu_state *gs, const int32_t *tokens, int n, float *logits, int all_logits);

/* ---- offload mode: a CPU state (forward.h) whose dense math runs here.
 * A device state made with n_ctx 0 holds no KV cache and refuses
 * eng_gpu_forward; eng_state_set_device lends it to an eng_state, whose
 * eng_forward then runs the embedding, ln1 + QKV, dense + MLP, the final
 * LayerNorm and the logits on the device, and the attention block — RoPE,
 * KV cache, KV policy hooks, marks for speculative decoding — on the host
 * with the CPU code itself. So every policy and every spec-decoding rule
 * runs unchanged, and with a device whose ops equal the CPU's (the mock)
 * the logits equal the CPU path's bit for bit. Per layer and chunk: (T, 3C)
 * floats come down, (T, C) go up. Trace callbacks are not called in this
 * mode. After a failing device op the CPU state holds a partly run chunk:
 * reset it (eng_state_reset) before reusing it. */
struct eng_state;   /* forward.h */
/* Before the first forward; gs NULL detaches. ENG_ERR_INVAL (message in
 * eng_state_errmsg(s)) unless gs was made for s's model with n_ctx 0 and
 * n_batch >= s's. Borrowed: gs must outlive s's forwards. */
eng_status eng_state_set_device(struct eng_state *s, eng_gpu_state *gs);
/* The steps eng_forward calls (engine/forward.c), each a chunk of T rows. */
eng_status eng_gpu_offload_embed(eng_gpu_state *gs, const int32_t *tok, int T);
eng_status eng_gpu_offload_qkv(eng_gpu_state *gs, int l, int T, float *qkv /* host (T, 3C) out */);
eng_status eng_gpu_offload_mlp(eng_gpu_state *gs, int l, int T, const float *att /* host (T, C) in */);
/* logits NULL: none (waits for the chunk); else host (T, V) or (V) as eng_forward. */
eng_status eng_gpu_offload_logits(eng_gpu_state *gs, int T, float *logits, int all_logits);

const char *eng_gpu_state_errmsg(const eng_gpu_state *gs);
/* Whether single-token steps replay a CUDA graph: "on", "off
 * (KV_CUDA_GRAPHS=0)" or "off (<why>)" after a failed capture (those steps
 * then run eagerly for the state's lifetime). Borrowed, valid while gs. */
const char *eng_gpu_state_graph_status(const eng_gpu_state *gs);
/* "NVIDIA H100 ... (sm_90, ...)" or the mock's name. */
const char *eng_gpu_state_device_name(const eng_gpu_state *gs);

#endif /* ENGINE_FORWARD_GPU_H */
