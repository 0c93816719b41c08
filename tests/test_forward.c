/* test_forward.c — the CPU engine against HF transformers' own numbers.
 *
 * For every fixture written by ops/golden/make_goldens.py (random-init
 * GPTNeoXForCausalLM models covering head_dim 32/64/80/256, rotary 8/16/20/64,
 * fp32/fp16/bf16 files, sharded files, the three config spellings, the
 * sequential-residual variant and the full 50304 vocab):
 *   - chunked prefill: every stage's residual stream (embeddings, each layer,
 *     final LayerNorm) and the logits match HF, a mismatch naming the stage;
 *   - token-by-token decode through the KV cache: logits match at every step;
 *   - greedy decoding from the prompt reproduces HF's 64-token continuation;
 *   - perplexity over the sequence within 1e-5 relative of HF's;
 * plus engine contracts: no allocation per decoded token, capacity and bad
 * token errors that leave the state unchanged. */
#include <CUnit/Basic.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "kn.h"
#include "model.h"
#include "sampler.h"
#include "testutil.h"

#define LOGIT_TOL 1e-4

typedef struct golden {
    char name[256];
    int L, C, V, N, n_prompt, n_rows, is_16bit;
    int32_t *ids, *greedy, *rows, *argmax;
    double ppl, *lse;
    float *logits;   /* (n_rows, V) */
    float *hidden;   /* (L+2, N, C) */
} golden;

static char g_names[16][256];
static int g_n_names;

static int32_t *int_array(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    int32_t *v = malloc((size_t)(*n ? *n : 1) * sizeof(int32_t));
    for (int i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    return v;
}

static int golden_load(golden *g, const char *name) {
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", name);
    char path[512];
    snprintf(path, sizeof path, "golden/%s/golden.json", name);
    json_error_t je;
    json_t *j = json_load_file(tu_data(path), 0, &je);
    if (!j) return -1;
    int n;
    if (!json_is_string(json_object_get(j, "dtype")) || !json_is_array(json_object_get(j, "lse"))) {
        printf("\n    %s: not a make_goldens.py fixture (no dtype/lse)\n", path);
        json_decref(j);
        return -1;
    }
    g->L = (int)json_integer_value(json_object_get(j, "n_layer"));
    g->C = (int)json_integer_value(json_object_get(j, "n_embd"));
    g->V = (int)json_integer_value(json_object_get(j, "n_vocab"));
    g->n_prompt = (int)json_integer_value(json_object_get(j, "n_prompt"));
    g->ppl = json_real_value(json_object_get(j, "ppl"));
    g->is_16bit = strcmp(json_string_value(json_object_get(j, "dtype")), "f32") != 0;
    g->ids = int_array(json_object_get(j, "ids"), &g->N);
    g->greedy = int_array(json_object_get(j, "greedy"), &n);
    g->rows = int_array(json_object_get(j, "logit_rows"), &g->n_rows);
    g->argmax = int_array(json_object_get(j, "argmax"), &n);
    json_t *lse = json_object_get(j, "lse");
    g->lse = malloc((size_t)g->N * sizeof(double));
    for (int i = 0; i < g->N; i++) g->lse[i] = json_real_value(json_array_get(lse, (size_t)i));
    json_decref(j);
    size_t len;
    snprintf(path, sizeof path, "golden/%s/logits.f32", name);
    g->logits = (float *)tu_read_file(tu_data(path), &len);
    if (!g->logits || len != (size_t)g->n_rows * g->V * sizeof(float)) return -1;
    snprintf(path, sizeof path, "golden/%s/hidden.f32", name);
    g->hidden = (float *)tu_read_file(tu_data(path), &len);
    if (!g->hidden || len != (size_t)(g->L + 2) * g->N * g->C * sizeof(float)) return -1;
    return 0;
}

static void golden_free(golden *g) {
    free(g->ids); free(g->greedy); free(g->rows); free(g->argmax); free(g->lse);
    free(g->logits); free(g->hidden);
}

/* 0: everything converted to fp32; 1: 16-bit matrices kept 16-bit. */
static int g_keep16;

static eng_model *model_load(const char *name) {
    char path[512], err[1024];
    snprintf(path, sizeof path, "models/%s", name);
    eng_model *m = NULL;
    eng_load_opts o = {.keep_16bit = g_keep16};
    if (eng_model_load_ex(&m, tu_data(path), &o, err, sizeof err) != ENG_OK) {
        printf("\n    load %s: %s\n", name, err);
        return NULL;
    }
    return m;
}

/* Trace sink: copies each stage's residual stream into (L+2, N, C). */
typedef struct trace_buf { float *h; int N, C; } trace_buf;
static void trace_sink(void *ud, int stage, const float *x, int T, int C, int32_t pos0) {
    trace_buf *tb = ud;
    memcpy(tb->h + ((size_t)stage * tb->N + pos0) * C, x, (size_t)T * C * sizeof(float));
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= mx)) mx = d;   /* NaN propagates as a failure */
    }
    return mx;
}

