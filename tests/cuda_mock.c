/* cuda_mock.c — the CUDA backend's table implemented with the CPU ops
 * (contract in cuda_mock.h). Each entry checks the injected fault counter,
 * then does what the device version does, on host memory: mem_alloc is
 * malloc (counted, like the real alloc_count), copies are memcpy, the
 * arena of ctx_init is one malloc used as the ops' scratch (the KN_LP_TILE
 * rows of kn_matmul_lp, the per-thread rows of kn_attention), so the mock
 * allocates nothing after setup either. When the caller's arena is too
 * small for the optimized op the reference version (no scratch) runs.
 *
 * Graphs, for real: every capturable call (the ops, copy_h2d,
 * copy_d2h_async, copy_d2d, mem_set) is an argument struct plus a run
 * function in the table mock_ops[]; the entry point packs its arguments and
 * hands them to submit(), which runs them at once or, between graph_begin
 * and graph_end, appends (op, arguments by value) to the context's record
 * — a fixed array allocated by graph_begin, handed to the graph by
 * graph_end. graph_launch runs the record in order, reading and writing
 * through the recorded pointers as a replayed CUDA graph does. The calls
 * CUDA refuses while capturing (sync, copy_d2h, mem_alloc, host_alloc,
 * and the frees) fail here too and invalidate the capture, and a host
 * copy inside a capture must use host_alloc memory (the mock keeps a table
 * of those blocks), so engine mistakes show up in tests without a GPU. */
#include "cuda_mock.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOCK_GRAPH_MAX 8192   /* calls one capture may record */
#define MOCK_PINNED_MAX 64    /* live host_alloc blocks (process-wide, as pinned memory is) */

/* ------------------------------------------------------------ recorded calls */

/* The arguments of each capturable call, by value (pointers included). */
typedef struct { void *dst; const void *src; size_t bytes; } a_copy;
typedef struct { void *dst; int byte; size_t bytes; } a_mem_set;
typedef struct { float *y; const float *x; const void *w; kn_wtype wt; const float *b; int M, K, N; } a_matmul;
typedef struct { float *out; const int32_t *tok; int T; const void *table; kn_wtype wt; int V, C; } a_embed;
typedef struct { float *out; const float *x, *w, *b; int M, C; float eps; } a_layernorm;
typedef struct { float *x; size_t n; } a_gelu;
typedef struct { float *y; const float *a, *b; size_t n; } a_add2;
typedef struct { float *cos_t, *sin_t; const float *inv_freq; const int32_t *pos; int T, R; } a_rope_table;
typedef struct { float *x; int T, NH, D; size_t row_stride; int R; const float *cos_t, *sin_t; } a_rope;
typedef struct {
    float *out; const float *q; size_t q_stride; const float *k, *v; int T, NH, D, cap; const int32_t *n_vis;
    float *probs;
} a_attention;
typedef struct {
    float *k_cache, *v_cache; const float *k_src, *v_src; size_t src_stride; int T, NH, D, cap;
    const int32_t *base; int32_t *n_vis;
} a_kv_append;
typedef struct {
    float *k_cache, *v_cache, *score; int32_t *pos; const int32_t *keep, *n_keep; int NH, D, cap;
} a_kv_compact;
typedef struct { float *k_cache, *v_cache; int NH, D, cap, src, dst, rows; } a_kv_move;
typedef struct { float *x; int rows; size_t stride; int from, to; float v; } a_fill_rows;
typedef struct { float *out; const float *probs; const int32_t *n_vis; int T, NH, cap; } a_head_mean;
typedef struct { float *norms; const float *k; const int32_t *n_held; int NH, D, cap; } a_key_norms;
typedef struct { float *acc; const float *probs; const int32_t *n_vis; int T, NH, cap, accumulate; } a_attn_accum;
typedef struct {
    float *out; const float *in; int rows, m; size_t stride; const int32_t *len; int kernel, use_max;
} a_pool1d;
typedef struct {
    uint8_t *codes; float *mn, *scale; const float *x; int rows, cols; size_t ld; int group, bits; kn_kivi_axis axis;
} a_kivi_quant;
typedef struct {
    float *out; size_t ld_out; const uint8_t *codes; const float *mn, *scale; int rows, cols, group, bits;
    kn_kivi_axis axis;
} a_kivi_dequant;
typedef struct { int32_t *idx; const float *logits; int M, V; } a_argmax;
typedef struct { float *probs; const float *logits; int M, V; float temperature; } a_softmax;

