/* test_engine_misc.c — the engine's small modules: dataset layouts and their
 * errors (data.c), the sampler (greedy ties, top-k/top-p support, seeded
 * reproducibility, empirical distribution), and the KV cache bookkeeping. */
#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "data.h"
#include "kvcache.h"
#include "sampler.h"
#include "testutil.h"

static void test_dataset_layouts(void) {
    eng_dataset *d = NULL;
    char err[512];
    const char *t;
    size_t n;
    CU_ASSERT_FATAL(eng_dataset_open(&d, tu_data("datasets/pg"), err, sizeof err) == ENG_OK);
    CU_ASSERT_EQUAL(eng_dataset_n_docs(d), 2);
    CU_ASSERT_STRING_EQUAL(eng_dataset_doc_name(d, 0), "a.txt");
    CU_ASSERT(eng_dataset_doc(d, 1, &t, &n) == ENG_OK && strcmp(t, "First document.\nIt has two lines.\n") == 0);
    CU_ASSERT_EQUAL(eng_dataset_doc(d, 2, &t, &n), ENG_ERR_INVAL);
    CU_ASSERT(strstr(eng_dataset_errmsg(d), "out of range") != NULL);
    eng_dataset_free(d);

    CU_ASSERT_FATAL(eng_dataset_open(&d, tu_data("datasets/good.jsonl"), err, sizeof err) == ENG_OK);
    CU_ASSERT_EQUAL(eng_dataset_n_docs(d), 2);
    CU_ASSERT(eng_dataset_doc(d, 1, &t, &n) == ENG_OK && strcmp(t, "gamma \xc3\xa9") == 0 && n == 8);
    CU_ASSERT(strstr(eng_dataset_doc_name(d, 1), ":3") != NULL);
    eng_dataset_free(d);

    CU_ASSERT_FATAL(eng_dataset_open(&d, tu_data("datasets/plain.txt"), err, sizeof err) == ENG_OK);
    CU_ASSERT(eng_dataset_doc(d, 0, &t, &n) == ENG_OK && n == 17);
    eng_dataset_free(d);
}

static void expect_error(const char *rel, eng_status want, const char *needle) {
    eng_dataset *d = NULL;
    char err[512] = "";
    const char *t;
    size_t n;
    eng_status st = eng_dataset_open(&d, tu_data(rel), err, sizeof err);
    if (st == ENG_OK) {   /* plain files fail when read */
        st = eng_dataset_doc(d, 0, &t, &n);
        snprintf(err, sizeof err, "%s", eng_dataset_errmsg(d));
        eng_dataset_free(d);
    }
    CU_ASSERT_EQUAL(st, want);
    if (!strstr(err, needle)) printf("\n    %s: message '%s' lacks '%s'\n", rel, err, needle);
    CU_ASSERT(strstr(err, needle) != NULL);
    CU_ASSERT(strstr(err, rel) != NULL);   /* names the file */
}

static void test_dataset_errors(void) {
    expect_error("datasets/badkey.jsonl", ENG_ERR_FORMAT, "line 2");
    expect_error("datasets/badjson.jsonl", ENG_ERR_FORMAT, "line 2");
    expect_error("datasets/binary.txt", ENG_ERR_FORMAT, "NUL");
    expect_error("datasets/empty_dir", ENG_ERR_FORMAT, "no .txt");
    expect_error("datasets/missing.txt", ENG_ERR_IO, "no such file");
}

