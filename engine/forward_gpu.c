/* forward_gpu.c — engine/forward.c on the CUDA backend's table (contract in
 * forward_gpu.h). Read the two files side by side: layer_forward here is
 * forward.c's layer_forward with every kn_* call replaced by the table's op
 * of the same name on device pointers, the KV append done by the kv_append
 * op instead of host memcpy, and the policy hooks replaced by the few KV
 * policies the device cache runs itself (forward_gpu_policy.c).
 * layer_qkv and layer_mlp are the halves around attention; offload mode
 * (the end of this file) calls them from engine/forward.c, with the
 * attention block run on the host in between.
 *
 * Setup makes exactly three mem_alloc calls (weights, KV cache — none in
 * offload mode — and chunk activations) besides the context's own arena; every host staging buffer
 * is allocated here too, so a forward call allocates nothing on either side.
 * Each op's status is checked at once and turned into an engine status with
 * the op and layer in gs->err, so a failure on a first GPU run says where. */
#include "forward_gpu.h"

#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "forward_gpu_impl.h"
#include "policy.h"

/* ------------------------------------------------------------------ setup */

/* One weight tensor to upload: host bytes and where its device pointer goes. */
typedef struct upload {
    const void *src;
    size_t bytes;
    const void **dst;
} upload;

static eng_status upload_weights(eng_gpu_state *gs, char *err, size_t n_err) {
    const eng_model *m = gs->model;
    const eng_config *c = &m->cfg;
    const eng_weights *w = &m->w;
    size_t L = (size_t)c->n_layer, C = (size_t)c->n_embd, F = (size_t)c->n_ff, V = (size_t)c->n_vocab;
    int f32 = w->wtype == KN_W_F32;
    size_t es = f32 ? sizeof(float) : sizeof(uint16_t), fs = sizeof(float);
    eng_gpu_weights *d = &gs->w;
    d->wtype = w->wtype;
#define MAT(field) (f32 ? (const void *)w->field : (const void *)w->field##_h)
    upload ups[] = {
        {MAT(embed_in), V * C * es, &d->embed_in},
        {w->ln1_w, L * C * fs, (const void **)&d->ln1_w}, {w->ln1_b, L * C * fs, (const void **)&d->ln1_b},
        {w->ln2_w, L * C * fs, (const void **)&d->ln2_w}, {w->ln2_b, L * C * fs, (const void **)&d->ln2_b},
        {MAT(qkv_w), L * 3 * C * C * es, &d->qkv_w}, {w->qkv_b, L * 3 * C * fs, (const void **)&d->qkv_b},
        {MAT(o_w), L * C * C * es, &d->o_w}, {w->o_b, L * C * fs, (const void **)&d->o_b},
        {MAT(fc1_w), L * F * C * es, &d->fc1_w}, {w->fc1_b, L * F * fs, (const void **)&d->fc1_b},
        {MAT(fc2_w), L * C * F * es, &d->fc2_w}, {w->fc2_b, L * C * fs, (const void **)&d->fc2_b},
        {w->lnf_w, C * fs, (const void **)&d->lnf_w}, {w->lnf_b, C * fs, (const void **)&d->lnf_b},
        {MAT(embed_out), V * C * es, &d->embed_out},
    };
#undef MAT
    size_t n_up = sizeof ups / sizeof ups[0], total = 0;
    for (size_t i = 0; i < n_up; i++) {
        if (!ups[i].src) {
            eng_errf(err, n_err, "gpu state: weight tensor %zu of the model is not loaded (wtype %d)", i, (int)w->wtype);
            return ENG_ERR_INVAL;
        }
        total += align_up(ups[i].bytes);
    }
    const kn_cuda_api *A = gs->api;
    kn_status st = A->mem_alloc(gs->ctx, &gs->d_weights, total);
    if (st != KN_OK) {
        eng_errf(err, n_err, "gpu state: weights (%.3f GiB) on device %d: %s", (double)total / (1u << 30),
                 gs->device, A->errmsg(gs->ctx));
        return status_of(st);
    }
    gs->weight_bytes = total;
    char *p = gs->d_weights;
    for (size_t i = 0; i < n_up; i++) {
        if ((st = A->copy_h2d(gs->ctx, p, ups[i].src, ups[i].bytes)) != KN_OK) {
            eng_errf(err, n_err, "gpu state: uploading weight tensor %zu (%zu bytes): %s", i, ups[i].bytes,
                     A->errmsg(gs->ctx));
            return status_of(st);
        }
        *ups[i].dst = p;
        p += align_up(ups[i].bytes);
    }
    return ENG_OK;
}