typedef union mock_args {
    a_copy copy;
    a_mem_set mem_set;
    a_matmul matmul;
    a_embed embed;
    a_layernorm layernorm;
    a_gelu gelu;
    a_add2 add2;
    a_rope_table rope_table;
    a_rope rope;
    a_attention attention;
    a_kv_append kv_append;
    a_kv_compact kv_compact;
    a_kv_move kv_move;
    a_fill_rows fill_rows;
    a_head_mean head_mean;
    a_key_norms key_norms;
    a_attn_accum attn_accum;
    a_pool1d pool1d;
    a_kivi_quant kivi_quant;
    a_kivi_dequant kivi_dequant;
    a_argmax argmax;
    a_softmax softmax;
} mock_args;

typedef enum mock_op {
    OP_COPY_H2D, OP_COPY_D2H_ASYNC, OP_COPY_D2D, OP_MEM_SET, OP_MATMUL, OP_EMBED, OP_LAYERNORM, OP_GELU, OP_ADD2,
    OP_ROPE_TABLE, OP_ROPE, OP_ATTENTION, OP_KV_APPEND, OP_KV_COMPACT, OP_KV_MOVE, OP_FILL_ROWS, OP_HEAD_MEAN, OP_KEY_NORMS, OP_ATTN_ACCUM, OP_POOL1D,
    OP_KIVI_QUANT, OP_KIVI_DEQUANT, OP_ARGMAX, OP_SOFTMAX, OP_N
} mock_op;

typedef struct mock_rec {
    mock_op op;
    mock_args a;
} mock_rec;

struct kn_cuda_graph {
    mock_rec *rec;   /* the recorded calls, in order */
    int n;
};

struct kn_cuda_ctx {
    int device;
    float *arena;
    size_t arena_bytes;
    size_t n_alloc;
    /* capture state, between graph_begin and graph_end */
    int capturing;
    mock_rec *rec;          /* MOCK_GRAPH_MAX entries, allocated by graph_begin */
    int n_rec;
    char broken[200];       /* why the capture was invalidated ("" while valid) */
    char err[256];
};

static long g_fail_at = -1;   /* injected failure: the call with this index fails */
static long g_calls;
static int g_graph_fault;     /* cuda_mock_graph_fail */
static long g_captures, g_launches;
static struct { const void *p; size_t bytes; } g_pinned[MOCK_PINNED_MAX];   /* live host_alloc blocks */

void cuda_mock_fail_after(long k) { g_fail_at = k < 0 ? -1 : g_calls + k; }
long cuda_mock_calls(void) { return g_calls; }
void cuda_mock_graph_fail(int where) { g_graph_fault = where; }
long cuda_mock_graph_captures(void) { return g_captures; }
long cuda_mock_graph_launches(void) { return g_launches; }

/* 1 when this call is to fail (message set). */
static int fault(kn_cuda_ctx *c, const char *what) {
    long i = g_calls++;
    if (g_fail_at < 0 || i < g_fail_at) return 0;
    snprintf(c->err, sizeof c->err, "mock: injected failure in %s (call %ld)", what, i);
    return 1;
}

#define MOCK_CALL(c, name)                                   \
    do {                                                     \
        if (fault((c), (name))) return KN_ERR_CUDA;          \
        (c)->err[0] = 0;                                     \
    } while (0)

/* A call CUDA refuses while the stream captures: it fails, and the capture
 * is invalidated (graph_end will fail), as with a real stream. */
static kn_status refused_in_capture(kn_cuda_ctx *c, const char *call) {
    if (!c->broken[0]) snprintf(c->broken, sizeof c->broken, "%s while capturing", call);
    snprintf(c->err, sizeof c->err,
             "%s: cudaErrorStreamCaptureUnsupported: operation not permitted when stream is capturing (mock)", call);
    return KN_ERR_CUDA;
}

/* 1 when [p, p + bytes) lies in one live host_alloc block (of any context). */
static int is_pinned(const void *p, size_t bytes) {
    uintptr_t q = (uintptr_t)p;
    for (int i = 0; i < MOCK_PINNED_MAX; i++) {
        uintptr_t b = (uintptr_t)g_pinned[i].p;
        if (b && q >= b && bytes <= g_pinned[i].bytes && q - b <= g_pinned[i].bytes - bytes) return 1;
    }
    return 0;
}

/* ------------------------------------------------------------ run functions: the CPU ops */

static kn_status run_copy(kn_cuda_ctx *c, const mock_args *u) {
    (void)c;
    if (u->copy.bytes) memcpy(u->copy.dst, u->copy.src, u->copy.bytes);
    return KN_OK;
}

static kn_status run_mem_set(kn_cuda_ctx *c, const mock_args *u) {
    (void)c;
    memset(u->mem_set.dst, u->mem_set.byte, u->mem_set.bytes);
    return KN_OK;
}

