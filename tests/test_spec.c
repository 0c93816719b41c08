/* test_spec.c — speculative decoding (engine/spec.c):
 *   - greedy speculative output == HF's greedy continuation of the target
 *     (m64-f32 with draft m32-f16) for gamma 1/3/5 x every schedule, the
 *     cascade m32-f16 -> m80-bf16 -> m64-f32, and draft == target;
 *   - the accept/resample rule alone is lossless (chi-square vs p over 200k
 *     draws, the residual path exercised), and end to end the first sampled
 *     token follows the target's softmax (V=256 pair, 100k seeds);
 *   - n_past invariant after every round, rollback leaves caches equal to a
 *     fresh teacher-forced pass, no allocation per token, error codes. */
#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "kn.h"
#include "model.h"
#include "sampler.h"
#include "spec.h"
#include "testutil.h"

static eng_model *g_t, *g_d, *g_mid, *g_t256, *g_d256;
static int32_t g_prompt[256], g_greedy[256], g_prompt256[256];
static int g_np, g_ng, g_np256;

static int suite_init(void) {
    g_t = tu_load_model("m64-f32");
    g_d = tu_load_model("m32-f16");
    g_mid = tu_load_model("m80-bf16");
    g_t256 = tu_load_model("seqres-f32");
    g_d256 = tu_load_model("m256-f16");
    g_np = tu_read_ids("golden/m64-f32/prompt_ids.txt", g_prompt, 256);
    g_ng = tu_read_ids("golden/m64-f32/greedy_ids.txt", g_greedy, 256);
    g_np256 = tu_read_ids("golden/seqres-f32/prompt_ids.txt", g_prompt256, 256);
    return g_t && g_d && g_mid && g_t256 && g_d256 && g_np > 0 && g_ng >= 64 && g_np256 > 0 ? 0 : -1;
}

static int suite_clean(void) {
    eng_model_free(g_t);
    eng_model_free(g_d);
    eng_model_free(g_mid);
    eng_model_free(g_t256);
    eng_model_free(g_d256);
    return 0;
}

/* Greedy spec decoding of 64 tokens must equal the golden greedy ids. */
static void greedy_case(const eng_model *draft, const eng_model *mid, int gamma, eng_spec_schedule sch,
                        eng_spec_stats *st) {
    eng_spec_opts o;
    eng_spec_opts_default(&o);
    o.gamma = gamma;
    o.gamma_max = 8;
    o.schedule = sch;
    eng_spec *sp = NULL;
    char err[2048];
    CU_ASSERT_FATAL(eng_spec_init(&sp, g_t, draft, mid, 128, &o, err, sizeof err) == ENG_OK);
    eng_ids out = {0};
    CU_ASSERT_FATAL(eng_spec_generate(sp, g_prompt, g_np, 64, &out, st) == ENG_OK);
    CU_ASSERT_EQUAL(out.n, 64);
    int same = out.n == 64 && !memcmp(out.v, g_greedy, 64 * sizeof(int32_t));
    if (!same) fprintf(stderr, "greedy mismatch: gamma %d schedule %d mid %p\n", gamma, (int)sch, (const void *)mid);
    CU_ASSERT(same);
    CU_ASSERT_EQUAL(st->invariant_violations, 0);
    CU_ASSERT_EQUAL(st->n_new, 64);
    CU_ASSERT_EQUAL(eng_spec_state(sp, 0)->n_past, g_np + 64 - 1);
    eng_ids_free(&out);
    eng_spec_free(sp);
}

static void test_greedy_equals_target(void) {
    eng_spec_stats st;
    int gammas[] = {1, 3, 5};
    for (int gi = 0; gi < 3; gi++)
        for (int s = 0; s < 3; s++) {
            greedy_case(g_d, NULL, gammas[gi], (eng_spec_schedule)s, &st);
            if (gi == 1 && s == 0)
                printf("\n  m32-f16 -> m64-f32 greedy g=3 constant: acceptance %.3f, %.2f tokens/pass, %ld passes\n",
                       st.acceptance_rate, st.mean_accepted_len, st.target_passes);
        }
}

