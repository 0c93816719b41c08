/* test_sweep.c — the sweep file parser (submit/sweep.c, sweep_tree.c):
 * both input formats, grid expansion counts and order, the spec grid, the
 * canonical msgpack round trip (same job_ids), every validation error with
 * its exact field path, the example files, and the job-count limit. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "mpack_write.h"
#include "sweep.h"
#include "testutil.h"

static kv_sweep *parse_json(const char *text, int *rc, char *err, size_t n_err) {
    kv_sweep *s = (kv_sweep *)1;
    *rc = kv_sweep_parse(&s, text, strlen(text), 1, "t.json", err, n_err);
    return s;
}

/* Job ids of every job of s (malloc'd array of 65-byte strings). */
static char (*all_ids(const kv_sweep *s))[KV_JOB_ID_HEX] {
    size_t n = kv_sweep_n_jobs(s);
    char(*ids)[KV_JOB_ID_HEX] = calloc(n ? n : 1, sizeof *ids);
    kv_job *j = malloc(sizeof *j);
    char err[256];
    for (size_t i = 0; i < n; i++) {
        unsigned char *buf;
        size_t len;
        if (kv_sweep_job(s, i, NULL, j, err, sizeof err) != KV_OK || kv_job_encode(j, &buf, &len, err, sizeof err))
            continue;
        memcpy(ids[i], j->job_id, KV_JOB_ID_HEX);
        free(buf);
    }
    free(j);
    return ids;
}

/* The canonical msgpack of s parses back to the same job ids. */
static void check_round_trip(const kv_sweep *s) {
    unsigned char *mp;
    size_t len;
    char err[256];
    kv_sweep *back = NULL;
    CU_ASSERT_FATAL(kv_sweep_to_msgpack(s, &mp, &len, err, sizeof err) == KV_OK);
    CU_ASSERT_FATAL(kv_sweep_parse(&back, mp, len, -1, "emitted", err, sizeof err) == KV_OK);
    CU_ASSERT_STRING_EQUAL(kv_sweep_name(back), kv_sweep_name(s));
    CU_ASSERT_FATAL(kv_sweep_n_jobs(back) == kv_sweep_n_jobs(s));
    char(*a)[KV_JOB_ID_HEX] = all_ids(s);
    char(*b)[KV_JOB_ID_HEX] = all_ids(back);
    size_t same = 0;
    for (size_t i = 0; i < kv_sweep_n_jobs(s); i++) same += strlen(a[i]) == 64 && strcmp(a[i], b[i]) == 0;
    CU_ASSERT_EQUAL(same, kv_sweep_n_jobs(s));
    // Canonical is a fixed point: emitting again gives the same bytes.
    unsigned char *mp2;
    size_t len2;
    CU_ASSERT_FATAL(kv_sweep_to_msgpack(back, &mp2, &len2, err, sizeof err) == KV_OK);
    CU_ASSERT(len == len2 && memcmp(mp, mp2, len) == 0);
    free(mp);
    free(mp2);
    free(a);
    free(b);
    kv_sweep_free(back);
}