static void test_sampler(void) {
    eng_sampler s;
    float lg[6] = {1.0f, 3.0f, 3.0f, -1.0f, 0.5f, 2.0f};
    CU_ASSERT_EQUAL(eng_argmax(lg, 6), 1);   /* first of a tie, like torch.argmax */
    CU_ASSERT_FATAL(eng_sampler_init(&s, 6, 0.0f, 0, 1.0f, 1) == ENG_OK);
    CU_ASSERT_EQUAL(eng_sampler_sample(&s, lg), 1);
    eng_sampler_free(&s);

    /* top-k 2: only ids 1 and 2 can come out */
    CU_ASSERT_FATAL(eng_sampler_init(&s, 6, 1.0f, 2, 1.0f, 7) == ENG_OK);
    for (int i = 0; i < 2000; i++) {
        int32_t t = eng_sampler_sample(&s, lg);
        if (t != 1 && t != 2) { CU_FAIL("top-k leaked"); break; }
    }
    eng_sampler_free(&s);

    /* top-p: probs of {1,2} are 0.33 each, {5} 0.12...: p=0.5 keeps ids 1,2 only */
    CU_ASSERT_FATAL(eng_sampler_init(&s, 6, 1.0f, 0, 0.5f, 7) == ENG_OK);
    for (int i = 0; i < 2000; i++) {
        int32_t t = eng_sampler_sample(&s, lg);
        if (t != 1 && t != 2) { CU_FAIL("top-p leaked"); break; }
    }
    eng_sampler_free(&s);

    /* plain sampling: empirical frequencies match softmax(lg / 0.7) */
    float temp = 0.7f;
    double p[6], z = 0;
    for (int i = 0; i < 6; i++) z += p[i] = exp(lg[i] / temp);
    int cnt[6] = {0}, N = 200000;
    CU_ASSERT_FATAL(eng_sampler_init(&s, 6, temp, 0, 1.0f, 12345) == ENG_OK);
    for (int i = 0; i < N; i++) cnt[eng_sampler_sample(&s, lg)]++;
    eng_sampler_free(&s);
    double chi2 = 0;
    for (int i = 0; i < 6; i++) {
        double e = N * p[i] / z;
        chi2 += (cnt[i] - e) * (cnt[i] - e) / e;
    }
    printf("  chi2(5 dof) = %.2f", chi2);
    CU_ASSERT(chi2 < 20.5);   /* p = 0.001 critical value for 5 dof */

    /* same seed, same draws */
    eng_sampler a, b;
    eng_sampler_init(&a, 6, 1.0f, 0, 0.9f, 99);
    eng_sampler_init(&b, 6, 1.0f, 0, 0.9f, 99);
    int same = 1;
    for (int i = 0; i < 100; i++) same &= eng_sampler_sample(&a, lg) == eng_sampler_sample(&b, lg);
    CU_ASSERT(same);
    eng_sampler_free(&a);
    eng_sampler_free(&b);
    CU_ASSERT_EQUAL(eng_sampler_init(&s, 6, 1.0f, 0, 0.0f, 1), ENG_ERR_INVAL);
    eng_sampler_free(&s);
}

static void test_kvcache(void) {
    eng_kvcache kv;
    CU_ASSERT_FATAL(eng_kvcache_init(&kv, 2, 3, 8, 10) == ENG_OK);
    CU_ASSERT_EQUAL(kv.bytes, 2u * 2 * 3 * 10 * 8 * sizeof(float));
    for (int i = 0; i < 6; i++) kv.n[i] = 5;
    CU_ASSERT_EQUAL(eng_kvcache_truncate(&kv, 2), ENG_OK);
    CU_ASSERT_EQUAL(kv.n[3], 3);
    CU_ASSERT_EQUAL(eng_kvcache_truncate(&kv, 4), ENG_ERR_INVAL);
    CU_ASSERT_EQUAL(kv.n[3], 3);   /* unchanged on failure */
    CU_ASSERT(eng_kvcache_k(&kv, 1) == kv.k + 3 * 10 * 8);
    eng_kvcache_clear(&kv);
    CU_ASSERT_EQUAL(kv.n[5], 0);
    eng_kvcache_free(&kv);
    eng_kvcache_free(&kv);   /* idempotent */
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("engine_misc", NULL, NULL);
    CU_add_test(s, "dataset: folder of .txt, JSONL, plain text", test_dataset_layouts);
    CU_add_test(s, "dataset: errors name file and line", test_dataset_errors);
    CU_add_test(s, "sampler: greedy, top-k, top-p, distribution, seeds", test_sampler);
    CU_add_test(s, "kvcache: layout, truncate", test_kvcache);
    return tu_run();
}
