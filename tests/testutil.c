/* testutil.c — see testutil.h. */
#include "testutil.h"

#include "model.h"
#include "policy.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int tu_run(void) {
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failure_records() || CU_get_number_of_tests_failed() ||
              CU_get_number_of_suites_failed();
    int rc = bad ? 1 : (CU_get_error() ? 1 : 0);
    CU_cleanup_registry();
    return rc;
}

const char *tu_data(const char *rel) {
    static char buf[8][1024];
    static int slot;
    const char *root = getenv("KV_TESTDATA");
    char *p = buf[slot++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", root && *root ? root : "tests/data", rel);
    return p;
}

void tu_skip(const char *what, const char *why) {
    printf("\n  SKIP %s: %s\n", what, why);
    fflush(stdout);
}

const char *tu_tokenizer_path(const char *who) {
    const char *env = getenv("KV_TOKENIZER");
    const char *cand[] = {env, "../shared/data/pythia-tokenizer.json", NULL};
    for (int i = 0; i < 2; i++)
        if (cand[i] && *cand[i] && access(cand[i], R_OK) == 0) return cand[i];
    tu_skip(who, "no tokenizer (set KV_TOKENIZER or provide ../shared/data/pythia-tokenizer.json)");
    return NULL;
}

char *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return NULL; }
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    if (!b) return NULL;
    b[n] = 0;
    if (len) *len = (size_t)n;
    return b;
}

int tu_read_ids(const char *rel, int32_t *v, int cap) {
    size_t len;
    char *s = tu_read_file(tu_data(rel), &len);
    if (!s) return -1;
    int n = 0;
    char *p = s, *end;
    for (long x = strtol(p, &end, 10); end != p && n < cap; x = strtol(p, &end, 10)) {
        v[n++] = (int32_t)x;
        p = end;
    }
    free(s);
    return n;
}

struct eng_model *tu_load_model(const char *name) {
    char rel[256], err[1024];
    snprintf(rel, sizeof rel, "models/%s", name);
    eng_model *m = NULL;
    if (eng_model_load(&m, tu_data(rel), err, sizeof err) != ENG_OK) fprintf(stderr, "load %s: %s\n", name, err);
    return m;
}

struct eng_policy *tu_policy(const struct eng_model *m, const char *spec) {
    eng_paramset ps;
    char name[32], buf[512], err[512];
    eng_policy *p = NULL;
    if (eng_policy_parse_spec(spec, &ps, name, sizeof name, buf, sizeof buf, err, sizeof err) != ENG_OK ||
        eng_policy_create(&p, name, &ps, &m->cfg, err, sizeof err) != ENG_OK)
        printf("\n    policy %s: %s", spec, err);
    return p;
}

struct eng_state *tu_state(const struct eng_model *m, struct eng_policy *p, int n, int n_batch) {
    eng_state *s = NULL;
    char err[256];
    int cap = p ? eng_policy_capacity(p, n) : n;
    if (eng_state_init(&s, m, cap, n_batch, err, sizeof err) != ENG_OK) return NULL;
    if (p && eng_state_set_policy(s, p) != ENG_OK) {
        eng_state_free(s);
        return NULL;
    }
    return s;
}