static kn_status run_matmul(kn_cuda_ctx *c, const mock_args *u) {
    const a_matmul *a = &u->matmul;
    if (a->wt == KN_W_F32) kn_matmul(a->y, a->x, a->w, a->b, a->M, a->K, a->N);
    else if ((size_t)KN_LP_TILE * (size_t)a->K * sizeof(float) <= c->arena_bytes)
        kn_matmul_lp(a->y, a->x, a->w, a->wt, a->b, a->M, a->K, a->N, c->arena);
    else kn_matmul_lp_ref(a->y, a->x, a->w, a->wt, a->b, a->M, a->K, a->N);
    return KN_OK;
}

static kn_status run_embed(kn_cuda_ctx *c, const mock_args *u) {
    const a_embed *a = &u->embed;
    (void)c;
    kn_embed_ref(a->out, a->tok, a->T, a->table, a->wt, a->V, a->C);
    return KN_OK;
}

static kn_status run_layernorm(kn_cuda_ctx *c, const mock_args *u) {
    const a_layernorm *a = &u->layernorm;
    (void)c;
    kn_layernorm(a->out, a->x, a->w, a->b, a->M, a->C, a->eps);
    return KN_OK;
}

static kn_status run_gelu(kn_cuda_ctx *c, const mock_args *u) {
    (void)c;
    kn_gelu(u->gelu.x, u->gelu.n);
    return KN_OK;
}

static kn_status run_add2(kn_cuda_ctx *c, const mock_args *u) {
    (void)c;
    kn_add2(u->add2.y, u->add2.a, u->add2.b, u->add2.n);
    return KN_OK;
}

static kn_status run_rope_table(kn_cuda_ctx *c, const mock_args *u) {
    const a_rope_table *a = &u->rope_table;
    (void)c;
    kn_rope_table(a->cos_t, a->sin_t, a->inv_freq, a->pos, a->T, a->R);
    return KN_OK;
}

static kn_status run_rope(kn_cuda_ctx *c, const mock_args *u) {
    const a_rope *a = &u->rope;
    (void)c;
    kn_rope(a->x, a->T, a->NH, a->D, a->row_stride, a->R, a->cos_t, a->sin_t);
    return KN_OK;
}

static kn_status run_attention(kn_cuda_ctx *c, const mock_args *u) {
    const a_attention *a = &u->attention;
    if ((size_t)kn_get_threads() * (size_t)a->cap * sizeof(float) <= c->arena_bytes)
        kn_attention(a->out, a->q, a->q_stride, a->k, a->v, a->T, a->NH, a->D, a->cap, a->n_vis, c->arena, a->probs);
    else kn_attention_ref(a->out, a->q, a->q_stride, a->k, a->v, a->T, a->NH, a->D, a->cap, a->n_vis, a->probs);
    return KN_OK;
}

static kn_status run_kv_append(kn_cuda_ctx *c, const mock_args *u) {
    const a_kv_append *a = &u->kv_append;
    (void)c;
    kn_kv_append_ref(a->k_cache, a->v_cache, a->k_src, a->v_src, a->src_stride, a->T, a->NH, a->D, a->cap, a->base,
                     a->n_vis);
    return KN_OK;
}

static kn_status run_kv_move(kn_cuda_ctx *c, const mock_args *u) {
    const a_kv_move *a = &u->kv_move;
    (void)c;
    kn_kv_move_ref(a->k_cache, a->v_cache, a->NH, a->D, a->cap, a->src, a->dst, a->rows);
    return KN_OK;
}

static kn_status run_fill_rows(kn_cuda_ctx *c, const mock_args *u) {
    const a_fill_rows *a = &u->fill_rows;
    (void)c;
    kn_fill_rows_ref(a->x, a->rows, a->stride, a->from, a->to, a->v);
    return KN_OK;
}

static kn_status run_head_mean(kn_cuda_ctx *c, const mock_args *u) {
    const a_head_mean *a = &u->head_mean;
    (void)c;
    kn_attn_head_mean_ref(a->out, a->probs, a->n_vis, a->T, a->NH, a->cap);
    return KN_OK;
}

static kn_status run_kv_compact(kn_cuda_ctx *c, const mock_args *u) {
    const a_kv_compact *a = &u->kv_compact;
    (void)c;
    kn_kv_compact_ref(a->k_cache, a->v_cache, a->score, a->pos, a->keep, a->n_keep, a->NH, a->D, a->cap);
    return KN_OK;
}

static kn_status run_key_norms(kn_cuda_ctx *c, const mock_args *u) {
    const a_key_norms *a = &u->key_norms;
    (void)c;
    kn_key_norms_ref(a->norms, a->k, a->n_held, a->NH, a->D, a->cap);
    return KN_OK;
}

static kn_status run_attn_accum(kn_cuda_ctx *c, const mock_args *u) {
    const a_attn_accum *a = &u->attn_accum;
    (void)c;
    kn_attn_accum_ref(a->acc, a->probs, a->n_vis, a->T, a->NH, a->cap, a->accumulate);
    return KN_OK;
}

