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
 * This stage keeps the full cache only: attaching a KV policy is refused
 * (ENG_ERR_UNSUPPORTED); policies on the device are a later stage. Errors:
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
    int cap;           /* KV slots per head (n_ctx) */
    int n_batch;       /* max tokens per forward chunk */
    int32_t n_past;    /* absolute position of the next token */
    int32_t n_held;    /* slots held by every head of every layer (full cache) */
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
    int layer;         /* layer of the op running (-1 outside the layer loop), for errors */
    char err[512];
} eng_gpu_state;

/* Creates the context on `device` of `api`, uploads m's weights, allocates
 * the KV cache for n_ctx tokens and the activations for chunks of n_batch
 * tokens (clamped to n_ctx). The caller keeps m alive while gs lives (the
 * host weights are not used after init, the config is). On failure *out is
 * NULL and err names the step, the sizes and the backend's message. */
eng_status eng_gpu_state_init(eng_gpu_state **out, const kn_cuda_api *api, const eng_model *m, int device,
                              int n_ctx, int n_batch, char *err, size_t n_err);
void eng_gpu_state_free(eng_gpu_state *gs);
/* Empty the cache and restart at position 0 (no device work). */
void eng_gpu_state_reset(eng_gpu_state *gs);
/* Forget the last n tokens, as eng_state_rollback; ENG_ERR_INVAL (nothing
 * changed) when fewer than n are held. */
eng_status eng_gpu_state_rollback(eng_gpu_state *gs, int n);
/* NULL is accepted (full cache); any policy is refused with
 * ENG_ERR_UNSUPPORTED until the device runs KV policies. */
eng_status eng_gpu_state_set_policy(eng_gpu_state *gs, struct eng_policy *p);

/* eng_forward on the device: tokens[0..n) at positions n_past.., appended
 * to the cache. logits (host memory): NULL for none; else (n, V) when
 * all_logits, or (V) for the last token. ENG_ERR_INVAL for a token id
 * outside [0, V) and ENG_ERR_CAPACITY when n more tokens do not fit (state
 * unchanged in both cases); ENG_ERR_CUDA etc. from a failing op. */
eng_status eng_gpu_forward(eng_gpu_state *gs, const int32_t *tokens, int n, float *logits, int all_logits);

const char *eng_gpu_state_errmsg(const eng_gpu_state *gs);
/* "NVIDIA H100 ... (sm_90, ...)" or the mock's name. */
const char *eng_gpu_state_device_name(const eng_gpu_state *gs);

#endif /* ENGINE_FORWARD_GPU_H */
