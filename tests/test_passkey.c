/* test_passkey.c — the `passkey` retrieval task (engine/task_passkey.c):
 *   - the prompt builder: exactly `context` tokens; the needle's tokens sit
 *     at needle_pos, within one haystack unit of preamble + depth x haystack,
 *     for both fillers (the repeated sentences and the slice's text);
 *   - keys: `digits` digits, first never 0, a function of (seed, trial) only;
 *   - the scorer: exact match of the first digit run, per-digit fraction;
 *     a "model" that emits the answer tokens scores 1 (a fake generator: no
 *     checkpoint here knows a pass key);
 *   - the harness on a golden model: accuracy in [0, 1], per-trial detail,
 *     reproducible across runs, timings and policy accounting filled (a
 *     bounded policy evicts, a prefill-time one compresses the prompt);
 *   - bad params are errors naming the field. */
#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "task_impl.h"
#include "testutil.h"

static const char *g_tok_path;
static eng_tokenizer *g_tok;
static eng_task_ctx *g_ctx;
static char g_text[128];
static eng_ids g_slice;

static const char k_prose[] =
    "The old lighthouse stood at the edge of the cliff. Every night its lamp turned slowly over the water! "
    "Sailors far out at sea counted the flashes to know where they were. Did the keeper ever sleep? Nobody in "
    "the village could say for sure, and the keeper never told.\nIn winter the storms came from the north, "
    "and the waves climbed the rocks until the spray reached the gallery. The keeper wrote every storm into a "
    "thick book with a green cover. Years later the book was found in a drawer, its last page blank.\n";

static int suite_init(void) {
    g_tok_path = tu_tokenizer_path("test_passkey");
    char err[1024];
    if (eng_task_ctx_init(&g_ctx, "auto", g_tok_path, err, sizeof err) != ENG_OK) return 1;
    if (!g_tok_path) return 0;
    snprintf(g_text, sizeof g_text, "/tmp/kv_test_passkey_%d.txt", (int)getpid());
    FILE *f = fopen(g_text, "w");
    if (!f) return 1;
    fputs(k_prose, f);
    fclose(f);
    if (eng_tokenizer_load(&g_tok, g_tok_path, err, sizeof err) != ENG_OK) return 1;
    return eng_tokenizer_encode(g_tok, k_prose, strlen(k_prose), &g_slice) != ENG_OK;
}

static int suite_clean(void) {
    if (g_text[0]) unlink(g_text);
    eng_ids_free(&g_slice);
    eng_tokenizer_free(g_tok);
    eng_task_ctx_free(g_ctx);
    return 0;
}

static task_passkey_opts opts(int64_t context, double depth, int digits, int filler_data) {
    task_passkey_opts o = {.context = context, .depth = depth, .digits = digits, .trials = 1,
                           .filler_data = filler_data};
    return o;
}

/* Longest unit of the job's haystack, in tokens. */
static int max_unit(const task_passkey_job *j) {
    int most = 0, prev = 0;
    for (int u = 0; u < j->n_units; u++) {
        if (j->ends[u] - prev > most) most = j->ends[u] - prev;
        prev = j->ends[u];
    }
    return most;
}