static kn_status run_pool1d(kn_cuda_ctx *c, const mock_args *u) {
    const a_pool1d *a = &u->pool1d;
    (void)c;
    kn_pool1d_ref(a->out, a->in, a->rows, a->m, a->stride, a->len, a->kernel, a->use_max);
    return KN_OK;
}

static kn_status run_kivi_quant(kn_cuda_ctx *c, const mock_args *u) {
    const a_kivi_quant *a = &u->kivi_quant;
    (void)c;
    kn_kivi_quant_ref(a->codes, a->mn, a->scale, a->x, a->rows, a->cols, a->ld, a->group, a->bits, a->axis);
    return KN_OK;
}

static kn_status run_kivi_dequant(kn_cuda_ctx *c, const mock_args *u) {
    const a_kivi_dequant *a = &u->kivi_dequant;
    (void)c;
    kn_kivi_dequant_ref(a->out, a->ld_out, a->codes, a->mn, a->scale, a->rows, a->cols, a->group, a->bits, a->axis);
    return KN_OK;
}

static kn_status run_argmax(kn_cuda_ctx *c, const mock_args *u) {
    (void)c;
    kn_argmax_ref(u->argmax.idx, u->argmax.logits, u->argmax.M, u->argmax.V);
    return KN_OK;
}

static kn_status run_softmax(kn_cuda_ctx *c, const mock_args *u) {
    const a_softmax *a = &u->softmax;
    (void)c;
    kn_softmax_ref(a->probs, a->logits, a->M, a->V, a->temperature);
    return KN_OK;
}

static const struct {
    const char *name;
    kn_status (*run)(kn_cuda_ctx *c, const mock_args *u);
} mock_ops[OP_N] = {
    [OP_COPY_H2D] = {"copy_h2d", run_copy},
    [OP_COPY_D2H_ASYNC] = {"copy_d2h_async", run_copy},
    [OP_COPY_D2D] = {"copy_d2d", run_copy},
    [OP_MEM_SET] = {"mem_set", run_mem_set},
    [OP_MATMUL] = {"matmul", run_matmul},
    [OP_EMBED] = {"embed", run_embed},
    [OP_LAYERNORM] = {"layernorm", run_layernorm},
    [OP_GELU] = {"gelu", run_gelu},
    [OP_ADD2] = {"add2", run_add2},
    [OP_ROPE_TABLE] = {"rope_table", run_rope_table},
    [OP_ROPE] = {"rope", run_rope},
    [OP_ATTENTION] = {"attention", run_attention},
    [OP_KV_APPEND] = {"kv_append", run_kv_append},
    [OP_KV_COMPACT] = {"kv_compact", run_kv_compact},
    [OP_KV_MOVE] = {"kv_move", run_kv_move},
    [OP_FILL_ROWS] = {"fill_rows", run_fill_rows},
    [OP_HEAD_MEAN] = {"attn_head_mean", run_head_mean},
    [OP_KEY_NORMS] = {"key_norms", run_key_norms},
    [OP_ATTN_ACCUM] = {"attn_accum", run_attn_accum},
    [OP_POOL1D] = {"pool1d", run_pool1d},
    [OP_KIVI_QUANT] = {"kivi_quant", run_kivi_quant},
    [OP_KIVI_DEQUANT] = {"kivi_dequant", run_kivi_dequant},
    [OP_ARGMAX] = {"argmax", run_argmax},
    [OP_SOFTMAX] = {"softmax", run_softmax},
};

/* Every capturable call ends here: counted for fault injection, then run
 * now, or recorded when the context is capturing. */
static kn_status submit(kn_cuda_ctx *c, mock_op op, const mock_args *a) {
    MOCK_CALL(c, mock_ops[op].name);
    if (!c->capturing) return mock_ops[op].run(c, a);
    if (c->n_rec == MOCK_GRAPH_MAX) {
        if (!c->broken[0]) snprintf(c->broken, sizeof c->broken, "more than %d calls captured", MOCK_GRAPH_MAX);
        snprintf(c->err, sizeof c->err, "%s: mock: capture full (%d calls)", mock_ops[op].name, MOCK_GRAPH_MAX);
        return KN_ERR_CUDA;
    }
    c->rec[c->n_rec].op = op;
    c->rec[c->n_rec].a = *a;
    c->n_rec++;
    return KN_OK;
}

/* ------------------------------------------------------------ context, memory, sync */

/* KV_MOCK_DEVICES=n: how many devices the mock reports (default 1; 0
 * plays a machine whose driver sees none, for the worker's no-device path). */
static int mock_device_count(char *why, size_t n_why) {
    const char *e = getenv("KV_MOCK_DEVICES");
    int n = e && *e ? atoi(e) : 1;
    if (n_why) snprintf(why, n_why, n > 0 ? "mock device" : "mock: KV_MOCK_DEVICES=0, no device");
    return n > 0 ? n : 0;
}