static void test_examples(void) {
    kv_sweep *s = NULL;
    char err[512];
    kv_job j;
    int rc = kv_sweep_load(&s, tu_data("../../examples/demo-sweep.json"), err, sizeof err);
    if (rc) printf("\n  %s\n", err);
    CU_ASSERT_FATAL(rc == KV_OK);
    CU_ASSERT_STRING_EQUAL(kv_sweep_name(s), "demo");
    CU_ASSERT_EQUAL(kv_sweep_n_jobs(s), 30);
    CU_ASSERT(kv_sweep_job(s, 0, NULL, &j, err, sizeof err) == KV_OK);
    CU_ASSERT_STRING_EQUAL(j.model, "kvtiny");
    CU_ASSERT_STRING_EQUAL(j.dataset, "kjv-nt.txt");
    CU_ASSERT_EQUAL(j.tokens, 2048);
    CU_ASSERT_STRING_EQUAL(j.task, "ppl");
    CU_ASSERT_STRING_EQUAL(j.policy, "full");
    CU_ASSERT(j.task_params.n == 0 && j.params.n == 0 && !j.has_spec && j.nonce[0] == '\0');
    int n_speed = 0, n_stream = 0;
    for (size_t i = 0; i < 30; i++) {
        CU_ASSERT_FATAL(kv_sweep_job(s, i, NULL, &j, err, sizeof err) == KV_OK);
        if (!strcmp(j.task, "speed")) {
            n_speed++;
            CU_ASSERT(kv_params_get(&j.task_params, "prefill") && kv_params_get(&j.task_params, "prefill")->i == 1024);
            CU_ASSERT(kv_params_get(&j.task_params, "decode") && kv_params_get(&j.task_params, "decode")->i == 64);
        }
        if (!strcmp(j.policy, "streaming")) n_stream++; /* pos: [shift, original] expands */
    }
    CU_ASSERT_EQUAL(n_speed, 10);
    CU_ASSERT_EQUAL(n_stream, 6);
    CU_ASSERT_EQUAL(kv_sweep_job(s, 30, NULL, &j, err, sizeof err), KV_ERR_INVAL);
    check_round_trip(s);
    kv_sweep_free(s);

    rc = kv_sweep_load(&s, tu_data("../../examples/sweep-example.json"), err, sizeof err);
    if (rc) printf("\n  %s\n", err);
    CU_ASSERT_FATAL(rc == KV_OK);
    // 2 models x 2 datasets x 15 task points x 11 policy points x 2 seeds x 1 repeat.
    CU_ASSERT_EQUAL(kv_sweep_n_jobs(s), 1320);
    size_t n_spec = 0, bad = 0;
    for (size_t i = 0; i < kv_sweep_n_jobs(s); i++) {
        if (kv_sweep_job(s, i, NULL, &j, err, sizeof err) != KV_OK) {
            bad++;
            continue;
        }
        int is_spec = strcmp(j.task, "spec") == 0;
        n_spec += is_spec;
        if (is_spec != j.has_spec) bad++;
        if (is_spec && (!kv_params_get(&j.spec, "draft") || !kv_params_get(&j.spec, "gamma") ||
                        kv_params_get(&j.spec, "gamma_max")->i != 16 || j.spec.n != 4))
            bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(n_spec, 2 * 2 * 8 * 11 * 2);
    check_round_trip(s);
    kv_sweep_free(s);

    CU_ASSERT_EQUAL(kv_sweep_load(&s, "no/such/file.json", err, sizeof err), KV_ERR_IO);
    CU_ASSERT(s == NULL && strstr(err, "no/such/file.json") != NULL);
}

static void test_grid_order(void) {
    static const char text[] =
        "{\"sweep\":\"g\",\"models\":[\"a\",\"b\"],\"datasets\":[{\"name\":\"d\",\"tokens\":64}],"
        "\"tasks\":[{\"task\":\"ppl\",\"chunk\":[8,16]}],"
        "\"policies\":[{\"policy\":\"streaming\",\"sink\":[1,2],\"recent\":[10,20]}],"
        "\"seeds\":[0,1],\"repeats\":2}";
    int rc;
    char err[256];
    kv_job j;
    kv_sweep *s = parse_json(text, &rc, err, sizeof err);
    CU_ASSERT_FATAL(rc == KV_OK);
    CU_ASSERT_EQUAL(kv_sweep_n_jobs(s), 2 * 1 * 2 * 4 * 2 * 2);
    // Innermost first: repeat, seed, policy point (last key "sink" fastest), task point, dataset, model.
    kv_sweep_job(s, 0, NULL, &j, err, sizeof err);
    CU_ASSERT(j.repeat == 0 && j.seed == 0 && !strcmp(j.model, "a"));
    CU_ASSERT(j.params.n == 2 && !strcmp(j.params.p[0].key, "recent") && j.params.p[0].i == 10 &&
              !strcmp(j.params.p[1].key, "sink") && j.params.p[1].i == 1);
    kv_sweep_job(s, 1, NULL, &j, err, sizeof err);
    CU_ASSERT(j.repeat == 1 && j.seed == 0);
    kv_sweep_job(s, 2, NULL, &j, err, sizeof err);
    CU_ASSERT(j.repeat == 0 && j.seed == 1);
    kv_sweep_job(s, 4, NULL, &j, err, sizeof err);
    CU_ASSERT(j.params.p[0].i == 10 && j.params.p[1].i == 2);
    kv_sweep_job(s, 8, NULL, &j, err, sizeof err);
    CU_ASSERT(j.params.p[0].i == 20 && j.params.p[1].i == 1 && j.task_params.p[0].i == 8);
    kv_sweep_job(s, 16, NULL, &j, err, sizeof err);
    CU_ASSERT(j.task_params.p[0].i == 16 && !strcmp(j.model, "a") && j.params.p[0].i == 10);
    kv_sweep_job(s, 32, NULL, &j, err, sizeof err);
    CU_ASSERT(!strcmp(j.model, "b") && j.task_params.p[0].i == 8 && j.tokens == 64);
    // All ids distinct; a nonce changes every id.
    char(*ids)[KV_JOB_ID_HEX] = all_ids(s);
    int distinct = 1;
    for (size_t a = 0; a < kv_sweep_n_jobs(s); a++)
        for (size_t b = a + 1; b < kv_sweep_n_jobs(s); b++) distinct &= strcmp(ids[a], ids[b]) != 0;
    CU_ASSERT(distinct);
    unsigned char *buf;
    size_t len;
    CU_ASSERT(kv_sweep_job(s, 0, "rerun-7", &j, err, sizeof err) == KV_OK);
    CU_ASSERT_STRING_EQUAL(j.nonce, "rerun-7");
    CU_ASSERT_FATAL(kv_job_encode(&j, &buf, &len, err, sizeof err) == KV_OK);
    CU_ASSERT_STRING_NOT_EQUAL(j.job_id, ids[0]);
    free(buf);
    char long_nonce[100];
    memset(long_nonce, 'n', 99);
    long_nonce[99] = '\0';
    CU_ASSERT_EQUAL(kv_sweep_job(s, 0, long_nonce, &j, err, sizeof err), KV_ERR_INVAL);
    free(ids);
    check_round_trip(s);
    kv_sweep_free(s);
}

static void test_equivalent_inputs(void) {
    // Key order, 4 vs 4.0, and JSON vs msgpack (with a float32) give the same ids.
    static const char a[] = "{\"sweep\":\"e\",\"models\":[\"m\"],\"datasets\":[{\"name\":\"d\",\"doc\":1}],"
                            "\"tasks\":[{\"task\":\"ppl\"}],\"policies\":[{\"policy\":\"knorm\",\"prune_after\":4,"
                            "\"keep_ratio\":0.5}]}";
    static const char b[] = "{\"policies\":[{\"keep_ratio\":0.5,\"prune_after\":4.0,\"policy\":\"knorm\"}],"
                            "\"tasks\":[{\"task\":\"ppl\"}],\"datasets\":[{\"doc\":1.0,\"name\":\"d\"}],"
                            "\"models\":[\"m\"],\"seeds\":[0],\"repeats\":1,\"sweep\":\"e\"}";
    int rc;
    char err[256];
    kv_sweep *sa = parse_json(a, &rc, err, sizeof err);
    CU_ASSERT_FATAL(rc == KV_OK);
    kv_sweep *sb = parse_json(b, &rc, err, sizeof err);
    CU_ASSERT_FATAL(rc == KV_OK);
    char(*ia)[KV_JOB_ID_HEX] = all_ids(sa);
    char(*ib)[KV_JOB_ID_HEX] = all_ids(sb);
    CU_ASSERT_EQUAL(kv_sweep_n_jobs(sa), 1);
    CU_ASSERT_STRING_EQUAL(ia[0], ib[0]);

    // The same sweep hand-written in msgpack, keys unsorted, prune_after as float32 4.0.
    kv_mw w;
    kv_mw_init(&w, 4096);
    kv_mw_map(&w, 5);
    kv_mw_cstr(&w, "sweep");
    kv_mw_cstr(&w, "e");
    kv_mw_cstr(&w, "models");
    kv_mw_array(&w, 1);
    kv_mw_cstr(&w, "m");
    kv_mw_cstr(&w, "policies");
    kv_mw_array(&w, 1);
    kv_mw_map(&w, 3);
    kv_mw_cstr(&w, "prune_after");
    unsigned char f32[] = {0xca, 0x40, 0x80, 0x00, 0x00}; // 4.0f, spliced below
    kv_mw_int(&w, 0);                                    // placeholder byte at a known offset
    size_t at = w.len - 1;
    kv_mw_cstr(&w, "policy");
    kv_mw_cstr(&w, "knorm");
    kv_mw_cstr(&w, "keep_ratio");
    kv_mw_real(&w, 0.5);
    kv_mw_cstr(&w, "tasks");
    kv_mw_array(&w, 1);
    kv_mw_map(&w, 1);
    kv_mw_cstr(&w, "task");
    kv_mw_cstr(&w, "ppl");
    kv_mw_cstr(&w, "datasets");
    kv_mw_array(&w, 1);
    kv_mw_map(&w, 2);
    kv_mw_cstr(&w, "name");
    kv_mw_cstr(&w, "d");
    kv_mw_cstr(&w, "doc");
    kv_mw_int(&w, 1);
    size_t len;
    unsigned char *mp = kv_mw_take(&w, &len);
    unsigned char *mp2 = malloc(len + 4);
    memcpy(mp2, mp, at);
    memcpy(mp2 + at, f32, 5);
    memcpy(mp2 + at + 5, mp + at + 1, len - at - 1);
    kv_sweep *sc = NULL;
    rc = kv_sweep_parse(&sc, mp2, len + 4, -1, "t.msgpack", err, sizeof err);
    if (rc) printf("\n  %s\n", err);
    CU_ASSERT_FATAL(rc == KV_OK);
    char(*ic)[KV_JOB_ID_HEX] = all_ids(sc);
    CU_ASSERT_STRING_EQUAL(ia[0], ic[0]);
    // Every truncation of it fails cleanly.
    int all_fail = 1;
    for (size_t cut = 0; cut < len + 4; cut++) {
        kv_sweep *t = NULL;
        all_fail &= kv_sweep_parse(&t, mp2, cut, 0, "t.msgpack", err, sizeof err) != KV_OK && t == NULL;
    }
    CU_ASSERT(all_fail);
    free(mp);
    free(mp2);
    free(ia);
    free(ib);
    free(ic);
    kv_sweep_free(sa);
    kv_sweep_free(sb);
    kv_sweep_free(sc);
}

/* ---- validation errors ------------------------------------------------- */

#define HEAD "{\"sweep\":\"t\",\"models\":[\"m\"],\"datasets\":[{\"name\":\"d\"}],"
#define TASKS "\"tasks\":[{\"task\":\"ppl\"}],"
#define POLS "\"policies\":[{\"policy\":\"full\"}]"

typedef struct err_case {
    const char *json;
    int code;
    const char *msg;
    int exact; /* 1: the whole message, 0: a substring */
} err_case;

static const err_case err_cases[] = {
    {HEAD TASKS "\"policies\":[{\"policy\":\"full\"},{\"policy\":\"streaming\",\"recent\":[1,2,\"x\"]}]}", KV_ERR_INVAL,
     "t.json: policies[1].recent[2]: expected integer, got string", 1},
    {HEAD TASKS POLS ",\"foo\":1}", KV_ERR_INVAL,
     "t.json: foo: unknown key (allowed: sweep, models, datasets, tasks, policies, spec, seeds, repeats)", 1},
    {HEAD TASKS "\"policies\":[{\"policy\":\"streaming\",\"recnet\":4}]}", KV_ERR_INVAL,
     "t.json: policies[0].recnet: unknown parameter for policy \"streaming\" (allowed: pos, recent, sink)", 1},
    {HEAD TASKS "\"policies\":[{\"policy\":\"lru\"}]}", KV_ERR_INVAL,
     "t.json: policies[0].policy: unknown policy \"lru\" (known: full, window, streaming, h2o, lazy_h2o,", 0},
    {HEAD TASKS "\"policies\":[{\"policy\":\"full\"},{\"policy\":\"cake\",\"tau1\":0}]}", KV_ERR_INVAL,
     "t.json: policies[1].tau1: must be in [1e-06, 1000000], got 0", 0},
    {HEAD "\"tasks\":[{\"task\":\"mmlu\"}]," POLS "}", KV_ERR_INVAL,
     "t.json: tasks[0].task: unknown task \"mmlu\" (known: ppl, speed, spec, passkey)", 1},
    {HEAD "\"tasks\":[{\"task\":\"ppl\",\"decode\":4}]," POLS "}", KV_ERR_INVAL,
     "t.json: tasks[0].decode: unknown parameter for task \"ppl\" (allowed: chunk, prefill)", 1},
    {"{\"sweep\":\"t\",\"models\":[],\"datasets\":[{\"name\":\"d\"}]," TASKS POLS "}", KV_ERR_INVAL,
     "t.json: models: empty list", 1},
    {HEAD TASKS "\"policies\":[{\"policy\":\"streaming\",\"recent\":[]}]}", KV_ERR_INVAL,
     "t.json: policies[0].recent: empty list", 1},
    {HEAD TASKS "\"policies\":[]}", KV_ERR_INVAL, "t.json: policies: empty list", 1},
    {"{\"sweep\":\"t\",\"models\":\"m\",\"datasets\":[{\"name\":\"d\"}]," TASKS POLS "}", KV_ERR_INVAL,
     "t.json: models: expected array, got string", 1},
    {"{\"sweep\":\"t\",\"models\":[\"m\"],\"datasets\":[{\"name\":\"/etc/passwd\"}]," TASKS POLS "}", KV_ERR_INVAL,
     "t.json: datasets[0].name: name is an absolute path", 1},
    {"{\"sweep\":\"t\",\"models\":[\"a/../../b\"],\"datasets\":[{\"name\":\"d\"}]," TASKS POLS "}", KV_ERR_INVAL,
     "t.json: models[0]: name has a '..' component", 1},
    {"{\"sweep\":\"t\",\"models\":[\"ok\",\"a\\u0000b\"],\"datasets\":[{\"name\":\"d\"}]," TASKS POLS "}",
     KV_ERR_INVAL, "t.json: models[1]: name contains a NUL byte", 1},
    {"{\"sweep\":\"\",\"models\":[\"m\"],\"datasets\":[{\"name\":\"d\"}]," TASKS POLS "}", KV_ERR_INVAL,
     "t.json: sweep: name is empty", 1},
    {"{\"sweep\":\"t\",\"models\":[\"m\"],\"datasets\":[{\"name\":\"d\",\"offset\":-1}]," TASKS POLS "}",
     KV_ERR_INVAL, "t.json: datasets[0].offset: must be >= 0, got -1", 1},
    {"{\"sweep\":\"t\",\"models\":[\"m\"],\"datasets\":[{\"name\":\"d\",\"tokenz\":1}]," TASKS POLS "}",
     KV_ERR_INVAL, "t.json: datasets[0].tokenz: unknown key (allowed: name, doc, offset, tokens)", 1},
    {"{\"sweep\":\"t\",\"models\":[\"m\"],\"datasets\":[{\"doc\":1}]," TASKS POLS "}", KV_ERR_INVAL,
     "t.json: datasets[0]: missing key \"name\"", 1},
    {HEAD TASKS "\"policies\":[{\"policy\":\"streaming\",\"recent\":4.5}]}", KV_ERR_INVAL,
     "t.json: policies[0].recent: expected integer, got real 4.5", 1},
    {HEAD TASKS "\"policies\":[{\"policy\":\"streaming\",\"recent\":[4,4.0]}]}", KV_ERR_INVAL,
     "t.json: policies[0].recent[1]: duplicate value (same as [0])", 1},
    {HEAD TASKS "\"policies\":[{\"policy\":\"streaming\",\"pos\":\"foo\"}]}", KV_ERR_INVAL,
     "t.json: policies[0].pos: must be one of original, shift; got \"foo\"", 1},
    {HEAD TASKS "\"policies\":[{\"policy\":\"knorm\",\"keep_ratio\":1.5}]}", KV_ERR_INVAL,
     "t.json: policies[0].keep_ratio: must be in [0, 1], got 1.5", 1},
    {HEAD TASKS "\"policies\":[{\"policy\":\"l2\",\"skip_layers\":\"0;x\"}]}", KV_ERR_INVAL,
     "t.json: policies[0].skip_layers: expected an index >= 0 or a list like \"0;1\", got string", 1},
    {HEAD TASKS "\"policies\":[{\"policy\":\"streaming\",\"recent\":0}]}", KV_ERR_INVAL,
     "t.json: policies[0].recent: must be in [1, 16777216], got 0", 1},
    {HEAD TASKS "\"policies\":[{\"policy\":\"streaming\",\"sink\":true}]}", KV_ERR_INVAL,
     "t.json: policies[0].sink: expected integer, got bool", 1},
    {HEAD TASKS "\"policies\":[{\"policy\":\"streaming\",\"sink\":null}]}", KV_ERR_INVAL,
     "t.json: policies[0].sink: expected integer, got null", 1},
    {"[1,2]", KV_ERR_INVAL, "t.json: expected an object at the top level, got array", 1},
    {HEAD POLS "}", KV_ERR_INVAL, "t.json: tasks: missing required key", 1},
    {HEAD TASKS "\"policies\":[{\"sink\":4}]}", KV_ERR_INVAL, "t.json: policies[0]: missing key \"policy\"", 1},
    {HEAD TASKS "\"policies\":[\"full\"]}", KV_ERR_INVAL, "t.json: policies[0]: expected object, got string", 1},
    {HEAD "\"tasks\":[{\"task\":\"ppl\"},{\"task\":\"spec\"}]," POLS "}", KV_ERR_INVAL,
     "t.json: tasks[1]: task \"spec\" needs a top-level \"spec\" block (draft, gamma, ...)", 1},
    {HEAD "\"tasks\":[{\"task\":\"spec\"}]," POLS ",\"spec\":{\"gamma\":[3,5]}}", KV_ERR_INVAL,
     "t.json: spec: missing key \"draft\"", 1},
    {HEAD TASKS POLS ",\"spec\":{\"draft\":\"p\"}}", KV_ERR_INVAL, "t.json: spec: given, but no task is \"spec\"", 1},
    {HEAD "\"tasks\":[{\"task\":\"spec\"}]," POLS ",\"spec\":{\"draft\":\"p\",\"schedule\":\"aimdd\"}}", KV_ERR_INVAL,
     "t.json: spec.schedule: must be one of constant, heuristic, aimd; got \"aimdd\"", 1},
    {HEAD "\"tasks\":[{\"task\":\"spec\"}]," POLS ",\"spec\":{\"draft\":\"p\",\"gamma\":33}}", KV_ERR_INVAL,
     "t.json: spec.gamma: must be in [1, 32], got 33", 1},
    {HEAD "\"tasks\":[{\"task\":\"spec\"}]," POLS ",\"spec\":{\"draft\":\"/abs\"}}", KV_ERR_INVAL,
     "t.json: spec.draft: name is an absolute path", 1},
    {HEAD "\"tasks\":[{\"task\":\"spec\"}]," POLS ",\"spec\":{\"draft\":\"p\",\"beam\":2}}", KV_ERR_INVAL,
     "t.json: spec.beam: unknown key (allowed: draft, draft_policy, gamma, gamma_max, intermediate, "
     "intermediate_policy, schedule)", 1},
    {HEAD "\"tasks\":[{\"task\":\"ppl\",\"chunk\":[[1]]}]," POLS "}", KV_ERR_INVAL,
     "t.json: tasks[0].chunk[0]: expected integer, got array", 1},
    {HEAD "\"tasks\":[{\"task\":\"ppl\",\"chunk\":{\"a\":1}}]," POLS "}", KV_ERR_INVAL,
     "t.json: tasks[0].chunk: expected a value or a list of values, got object", 1},
    {HEAD "\"tasks\":[{\"task\":\"ppl\",\"chunk\":[[[[[[1]]]]]]}]," POLS "}", KV_ERR_LIMIT,
     "t.json: tasks[0].chunk[0][0][0][0][0]: nested deeper than 8 levels", 1},
    {HEAD TASKS POLS ",\"seeds\":[-1]}", KV_ERR_INVAL, "t.json: seeds[0]: must be >= 0, got -1", 1},
    {HEAD TASKS POLS ",\"seeds\":[3,1,3]}", KV_ERR_INVAL, "t.json: seeds[2]: duplicate value (same as [0])", 1},
    {HEAD TASKS POLS ",\"repeats\":0}", KV_ERR_INVAL, "t.json: repeats: must be in [1, 100000], got 0", 1},
    {HEAD TASKS POLS ",\"repeats\":[2]}", KV_ERR_INVAL, "t.json: repeats: expected integer, got array", 1},
    {HEAD TASKS POLS ",\"sweep\":\"again\"}", KV_ERR_INVAL, "duplicate object key", 0},
    {HEAD TASKS POLS, KV_ERR_FORMAT, "t.json: line 1, column", 0},
    {"", KV_ERR_FORMAT, "t.json: empty file", 1},
};

static void test_validation_errors(void) {
    char err[512];
    for (size_t c = 0; c < sizeof err_cases / sizeof err_cases[0]; c++) {
        const err_case *e = &err_cases[c];
        int rc;
        err[0] = '\0';
        kv_sweep *s = parse_json(e->json, &rc, err, sizeof err);
        int ok = rc == e->code && s == NULL && (e->exact ? strcmp(err, e->msg) == 0 : strstr(err, e->msg) != NULL);
        if (!ok) printf("\n  case %zu: rc %d (want %d)\n    got  \"%s\"\n    want \"%s\"\n", c, rc, e->code, err, e->msg);
        CU_ASSERT(ok);
        kv_sweep_free(s == (kv_sweep *)1 ? NULL : s);
    }
    // A name of 256 bytes is one too long.
    char text[1024];
    char name[257];
    memset(name, 'x', 256);
    name[256] = '\0';
    snprintf(text, sizeof text, "{\"sweep\":\"t\",\"models\":[\"%s\"],\"datasets\":[{\"name\":\"d\"}]," TASKS POLS "}",
             name);
    int rc;
    CU_ASSERT(parse_json(text, &rc, err, sizeof err) == NULL && rc == KV_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(err, "t.json: models[0]: name is longer than 255 bytes");
    name[255] = '\0';
    snprintf(text, sizeof text, "{\"sweep\":\"t\",\"models\":[\"%s\"],\"datasets\":[{\"name\":\"d\"}]," TASKS POLS "}",
             name);
    kv_sweep *s = parse_json(text, &rc, err, sizeof err);
    CU_ASSERT(rc == KV_OK && s != NULL);
    kv_sweep_free(s);
}

/* msgpack input: hand-built maps with what JSON cannot express. */
static void test_msgpack_errors(void) {
    char err[512];
    kv_sweep *s = NULL;
    kv_mw w;
    size_t len;
    unsigned char *mp;
    // Duplicate key inside a policy object.
    kv_mw_init(&w, 4096);
    kv_mw_map(&w, 5);
    kv_mw_cstr(&w, "sweep");
    kv_mw_cstr(&w, "t");
    kv_mw_cstr(&w, "models");
    kv_mw_array(&w, 1);
    kv_mw_cstr(&w, "m");
    kv_mw_cstr(&w, "datasets");
    kv_mw_array(&w, 1);
    kv_mw_map(&w, 1);
    kv_mw_cstr(&w, "name");
    kv_mw_cstr(&w, "d");
    kv_mw_cstr(&w, "tasks");
    kv_mw_array(&w, 1);
    kv_mw_map(&w, 1);
    kv_mw_cstr(&w, "task");
    kv_mw_cstr(&w, "ppl");
    kv_mw_cstr(&w, "policies");
    kv_mw_array(&w, 1);
    kv_mw_map(&w, 3);
    kv_mw_cstr(&w, "policy");
    kv_mw_cstr(&w, "streaming");
    kv_mw_cstr(&w, "recent");
    kv_mw_int(&w, 4);
    kv_mw_cstr(&w, "recent");
    kv_mw_int(&w, 8);
    mp = kv_mw_take(&w, &len);
    CU_ASSERT_EQUAL(kv_sweep_parse(&s, mp, len, -1, "t.msgpack", err, sizeof err), KV_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(err, "t.msgpack: policies[0].recent: duplicate key");
    CU_ASSERT(s == NULL);
    // Trailing byte: the guard refuses it.
    unsigned char *mp2 = malloc(len + 1);
    memcpy(mp2, mp, len);
    mp2[len] = 0xc0;
    CU_ASSERT_EQUAL(kv_sweep_parse(&s, mp2, len + 1, 0, "t.msgpack", err, sizeof err), KV_ERR_FORMAT);
    CU_ASSERT(strstr(err, "t.msgpack: trailing bytes") == err);
    free(mp2);
    free(mp);
    // Integer key at the top level; a seed above INT64_MAX.
    kv_mw_init(&w, 64);
    kv_mw_map(&w, 1);
    kv_mw_int(&w, 7);
    kv_mw_int(&w, 1);
    mp = kv_mw_take(&w, &len);
    CU_ASSERT_EQUAL(kv_sweep_parse(&s, mp, len, 0, "t.msgpack", err, sizeof err), KV_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(err, "t.msgpack: key #0: expected string, got integer");
    free(mp);
    static const unsigned char big_seed[] = {0x81, 0xa5, 's', 'e', 'e', 'd', 's', 0x91, 0xcf,
                                             0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    CU_ASSERT_EQUAL(kv_sweep_parse(&s, big_seed, sizeof big_seed, 0, "t.msgpack", err, sizeof err), KV_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(err, "t.msgpack: sweep: missing required key");
    // Guard limits: hostile headers never reach msgpack-c.
    CU_ASSERT_EQUAL(kv_sweep_parse(&s, "\xdd\x04\x00\x00\x00", 5, 0, "t.msgpack", err, sizeof err), KV_ERR_FORMAT);
    CU_ASSERT_EQUAL(kv_sweep_parse(&s, "\xc1", 1, -1, "t.msgpack", err, sizeof err), KV_ERR_FORMAT);
    // Over the size cap, in either format.
    size_t big = (size_t)KV_SWEEP_MAX_BYTES + 1;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    huge[0] = '{';
    CU_ASSERT_EQUAL(kv_sweep_parse(&s, huge, big, -1, "big.json", err, sizeof err), KV_ERR_LIMIT);
    CU_ASSERT(strstr(err, "big.json: ") == err);
    huge[0] = (char)0x80;
    CU_ASSERT_EQUAL(kv_sweep_parse(&s, huge, big, -1, "big", err, sizeof err), KV_ERR_LIMIT);
    free(huge);
}

static void test_job_limit(void) {
    // 1000 recent values x 100 seeds = exactly the limit; 101 seeds is over.
    size_t cap = 64 * 1024;
    char *text = malloc(cap);
    for (int seeds = 100; seeds <= 101; seeds++) {
        size_t n = (size_t)snprintf(text, cap, HEAD TASKS "\"policies\":[{\"policy\":\"streaming\",\"recent\":[");
        for (int i = 1; i <= 1000; i++) n += (size_t)snprintf(text + n, cap - n, "%s%d", i > 1 ? "," : "", i);
        n += (size_t)snprintf(text + n, cap - n, "]}],\"seeds\":[");
        for (int i = 0; i < seeds; i++) n += (size_t)snprintf(text + n, cap - n, "%s%d", i ? "," : "", i);
        snprintf(text + n, cap - n, "]}");
        int rc;
        char err[512];
        kv_sweep *s = parse_json(text, &rc, err, sizeof err);
        if (seeds == 100) {
            CU_ASSERT(rc == KV_OK && s && kv_sweep_n_jobs(s) == KV_SWEEP_MAX_JOBS);
            kv_job j;
            CU_ASSERT(s && kv_sweep_job(s, KV_SWEEP_MAX_JOBS - 1, NULL, &j, err, sizeof err) == KV_OK &&
                      j.params.p[0].i == 1000 && j.seed == 99);
            kv_sweep_free(s);
        } else {
            CU_ASSERT_EQUAL(rc, KV_ERR_LIMIT);
            CU_ASSERT(s == NULL);
            CU_ASSERT_STRING_EQUAL(err, "t.json: the grid expands to 101000 jobs, over the limit of 100000 "
                                        "(KV_SWEEP_MAX_JOBS)");
        }
    }
    free(text);
    // Saturation: a product far beyond 2^64 is still just "over the limit".
    static const char huge[] =
        HEAD "\"tasks\":[{\"task\":\"speed\",\"prefill\":[1,2,3,4,5,6,7,8,9,10],\"decode\":[1,2,3,4,5,6,7,8,9,10]}],"
        "\"policies\":[{\"policy\":\"h2o\",\"heavy\":[1,2,3,4,5,6,7,8,9,10],\"recent\":[1,2,3,4,5,6,7,8,9,10],"
        "\"sink\":[1,2,3,4,5,6,7,8,9,10]}],\"repeats\":100000}";
    int rc;
    char err[512];
    CU_ASSERT(parse_json(huge, &rc, err, sizeof err) == NULL && rc == KV_ERR_LIMIT);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("sweep", NULL, NULL);
    CU_add_test(s, "examples/ parse; spec grid; msgpack round trip", test_examples);
    CU_add_test(s, "grid order and counts, nonce", test_grid_order);
    CU_add_test(s, "key order, 4 vs 4.0, JSON vs msgpack: same ids", test_equivalent_inputs);
    CU_add_test(s, "validation errors with field paths", test_validation_errors);
    CU_add_test(s, "msgpack-only errors and caps", test_msgpack_errors);
    CU_add_test(s, "job-count limit", test_job_limit);
    return tu_run();
}