/* The chunk's activations, RoPE tables and int buffers, carved from one
 * device allocation; the host staging buffers from one host allocation. */
static eng_status alloc_activations(eng_gpu_state *gs, char *err, size_t n_err) {
    const eng_config *c = &gs->model->cfg;
    size_t B = (size_t)gs->n_batch, C = (size_t)c->n_embd, F = (size_t)c->n_ff, V = (size_t)c->n_vocab;
    size_t R2 = (size_t)c->n_rot / 2, NH = (size_t)c->n_head;
    size_t fsz[] = {B * C, B * C, B * 3 * C, B * C, B * C, B * F, B * C, B * V, R2 + 1, B * R2 + 1, B * R2 + 1};
    float **fptr[] = {&gs->x, &gs->h, &gs->qkv, &gs->att, &gs->ao, &gs->ff, &gs->mo, &gs->d_logits,
                      &gs->inv_freq, &gs->rope_cos, &gs->rope_sin};
    size_t n_f = sizeof fsz / sizeof fsz[0];
    size_t n_int = 2 * B + NH, total = 0;
    for (size_t i = 0; i < n_f; i++) total += align_up(fsz[i] * sizeof(float));
    total += align_up(n_int * sizeof(int32_t)) + align_up(NH * B * sizeof(int32_t));
    const kn_cuda_api *A = gs->api;
    kn_status st = A->mem_alloc(gs->ctx, &gs->d_act, total);
    if (st != KN_OK) {
        eng_errf(err, n_err, "gpu state: activations (%.1f MiB for n_batch=%d) on device %d: %s",
                 (double)total / (1u << 20), gs->n_batch, gs->device, A->errmsg(gs->ctx));
        return status_of(st);
    }
    gs->act_bytes = total;
    char *p = gs->d_act;
    for (size_t i = 0; i < n_f; i++) {
        *fptr[i] = (float *)p;
        p += align_up(fsz[i] * sizeof(float));
    }
    gs->d_ints = (int32_t *)p;
    p += align_up(n_int * sizeof(int32_t));
    gs->n_vis = (int32_t *)p;

    size_t host = n_int * sizeof(int32_t) + B * V * sizeof(float) + (R2 + 1) * sizeof(float);
    char *hm = eng_alloc(host);
    if (!hm) {
        eng_errf(err, n_err, "gpu state: out of host memory (%zu bytes of staging)", host);
        return ENG_ERR_NOMEM;
    }
    gs->logits = (float *)hm;   /* first: the float buffers keep their alignment */
    float *inv = gs->logits + B * V;
    gs->h_ints = (int32_t *)(inv + R2 + 1);
    if (R2) {
        kn_rope_inv_freq(inv, c->n_rot, c->rope_base);
        if ((st = A->copy_h2d(gs->ctx, gs->inv_freq, inv, R2 * sizeof(float))) != KN_OK) {
            eng_errf(err, n_err, "gpu state: uploading the RoPE inv_freq: %s", A->errmsg(gs->ctx));
            return status_of(st);
        }
    }
    return ENG_OK;
}

/* The single-token step's CUDA graph is captured later (forward_chunk);
 * this decides whether there will be one and allocates what it replays
 * from: one row of logits and the ints in d_ints' layout, pinned, at
 * addresses fixed for the state's lifetime, in one host_alloc. A failure
 * here only turns graphs off (graph_status says why). */
static void graph_setup(eng_gpu_state *gs) {
    const char *env = getenv("KV_CUDA_GRAPHS");
    if (env && strcmp(env, "0") == 0) {
        eng_errf(gs->graph_status, sizeof gs->graph_status, "off (KV_CUDA_GRAPHS=0)");
        return;
    }
    if (gs->cap == 0) {
        eng_errf(gs->graph_status, sizeof gs->graph_status, "off (offload mode: no device KV cache)");
        return;
    }
    const eng_config *c = &gs->model->cfg;
    size_t lbytes = align_up((size_t)c->n_vocab * sizeof(float));
    size_t ibytes = (2 * (size_t)gs->n_batch + (size_t)c->n_head) * sizeof(int32_t);
    kn_status st = gs->api->host_alloc(gs->ctx, &gs->h_pinned, lbytes + ibytes);
    if (st != KN_OK) {
        eng_errf(gs->graph_status, sizeof gs->graph_status, "off (pinned staging of %zu bytes: %s)", lbytes + ibytes,
                 gs->api->errmsg(gs->ctx));
        return;
    }
    memset(gs->h_pinned, 0, lbytes + ibytes);   /* the graph uploads all of g_ints: no unset bytes */
    gs->g_logits = gs->h_pinned;
    gs->g_ints = (int32_t *)((char *)gs->h_pinned + lbytes);
    gs->graph_on = gs->graph_capable = 1;
    eng_errf(gs->graph_status, sizeof gs->graph_status, "on");
}