static kn_status mock_ctx_init(kn_cuda_ctx **out, int device, size_t arena_bytes, char *err, size_t n_err) {
    *out = NULL;
    kn_cuda_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, n_err, "mock ctx_init: out of memory");
        return KN_ERR_CUDA;
    }
    if (device != 0) {
        snprintf(err, n_err, "device %d: this machine has 1 CUDA device(s) (mock)", device);
        free(c);
        return KN_ERR_INVAL;
    }
    if (fault(c, "ctx_init")) {
        snprintf(err, n_err, "%s", c->err);
        free(c);
        return KN_ERR_CUDA;
    }
    c->arena_bytes = arena_bytes;
    c->arena = malloc(arena_bytes ? arena_bytes : 1);
    if (!c->arena) {
        snprintf(err, n_err, "mock ctx_init: cannot allocate an arena of %zu bytes", arena_bytes);
        free(c);
        return KN_ERR_CUDA;
    }
    *out = c;
    return KN_OK;
}

static void mock_ctx_free(kn_cuda_ctx *c) {
    if (!c) return;
    free(c->rec);   /* a capture never ended */
    free(c->arena);
    free(c);
}

static const char *mock_errmsg(const kn_cuda_ctx *c) { return c->err; }
static const char *mock_device_name(const kn_cuda_ctx *c) { (void)c; return "mock (CPU ops on host memory)"; }
static void *mock_stream(kn_cuda_ctx *c) { (void)c; return NULL; }
static void mock_set_lp_split(kn_cuda_ctx *c, int terms) { (void)c; (void)terms; }
static size_t mock_alloc_count(const kn_cuda_ctx *c) { return c->n_alloc; }

static kn_status mock_sync(kn_cuda_ctx *c) {
    MOCK_CALL(c, "sync");
    if (c->capturing) return refused_in_capture(c, "cudaStreamSynchronize");
    return KN_OK;
}

/* malloc'd and poisoned, like cudaMalloc / cudaMallocHost: not zeroed, and
 * a read of unset data shows. */
static void *poisoned(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (p) memset(p, 0xA5, bytes);
    return p;
}

static kn_status mock_mem_alloc(kn_cuda_ctx *c, void **d_ptr, size_t bytes) {
    *d_ptr = NULL;
    MOCK_CALL(c, "mem_alloc");
    if (c->capturing) return refused_in_capture(c, "cudaMalloc");
    void *p = poisoned(bytes);
    if (!p) {
        snprintf(c->err, sizeof c->err, "mock mem_alloc: out of memory for %zu bytes", bytes);
        return KN_ERR_CUDA;
    }
    c->n_alloc++;
    *d_ptr = p;
    return KN_OK;
}

static void mock_mem_free(kn_cuda_ctx *c, void *p) {
    if (p && c->capturing) (void)refused_in_capture(c, "cudaFree");
    free(p);
}

/* Pinned memory: not counted by alloc_count (as on the device), but
 * remembered process-wide (any context may copy through it, as with
 * cudaMallocHost), so copies that must use it can be checked. */
static kn_status mock_host_alloc(kn_cuda_ctx *c, void **ptr, size_t bytes) {
    *ptr = NULL;
    MOCK_CALL(c, "host_alloc");
    if (c->capturing) return refused_in_capture(c, "cudaMallocHost");
    if (bytes == 0) return KN_OK;
    int slot = 0;
    while (slot < MOCK_PINNED_MAX && g_pinned[slot].p) slot++;
    void *p = slot < MOCK_PINNED_MAX ? poisoned(bytes) : NULL;
    if (!p) {
        snprintf(c->err, sizeof c->err, "mock host_alloc: no memory for %zu bytes (or %d blocks live)", bytes,
                 MOCK_PINNED_MAX);
        return KN_ERR_CUDA;
    }
    g_pinned[slot].p = p;
    g_pinned[slot].bytes = bytes;
    *ptr = p;
    return KN_OK;
}

static void mock_host_free(kn_cuda_ctx *c, void *p) {
    if (!p) return;
    if (c->capturing) (void)refused_in_capture(c, "cudaFreeHost");
    for (int i = 0; i < MOCK_PINNED_MAX; i++)
        if (g_pinned[i].p == p) g_pinned[i].p = NULL;
    free(p);
}

/* ------------------------------------------------------------ copies */

static kn_status mock_h2d(kn_cuda_ctx *c, void *d, const void *s, size_t n) {
    if (c->capturing && n && !is_pinned(s, n)) {
        MOCK_CALL(c, "copy_h2d");
        return refused_in_capture(c, "cudaMemcpyAsync (pageable source; a graph needs host_alloc memory)");
    }
    return submit(c, OP_COPY_H2D, &(mock_args){.copy = {d, s, n}});
}