/* Compare our (N, V) logits with the golden's stored rows, argmax and lse. */
static int check_logits(const golden *g, const float *lg, const char *what) {
    int ok = 1;
    double worst = 0;
    for (int r = 0; r < g->n_rows; r++) {
        double d = max_abs_diff(lg + (size_t)g->rows[r] * g->V, g->logits + (size_t)r * g->V, (size_t)g->V);
        if (d > worst) worst = d;
    }
    for (int t = 0; t < g->N; t++) {
        const float *row = lg + (size_t)t * g->V;
        double mx = row[eng_argmax(row, g->V)], s = 0;
        for (int i = 0; i < g->V; i++) s += exp(row[i] - mx);
        if (fabs(log(s) + mx - g->lse[t]) > LOGIT_TOL) { ok = 0; printf("\n    %s %s: lse differs at %d\n", g->name, what, t); break; }
        if (eng_argmax(row, g->V) != g->argmax[t]) { ok = 0; printf("\n    %s %s: argmax differs at %d\n", g->name, what, t); break; }
    }
    printf("\n    %-16s %-8s %s max|dlogit| = %.2e", g->name, what, g_keep16 ? "w16" : "w32", worst);
    return ok && worst <= LOGIT_TOL;
}

static void test_prefill(void) {
    for (int k = 0; k < g_n_names; k++) {
        golden g;
        CU_ASSERT_FATAL(golden_load(&g, g_names[k]) == 0);
        eng_model *m = model_load(g.name);
        CU_ASSERT_FATAL(m != NULL);
        CU_ASSERT_EQUAL(m->cfg.n_layer, g.L);
        CU_ASSERT_EQUAL(m->cfg.n_vocab, g.V);
        CU_ASSERT_EQUAL(m->w.wtype != KN_W_F32, g_keep16 && g.is_16bit);   /* the mode under test is real */
        eng_state *s = NULL;
        char err[256];
        CU_ASSERT_FATAL(eng_state_init(&s, m, g.N, 13, err, sizeof err) == ENG_OK);   /* 13: uneven chunks */
        trace_buf tb = {calloc((size_t)(g.L + 2) * g.N * g.C, sizeof(float)), g.N, g.C};
        s->trace = trace_sink;
        s->trace_ud = &tb;
        float *lg = malloc((size_t)g.N * g.V * sizeof(float));
        CU_ASSERT_FATAL(eng_forward(s, g.ids, g.N, lg, 1) == ENG_OK);
        for (int st = 0; st < g.L + 2; st++) {
            size_t off = (size_t)st * g.N * g.C;
            double scale = 0, d = max_abs_diff(tb.h + off, g.hidden + off, (size_t)g.N * g.C);
            for (size_t i = 0; i < (size_t)g.N * g.C; i++) scale = fmax(scale, fabs(g.hidden[off + i]));
            if (!(d <= 1e-5 * (1 + scale))) {
                printf("\n    %s: residual stream differs first at stage %d (%s): max|d| = %.3g (scale %.3g)",
                       g.name, st, st == 0 ? "embeddings" : st == g.L + 1 ? "final LayerNorm" : "layer output", d, scale);
                CU_FAIL("hidden state mismatch");
                break;
            }
        }
        CU_ASSERT(check_logits(&g, lg, "prefill"));
        free(tb.h); free(lg);
        eng_state_free(s);
        eng_model_free(m);
        golden_free(&g);
    }
}