static void check_builder(int filler_data) {
    static const double depths[] = {0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0};
    static const int64_t contexts[] = {120, 500, 2000};
    char err[512];
    for (int ci = 0; ci < 3; ci++)
        for (int di = 0; di < 7; di++) {
            task_passkey_opts o = opts(contexts[ci], depths[di], 7, filler_data);
            task_passkey_job j;
            task_passkey_trial tr;
            CU_ASSERT_FATAL(task_passkey_job_init(&j, g_tok, g_slice.v, g_slice.n, &o, err, sizeof err) == ENG_OK);
            CU_ASSERT_FATAL(task_passkey_trial_make(&j, g_tok, 42, di, &tr, err, sizeof err) == ENG_OK);
            CU_ASSERT_EQUAL(tr.prompt.n, (size_t)contexts[ci]);
            /* the needle's tokens are at needle_pos */
            char needle[128];
            snprintf(needle, sizeof needle, " The pass key is %s. Remember it. %s is the pass key.", tr.key, tr.key);
            eng_ids nid = {0};
            CU_ASSERT_FATAL(eng_tokenizer_encode(g_tok, needle, strlen(needle), &nid) == ENG_OK);
            CU_ASSERT_FATAL(tr.needle_pos + (int64_t)nid.n <= (int64_t)tr.prompt.n);
            CU_ASSERT(memcmp(tr.prompt.v + tr.needle_pos, nid.v, nid.n * sizeof(int32_t)) == 0);
            /* ... within one unit of the depth point */
            double want = (double)j.pre.n + depths[di] * (double)tr.hay_tokens;
            int tol = max_unit(&j);
            if (fabs((double)tr.needle_pos - want) > tol)
                printf("\n    filler %d ctx %lld depth %g: needle at %lld, want %.1f +- %d\n", filler_data,
                       (long long)contexts[ci], depths[di], (long long)tr.needle_pos, want, tol);
            CU_ASSERT(fabs((double)tr.needle_pos - want) <= tol);
            /* preamble first, question last */
            CU_ASSERT(memcmp(tr.prompt.v, j.pre.v, j.pre.n * sizeof(int32_t)) == 0);
            CU_ASSERT(memcmp(tr.prompt.v + tr.prompt.n - j.question.n, j.question.v,
                             j.question.n * sizeof(int32_t)) == 0);
            /* the joined pieces read as the intended text */
            eng_buf txt = {0};
            CU_ASSERT_FATAL(eng_tokenizer_decode(g_tok, tr.prompt.v, tr.prompt.n, &txt) == ENG_OK);
            CU_ASSERT(strstr(txt.v, needle) != NULL);
            CU_ASSERT(strstr(txt.v, "A pass key is hidden") == txt.v);
            if (!filler_data && ci == 1) CU_ASSERT(strstr(txt.v, " The sky is blue. The sun is yellow.") != NULL);
            if (filler_data && ci == 1) CU_ASSERT(strstr(txt.v, "The old lighthouse stood") != NULL);
            eng_buf_free(&txt);
            eng_ids_free(&nid);
            task_passkey_trial_free(&tr);
            task_passkey_job_free(&j);
        }
}

static void test_builder_repeat(void) {
    if (!g_tok) return;
    check_builder(0);
}

static void test_builder_data(void) {
    if (!g_tok) return;
    check_builder(1);
    /* units of the prose end at sentence ends (and newlines) */
    char err[512];
    task_passkey_opts o = opts(300, 0.5, 5, 1);
    task_passkey_job j;
    CU_ASSERT_FATAL(task_passkey_job_init(&j, g_tok, g_slice.v, g_slice.n, &o, err, sizeof err) == ENG_OK);
    CU_ASSERT(j.n_units >= 8 && j.n_units <= 12);
    CU_ASSERT(max_unit(&j) <= 48);
    task_passkey_job_free(&j);
}

static void test_keys_deterministic(void) {
    if (!g_tok) return;
    char err[512];
    task_passkey_opts o = opts(200, 0.5, 9, 0);
    task_passkey_job j;
    CU_ASSERT_FATAL(task_passkey_job_init(&j, g_tok, g_slice.v, g_slice.n, &o, err, sizeof err) == ENG_OK);
    char keys[40][24];
    int distinct = 0;
    for (int i = 0; i < 40; i++) {
        task_passkey_trial a, b, c;
        CU_ASSERT_FATAL(task_passkey_trial_make(&j, g_tok, 7, i, &a, err, sizeof err) == ENG_OK);
        CU_ASSERT_FATAL(task_passkey_trial_make(&j, g_tok, 7, i, &b, err, sizeof err) == ENG_OK);
        CU_ASSERT_FATAL(task_passkey_trial_make(&j, g_tok, 8, i, &c, err, sizeof err) == ENG_OK);
        CU_ASSERT_STRING_EQUAL(a.key, b.key);
        CU_ASSERT(a.prompt.n == b.prompt.n && !memcmp(a.prompt.v, b.prompt.v, a.prompt.n * sizeof(int32_t)));
        CU_ASSERT(strcmp(a.key, c.key) != 0);
        CU_ASSERT(strlen(a.key) == 9 && a.key[0] != '0' && strspn(a.key, "0123456789") == 9);
        strcpy(keys[i], a.key);
        int seen = 0;
        for (int k = 0; k < i; k++) seen |= !strcmp(keys[k], a.key);
        distinct += !seen;
        task_passkey_trial_free(&a);
        task_passkey_trial_free(&b);
        task_passkey_trial_free(&c);
    }
    CU_ASSERT_EQUAL(distinct, 40);
    task_passkey_job_free(&j);
}