static kn_status mock_d2h(kn_cuda_ctx *c, void *d, const void *s, size_t n) {
    MOCK_CALL(c, "copy_d2h");
    if (c->capturing) return refused_in_capture(c, "copy_d2h (cudaStreamSynchronize)");
    if (n) memcpy(d, s, n);
    return KN_OK;
}

static kn_status mock_d2h_async(kn_cuda_ctx *c, void *d, const void *s, size_t n) {
    if (n && !is_pinned(d, n)) {
        MOCK_CALL(c, "copy_d2h_async");
        snprintf(c->err, sizeof c->err, "copy_d2h_async: the destination is not host_alloc (pinned) memory (mock)");
        return c->capturing ? refused_in_capture(c, "cudaMemcpyAsync (pageable destination)") : KN_ERR_INVAL;
    }
    return submit(c, OP_COPY_D2H_ASYNC, &(mock_args){.copy = {d, s, n}});
}

static kn_status mock_d2d(kn_cuda_ctx *c, void *d, const void *s, size_t n) {
    return submit(c, OP_COPY_D2D, &(mock_args){.copy = {d, s, n}});
}

static kn_status mock_mem_set(kn_cuda_ctx *c, void *d, int byte, size_t n) {
    return submit(c, OP_MEM_SET, &(mock_args){.mem_set = {d, byte, n}});
}

/* ------------------------------------------------------------ graphs */

static kn_status mock_graph_begin(kn_cuda_ctx *c) {
    MOCK_CALL(c, "graph_begin");
    if (g_graph_fault == CUDA_MOCK_GRAPH_FAIL_BEGIN) {
        snprintf(c->err, sizeof c->err, "cudaStreamBeginCapture: cudaErrorNotSupported: operation not supported "
                                        "(mock: injected)");
        return KN_ERR_CUDA;
    }
    if (c->capturing) {
        snprintf(c->err, sizeof c->err, "cudaStreamBeginCapture: cudaErrorIllegalState: already capturing (mock)");
        return KN_ERR_CUDA;
    }
    c->rec = malloc(MOCK_GRAPH_MAX * sizeof *c->rec);
    if (!c->rec) {
        snprintf(c->err, sizeof c->err, "graph_begin: mock out of memory");
        return KN_ERR_CUDA;
    }
    c->n_rec = 0;
    c->broken[0] = 0;
    c->capturing = 1;
    return KN_OK;
}

static kn_status mock_graph_end(kn_cuda_ctx *c, kn_cuda_graph **out) {
    *out = NULL;
    if (!c->capturing) {
        snprintf(c->err, sizeof c->err, "cudaStreamEndCapture: cudaErrorIllegalState: not capturing (mock)");
        return KN_ERR_CUDA;
    }
    /* the capture ends whatever happens next, as cudaStreamEndCapture's does */
    mock_rec *rec = c->rec;
    int n = c->n_rec;
    c->rec = NULL;
    c->capturing = 0;
    if (fault(c, "graph_end")) {
        free(rec);
        return KN_ERR_CUDA;
    }
    if (c->broken[0]) {
        snprintf(c->err, sizeof c->err, "cudaStreamEndCapture: cudaErrorStreamCaptureInvalidated: %.150s (mock)",
                 c->broken);
        free(rec);
        return KN_ERR_CUDA;
    }
    int injected = g_graph_fault == CUDA_MOCK_GRAPH_FAIL_END;
    kn_cuda_graph *g = injected ? NULL : malloc(sizeof *g);
    if (!g) {
        snprintf(c->err, sizeof c->err, "cudaGraphInstantiate: cudaErrorNotSupported: operation not supported (mock: %s)",
                 injected ? "injected" : "no memory");
        free(rec);
        return KN_ERR_CUDA;
    }
    c->err[0] = 0;
    g->rec = rec;
    g->n = n;
    g_captures++;
    *out = g;
    return KN_OK;
}

static kn_status mock_graph_launch(kn_cuda_ctx *c, kn_cuda_graph *g) {
    MOCK_CALL(c, "graph_launch");
    if (!g) {
        snprintf(c->err, sizeof c->err, "graph_launch: no graph");
        return KN_ERR_INVAL;
    }
    if (c->capturing) return refused_in_capture(c, "cudaGraphLaunch (the mock does not nest graphs)");
    g_launches++;
    for (int i = 0; i < g->n; i++) {
        kn_status st = mock_ops[g->rec[i].op].run(c, &g->rec[i].a);
        if (st != KN_OK) return st;
    }
    return KN_OK;
}

static void mock_graph_free(kn_cuda_ctx *c, kn_cuda_graph *g) {
    (void)c;
    if (!g) return;
    free(g->rec);
    free(g);
}

/* ------------------------------------------------------------ the ops: pack the arguments, submit */