static void test_greedy_cascade(void) {
    eng_spec_stats st;
    for (int s = 0; s < 3; s++) {
        greedy_case(g_d, g_mid, 3, (eng_spec_schedule)s, &st);
        CU_ASSERT(st.mid_passes > 0);
        CU_ASSERT_EQUAL(st.mid_passes, st.target_passes);
    }
    printf("\n  cascade m32-f16 -> m80-bf16 -> m64-f32 (aimd): target acceptance %.3f, mid acceptance %.3f\n",
           st.acceptance_rate, st.mid_drafted ? (double)st.mid_accepted / st.mid_drafted : 0.0);
}

static void test_draft_equals_target(void) {
    eng_spec_stats st;
    greedy_case(g_t, NULL, 4, ENG_SPEC_CONSTANT, &st);
    CU_ASSERT_EQUAL(st.accepted, st.drafted);
    CU_ASSERT_EQUAL(st.resampled, 0);
    for (int i = 0; i < 4; i++) CU_ASSERT_EQUAL(st.pos_accepted[i], st.pos_drafted[i]);
}

/* Wilson-Hilferty approximation of the chi-square quantile at 1 - 0.001. */
static double chi2_crit_001(int df) {
    double z = 3.090232, a = 2.0 / (9.0 * df), b = 1.0 - a + z * sqrt(a);
    return df * b * b * b;
}

static void test_verify_lossless_synthetic(void) {
    enum { V = 7, N = 200000 };
    /* p has mass where q has none (token 5) and q has mass where p has none (token 6) */
    const float p[2 * V] = {0.30f, 0.05f, 0.20f, 0.10f, 0.15f, 0.20f, 0.00f, 1, 0, 0, 0, 0, 0, 0};
    const float q[V] = {0.10f, 0.25f, 0.20f, 0.20f, 0.05f, 0.00f, 0.20f};
    eng_sampler s;
    CU_ASSERT_FATAL(eng_sampler_init(&s, V, 1.0f, 0, 1.0f, 12345) == ENG_OK);
    long hist[V] = {0}, n_res = 0, n_acc = 0;
    float resid[V];
    for (int i = 0; i < N; i++) {
        int32_t d = eng_sampler_sample_probs(&s, q), next;
        int res;
        int n = eng_spec_verify(&s, p, q, &d, 1, resid, &next, &res);
        int32_t tok = n == 1 ? d : next;
        hist[tok]++;
        n_res += res;
        n_acc += n;
    }
    double chi2 = 0;
    int df = -1;
    for (int v = 0; v < V; v++) {
        double e = (double)N * p[v];
        if (e > 0) {
            chi2 += (hist[v] - e) * (hist[v] - e) / e;
            df++;
        } else
            CU_ASSERT_EQUAL(hist[v], 0);
    }
    printf("\n  synthetic: chi2 %.2f (df %d, crit %.2f), resampled %ld, accepted %ld of %d\n", chi2, df,
           chi2_crit_001(df), n_res, n_acc, N);
    CU_ASSERT(chi2 < chi2_crit_001(df));
    CU_ASSERT(n_res > N / 10);
    CU_ASSERT(n_acc > N / 2);
    eng_sampler_free(&s);
}

/* First sampled token of seqres-f32 (target) with draft m256-f16 at T=1
 * over many seeds vs the target's softmax. */