eng_status eng_gpu_state_init(eng_gpu_state **out, const kn_cuda_api *api, const eng_model *m, int device,
                              int n_ctx, int n_batch, char *err, size_t n_err) {
    *out = NULL;
    if (!api) {
        eng_errf(err, n_err, "gpu state: no CUDA backend (%s)", kn_cuda_unavailable_reason());
        return ENG_ERR_UNSUPPORTED;
    }
    if (n_ctx < 0 || n_batch <= 0 || device < 0) {
        eng_errf(err, n_err, "gpu state: n_ctx (%d) >= 0, n_batch (%d) > 0 and device (%d) >= 0 are required", n_ctx,
                 n_batch, device);
        return ENG_ERR_INVAL;
    }
    if (n_ctx > 0 && n_batch > n_ctx) n_batch = n_ctx;
    const eng_config *c = &m->cfg;
    eng_gpu_state *gs = eng_calloc(1, sizeof *gs);
    if (!gs) {
        eng_errf(err, n_err, "gpu state: out of host memory");
        return ENG_ERR_NOMEM;
    }
    gs->model = m;
    gs->api = api;
    gs->device = device;
    gs->cap = n_ctx;
    gs->n_batch = n_batch;
    gs->layer = -1;
    gs->recent = -1;   /* no policy: keep everything, the window never moves */
    gs->shift_base = -1;
    /* The arena: 16-bit prefill tiles (the device splits activations into
     * two 16-bit halves, the mock needs KN_LP_TILE fp32 rows), attention
     * partials / the mock's per-thread attention rows; 64 MiB at least. */
    size_t wide = (size_t)(c->n_ff > c->n_embd ? c->n_ff : c->n_embd);
    size_t arena = (size_t)64 << 20;
    if ((size_t)KN_LP_TILE * wide * sizeof(float) + 4096 > arena) arena = (size_t)KN_LP_TILE * wide * sizeof(float) + 4096;
    size_t att = (size_t)(kn_get_threads() + 1) * (size_t)n_ctx * sizeof(float);
    if (att > arena) arena = att;
    char why[512] = "";
    kn_status kst = api->ctx_init(&gs->ctx, device, arena, why, sizeof why);
    if (kst != KN_OK) {
        eng_errf(err, n_err, "gpu state: ctx_init: %s", why);
        eng_gpu_state_free(gs);
        return kst == KN_ERR_INVAL ? ENG_ERR_INVAL : ENG_ERR_DEVICE;   /* the device would not open */
    }
    eng_status st = upload_weights(gs, err, n_err);
    if (st == ENG_OK && n_ctx > 0) {   /* n_ctx 0: offload mode, the host holds the cache */
        size_t kv = 2 * (size_t)c->n_layer * c->n_head * (size_t)n_ctx * c->head_dim * sizeof(float);
        kst = api->mem_alloc(gs->ctx, (void **)&gs->d_kv, kv);
        if (kst != KN_OK) {
            eng_errf(err, n_err, "gpu state: KV cache (%.3f GiB for n_ctx=%d) on device %d: %s",
                     (double)kv / (1u << 30), n_ctx, device, api->errmsg(gs->ctx));
            st = status_of(kst);
        }
        gs->kv_bytes = kv;
    }
    if (st == ENG_OK) st = alloc_activations(gs, err, n_err);
    if (st == ENG_OK) graph_setup(gs);
    if (st == ENG_OK && (kst = api->sync(gs->ctx)) != KN_OK) {
        eng_errf(err, n_err, "gpu state: waiting for the uploads: %s", api->errmsg(gs->ctx));
        st = status_of(kst);
    }
    if (st != ENG_OK) {
        eng_gpu_state_free(gs);
        return st;
    }
    *out = gs;
    return ENG_OK;
}

void eng_gpu_state_free(eng_gpu_state *gs) {
    if (!gs) return;
    if (gs->ctx) {
        const kn_cuda_api *A = gs->api;
        A->graph_free(gs->ctx, gs->graph);
        for (int i = 0; gs->graphs && i < gs->cap; i++) A->graph_free(gs->ctx, gs->graphs[i]);
        A->host_free(gs->ctx, gs->h_pinned);
        A->mem_free(gs->ctx, gs->d_pol);
        A->mem_free(gs->ctx, gs->d_h2o);
        A->mem_free(gs->ctx, gs->d_act);
        A->mem_free(gs->ctx, gs->d_kv);
        A->mem_free(gs->ctx, gs->d_weights);
        A->ctx_free(gs->ctx);
    }
    eng_free(gs->logits);   /* the host staging allocation starts here */
    eng_free(gs->h_shift_pos);
    eng_free(gs->h_h2o);
    eng_free(gs->graphs);
    eng_free(gs);
}

