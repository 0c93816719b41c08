/* model.h — a GPT-NeoX / Pythia checkpoint in memory: the blueprint
 * (eng_config, from config.json) and the weights (eng_weights, from
 * model.safetensors or a sharded model-*.safetensors + index).
 *
 * The loader converts every parameter to fp32 into ONE allocation (the CPU
 * backend's dtype) and permutes the per-head interleaved query_key_value rows
 * of HF ([nh][3][D] rows) into contiguous [Q(all heads); K; V] blocks, so the
 * forward pass can slice q/k/v without strides. Known non-parameter buffers
 * (attention.bias, attention.masked_bias, attention.rotary_emb.inv_freq) are
 * ignored; any other unexpected tensor is ignored too and counted in
 * n_ignored. A missing or misshaped parameter is an error naming the tensor.
 *
 * Dimension legend: L = n_layer, C = n_embd, NH = n_head, D = head_dim,
 * F = n_ff, V = n_vocab. */
#ifndef ENGINE_MODEL_H
#define ENGINE_MODEL_H

#include "eng.h"
#include "kn.h"

typedef struct eng_config {
    int n_layer;            /* num_hidden_layers */
    int n_embd;             /* hidden_size */
    int n_head;             /* num_attention_heads */
    int head_dim;           /* n_embd / n_head */
    int n_rot;              /* rotary dims per head = (int)(head_dim * rotary_pct), even */
    int n_ff;               /* intermediate_size */
    int n_vocab;            /* vocab_size (embedding rows, incl. padding rows) */
    int n_ctx_train;        /* max_position_embeddings */
    float rotary_pct;       /* rotary_pct | partial_rotary_factor | rope_parameters.partial_rotary_factor */
    float rope_base;        /* rotary_emb_base | rope_theta | rope_parameters.rope_theta */
    float ln_eps;           /* layer_norm_eps */
    int parallel_residual;  /* use_parallel_residual */
    int bos_id, eos_id;     /* -1 when absent */
} eng_config;

typedef struct eng_weights {
    float *embed_in;   /* (V, C) */
    float *ln1_w;      /* (L, C)      input_layernorm.weight */
    float *ln1_b;      /* (L, C) */
    float *ln2_w;      /* (L, C)      post_attention_layernorm.weight */
    float *ln2_b;      /* (L, C) */
    float *qkv_w;      /* (L, 3C, C)  rows permuted to [Q;K;V], each head-major */
    float *qkv_b;      /* (L, 3C)     permuted the same way */
    float *o_w;        /* (L, C, C)   attention.dense.weight */
    float *o_b;        /* (L, C) */
    float *fc1_w;      /* (L, F, C)   mlp.dense_h_to_4h.weight */
    float *fc1_b;      /* (L, F) */
    float *fc2_w;      /* (L, C, F)   mlp.dense_4h_to_h.weight */
    float *fc2_b;      /* (L, C) */
    float *lnf_w;      /* (C)         final_layer_norm.weight */
    float *lnf_b;      /* (C) */
    float *embed_out;  /* (V, C)      no bias, not tied to embed_in */
    /* When the checkpoint's matrices are all F16 or all BF16 and the caller
     * asked to keep them (eng_load_opts.keep_16bit), the six matrices stay
     * in that dtype here (same shapes and QKV permutation) and their float
     * fields above are NULL; wtype says which. LayerNorm parameters and
     * biases are always fp32. */
    kn_wtype wtype;
    uint16_t *embed_in_h, *qkv_w_h, *o_w_h, *fc1_w_h, *fc2_w_h, *embed_out_h;
} eng_weights;

typedef struct eng_model {
    eng_config cfg;
    eng_weights w;
    float *mem;          /* the single allocation all eng_weights point into */
    size_t n_params;     /* parameters (fp32 and 16-bit together) */
    int src_dtype;       /* dtype of the first parameter read (st_dtype), for reporting */
    int n_ignored;       /* non-parameter tensors skipped */
    char dir[1024];      /* model directory, as given */
} eng_model;

/* Parse config.json text (jansson underneath). `path` only labels errors.
 * Returns ENG_ERR_FORMAT naming the field on a missing/mistyped/out-of-range
 * value, ENG_ERR_UNSUPPORTED for a model we do not implement (model_type other
 * than gpt_neox, hidden_act other than gelu, rope scaling, no attention bias). */
eng_status eng_config_parse(eng_config *cfg, const char *json, size_t len,
                            const char *path, char *err, size_t n_err);

/* Load `dir`/config.json and the weights. On failure *out is NULL and err
 * names the file and the field or tensor. */
eng_status eng_model_load(eng_model **out, const char *dir, char *err, size_t n_err);

typedef struct eng_load_opts {
    int keep_16bit;   /* keep F16/BF16 matrices 16-bit (half the memory and bytes per token) */
} eng_load_opts;
/* eng_model_load with options; eng_model_load converts everything to fp32. */
eng_status eng_model_load_ex(eng_model **out, const char *dir, const eng_load_opts *opts, char *err,
                             size_t n_err);
/* Bytes per parameter of the matrices as held (4 for fp32, 2 for 16-bit). */
double eng_model_weight_bytes(const eng_model *m);
void eng_model_free(eng_model *m);

/* Bytes of weights read per decoded token (everything except embed_in),
 * for a given bytes-per-parameter; used by the bandwidth-bound figures. */
double eng_model_decode_bytes(const eng_config *cfg, double bytes_per_param);

#endif /* ENGINE_MODEL_H */