static void test_e2e_first_token_distribution(void) {
    enum { N = 100000, NP = 8 };
    eng_spec_opts o;
    eng_spec_opts_default(&o);
    o.gamma = 2;
    o.gamma_max = 4;
    o.temperature = 1.0f;
    eng_spec *sp = NULL;
    char err[2048];
    CU_ASSERT_FATAL(eng_spec_init(&sp, g_t256, g_d256, NULL, 32, &o, err, sizeof err) == ENG_OK);
    int V = g_t256->cfg.n_vocab;
    /* the target's distribution after the prompt */
    eng_state *s = NULL;
    CU_ASSERT_FATAL(eng_state_init(&s, g_t256, 32, 32, err, sizeof err) == ENG_OK);
    CU_ASSERT_FATAL(eng_forward(s, g_prompt256, NP, s->logits, 0) == ENG_OK);
    eng_sampler smp;
    CU_ASSERT_FATAL(eng_sampler_init(&smp, V, 1.0f, 0, 1.0f, 1) == ENG_OK);
    float *p = malloc((size_t)V * sizeof(float));
    long *hist = calloc((size_t)V, sizeof(long));
    eng_sampler_probs(&smp, s->logits, p);
    eng_ids out = {0};
    eng_spec_stats st;
    long res = 0;
    for (int i = 0; i < N; i++) {
        out.n = 0;
        eng_spec_set_seed(sp, 1000003ull * (uint64_t)(i + 1));
        CU_ASSERT_FATAL(eng_spec_generate(sp, g_prompt256, NP, 1, &out, &st) == ENG_OK);
        hist[out.v[0]]++;
        res += st.resampled;
    }
    double chi2 = 0, pool_e = 0, pool_o = 0;
    int bins = 0;
    for (int v = 0; v < V; v++) {
        double e = (double)N * p[v];
        if (e >= 5) {
            chi2 += (hist[v] - e) * (hist[v] - e) / e;
            bins++;
        } else {
            pool_e += e;
            pool_o += (double)hist[v];
        }
    }
    if (pool_e > 0) {
        chi2 += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        bins++;
    }
    int df = bins - 1;
    printf("\n  e2e V=256: chi2 %.1f (df %d, crit %.1f), rounds with resampling %ld of %d\n", chi2, df,
           chi2_crit_001(df), res, N);
    CU_ASSERT(df > 0 && chi2 < chi2_crit_001(df));
    CU_ASSERT(res > 0);
    free(p);
    free(hist);
    eng_ids_free(&out);
    eng_sampler_free(&smp);
    eng_state_free(s);
    eng_spec_free(sp);
}

static int max_abs_diff_ok(const float *a, const float *b, int n, double tol) {
    for (int i = 0; i < n; i++)
        if (fabs((double)a[i] - (double)b[i]) > tol) return 0;
    return 1;
}

/* Sampled generation with rollbacks: afterwards the caches continue exactly
 * like a fresh teacher-forced pass over prompt + output. */
static void test_rollback_matches_fresh(void) {
    eng_spec_opts o;
    eng_spec_opts_default(&o);
    o.gamma = 4;
    o.gamma_max = 8;
    o.schedule = ENG_SPEC_HEURISTIC;
    o.temperature = 0.8f;
    o.seed = 7;
    for (int casc = 0; casc < 2; casc++) {
        eng_spec *sp = NULL;
        char err[2048];
        CU_ASSERT_FATAL(eng_spec_init(&sp, g_t, g_d, casc ? g_mid : NULL, 128, &o, err, sizeof err) == ENG_OK);
        eng_ids out = {0};
        eng_spec_stats st;
        CU_ASSERT_FATAL(eng_spec_generate(sp, g_prompt, g_np, 48, &out, &st) == ENG_OK);
        CU_ASSERT_EQUAL(st.invariant_violations, 0);
        CU_ASSERT(st.resampled > 0);
        int n = g_np + (int)out.n, V = g_t->cfg.n_vocab;
        int32_t *seq = malloc((size_t)n * sizeof(int32_t));
        memcpy(seq, g_prompt, (size_t)g_np * sizeof(int32_t));
        memcpy(seq + g_np, out.v, out.n * sizeof(int32_t));
        eng_state *ts = eng_spec_state(sp, 0);
        CU_ASSERT_EQUAL_FATAL(ts->n_past, n - 1);
        /* fresh, token by token (the same per-token path decode uses) */
        eng_state *f = NULL;
        CU_ASSERT_FATAL(eng_state_init(&f, g_t, 128, 64, err, sizeof err) == ENG_OK);
        float *ref = malloc((size_t)n * V * sizeof(float)), *lg = malloc((size_t)V * sizeof(float));
        for (int i = 0; i < n; i++) CU_ASSERT_FATAL(eng_forward(f, seq + i, 1, ref + (size_t)i * V, 0) == ENG_OK);
        /* the spec state continues from its cache: positions n-1, then roll
         * back 5 and re-feed n-6..n-1 one at a time */
        CU_ASSERT_FATAL(eng_forward(ts, seq + n - 1, 1, lg, 0) == ENG_OK);
        int bit = !memcmp(lg, ref + (size_t)(n - 1) * V, (size_t)V * sizeof(float));
        CU_ASSERT(max_abs_diff_ok(lg, ref + (size_t)(n - 1) * V, V, 1e-4));
        CU_ASSERT_FATAL(eng_state_rollback(ts, 6) == ENG_OK);
        for (int i = n - 6; i < n; i++) {
            CU_ASSERT_FATAL(eng_forward(ts, seq + i, 1, lg, 0) == ENG_OK);
            bit &= !memcmp(lg, ref + (size_t)i * V, (size_t)V * sizeof(float));
            CU_ASSERT(max_abs_diff_ok(lg, ref + (size_t)i * V, V, 1e-4));
        }
        printf("\n  rollback (%s): logits after rollback %s a fresh token-by-token pass\n",
               casc ? "cascade" : "2-level", bit ? "bit-identical to" : "within 1e-4 of");
        for (int l = 1; l < (casc ? 3 : 2); l++) {
            int np = eng_spec_state(sp, l)->n_past;
            CU_ASSERT(np <= n - 1 && np >= n - 3);
        }
        free(seq);
        free(ref);
        free(lg);
        eng_state_free(f);
        eng_ids_free(&out);
        eng_spec_free(sp);
    }
}