void eng_gpu_state_reset(eng_gpu_state *gs) {
    gs->n_past = 0;
    gs->n_held = 0;
    gs->base = 0;
    gs->scores_stale = gs->h2o;
    gs->pol_steps = 0;
    gs->needs_reset = 0;
}

eng_status eng_gpu_state_rollback(eng_gpu_state *gs, int n) {
    if (n < 0 || n > gs->n_past || n > gs->n_held) {
        eng_errf(gs->err, sizeof gs->err, "rollback: cannot drop %d of %d tokens", n, gs->n_past);
        return ENG_ERR_INVAL;
    }
    gs->n_past -= n;
    gs->n_held -= n;   /* slots past n_held are overwritten by the next append */
    if (gs->h2o && n > 0) {   /* h2o: the dropped slots' scores back to 0, as new slots expect */
        const eng_config *c = &gs->model->cfg;
        gs->layer = -1;
        GPU_OP(gs, "fill_rows h2o scores", gs->api->fill_rows(gs->ctx, gs->d_score, c->n_layer * c->n_head,
                                                             (size_t)gs->cap, gs->n_held, gs->cap, 0.0f));
    }
    return ENG_OK;
}

const char *eng_gpu_state_errmsg(const eng_gpu_state *gs) { return gs ? gs->err : "no gpu state"; }

const char *eng_gpu_state_device_name(const eng_gpu_state *gs) {
    return gs && gs->ctx ? gs->api->device_name(gs->ctx) : "no device";
}

const char *eng_gpu_state_graph_status(const eng_gpu_state *gs) {
    return gs && gs->graph_status[0] ? gs->graph_status : "off (no gpu state)";
}

/* ---------------------------------------------------------------- forward */

/* y(M,N) = x(M,K) · W(N,K)ᵀ + b for the block-th (N,K) block of a device
 * weight matrix in the model's dtype. */
static kn_status matmul(eng_gpu_state *gs, float *y, const float *x, const void *w, size_t block, const float *b,
                        int M, int K, int N) {
    size_t es = gs->w.wtype == KN_W_F32 ? sizeof(float) : sizeof(uint16_t);
    const char *wb = (const char *)w + block * (size_t)N * (size_t)K * es;
    return gs->api->matmul(gs->ctx, y, x, wb, gs->w.wtype, b, M, K, N);
}

/* ln1 -> qkv: the rows of the chunk's [Q;K;V] in gs->qkv (T, 3C). */
static eng_status layer_qkv(eng_gpu_state *gs, int l, int T) {
    const kn_cuda_api *A = gs->api;
    kn_cuda_ctx *X = gs->ctx;
    const eng_config *c = &gs->model->cfg;
    const eng_gpu_weights *w = &gs->w;
    size_t C = (size_t)c->n_embd;
    gs->layer = l;
    GPU_OP(gs, "layernorm ln1", A->layernorm(X, gs->h, gs->x, w->ln1_w + l * C, w->ln1_b + l * C, T, (int)C, c->ln_eps));
    GPU_OP(gs, "matmul qkv", matmul(gs, gs->qkv, gs->h, w->qkv_w, (size_t)l, w->qkv_b + l * 3 * C, T, (int)C, (int)(3 * C)));
    return ENG_OK;
}

/* dense(att) -> MLP -> residual: the rest of the layer once gs->att (T, C)
 * holds the merged attention heads. */