static kn_status mock_matmul(kn_cuda_ctx *c, float *y, const float *x, const void *w, kn_wtype wt, const float *b,
                             int M, int K, int N) {
    if (M <= 0 || K <= 0 || N <= 0) {
        snprintf(c->err, sizeof c->err, "matmul: bad shape M=%d K=%d N=%d", M, K, N);
        return KN_ERR_INVAL;
    }
    return submit(c, OP_MATMUL, &(mock_args){.matmul = {y, x, w, wt, b, M, K, N}});
}

static kn_status mock_embed(kn_cuda_ctx *c, float *out, const int32_t *tok, int T, const void *table, kn_wtype wt,
                            int V, int C) {
    return submit(c, OP_EMBED, &(mock_args){.embed = {out, tok, T, table, wt, V, C}});
}

static kn_status mock_layernorm(kn_cuda_ctx *c, float *out, const float *x, const float *w, const float *b, int M,
                                int C, float eps) {
    return submit(c, OP_LAYERNORM, &(mock_args){.layernorm = {out, x, w, b, M, C, eps}});
}

static kn_status mock_gelu(kn_cuda_ctx *c, float *x, size_t n) {
    return submit(c, OP_GELU, &(mock_args){.gelu = {x, n}});
}

static kn_status mock_add2(kn_cuda_ctx *c, float *y, const float *a, const float *b, size_t n) {
    return submit(c, OP_ADD2, &(mock_args){.add2 = {y, a, b, n}});
}

static kn_status mock_rope_table(kn_cuda_ctx *c, float *cos_t, float *sin_t, const float *inv_freq,
                                 const int32_t *pos, int T, int R) {
    return submit(c, OP_ROPE_TABLE, &(mock_args){.rope_table = {cos_t, sin_t, inv_freq, pos, T, R}});
}

static kn_status mock_rope(kn_cuda_ctx *c, float *x, int T, int NH, int D, size_t row_stride, int R,
                           const float *cos_t, const float *sin_t) {
    return submit(c, OP_ROPE, &(mock_args){.rope = {x, T, NH, D, row_stride, R, cos_t, sin_t}});
}

static kn_status mock_attention(kn_cuda_ctx *c, float *out, const float *q, size_t q_stride, const float *k,
                                const float *v, int T, int NH, int D, int cap, const int32_t *n_vis, float *probs) {
    if (D > 256) {   /* the device kernel's limit (attention.cu ATT_DMAX): refuse as it does */
        snprintf(c->err, sizeof c->err, "attention: head_dim %d > 256 (mock)", D);
        return KN_ERR_UNSUPPORTED;
    }
    return submit(c, OP_ATTENTION, &(mock_args){.attention = {out, q, q_stride, k, v, T, NH, D, cap, n_vis, probs}});
}

static kn_status mock_kv_append(kn_cuda_ctx *c, float *k_cache, float *v_cache, const float *k_src,
                                const float *v_src, size_t src_stride, int T, int NH, int D, int cap,
                                const int32_t *base, int32_t *n_vis) {
    return submit(c, OP_KV_APPEND, &(mock_args){.kv_append = {k_cache, v_cache, k_src, v_src, src_stride, T, NH, D,
                                                              cap, base, n_vis}});
}

static kn_status mock_kv_move(kn_cuda_ctx *c, float *k_cache, float *v_cache, int NH, int D, int cap, int src,
                             int dst, int rows) {
    if (NH <= 0 || D <= 0 || cap <= 0 || rows < 0 || src < 0 || dst < 0 || src + rows > cap || dst + rows > cap) {
        snprintf(c->err, sizeof c->err, "kv_move: bad range (mock) cap=%d src=%d dst=%d rows=%d", cap, src, dst, rows);
        return KN_ERR_INVAL;
    }
    return submit(c, OP_KV_MOVE, &(mock_args){.kv_move = {k_cache, v_cache, NH, D, cap, src, dst, rows}});
}

static kn_status mock_fill_rows(kn_cuda_ctx *c, float *x, int rows, size_t stride, int from, int to, float v) {
    if (rows < 0 || rows > 65535 || from < 0 || (size_t)to > stride) {
        snprintf(c->err, sizeof c->err, "fill_rows: bad range (mock) rows=%d stride=%zu from=%d to=%d", rows, stride,
                 from, to);
        return KN_ERR_INVAL;
    }
    return submit(c, OP_FILL_ROWS, &(mock_args){.fill_rows = {x, rows, stride, from, to, v}});
}

static kn_status mock_head_mean(kn_cuda_ctx *c, float *out, const float *probs, const int32_t *n_vis, int T, int NH,
                                int cap) {
    if (T <= 0 || NH <= 0 || cap <= 0) {
        snprintf(c->err, sizeof c->err, "attn_head_mean: bad shape (mock) T=%d NH=%d cap=%d", T, NH, cap);
        return KN_ERR_INVAL;
    }
    return submit(c, OP_HEAD_MEAN, &(mock_args){.head_mean = {out, probs, n_vis, T, NH, cap}});
}