/* Rollback leaves no trace: rejected tokens rolled back, then the accepted
 * continuation, gives bit-identical logits to a state that never saw them
 * (same chunk shapes: prompt, a 4-token verify chunk, a 2-token chunk). */
static void test_rollback_bit_identical(void) {
    char err[1024];
    int V = g_t->cfg.n_vocab;
    eng_state *a = NULL, *b = NULL;
    CU_ASSERT_FATAL(eng_state_init(&a, g_t, 64, 64, err, sizeof err) == ENG_OK);
    CU_ASSERT_FATAL(eng_state_init(&b, g_t, 64, 64, err, sizeof err) == ENG_OK);
    float *la = malloc((size_t)4 * V * sizeof(float)), *lb = malloc((size_t)4 * V * sizeof(float));
    const int32_t blk_a[4] = {5, 6, 7, 8}, blk_b[4] = {5, 6, 300, 301}, cont[2] = {9, 10};
    CU_ASSERT_FATAL(eng_forward(a, g_prompt, g_np, NULL, 0) == ENG_OK);
    CU_ASSERT_FATAL(eng_forward(b, g_prompt, g_np, NULL, 0) == ENG_OK);
    CU_ASSERT_FATAL(eng_forward(a, blk_a, 4, la, 1) == ENG_OK);
    CU_ASSERT_FATAL(eng_forward(b, blk_b, 4, lb, 1) == ENG_OK);
    CU_ASSERT(!memcmp(la, lb, (size_t)2 * V * sizeof(float)));   /* shared rows 5, 6 */
    CU_ASSERT_FATAL(eng_state_rollback(a, 2) == ENG_OK);
    CU_ASSERT_FATAL(eng_state_rollback(b, 2) == ENG_OK);
    CU_ASSERT_EQUAL(a->n_past, g_np + 2);
    CU_ASSERT_FATAL(eng_forward(a, cont, 2, la, 1) == ENG_OK);
    CU_ASSERT_FATAL(eng_forward(b, cont, 2, lb, 1) == ENG_OK);
    CU_ASSERT(!memcmp(la, lb, (size_t)2 * V * sizeof(float)));
    free(la);
    free(lb);
    eng_state_free(a);
    eng_state_free(b);
}