static eng_status layer_mlp(eng_gpu_state *gs, int l, int T) {
    const kn_cuda_api *A = gs->api;
    kn_cuda_ctx *X = gs->ctx;
    const eng_config *c = &gs->model->cfg;
    const eng_gpu_weights *w = &gs->w;
    size_t C = (size_t)c->n_embd, F = (size_t)c->n_ff;
    gs->layer = l;
    GPU_OP(gs, "matmul dense", matmul(gs, gs->ao, gs->att, w->o_w, (size_t)l, w->o_b + l * C, T, (int)C, (int)C));
    // MLP branch reads ln2(x) of the same x (parallel) or of x + attn (sequential)
    if (!c->parallel_residual) GPU_OP(gs, "add2 attn residual", A->add2(X, gs->x, gs->ao, NULL, (size_t)T * C));
    GPU_OP(gs, "layernorm ln2", A->layernorm(X, gs->h, gs->x, w->ln2_w + l * C, w->ln2_b + l * C, T, (int)C, c->ln_eps));
    GPU_OP(gs, "matmul fc1", matmul(gs, gs->ff, gs->h, w->fc1_w, (size_t)l, w->fc1_b + l * F, T, (int)C, (int)F));
    GPU_OP(gs, "gelu", A->gelu(X, gs->ff, (size_t)T * F));
    GPU_OP(gs, "matmul fc2", matmul(gs, gs->mo, gs->ff, w->fc2_w, (size_t)l, w->fc2_b + l * C, T, (int)F, (int)C));
    GPU_OP(gs, "add2 residual",
           A->add2(X, gs->x, c->parallel_residual ? gs->ao : gs->mo, c->parallel_residual ? gs->mo : NULL, (size_t)T * C));
    return ENG_OK;
}

/* The whole layer over the device cache: qkv -> rope(q, k) -> cache ->
 * attend -> mlp. The held rows are the window [base, base + n_held) of each
 * head's slab (base 0 without a moving policy), so K and V below point at
 * the window and every op indexes it as a cache of its own with the slab's
 * stride. pos=shift: q sits at its cache index (stage_ints), k joins the
 * cache unrotated, and attention reads a copy of the keys rotated by cache
 * index (ks; the tables follow base, shift_tables). */
static eng_status layer_forward(eng_gpu_state *gs, int l, int T) {
    const kn_cuda_api *A = gs->api;
    kn_cuda_ctx *X = gs->ctx;
    const eng_config *c = &gs->model->cfg;
    size_t C = (size_t)c->n_embd, slab = (size_t)c->n_head * gs->cap * c->head_dim;
    size_t win = (size_t)gs->base * c->head_dim;
    int NH = c->n_head, D = c->head_dim, R = c->n_rot;
    float *K = gs->d_kv + (size_t)l * slab, *V = gs->d_kv + ((size_t)c->n_layer + l) * slab;
    const int32_t *base = gs->d_ints + 2 * (size_t)gs->n_batch;
    eng_status st = layer_qkv(gs, l, T);
    if (st != ENG_OK) return st;
    if (R > 0) {
        GPU_OP(gs, "rope q", A->rope(X, gs->qkv, T, NH, D, 3 * C, R, gs->rope_cos, gs->rope_sin));
        if (!gs->pos_shift)
            GPU_OP(gs, "rope k", A->rope(X, gs->qkv + C, T, NH, D, 3 * C, R, gs->rope_cos, gs->rope_sin));
    }
    GPU_OP(gs, "kv_append", A->kv_append(X, K + win, V + win, gs->qkv + C, gs->qkv + 2 * C, 3 * C, T, NH, D, gs->cap,
                                         base, gs->n_vis));
    const float *Ka = K + win;
    if (gs->pos_shift) {   /* every row of the slab rotated by its cache index (rows outside the window: unused) */
        GPU_OP(gs, "copy keys for pos=shift", A->copy_d2d(X, gs->ks, K, slab * sizeof(float)));
        GPU_OP(gs, "rope keys by cache index",
               A->rope(X, gs->ks, NH * gs->cap, 1, D, (size_t)D, R, gs->shift_cos, gs->shift_sin));
        Ka = gs->ks + win;
    }
    GPU_OP(gs, "attention", A->attention(X, gs->att, gs->qkv, 3 * C, Ka, V + win, T, NH, D, gs->cap, gs->n_vis,
                                         gs->h2o ? gs->d_probs : NULL));
    if (gs->tova)   /* tova: the head mean of the last query's attention, the layer's score row */
        GPU_OP(gs, "attn_head_mean tova", A->attn_head_mean(X, gs->d_score + (size_t)l * gs->cap, gs->d_probs, gs->n_vis,
                                                            T, NH, gs->cap));
    else if (gs->h2o)   /* h2o: every key collects the probability each query put on it, query by query */
        GPU_OP(gs, "attn_accum h2o", A->attn_accum(X, gs->d_score + (size_t)l * NH * gs->cap, gs->d_probs, gs->n_vis, T,
                                                   NH, gs->cap, 1));
    return layer_mlp(gs, l, T);
}

/* The chunk's ints in d_ints' layout — tok(T), pos(T) from n_past, base(NH)
 * = n_held — into the host staging `ints` (h_ints, or the graph's g_ints). */