static void test_decode(void) {
    for (int k = 0; k < g_n_names; k++) {
        golden g;
        CU_ASSERT_FATAL(golden_load(&g, g_names[k]) == 0);
        eng_model *m = model_load(g.name);
        CU_ASSERT_FATAL(m != NULL);
        eng_state *s = NULL;
        char err[256];
        CU_ASSERT_FATAL(eng_state_init(&s, m, g.N, 64, err, sizeof err) == ENG_OK);
        float *lg = malloc((size_t)g.N * g.V * sizeof(float));
        unsigned long allocs = 0;
        for (int t = 0; t < g.N; t++) {
            if (t == 8) allocs = eng_alloc_count();
            CU_ASSERT_FATAL(eng_forward(s, g.ids + t, 1, lg + (size_t)t * g.V, 0) == ENG_OK);
        }
        CU_ASSERT_EQUAL(eng_alloc_count(), allocs);   /* no allocation per decoded token */
        CU_ASSERT(check_logits(&g, lg, "decode"));
        /* PPL over the sequence, as HF's shifted cross-entropy */
        double nll = 0;
        for (int t = 0; t + 1 < g.N; t++) {
            const float *row = lg + (size_t)t * g.V;
            double mx = row[eng_argmax(row, g.V)], s2 = 0;
            for (int i = 0; i < g.V; i++) s2 += exp((double)row[i] - mx);
            nll += log(s2) + mx - row[g.ids[t + 1]];
        }
        double ppl = exp(nll / (g.N - 1));
        printf("  ppl %.6f vs HF %.6f", ppl, g.ppl);
        CU_ASSERT(fabs(ppl - g.ppl) <= 1e-5 * g.ppl);
        free(lg);
        eng_state_free(s);
        eng_model_free(m);
        golden_free(&g);
    }
}

static void test_greedy(void) {
    for (int k = 0; k < g_n_names; k++) {
        golden g;
        CU_ASSERT_FATAL(golden_load(&g, g_names[k]) == 0);
        eng_model *m = model_load(g.name);
        CU_ASSERT_FATAL(m != NULL);
        eng_state *s = NULL;
        char err[256];
        CU_ASSERT_FATAL(eng_state_init(&s, m, g.N, 64, err, sizeof err) == ENG_OK);
        CU_ASSERT_FATAL(eng_forward(s, g.ids, g.n_prompt, s->logits, 0) == ENG_OK);
        int same = 0;
        for (int i = 0; i < g.N - g.n_prompt; i++) {
            int32_t next = eng_argmax(s->logits, g.V);
            if (next != g.greedy[i]) break;
            same++;
            if (i + 1 < g.N - g.n_prompt) CU_ASSERT_FATAL(eng_forward(s, &next, 1, s->logits, 0) == ENG_OK);
        }
        printf("\n    %-16s greedy: %d/%d tokens equal HF", g.name, same, g.N - g.n_prompt);
        CU_ASSERT_EQUAL(same, g.N - g.n_prompt);
        eng_state_free(s);
        eng_model_free(m);
        golden_free(&g);
    }
}