static kn_status mock_kv_compact(kn_cuda_ctx *c, float *k_cache, float *v_cache, float *score, int32_t *pos,
                                 const int32_t *keep, const int32_t *n_keep, int NH, int D, int cap) {
    return submit(c, OP_KV_COMPACT,
                  &(mock_args){.kv_compact = {k_cache, v_cache, score, pos, keep, n_keep, NH, D, cap}});
}

static kn_status mock_key_norms(kn_cuda_ctx *c, float *norms, const float *k, const int32_t *n_held, int NH, int D,
                                int cap) {
    return submit(c, OP_KEY_NORMS, &(mock_args){.key_norms = {norms, k, n_held, NH, D, cap}});
}

static kn_status mock_attn_accum(kn_cuda_ctx *c, float *acc, const float *probs, const int32_t *n_vis, int T,
                                 int NH, int cap, int accumulate) {
    return submit(c, OP_ATTN_ACCUM, &(mock_args){.attn_accum = {acc, probs, n_vis, T, NH, cap, accumulate}});
}

static kn_status mock_pool1d(kn_cuda_ctx *c, float *out, const float *in, int rows, int m, size_t stride,
                             const int32_t *len, int kernel, int use_max) {
    return submit(c, OP_POOL1D, &(mock_args){.pool1d = {out, in, rows, m, stride, len, kernel, use_max}});
}

static kn_status mock_kivi_quant(kn_cuda_ctx *c, uint8_t *codes, float *mn, float *scale, const float *x, int rows,
                                 int cols, size_t ld, int group, int bits, kn_kivi_axis axis) {
    return submit(c, OP_KIVI_QUANT,
                  &(mock_args){.kivi_quant = {codes, mn, scale, x, rows, cols, ld, group, bits, axis}});
}

static kn_status mock_kivi_dequant(kn_cuda_ctx *c, float *out, size_t ld_out, const uint8_t *codes,
                                   const float *mn, const float *scale, int rows, int cols, int group, int bits,
                                   kn_kivi_axis axis) {
    return submit(c, OP_KIVI_DEQUANT,
                  &(mock_args){.kivi_dequant = {out, ld_out, codes, mn, scale, rows, cols, group, bits, axis}});
}

static kn_status mock_argmax(kn_cuda_ctx *c, int32_t *idx, const float *logits, int M, int V) {
    return submit(c, OP_ARGMAX, &(mock_args){.argmax = {idx, logits, M, V}});
}

static kn_status mock_softmax(kn_cuda_ctx *c, float *probs, const float *logits, int M, int V, float temperature) {
    return submit(c, OP_SOFTMAX, &(mock_args){.softmax = {probs, logits, M, V, temperature}});
}

const kn_cuda_api *cuda_mock_api(void) {
    static const kn_cuda_api api = {
        .abi = KN_CUDA_ABI,
        .size = sizeof(kn_cuda_api),
        .build_info = "mock: kernels/cpu ops on host memory (tests only)",
        .device_count = mock_device_count,
        .ctx_init = mock_ctx_init,
        .ctx_free = mock_ctx_free,
        .errmsg = mock_errmsg,
        .device_name = mock_device_name,
        .stream = mock_stream,
        .sync = mock_sync,
        .set_lp_split = mock_set_lp_split,
        .alloc_count = mock_alloc_count,
        .mem_alloc = mock_mem_alloc,
        .mem_free = mock_mem_free,
        .host_alloc = mock_host_alloc,
        .host_free = mock_host_free,
        .copy_h2d = mock_h2d,
        .copy_d2h = mock_d2h,
        .copy_d2h_async = mock_d2h_async,
        .copy_d2d = mock_d2d,
        .mem_set = mock_mem_set,
        .graph_begin = mock_graph_begin,
        .graph_end = mock_graph_end,
        .graph_launch = mock_graph_launch,
        .graph_free = mock_graph_free,
        .matmul = mock_matmul,
        .embed = mock_embed,
        .layernorm = mock_layernorm,
        .gelu = mock_gelu,
        .add2 = mock_add2,
        .rope_table = mock_rope_table,
        .rope = mock_rope,
        .attention = mock_attention,
        .kv_append = mock_kv_append,
        .kv_move = mock_kv_move,
        .fill_rows = mock_fill_rows,
        .attn_head_mean = mock_head_mean,
        .kv_compact = mock_kv_compact,
        .key_norms = mock_key_norms,
        .attn_accum = mock_attn_accum,
        .pool1d = mock_pool1d,
        .kivi_quant = mock_kivi_quant,
        .kivi_dequant = mock_kivi_dequant,
        .argmax = mock_argmax,
        .softmax = mock_softmax,
    };
    return &api;
}