static void stage_ints(const eng_gpu_state *gs, int32_t *ints, const int32_t *tok, int T) {
    size_t B = (size_t)gs->n_batch;
    for (int t = 0; t < T; t++) {
        ints[t] = tok[t];
        /* pos=shift: the query sits at its row (base + cache index), keys at theirs (the CPU's rule) */
        ints[B + (size_t)t] = (gs->pos_shift ? gs->base + gs->n_held : gs->n_past) + t;
    }
    for (int h = 0; h < gs->model->cfg.n_head; h++) ints[2 * B + (size_t)h] = gs->n_held;
}

/* The end of a chunk: the final LayerNorm and, for rows > 0, the logits of
 * the chunk's last `rows` rows into d_logits (device and offload modes). */
static eng_status chunk_tail(eng_gpu_state *gs, int T, int rows) {
    const eng_config *c = &gs->model->cfg;
    size_t C = (size_t)c->n_embd;
    gs->layer = -1;
    GPU_OP(gs, "layernorm final",
           gs->api->layernorm(gs->ctx, gs->h, gs->x, gs->w.lnf_w, gs->w.lnf_b, T, (int)C, c->ln_eps));
    if (rows > 0)
        GPU_OP(gs, "matmul embed_out", matmul(gs, gs->d_logits, gs->h + (size_t)(T - rows) * C, gs->w.embed_out, 0, NULL,
                                              rows, (int)C, c->n_vocab));
    return ENG_OK;
}

/* Enqueues a chunk's ops: the upload of the staged ints from `ints`, the
 * embedding, the RoPE table, the layers, the final LayerNorm and, for
 * rows > 0, the logits of the last `rows` rows into d_logits. Every
 * per-step value (token, position, held count, n_vis) reaches the ops
 * through d_ints on the device, never as a launch argument, so a capture
 * of this call replays correctly at any position (graph_capture). */
static eng_status enqueue_chunk(eng_gpu_state *gs, const int32_t *ints, int T, int rows) {
    const kn_cuda_api *A = gs->api;
    kn_cuda_ctx *X = gs->ctx;
    const eng_config *c = &gs->model->cfg;
    size_t C = (size_t)c->n_embd, B = (size_t)gs->n_batch;
    gs->layer = -1;
    GPU_OP(gs, "upload tokens", A->copy_h2d(X, gs->d_ints, ints, (2 * B + (size_t)c->n_head) * sizeof(int32_t)));
    GPU_OP(gs, "embed", A->embed(X, gs->x, gs->d_ints, T, gs->w.embed_in, gs->w.wtype, c->n_vocab, (int)C));
    if (c->n_rot > 0)
        GPU_OP(gs, "rope_table", A->rope_table(X, gs->rope_cos, gs->rope_sin, gs->inv_freq, gs->d_ints + B, T, c->n_rot));
    for (int l = 0; l < c->n_layer; l++) {
        eng_status st = layer_forward(gs, l, T);
        if (st != ENG_OK) return st;
    }
    return chunk_tail(gs, T, rows);
}

/* Captures the single-token step — enqueue_chunk from the pinned g_ints
 * with the last row's logits, then their download into the pinned
 * g_logits — into *slot. A capture runs nothing, so on failure nothing
 * changed: graphs are off for good with the reason in graph_status, and
 * the caller runs the step eagerly. */
static void graph_capture(eng_gpu_state *gs, kn_cuda_graph **slot) {
    const kn_cuda_api *A = gs->api;
    kn_cuda_ctx *X = gs->ctx;
    size_t V = (size_t)gs->model->cfg.n_vocab;
    char why[sizeof gs->graph_status];
    kn_status st = A->graph_begin(X);
    if (st != KN_OK) {
        eng_errf(why, sizeof why, "graph_begin: %s", A->errmsg(X));
    } else {
        eng_status est = enqueue_chunk(gs, gs->g_ints, 1, 1);
        if (est == ENG_OK && (st = A->copy_d2h_async(X, gs->g_logits, gs->d_logits, V * sizeof(float))) != KN_OK)
            est = op_fail(gs, "download logits", st);
        if (est != ENG_OK) eng_errf(why, sizeof why, "capture: %s", gs->err);
        kn_cuda_graph *g = NULL;
        st = A->graph_end(X, &g);   /* ends the capture whatever happened inside it */
        if (est == ENG_OK && st == KN_OK) {
            *slot = g;
            gs->n_graphs++;
            return;
        }
        if (est == ENG_OK) eng_errf(why, sizeof why, "graph_end: %s", A->errmsg(X));
        A->graph_free(X, g);
    }
    gs->graph_on = gs->graph_capable = 0;   /* for good: a later set_policy does not retry */
    eng_errf(gs->graph_status, sizeof gs->graph_status, "off (%s)", why);
}