static void test_no_alloc_per_token(void) {
    eng_spec_opts o;
    eng_spec_opts_default(&o);
    o.gamma = 3;
    o.schedule = ENG_SPEC_AIMD;
    o.temperature = 1.0f;
    o.top_k = 50;
    o.top_p = 0.9f;
    o.compare = 1;
    eng_spec *sp = NULL;
    char err[2048];
    CU_ASSERT_FATAL(eng_spec_init(&sp, g_t, g_d, g_mid, 128, &o, err, sizeof err) == ENG_OK);
    eng_ids out = {0};
    eng_spec_stats st;
    CU_ASSERT_FATAL(eng_spec_generate(sp, g_prompt, g_np, 64, &out, &st) == ENG_OK);
    out.n = 0;
    unsigned long a0 = eng_alloc_count();
    CU_ASSERT_FATAL(eng_spec_generate(sp, g_prompt, g_np, 64, &out, &st) == ENG_OK);
    CU_ASSERT_EQUAL(eng_alloc_count(), a0);
    CU_ASSERT(st.speedup > 0);
    CU_ASSERT_EQUAL(st.n_new, 64);
    eng_ids_free(&out);
    eng_spec_free(sp);
}

static void test_errors(void) {
    eng_spec_opts o;
    eng_spec_opts_default(&o);
    eng_spec *sp = (eng_spec *)1;
    char err[4096] = "";
    CU_ASSERT_EQUAL(eng_spec_init(&sp, g_t, g_d256, NULL, 128, &o, err, sizeof err), ENG_ERR_INVAL);
    CU_ASSERT_PTR_NULL(sp);
    CU_ASSERT(strstr(err, g_t->dir) != NULL && strstr(err, g_d256->dir) != NULL);
    CU_ASSERT_EQUAL(eng_spec_init(&sp, g_t, g_d, g_t256, 128, &o, err, sizeof err), ENG_ERR_INVAL);
    CU_ASSERT(strstr(err, g_t256->dir) != NULL);
    o.gamma = 0;
    CU_ASSERT_EQUAL(eng_spec_init(&sp, g_t, g_d, NULL, 128, &o, err, sizeof err), ENG_ERR_INVAL);
    o.gamma = 3;
    CU_ASSERT_FATAL(eng_spec_init(&sp, g_t, g_d, NULL, 48, &o, err, sizeof err) == ENG_OK);
    eng_ids out = {0};
    CU_ASSERT_EQUAL(eng_spec_generate(sp, g_prompt, g_np, 64, &out, NULL), ENG_ERR_CAPACITY);
    CU_ASSERT(strstr(eng_spec_errmsg(sp), "capacity") != NULL);
    int32_t bad = 100000;
    CU_ASSERT_EQUAL(eng_spec_generate(sp, &bad, 1, 4, &out, NULL), ENG_ERR_INVAL);
    CU_ASSERT_EQUAL(eng_spec_generate(sp, g_prompt, g_np, 20, &out, NULL), ENG_OK);
    CU_ASSERT_EQUAL(out.n, 20);
    CU_ASSERT_EQUAL(eng_spec_schedule_parse("aimd"), ENG_SPEC_AIMD);
    CU_ASSERT_EQUAL(eng_spec_schedule_parse("fast"), -1);
    eng_ids_free(&out);
    eng_spec_free(sp);
}

int main(void) {
    /* one thread: the fixtures are tiny (threads only add barrier waits), and
     * the 100k-draw tests must not spin in threaded BLAS on a loaded box */
    kn_set_threads(1);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("spec", suite_init, suite_clean);
    CU_add_test(s, "greedy spec == target greedy (gamma 1/3/5 x schedules)", test_greedy_equals_target);
    CU_add_test(s, "greedy cascade == target greedy", test_greedy_cascade);
    CU_add_test(s, "draft == target accepts everything", test_draft_equals_target);
    CU_add_test(s, "accept/resample rule is lossless (synthetic)", test_verify_lossless_synthetic);
    CU_add_test(s, "first sampled token follows the target (V=256)", test_e2e_first_token_distribution);
    CU_add_test(s, "rollback leaves caches equal to a fresh pass", test_rollback_matches_fresh);
    CU_add_test(s, "rollback leaves no trace (bit-identical)", test_rollback_bit_identical);
    CU_add_test(s, "no allocation per generated token", test_no_alloc_per_token);
    CU_add_test(s, "errors: vocab mismatch, capacity, bad ids", test_errors);
    return tu_run();
}