static void test_scorer(void) {
    char got[24];
    double f;
    CU_ASSERT(task_passkey_score("12345", " 12345. Remember", 16, got, sizeof got, &f) == 1 && f == 1.0);
    CU_ASSERT_STRING_EQUAL(got, "12345");
    CU_ASSERT(task_passkey_score("12345", " 12945", 6, got, sizeof got, &f) == 0 && fabs(f - 0.8) < 1e-12);
    CU_ASSERT(task_passkey_score("12345", " 123456", 7, got, sizeof got, &f) == 0 && f == 1.0);
    CU_ASSERT(task_passkey_score("12345", " 123", 4, got, sizeof got, &f) == 0 && fabs(f - 0.6) < 1e-12);
    CU_ASSERT(task_passkey_score("12345", " the key", 8, got, sizeof got, &f) == 0 && f == 0.0 && !got[0]);
    CU_ASSERT(task_passkey_score("12345", " is 12345", 9, got, sizeof got, &f) == 1);
    /* the run is cut at n_got - 1 without reading past len */
    CU_ASSERT(task_passkey_score("1", "99999999999999999999999999999999999", 35, got, 8, &f) == 0);
    CU_ASSERT_STRING_EQUAL(got, "9999999");
    if (!g_tok) return;
    /* a generator that knows the key: its tokens (the answer + two more) score 1 */
    char err[512];
    task_passkey_opts o = opts(200, 0.3, 12, 0);
    task_passkey_job j;
    task_passkey_trial tr;
    CU_ASSERT_FATAL(task_passkey_job_init(&j, g_tok, g_slice.v, g_slice.n, &o, err, sizeof err) == ENG_OK);
    for (int i = 0; i < 10; i++) {
        CU_ASSERT_FATAL(task_passkey_trial_make(&j, g_tok, 3, i, &tr, err, sizeof err) == ENG_OK);
        eng_ids gen = {0};
        for (size_t k = 0; k < tr.answer.n; k++) eng_ids_push(&gen, tr.answer.v[k]);
        eng_tokenizer_encode(g_tok, ". Remember", 10, &gen);
        CU_ASSERT(tr.n_gen == (int)tr.answer.n + 2);
        eng_buf txt = {0};
        CU_ASSERT_FATAL(eng_tokenizer_decode(g_tok, gen.v, (size_t)tr.n_gen, &txt) == ENG_OK);
        CU_ASSERT(task_passkey_score(tr.key, txt.v, txt.n, got, sizeof got, &f) == 1 && f == 1.0);
        eng_buf_free(&txt);
        eng_ids_free(&gen);
        task_passkey_trial_free(&tr);
    }
    task_passkey_job_free(&j);
}

static eng_task base_task(void) {
    eng_task t;
    memset(&t, 0, sizeof t);
    t.task = "passkey";
    t.model_dir = tu_data("models/vocab-full-f16");
    t.data_path = g_text;
    t.policy = "full";
    t.seed = 11;
    return t;
}

static void set_int(eng_paramset *ps, const char *k, int64_t v) {
    ps->p[ps->n].key = k;
    ps->p[ps->n].type = ENG_PARAM_INT;
    ps->p[ps->n].i = v;
    ps->n++;
}

static void set_str(eng_paramset *ps, const char *k, const char *v) {
    ps->p[ps->n].key = k;
    ps->p[ps->n].type = ENG_PARAM_STR;
    ps->p[ps->n].s = v;
    ps->n++;
}

static void set_real(eng_paramset *ps, const char *k, double v) {
    ps->p[ps->n].key = k;
    ps->p[ps->n].type = ENG_PARAM_REAL;
    ps->p[ps->n].r = v;
    ps->n++;
}