/* One token through the captured graph: stage its ints in g_ints, replay,
 * wait, copy the logits row out of g_logits. Rewriting g_ints is safe: every
 * forward call ends with the stream idle (a sync or a synchronous copy), so
 * no replay is still reading it. */
static eng_status graph_step(eng_gpu_state *gs, kn_cuda_graph *g, const int32_t *tok, float *logits) {
    const kn_cuda_api *A = gs->api;
    stage_ints(gs, gs->g_ints, tok, 1);
    gs->layer = -1;
    GPU_OP(gs, "graph_launch", A->graph_launch(gs->ctx, g));
    GPU_OP(gs, "sync", A->sync(gs->ctx));
    if (logits) memcpy(logits, gs->g_logits, (size_t)gs->model->cfg.n_vocab * sizeof(float));
    gs->n_past += 1;
    gs->n_held += 1;
    return ENG_OK;
}

/* One chunk of T <= n_batch tokens. T == 1 (a decode step: the same
 * sequence of ops every step, the policy's eviction having run eagerly
 * before it; a moving window picks the graph of its base) goes through the
 * graph once one is captured: the first such chunk with
 * logits runs eagerly (cuBLAS picks its kernels for these shapes, every
 * lazily loaded module of the step is loaded), the next one captures.
 * Logits: the last row, or all T rows when all_logits. */
static eng_status forward_chunk(eng_gpu_state *gs, const int32_t *tok, int T, float *logits, int all_logits) {
    if (T == 1 && gs->graph_on) {
        kn_cuda_graph **slot = gs->graphs ? &gs->graphs[gs->base] : &gs->graph;   /* the window's base is baked in */
        if (!*slot && gs->graph_warm) graph_capture(gs, slot);   /* on failure graph_on is 0: eager below */
        if (*slot) return graph_step(gs, *slot, tok, logits);
    }
    const kn_cuda_api *A = gs->api;
    kn_cuda_ctx *X = gs->ctx;
    size_t V = (size_t)gs->model->cfg.n_vocab;
    int rows = logits ? (all_logits ? T : 1) : 0;
    stage_ints(gs, gs->h_ints, tok, T);
    eng_status st = enqueue_chunk(gs, gs->h_ints, T, rows);
    if (st != ENG_OK) return st;
    if (logits)
        GPU_OP(gs, "download logits", A->copy_d2h(X, logits, gs->d_logits, (size_t)rows * V * sizeof(float)));
    else
        GPU_OP(gs, "sync", A->sync(X));   /* report a fault of this chunk here, not in the next call */
    gs->n_past += T;
    gs->n_held += T;
    if (T == 1 && rows > 0) gs->graph_warm = 1;   /* every kernel of the step, embed_out included, has run */
    return ENG_OK;
}

eng_status eng_gpu_forward(eng_gpu_state *gs, const int32_t *tokens, int n, float *logits, int all_logits) {
    const eng_config *c = &gs->model->cfg;
    if (n <= 0) {
        eng_errf(gs->err, sizeof gs->err, "forward: no tokens");
        return ENG_ERR_INVAL;
    }
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->n_vocab) {
            eng_errf(gs->err, sizeof gs->err, "forward: token %d at index %d outside vocab [0, %d)", tokens[i], i,
                     c->n_vocab);
            return ENG_ERR_INVAL;
        }
    if (gs->cap == 0) {
        eng_errf(gs->err, sizeof gs->err, "forward: this device state has no KV cache (offload mode: drive it "
                                          "through eng_state_set_device)");
        return ENG_ERR_INVAL;
    }
    if (gs->needs_reset) {
        eng_errf(gs->err, sizeof gs->err, "forward: a failed call left the scores of policy '%s' inexact; reset the state",
                 gs->policy ? eng_policy_name(gs->policy) : "?");
        return ENG_ERR_INVAL;
    }
    if (gs->n_past == 0) gs->pol_steps = 0;   /* a new sequence, as the CPU's call_begin (also after a full rollback) */
    int moving = gs->recent >= 0 || gs->pos_shift || gs->h2o;   /* a policy step before each chunk */
    if (gs->recent < 0 && (int64_t)gs->n_held + n > gs->cap) {
        eng_errf(gs->err, sizeof gs->err, "forward: KV cache holds %d of %d tokens; %d more do not fit", gs->n_held,
                 gs->cap, n);
        return ENG_ERR_CAPACITY;
    }
    for (int i = 0; i < n;) {
        int T = n - i < gs->n_batch ? n - i : gs->n_batch;
        int32_t evicted = 0;
        if (moving) {
            eng_status st = gpu_policy_step(gs, T, &T, &evicted);
            if (st != ENG_OK) return st;
        }
        if ((int64_t)gs->base + gs->n_held + T > gs->cap) {   /* kv_append checks rows relative to the window only */
            eng_errf(gs->err, sizeof gs->err, "forward: window rows [%d, %d) pass the cache's %d slots (internal error)",
                     gs->base, gs->base + gs->n_held + T, gs->cap);
            return ENG_ERR_CAPACITY;
        }
        int last = i + T == n;
        float *lg = NULL;
        if (logits && all_logits) lg = logits + (size_t)i * c->n_vocab;
        else if (logits && last) lg = logits;
        eng_status st = forward_chunk(gs, tokens + i, T, lg, all_logits);
        if (st != ENG_OK) {
            /* the layers that ran added this chunk's attention to the scores: only a reset makes them exact */
            if (gs->h2o) gs->needs_reset = 1;
            return st;
        }
        if (gs->policy) eng_policy_account_uniform(gs->policy, gs->n_held, evicted, (int64_t)gs->kv_bytes);
        gs->pol_steps++;
        i += T;
    }
    return ENG_OK;
}