static void test_errors(void) {
    eng_model *m = model_load("m32-f16");
    CU_ASSERT_FATAL(m != NULL);
    eng_state *s = NULL;
    char err[256];
    CU_ASSERT_FATAL(eng_state_init(&s, m, 8, 4, err, sizeof err) == ENG_OK);
    int32_t toks[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    int32_t bad = m->cfg.n_vocab;
    CU_ASSERT_EQUAL(eng_forward(s, &bad, 1, NULL, 0), ENG_ERR_INVAL);
    CU_ASSERT(strstr(eng_state_errmsg(s), "outside vocab") != NULL);
    CU_ASSERT_EQUAL(s->n_past, 0);
    CU_ASSERT_EQUAL(eng_forward(s, toks, 9, NULL, 0), ENG_ERR_CAPACITY);
    CU_ASSERT_EQUAL(s->n_past, 0);
    CU_ASSERT_EQUAL(eng_forward(s, toks, 8, NULL, 0), ENG_OK);
    CU_ASSERT_EQUAL(eng_forward(s, toks, 1, NULL, 0), ENG_ERR_CAPACITY);
    CU_ASSERT_EQUAL(s->n_past, 8);
    eng_state_reset(s);
    CU_ASSERT_EQUAL(eng_forward(s, toks, 8, NULL, 0), ENG_OK);
    CU_ASSERT_EQUAL(eng_state_rollback(s, 9), ENG_ERR_INVAL);
    CU_ASSERT_EQUAL(s->n_past, 8);
    /* rollback then re-forward gives exactly the logits of the first pass */
    float *a = malloc((size_t)m->cfg.n_vocab * sizeof(float)), *b = malloc((size_t)m->cfg.n_vocab * sizeof(float));
    eng_state_reset(s);
    CU_ASSERT_EQUAL(eng_forward(s, toks, 5, a, 0), ENG_OK);
    CU_ASSERT_EQUAL(eng_forward(s, toks + 5, 3, NULL, 0), ENG_OK);
    CU_ASSERT_EQUAL(eng_state_rollback(s, 4), ENG_OK);
    CU_ASSERT_EQUAL(s->n_past, 4);
    CU_ASSERT_EQUAL(eng_forward(s, toks + 4, 1, b, 0), ENG_OK);
    CU_ASSERT(memcmp(a, b, (size_t)m->cfg.n_vocab * sizeof(float)) == 0);
    free(a);
    free(b);
    /* every allocation of state init can fail cleanly */
    for (long k = 0;; k++) {
        eng_state *t = NULL;
        eng_alloc_fail_after(k);
        eng_status st = eng_state_init(&t, m, 16, 4, err, sizeof err);
        eng_alloc_fail_after(-1);
        if (st == ENG_OK) { eng_state_free(t); break; }
        CU_ASSERT_EQUAL(st, ENG_ERR_NOMEM);
        CU_ASSERT_PTR_NULL(t);
    }
    eng_state_free(s);
    eng_model_free(m);
}

static int keep16_on(void) { g_keep16 = 1; return 0; }
static int keep16_off(void) { g_keep16 = 0; return 0; }

static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }

int main(void) {
    DIR *d = opendir(tu_data("golden"));
    struct dirent *e;
    while (d && (e = readdir(d)) && g_n_names < 16)
        if (e->d_name[0] != '.') snprintf(g_names[g_n_names++], sizeof g_names[0], "%s", e->d_name);
    if (d) closedir(d);
    qsort(g_names, (size_t)g_n_names, sizeof g_names[0], cmp_name);
    kn_set_threads(2);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("forward_golden", NULL, NULL);
    CU_add_test(s, "chunked prefill: hidden states + logits vs HF", test_prefill);
    CU_add_test(s, "token-by-token decode: logits + PPL vs HF", test_decode);
    CU_add_test(s, "greedy 64 tokens == HF generate", test_greedy);
    CU_pSuite s16 = CU_add_suite("forward_golden_16bit_weights", keep16_on, keep16_off);
    CU_add_test(s16, "chunked prefill: hidden states + logits vs HF", test_prefill);
    CU_add_test(s16, "token-by-token decode: logits + PPL vs HF", test_decode);
    CU_add_test(s16, "greedy 64 tokens == HF generate", test_greedy);
    CU_pSuite c = CU_add_suite("forward_contracts", NULL, NULL);
    CU_add_test(c, "bad token, capacity, OOM in init", test_errors);
    if (g_n_names < 7) {
        printf("expected 7 golden fixtures under %s, found %d\n", tu_data("golden"), g_n_names);
        return 1;
    }
    return tu_run();
}