static void test_harness(void) {
    if (!g_tok) return;
    eng_task t = base_task();
    set_int(&t.task_params, "context", 300);
    set_real(&t.task_params, "depth", 0.4);
    set_int(&t.task_params, "trials", 4);
    eng_task_result r, r2;
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &r) == ENG_OK);
    printf("\n  full: accuracy %.3f tokens %lld ttft %.2f ms tpot %.3f ms\n  extras %s\n", r.accuracy,
           (long long)r.tokens, r.ttft_ms, r.tpot_ms, r.extras_json);
    CU_ASSERT(r.accuracy >= 0 && r.accuracy <= 1);
    CU_ASSERT(r.ttft_ms > 0 && r.tpot_ms > 0 && r.tokens > 4 * 300 && isnan(r.ppl));
    CU_ASSERT(r.cache_tokens_max >= 300 && r.evictions == 0);
    CU_ASSERT(strstr(r.extras_json, "\"filler\":\"data\"") && strstr(r.extras_json, "\"detail_shown\":4"));
    CU_ASSERT(strstr(r.extras_json, "\"digit_accuracy\":") && strstr(r.extras_json, "\"policy_triggered\":false"));
    const char *d = strstr(r.extras_json, "\"detail\":[");
    int n_trials = 0;
    for (const char *q = d; q && (q = strstr(q, "{\"key\":")); q++) n_trials++;
    CU_ASSERT_EQUAL(n_trials, 4);
    /* reproducible: the same job gives the same keys, answers and scores */
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &r2) == ENG_OK);
    CU_ASSERT(r2.accuracy == r.accuracy && d && strstr(r2.extras_json, d) != NULL);
    /* a bounded policy evicts inside the prompt; the run still scores */
    t.policy = "streaming";
    set_int(&t.params, "sink", 4);
    set_int(&t.params, "recent", 60);
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &r2) == ENG_OK);
    CU_ASSERT(r2.evictions > 0 && r2.cache_tokens_max <= 64 + ENG_POLICY_SLACK && r2.accuracy >= 0 && r2.accuracy <= 1);
    CU_ASSERT(strstr(r2.extras_json, "\"policy_triggered\":true") != NULL);
    /* a prefill-time policy compresses the one-call prompt */
    t.policy = "snapkv";
    t.params.n = 0;
    set_int(&t.params, "budget", 48);
    set_int(&t.params, "window", 8);
    set_str(&t.task_params, "filler", "repeat");
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &r2) == ENG_OK);
    CU_ASSERT(r2.evictions > 0 && r2.cache_tokens_max < 300);
    CU_ASSERT(strstr(r2.extras_json, "\"filler\":\"repeat\"") != NULL);
    /* many trials: detail is cut to what fits, the JSON stays closed */
    t.task_params.n = 0;
    set_int(&t.task_params, "context", 80);
    set_int(&t.task_params, "trials", 60);
    t.policy = "full";
    t.params.n = 0;
    CU_ASSERT_FATAL(eng_task_run(g_ctx, &t, &r2) == ENG_OK);
    size_t L = strlen(r2.extras_json);
    CU_ASSERT(L > 2 && L < sizeof r2.extras_json && r2.extras_json[L - 1] == '}' && r2.extras_json[L - 2] == ']');
    CU_ASSERT(strstr(r2.extras_json, "\"trials\":60") != NULL);
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
    eng_task t = base_task();
    set_real(&t.task_params, "depth", 1.5);
    expect_err(&t, ENG_ERR_INVAL, "passkey.depth");
    t = base_task();
    set_int(&t.task_params, "digits", 0);
    expect_err(&t, ENG_ERR_INVAL, "passkey.digits");
    t = base_task();
    set_int(&t.task_params, "digits", 19);
    expect_err(&t, ENG_ERR_INVAL, "passkey.digits");
    t = base_task();
    set_int(&t.task_params, "trials", 0);
    expect_err(&t, ENG_ERR_INVAL, "passkey.trials");
    t = base_task();
    set_str(&t.task_params, "filler", "lorem");
    expect_err(&t, ENG_ERR_INVAL, "passkey.filler");
    t = base_task();
    set_str(&t.task_params, "context", "long");
    expect_err(&t, ENG_ERR_INVAL, "passkey.context");
    t = base_task();
    set_int(&t.task_params, "needles", 2);
    expect_err(&t, ENG_ERR_INVAL, "unknown parameter 'needles'");
    if (!g_tok) return;
    t = base_task();
    set_int(&t.task_params, "context", 20);
    expect_err(&t, ENG_ERR_INVAL, "passkey.context: 20 tokens leave no room");
    t = base_task();
    t.policy = "streaming";
    set_int(&t.params, "recnt", 8);
    expect_err(&t, ENG_ERR_INVAL, "recnt");
}

int main(void) {
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("passkey", suite_init, suite_clean);
    CU_add_test(s, "builder: repeated sentences, needle at depth, exact length", test_builder_repeat);
    CU_add_test(s, "builder: haystack from the slice", test_builder_data);
    CU_add_test(s, "keys: per (seed, trial), deterministic", test_keys_deterministic);
    CU_add_test(s, "scorer: exact and per-digit; a knowing generator scores 1", test_scorer);
    CU_add_test(s, "harness on a golden model", test_harness);
    CU_add_test(s, "errors name the field", test_errors);
    return tu_run();
}