/* ---------------------------------------------------------- offload mode */

eng_status eng_state_set_device(eng_state *s, eng_gpu_state *gs) {
    if (s->n_past != 0) {
        eng_errf(s->err, sizeof s->err, "set_device: the state already holds %d tokens", s->n_past);
        return ENG_ERR_INVAL;
    }
    if (gs && (gs->model != s->model || gs->cap != 0 || gs->n_batch < s->n_batch)) {
        eng_errf(s->err, sizeof s->err,
                 "set_device: the device state must be made for the same model with n_ctx 0 and n_batch >= %d "
                 "(it has n_ctx %d, n_batch %d)", s->n_batch, gs->cap, gs->n_batch);
        return ENG_ERR_INVAL;
    }
    s->dev = gs;
    return ENG_OK;
}

eng_status eng_gpu_offload_embed(eng_gpu_state *gs, const int32_t *tok, int T) {
    const kn_cuda_api *A = gs->api;
    const eng_config *c = &gs->model->cfg;
    gs->layer = -1;
    if (T <= 0 || T > gs->n_batch) {
        eng_errf(gs->err, sizeof gs->err, "gpu offload: chunk of %d rows, the state takes 1..%d", T, gs->n_batch);
        return ENG_ERR_INVAL;
    }
    /* tok is pageable caller memory: copy_h2d has staged it on return */
    GPU_OP(gs, "upload tokens", A->copy_h2d(gs->ctx, gs->d_ints, tok, (size_t)T * sizeof(int32_t)));
    GPU_OP(gs, "embed", A->embed(gs->ctx, gs->x, gs->d_ints, T, gs->w.embed_in, gs->w.wtype, c->n_vocab, c->n_embd));
    return ENG_OK;
}

eng_status eng_gpu_offload_qkv(eng_gpu_state *gs, int l, int T, float *qkv) {
    eng_status st = layer_qkv(gs, l, T);
    if (st != ENG_OK) return st;
    size_t bytes = (size_t)T * 3 * (size_t)gs->model->cfg.n_embd * sizeof(float);
    GPU_OP(gs, "download qkv", gs->api->copy_d2h(gs->ctx, qkv, gs->qkv, bytes));
    return ENG_OK;
}

eng_status eng_gpu_offload_mlp(eng_gpu_state *gs, int l, int T, const float *att) {
    gs->layer = l;
    size_t bytes = (size_t)T * (size_t)gs->model->cfg.n_embd * sizeof(float);
    GPU_OP(gs, "upload attention", gs->api->copy_h2d(gs->ctx, gs->att, att, bytes));
    return layer_mlp(gs, l, T);
}

eng_status eng_gpu_offload_logits(eng_gpu_state *gs, int T, float *logits, int all_logits) {
    int rows = !logits ? 0 : all_logits ? T : 1;
    eng_status st = chunk_tail(gs, T, rows);
    if (st != ENG_OK) return st;
    if (!logits) {
        GPU_OP(gs, "sync", gs->api->sync(gs->ctx));
        return ENG_OK;
    }
    size_t bytes = (size_t)rows * (size_t)gs->model->cfg.n_vocab * sizeof(float);
    GPU_OP(gs, "download logits", gs->api->copy_d2h(gs->ctx, logits, gs->d_logits, bytes));
    return ENG_OK;
}
