/* test_job.c — the job wire format (worker/job.c, job_result.c,
 * mpack_guard.c, job_catalog.c): canonical encoding and its golden bytes,
 * round trips, the job_id's stability, results with NaN metrics, and the
 * bad-input plans of ../shared/docs/queue-reliability.md §7.2: T1 (a corpus
 * of hostile messages, each with its specific error code) and T2 (a seeded,
 * deterministic mutation loop of 200k iterations over 10 seed jobs; every
 * outcome is success or a known error code, and every success re-encodes to
 * the same bytes). */
#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "job.h"
#include "model.h"
#include "policy.h"
#include "mpack_write.h"
#include "testutil.h"

/* The canonical bytes of golden_job(), written out by hand from the format
 * in job.h; the id is their SHA-256 computed independently (Python hashlib). */
static const unsigned char golden_bytes[] = {
    0x8d, 0xa7, 0x64, 0x61, 0x74, 0x61, 0x73, 0x65, 0x74, 0xa8, 0x64, 0x65, 0x6d, 0x6f, 0x2e, 0x74, 0x78, 0x74, 0xa3,
    0x64, 0x6f, 0x63, 0x00, 0xa5, 0x6d, 0x6f, 0x64, 0x65, 0x6c, 0xaa, 0x70, 0x79, 0x74, 0x68, 0x69, 0x61, 0x2d, 0x37,
    0x30, 0x6d, 0xa6, 0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x00, 0xa6, 0x70, 0x61, 0x72, 0x61, 0x6d, 0x73, 0x82, 0xa6,
    0x62, 0x75, 0x64, 0x67, 0x65, 0x74, 0xcd, 0x01, 0x2c, 0xa5, 0x72, 0x61, 0x74, 0x69, 0x6f, 0xcb, 0x3f, 0xe0, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0xa6, 0x70, 0x6f, 0x6c, 0x69, 0x63, 0x79, 0xa5, 0x6b, 0x6e, 0x6f, 0x72, 0x6d, 0xa6,
    0x72, 0x65, 0x70, 0x65, 0x61, 0x74, 0x00, 0xa4, 0x73, 0x65, 0x65, 0x64, 0x07, 0xa5, 0x73, 0x77, 0x65, 0x65, 0x70,
    0xa6, 0x67, 0x6f, 0x6c, 0x64, 0x65, 0x6e, 0xa4, 0x74, 0x61, 0x73, 0x6b, 0xa3, 0x70, 0x70, 0x6c, 0xab, 0x74, 0x61,
    0x73, 0x6b, 0x5f, 0x70, 0x61, 0x72, 0x61, 0x6d, 0x73, 0x81, 0xa5, 0x63, 0x68, 0x75, 0x6e, 0x6b, 0xcd, 0x01, 0x00,
    0xa6, 0x74, 0x6f, 0x6b, 0x65, 0x6e, 0x73, 0xcd, 0x02, 0x00, 0xa1, 0x76, 0x01};
static const char golden_id[] = "5d86b99c7bc60725c86689f90a22e5ce40211159f8ad151cbc0dfcab04eb9592";

static void param_int(kv_params *ps, const char *key, int64_t v) {
    kv_param *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", key);
    p->type = KV_VAL_INT;
    p->i = v;
}

static void param_real(kv_params *ps, const char *key, double v) {
    kv_param *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", key);
    p->type = KV_VAL_REAL;
    p->r = v;
}

static void param_str(kv_params *ps, const char *key, const char *v) {
    kv_param *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", key);
    p->type = KV_VAL_STR;
    snprintf(p->s, sizeof p->s, "%s", v);
}

static void param_bool(kv_params *ps, const char *key, int v) {
    kv_param *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", key);
    p->type = KV_VAL_BOOL;
    p->i = v;
}

static void golden_job(kv_job *j) {
    memset(j, 0, sizeof *j);
    strcpy(j->sweep, "golden");
    strcpy(j->model, "pythia-70m");
    strcpy(j->dataset, "demo.txt");
    j->tokens = 512;
    strcpy(j->task, "ppl");
    param_int(&j->task_params, "chunk", 256);
    strcpy(j->policy, "knorm");
    param_real(&j->params, "ratio", 0.5); // inserted out of order on purpose
    param_int(&j->params, "budget", 300);
    j->seed = 7;
}

static int jobs_equal(const kv_job *a, const kv_job *b) {
    if (strcmp(a->sweep, b->sweep) || strcmp(a->model, b->model) || strcmp(a->dataset, b->dataset) ||
        strcmp(a->task, b->task) || strcmp(a->policy, b->policy) || strcmp(a->nonce, b->nonce) ||
        a->doc != b->doc || a->offset != b->offset || a->tokens != b->tokens || a->seed != b->seed ||
        a->repeat != b->repeat || a->has_spec != b->has_spec || strcmp(a->job_id, b->job_id))
        return 0;
    return 1;
}

static void test_sha256_known_answers(void) {
    char hex[KV_JOB_ID_HEX];
    kv_sha256_hex("abc", 3, hex);
    CU_ASSERT_STRING_EQUAL(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    kv_sha256_hex("", 0, hex);
    CU_ASSERT_STRING_EQUAL(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_golden_encoding(void) {
    kv_job j, d;
    unsigned char *buf;
    size_t len;
    char err[256];
    golden_job(&j);
    CU_ASSERT_FATAL(kv_job_encode(&j, &buf, &len, err, sizeof err) == KV_OK);
    CU_ASSERT_EQUAL(len, sizeof golden_bytes);
    CU_ASSERT(len == sizeof golden_bytes && memcmp(buf, golden_bytes, len) == 0);
    CU_ASSERT_STRING_EQUAL(j.job_id, golden_id);
    CU_ASSERT_EQUAL(kv_job_decode(buf, len, &d, err, sizeof err), KV_OK);
    CU_ASSERT(jobs_equal(&j, &d));
    // Decoded params come back sorted by key.
    CU_ASSERT_EQUAL(d.params.n, 2);
    CU_ASSERT_STRING_EQUAL(d.params.p[0].key, "budget");
    CU_ASSERT(d.params.p[1].type == KV_VAL_REAL && d.params.p[1].r == 0.5);
    CU_ASSERT(kv_params_get(&d.params, "ratio") == &d.params.p[1]);
    CU_ASSERT(kv_params_get(&d.params, "nope") == NULL);
    CU_ASSERT(kv_params_get(&d.task_params, "chunk")->i == 256);
    free(buf);
}

static void test_round_trip_and_stability(void) {
    kv_job a, b, d;
    unsigned char *ba, *bb;
    size_t la, lb;
    char err[256];
    // Full job: spec block, strings, bools, negative and large ints, nonce.
    memset(&a, 0, sizeof a);
    strcpy(a.sweep, "sw \xc3\xa9");
    strcpy(a.model, "pythia-1b");
    strcpy(a.dataset, "pg19/test");
    a.doc = 3;
    a.offset = 70000;
    a.tokens = 1LL << 40;
    strcpy(a.task, "spec");
    param_int(&a.task_params, "max_new", 128);
    param_real(&a.task_params, "temperature", 0.7);
    strcpy(a.policy, "streaming");
    param_str(&a.params, "pos", "shift");
    param_int(&a.params, "sink", 4);
    param_real(&a.params, "recent", 1020.0); // integral real: written as an integer
    a.has_spec = 1;
    param_str(&a.spec, "draft", "pythia-70m");
    param_int(&a.spec, "gamma", 5);
    param_bool(&a.spec, "compare", 1);
    a.seed = -5;
    a.repeat = 2;
    // The same job with params in another order and "recent" as an integer.
    b = a;
    b.params.n = 0;
    param_int(&b.params, "recent", 1020);
    param_int(&b.params, "sink", 4);
    param_str(&b.params, "pos", "shift");
    CU_ASSERT_FATAL(kv_job_encode(&a, &ba, &la, err, sizeof err) == KV_OK);
    CU_ASSERT_FATAL(kv_job_encode(&b, &bb, &lb, err, sizeof err) == KV_OK);
    CU_ASSERT(la == lb && memcmp(ba, bb, la) == 0);
    CU_ASSERT_STRING_EQUAL(a.job_id, b.job_id);
    CU_ASSERT_EQUAL(strlen(a.job_id), 64);
    CU_ASSERT_EQUAL(kv_job_decode(ba, la, &d, err, sizeof err), KV_OK);
    CU_ASSERT(jobs_equal(&a, &d));
    const kv_param *r = kv_params_get(&d.params, "recent");
    CU_ASSERT(r && r->type == KV_VAL_INT && r->i == 1020);
    CU_ASSERT(kv_params_get(&d.spec, "compare")->type == KV_VAL_BOOL);
    CU_ASSERT_STRING_EQUAL(kv_params_get(&d.spec, "draft")->s, "pythia-70m");
    CU_ASSERT_EQUAL(d.seed, -5);
    free(bb);
    // A nonce (kvsubmit --rerun) changes the id; -0.0 is the integer 0.
    strcpy(b.nonce, "rerun-1");
    CU_ASSERT_FATAL(kv_job_encode(&b, &bb, &lb, err, sizeof err) == KV_OK);
    CU_ASSERT_STRING_NOT_EQUAL(a.job_id, b.job_id);
    CU_ASSERT_EQUAL(kv_job_decode(bb, lb, &d, err, sizeof err), KV_OK);
    CU_ASSERT_STRING_EQUAL(d.nonce, "rerun-1");
    CU_ASSERT_STRING_EQUAL(d.job_id, b.job_id);
    free(ba);
    free(bb);
    kv_job z1, z2;
    golden_job(&z1);
    golden_job(&z2);
    param_real(&z1.params, "zero", -0.0);
    param_int(&z2.params, "zero", 0);
    CU_ASSERT_FATAL(kv_job_encode(&z1, &ba, &la, err, sizeof err) == KV_OK);
    CU_ASSERT_FATAL(kv_job_encode(&z2, &bb, &lb, err, sizeof err) == KV_OK);
    CU_ASSERT_STRING_EQUAL(z1.job_id, z2.job_id);
    free(ba);
    free(bb);
}

static void test_encode_refuses(void) {
    kv_job j;
    unsigned char *buf = (unsigned char *)"x";
    size_t len = 1;
    char err[256];
    golden_job(&j);
    param_int(&j.params, "budget", 1); // duplicate key
    CU_ASSERT_EQUAL(kv_job_encode(&j, &buf, &len, err, sizeof err), KV_ERR_INVAL);
    CU_ASSERT(buf == NULL && len == 0 && strstr(err, "duplicate") != NULL);
    golden_job(&j);
    param_real(&j.params, "bad", NAN);
    CU_ASSERT_EQUAL(kv_job_encode(&j, &buf, &len, err, sizeof err), KV_ERR_INVAL);
    golden_job(&j);
    memset(j.model, 'a', sizeof j.model); // unterminated
    CU_ASSERT_EQUAL(kv_job_encode(&j, &buf, &len, err, sizeof err), KV_ERR_INVAL);
    golden_job(&j);
    j.model[0] = '\0';
    CU_ASSERT_EQUAL(kv_job_encode(&j, &buf, &len, err, sizeof err), KV_ERR_INVAL);
    golden_job(&j);
    j.doc = -1;
    CU_ASSERT_EQUAL(kv_job_encode(&j, &buf, &len, err, sizeof err), KV_ERR_INVAL);
    golden_job(&j);
    j.params.n = KV_MAX_PARAMS + 1;
    CU_ASSERT_EQUAL(kv_job_encode(&j, &buf, &len, err, sizeof err), KV_ERR_INVAL);
    golden_job(&j);
    strcpy(j.model, "\xc3\x28");
    CU_ASSERT_EQUAL(kv_job_encode(&j, &buf, &len, err, sizeof err), KV_ERR_INVAL);
}

/* ---- T1: a corpus of hostile messages ---------------------------------- */

enum { HOW_NONE, HOW_OMIT, HOW_DUP, HOW_INTKEY, HOW_VALUE, HOW_UNKNOWN, HOW_SWAP };

static const char *const field_order[] = {"dataset", "doc",    "model", "offset",      "params", "policy", "repeat",
                                          "seed",    "sweep",  "task",  "task_params", "tokens", "v"};
#define N_FIELDS 13

static void default_value(kv_mw *w, const char *key) {
    if (!strcmp(key, "dataset")) kv_mw_cstr(w, "demo.txt");
    else if (!strcmp(key, "model")) kv_mw_cstr(w, "pythia-70m");
    else if (!strcmp(key, "params")) kv_mw_map(w, 0);
    else if (!strcmp(key, "policy")) kv_mw_cstr(w, "full");
    else if (!strcmp(key, "sweep")) kv_mw_cstr(w, "t1");
    else if (!strcmp(key, "task")) kv_mw_cstr(w, "ppl");
    else if (!strcmp(key, "task_params")) kv_mw_map(w, 0);
    else if (!strcmp(key, "v")) kv_mw_int(w, 1);
    else kv_mw_int(w, 0);
}

static void field(kv_mw *w, const char *key, const char *target, int how) {
    int hit = target && strcmp(key, target) == 0;
    if (hit && how == HOW_OMIT) return;
    if (hit && how == HOW_INTKEY)
        kv_mw_int(w, 5);
    else
        kv_mw_cstr(w, key);
    default_value(w, key);
    if (hit && how == HOW_DUP) {
        kv_mw_cstr(w, key);
        default_value(w, key);
    }
}

/* Builds a job message with one field mutated; raw is the replacement value
 * for HOW_VALUE (copied verbatim). Returns a malloc'd buffer. */
static unsigned char *variant(const char *target, int how, const unsigned char *raw, size_t n_raw, size_t *len) {
    // Raw values are spliced in by building the message in pieces.
    unsigned char *out = malloc(KV_JOB_MAX_BYTES * 2);
    size_t n = 0;
    int count = N_FIELDS - (how == HOW_OMIT) + (how == HOW_DUP) + (how == HOW_UNKNOWN);
    kv_mw w;
    kv_mw_init(&w, KV_JOB_MAX_BYTES * 2);
    kv_mw_map(&w, (uint32_t)count);
    for (int f = 0; f < N_FIELDS; f++) {
        const char *key = field_order[f];
        if (how == HOW_SWAP && target && f + 1 < N_FIELDS && !strcmp(key, target)) {
            field(&w, field_order[f + 1], NULL, HOW_NONE);
            field(&w, key, NULL, HOW_NONE);
            f++;
            continue;
        }
        if (how == HOW_VALUE && target && !strcmp(key, target)) {
            kv_mw_cstr(&w, key);
            size_t m;
            unsigned char *part = kv_mw_take(&w, &m);
            memcpy(out + n, part, m);
            n += m;
            free(part);
            memcpy(out + n, raw, n_raw);
            n += n_raw;
            kv_mw_init(&w, KV_JOB_MAX_BYTES * 2);
            continue;
        }
        field(&w, key, target, how);
    }
    if (how == HOW_UNKNOWN) {
        kv_mw_cstr(&w, "zzz");
        kv_mw_int(&w, 1);
    }
    size_t m;
    unsigned char *part = kv_mw_take(&w, &m);
    if (m) memcpy(out + n, part, m);
    n += m;
    free(part);
    *len = n;
    return out;
}

typedef struct bad_case {
    const char *what;
    const char *target;
    int how;
    const char *raw; /* value bytes for HOW_VALUE */
    size_t n_raw;
    int code;
    const char *msg; /* substring of the error */
} bad_case;

#define RAW(s) s, sizeof(s) - 1

static const bad_case bad_cases[] = {
    {"missing model", "model", HOW_OMIT, NULL, 0, KV_ERR_INVAL, "missing key \"model\""},
    {"missing v", "v", HOW_OMIT, NULL, 0, KV_ERR_INVAL, "missing key \"v\""},
    {"duplicate doc", "doc", HOW_DUP, NULL, 0, KV_ERR_INVAL, "duplicate key \"doc\""},
    {"integer key", "doc", HOW_INTKEY, NULL, 0, KV_ERR_INVAL, "key #1 is integer"},
    {"unknown key", NULL, HOW_UNKNOWN, NULL, 0, KV_ERR_INVAL, "unknown key \"zzz\""},
    {"unsorted keys", "model", HOW_SWAP, NULL, 0, KV_ERR_FORMAT, "canonical"},
    {"doc as string", "doc", HOW_VALUE, RAW("\xa1x"), KV_ERR_INVAL, "doc: expected integer, got string"},
    {"doc as real", "doc", HOW_VALUE, RAW("\xcb\x3f\xe0\0\0\0\0\0\0"), KV_ERR_INVAL, "expected integer, got real"},
    {"negative doc", "doc", HOW_VALUE, RAW("\xff"), KV_ERR_INVAL, "out of range"},
    {"seed above int64", "seed", HOW_VALUE, RAW("\xcf\xff\xff\xff\xff\xff\xff\xff\xff"), KV_ERR_INVAL, "out of range"},
    {"tokens int64 min", "tokens", HOW_VALUE, RAW("\xd3\x80\0\0\0\0\0\0\0"), KV_ERR_INVAL, "out of range"},
    {"non-shortest int", "doc", HOW_VALUE, RAW("\xcc\x05"), KV_ERR_FORMAT, "canonical"},
    {"NUL in model", "model", HOW_VALUE, RAW("\xa3" "a\0b"), KV_ERR_INVAL, "NUL"},
    {"bad UTF-8 model", "model", HOW_VALUE, RAW("\xa2\xc3\x28"), KV_ERR_INVAL, "UTF-8"},
    {"empty model", "model", HOW_VALUE, RAW("\xa0"), KV_ERR_INVAL, "empty"},
    {"model as nil", "model", HOW_VALUE, RAW("\xc0"), KV_ERR_INVAL, "expected string, got nil"},
    {"version 2", "v", HOW_VALUE, RAW("\x02"), KV_ERR_INVAL, "unsupported"},
    {"params as array", "params", HOW_VALUE, RAW("\x91\x01"), KV_ERR_INVAL, "expected map, got array"},
    {"params nested", "params", HOW_VALUE, RAW("\x81\xa1" "a\x91\x01"), KV_ERR_INVAL, "expected a scalar"},
    {"params int key", "params", HOW_VALUE, RAW("\x81\x01\x02"), KV_ERR_INVAL, "key #0 is integer"},
    {"params dup key", "params", HOW_VALUE, RAW("\x82\xa1" "a\x01\xa1" "a\x02"), KV_ERR_INVAL, "duplicate key \"a\""},
    {"params unsorted", "params", HOW_VALUE, RAW("\x82\xa1" "b\x01\xa1" "a\x02"), KV_ERR_FORMAT, "canonical"},
    {"params integral real", "params", HOW_VALUE, RAW("\x81\xa1" "a\xcb\x40\x10\0\0\0\0\0\0"), KV_ERR_FORMAT,
     "canonical"},
    {"params float32", "params", HOW_VALUE, RAW("\x81\xa1" "a\xca\x3f\0\0\0"), KV_ERR_FORMAT, "canonical"},
    {"params NaN", "params", HOW_VALUE, RAW("\x81\xa1" "a\xcb\x7f\xf8\0\0\0\0\0\0"), KV_ERR_INVAL, "not finite"},
    {"params bin", "params", HOW_VALUE, RAW("\x81\xa1" "a\xc4\x01\x00"), KV_ERR_INVAL, "got binary"},
    {"params empty key", "params", HOW_VALUE, RAW("\x81\xa0\x01"), KV_ERR_INVAL, "empty"},
    {"task too long", "task", HOW_VALUE, RAW("\xd9\x20" "0123456789abcdef0123456789abcdef"), KV_ERR_INVAL, "limit"},
};

static void test_t1_schema_corpus(void) {
    char err[256];
    kv_job j;
    for (size_t c = 0; c < sizeof bad_cases / sizeof bad_cases[0]; c++) {
        const bad_case *b = &bad_cases[c];
        size_t len;
        unsigned char *buf = variant(b->target, b->how, (const unsigned char *)b->raw, b->n_raw, &len);
        err[0] = '\0';
        int rc = kv_job_decode(buf, len, &j, err, sizeof err);
        if (rc != b->code || !strstr(err, b->msg))
            printf("\n  case \"%s\": rc %d (want %d), err \"%s\" (want \"%s\")\n", b->what, rc, b->code, err, b->msg);
        CU_ASSERT_EQUAL(rc, b->code);
        CU_ASSERT(strstr(err, b->msg) != NULL);
        CU_ASSERT_EQUAL(j.job_id[0], '\0');
        free(buf);
    }
    // The unmutated variant is a valid job (the corpus tests what it claims).
    size_t len;
    unsigned char *buf = variant(NULL, HOW_NONE, NULL, 0, &len);
    CU_ASSERT_EQUAL(kv_job_decode(buf, len, &j, err, sizeof err), KV_OK);
    free(buf);
    // 33 params: over KV_MAX_PARAMS.
    unsigned char raw[1024];
    size_t n = 0;
    raw[n++] = 0xde;
    raw[n++] = 0;
    raw[n++] = 33;
    for (int i = 0; i < 33; i++) {
        raw[n++] = 0xa2;
        raw[n++] = (unsigned char)('a' + i / 26);
        raw[n++] = (unsigned char)('a' + i % 26);
        raw[n++] = 0x01;
    }
    buf = variant("params", HOW_VALUE, raw, n, &len);
    CU_ASSERT_EQUAL(kv_job_decode(buf, len, &j, err, sizeof err), KV_ERR_LIMIT);
    free(buf);
}

static unsigned char *nested(int depth, size_t *len) {
    unsigned char *b = malloc((size_t)depth + 1);
    for (int i = 0; i < depth; i++) b[i] = 0x91;
    b[depth] = 0x01;
    *len = (size_t)depth + 1;
    return b;
}

static void test_t1_raw_corpus(void) {
    char err[256];
    kv_job j;
    static const struct {
        const char *what;
        const char *bytes;
        size_t n;
        int code;
    } raw[] = {
        {"reserved 0xc1", RAW("\xc1"), KV_ERR_FORMAT},
        {"array32 of 2^32-1", RAW("\xdd\xff\xff\xff\xff"), KV_ERR_FORMAT},
        {"array32 of 67M", RAW("\xdd\x04\x00\x00\x00"), KV_ERR_FORMAT},
        {"map32 of 2^32-1", RAW("\xdf\xff\xff\xff\xff"), KV_ERR_FORMAT},
        {"str32 short body", RAW("\xdb\xff\xff\xff\xff" "abc"), KV_ERR_FORMAT},
        {"bin32 short body", RAW("\xc6\x00\x01\x00\x00" "abc"), KV_ERR_FORMAT},
        {"ext32 short body", RAW("\xc9\x00\x00\x10\x00\x01" "ab"), KV_ERR_FORMAT},
        {"truncated header", RAW("\xcd\x01"), KV_ERR_FORMAT},
        {"two objects", RAW("\x80\x80"), KV_ERR_FORMAT},
        {"scalar root", RAW("\x01"), KV_ERR_INVAL},
        {"array root", RAW("\x90"), KV_ERR_INVAL},
        {"nil root", RAW("\xc0"), KV_ERR_INVAL},
    };
    CU_ASSERT_EQUAL(kv_job_decode("", 0, &j, err, sizeof err), KV_ERR_FORMAT);
    CU_ASSERT(strstr(err, "empty") != NULL);
    CU_ASSERT_EQUAL(kv_job_decode(NULL, 0, &j, err, sizeof err), KV_ERR_FORMAT);
    for (size_t c = 0; c < sizeof raw / sizeof raw[0]; c++) {
        int rc = kv_job_decode(raw[c].bytes, raw[c].n, &j, err, sizeof err);
        if (rc != raw[c].code) printf("\n  case \"%s\": rc %d (want %d): %s\n", raw[c].what, rc, raw[c].code, err);
        CU_ASSERT_EQUAL(rc, raw[c].code);
    }
    // Depth: 33 (msgpack-c's own limit) and 9 (one over ours) are limits; 8 passes the guard.
    size_t len;
    unsigned char *b = nested(33, &len);
    CU_ASSERT_EQUAL(kv_job_decode(b, len, &j, err, sizeof err), KV_ERR_LIMIT);
    CU_ASSERT(strstr(err, "nesting") != NULL);
    free(b);
    b = nested(9, &len);
    CU_ASSERT_EQUAL(kv_job_decode(b, len, &j, err, sizeof err), KV_ERR_LIMIT);
    free(b);
    b = nested(8, &len);
    CU_ASSERT_EQUAL(kv_mpack_guard(b, len, KV_JOB_MAX_BYTES, KV_MPACK_MAX_DEPTH, err, sizeof err), KV_OK);
    CU_ASSERT_EQUAL(kv_job_decode(b, len, &j, err, sizeof err), KV_ERR_INVAL);
    free(b);
    // Truncation of a valid job at every byte offset.
    int all_format = 1;
    for (size_t cut = 0; cut < sizeof golden_bytes; cut++)
        all_format &= kv_job_decode(golden_bytes, cut, &j, err, sizeof err) == KV_ERR_FORMAT;
    CU_ASSERT(all_format);
    // Trailing bytes after a valid job.
    unsigned char tr[sizeof golden_bytes + 1];
    memcpy(tr, golden_bytes, sizeof golden_bytes);
    tr[sizeof golden_bytes] = 0x00;
    CU_ASSERT_EQUAL(kv_job_decode(tr, sizeof tr, &j, err, sizeof err), KV_ERR_FORMAT);
    CU_ASSERT(strstr(err, "trailing") != NULL);
    // 65 KiB: over the cap before anything is read.
    size_t big = 65 * 1024;
    unsigned char *huge = calloc(1, big);
    huge[0] = 0xdb;
    CU_ASSERT_EQUAL(kv_job_decode(huge, big, &j, err, sizeof err), KV_ERR_LIMIT);
    free(huge);
    // The guard's own argument checks and a well-formed mix of every type.
    CU_ASSERT_EQUAL(kv_mpack_guard("\x01", 1, 10, 0, err, sizeof err), KV_ERR_INVAL);
    CU_ASSERT_EQUAL(kv_mpack_guard("\x01", 1, 10, 65, err, sizeof err), KV_ERR_INVAL);
    static const char mix[] = "\xdc\x00\x11\xc0\xc2\xc3\xcc\x01\xcd\x00\x01\xce\0\0\0\1\xcf\0\0\0\0\0\0\0\1\xd0\xff"
                              "\xca\0\0\0\0\xcb\0\0\0\0\0\0\0\0\xd4\x01\x02\xd8\x01" "0123456789abcdef"
                              "\xc7\x01\x05z\xc4\x02hi\xd9\x01x\x80\xe0";
    CU_ASSERT_EQUAL(kv_mpack_guard(mix, sizeof mix - 1, 1024, 2, err, sizeof err), KV_OK);
    CU_ASSERT_EQUAL(kv_mpack_guard(mix, sizeof mix - 2, 1024, 2, err, sizeof err), KV_ERR_FORMAT);
    // Peak RSS stays small (the doc's T1 bound; sanitizers inflate it).
#if !defined(__SANITIZE_ADDRESS__)
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    CU_ASSERT(ru.ru_maxrss < 64 * 1024);
#endif
}

/* ---- results ----------------------------------------------------------- */

static void test_result_round_trip(void) {
    kv_result r, d;
    unsigned char *buf;
    size_t len;
    char err[256];
    memset(&r, 0, sizeof r);
    strcpy(r.job_id, golden_id);
    strcpy(r.sweep, "golden");
    strcpy(r.status, "ok");
    strcpy(r.worker, "box:gpu0");
    r.attempt = 2;
    r.started_ms = 1700000000000LL;
    r.finished_ms = 1700000001234LL;
    strcpy(r.engine_version, "kvsweep 0.1");
    kv_metrics_clear(&r.m);
    CU_ASSERT(isnan(r.m.ppl) && r.m.tokens == -1 && r.m.spec_drafted == -1 && isnan(r.m.spec_speedup));
    r.m.ppl = 12.5;
    r.m.nll_sum = 4.0; // integral: stays a real
    r.m.tokens = 512;
    r.m.kv_bytes = 1LL << 33;
    r.extras_json = "{\"k\": [1, 2]}";
    CU_ASSERT_FATAL(kv_result_encode(&r, &buf, &len, err, sizeof err) == KV_OK);
    CU_ASSERT_FATAL(kv_result_decode(buf, len, &d, err, sizeof err) == KV_OK);
    CU_ASSERT_STRING_EQUAL(d.job_id, golden_id);
    CU_ASSERT_STRING_EQUAL(d.worker, "box:gpu0");
    CU_ASSERT_STRING_EQUAL(d.status, "ok");
    CU_ASSERT_EQUAL(d.attempt, 2);
    CU_ASSERT_EQUAL(d.finished_ms, 1700000001234LL);
    CU_ASSERT_EQUAL(d.m.ppl, 12.5);
    CU_ASSERT_EQUAL(d.m.nll_sum, 4.0);
    CU_ASSERT_EQUAL(d.m.tokens, 512);
    CU_ASSERT_EQUAL(d.m.kv_bytes, 1LL << 33);
    CU_ASSERT(isnan(d.m.accuracy) && isnan(d.m.ttft_ms) && d.m.evictions == -1); // NaN -> nil -> NaN
    CU_ASSERT(d.extras_json && strcmp(d.extras_json, r.extras_json) == 0);
    kv_result_free(&d);
    CU_ASSERT(d.extras_json == NULL);
    // Every truncation fails cleanly; the extras are never leaked.
    int ok = 1;
    for (size_t cut = 0; cut < len; cut++) ok &= kv_result_decode(buf, cut, &d, err, sizeof err) == KV_ERR_FORMAT;
    CU_ASSERT(ok);
    free(buf);
    // A failed job without extras.
    strcpy(r.status, "failed");
    strcpy(r.error, "path_rejected: ../x");
    r.extras_json = NULL;
    CU_ASSERT_FATAL(kv_result_encode(&r, &buf, &len, err, sizeof err) == KV_OK);
    CU_ASSERT_FATAL(kv_result_decode(buf, len, &d, err, sizeof err) == KV_OK);
    CU_ASSERT(d.extras_json == NULL);
    CU_ASSERT_STRING_EQUAL(d.error, "path_rejected: ../x");
    // The same bytes are not a job, and a job is not a result.
    kv_job j;
    CU_ASSERT_EQUAL(kv_job_decode(buf, len, &j, err, sizeof err), KV_ERR_INVAL);
    CU_ASSERT_EQUAL(kv_result_decode(golden_bytes, sizeof golden_bytes, &d, err, sizeof err), KV_ERR_INVAL);
    free(buf);
    // Refused on encode.
    strcpy(r.status, "maybe");
    CU_ASSERT_EQUAL(kv_result_encode(&r, &buf, &len, err, sizeof err), KV_ERR_INVAL);
    strcpy(r.status, "ok");
    strcpy(r.job_id, "XYZ");
    CU_ASSERT_EQUAL(kv_result_encode(&r, &buf, &len, err, sizeof err), KV_ERR_INVAL);
}

/* ---- T2: seeded mutation loop ------------------------------------------ */

static uint64_t rng_state;
static uint64_t rng_next(void) {
    // xorshift64*: deterministic across boxes.
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}
static size_t rng_below(size_t n) { return n ? (size_t)(rng_next() % n) : 0; }

static void seed_job(int k, kv_job *j) {
    golden_job(j);
    j->doc = k * 3;
    j->offset = (int64_t)k * 100003;
    j->seed = k % 2 ? -k : (int64_t)1 << (k * 6);
    j->repeat = k;
    snprintf(j->sweep, sizeof j->sweep, "seed-%d", k);
    if (k % 3 == 0) {
        strcpy(j->task, "spec");
        j->has_spec = 1;
        param_str(&j->spec, "draft", "pythia-70m");
        param_int(&j->spec, "gamma", k + 1);
        param_str(&j->spec, "schedule", "aimd");
    }
    if (k % 4 == 1) strcpy(j->nonce, "n0nce");
    for (int i = 0; i < k; i++) {
        char key[16];
        snprintf(key, sizeof key, "p%02d", i);
        if (i % 3 == 0) param_real(&j->params, key, i + 0.25);
        else if (i % 3 == 1) param_str(&j->params, key, "value \xe2\x82\xac");
        else param_bool(&j->params, key, i & 1);
    }
}

static void mutate(unsigned char *b, size_t *len, size_t cap, const unsigned char *other, size_t n_other) {
    static const unsigned char magic[] = {0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc4, 0xca,
                                          0xcb, 0xcf, 0xd3, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff};
    int n_ops = 1 + (int)rng_below(3);
    for (int op = 0; op < n_ops && *len; op++) {
        size_t at = rng_below(*len);
        switch (rng_below(7)) {
        case 0: b[at] ^= (unsigned char)(1u << rng_below(8)); break;                // bit flip
        case 1: b[at] = magic[rng_below(sizeof magic)]; break;                        // header byte
        case 2: {                                                                      // length field corruption
            unsigned char v = rng_below(2) ? 0xff : (unsigned char)rng_next();
            for (size_t i = at; i < *len && i < at + 4; i++) b[i] = v;
            break;
        }
        case 3: *len = at; break;                                                      // truncate
        case 4: {                                                                      // splice with another seed
            size_t from = rng_below(n_other);
            size_t n = n_other - from;
            if (at + n > cap) n = cap - at;
            memcpy(b + at, other + from, n);
            *len = at + n;
            break;
        }
        case 5: {                                                                      // insert a byte
            if (*len < cap) {
                memmove(b + at + 1, b + at, *len - at);
                b[at] = (unsigned char)rng_next();
                (*len)++;
            }
            break;
        }
        default: {                                                                     // delete a range
            size_t n = 1 + rng_below(8);
            if (at + n > *len) n = *len - at;
            memmove(b + at, b + at + n, *len - at - n);
            *len -= n;
            break;
        }
        }
    }
}

static void test_t2_mutation_loop(void) {
    enum { N_SEEDS = 10, ITERS = 200000 };
    unsigned char *seeds[N_SEEDS];
    size_t lens[N_SEEDS];
    char err[256];
    kv_job j, d;
    for (int k = 0; k < N_SEEDS; k++) {
        seed_job(k, &j);
        CU_ASSERT_FATAL(kv_job_encode(&j, &seeds[k], &lens[k], err, sizeof err) == KV_OK);
        CU_ASSERT_FATAL(kv_job_decode(seeds[k], lens[k], &d, err, sizeof err) == KV_OK);
    }
    size_t cap = 4096;
    unsigned char *b = malloc(cap);
    long counts[5] = {0}; // ok, INVAL, FORMAT, LIMIT, other
    long reencode_bad = 0;
    rng_state = 0x9e3779b97f4a7c15ULL;
    for (int it = 0; it < ITERS; it++) {
        int k = (int)rng_below(N_SEEDS);
        int o = (int)rng_below(N_SEEDS);
        size_t len = lens[k];
        memcpy(b, seeds[k], len);
        mutate(b, &len, cap, seeds[o], lens[o]);
        int rc = kv_job_decode(b, len, &d, err, sizeof err);
        if (rc == KV_OK) {
            counts[0]++;
            unsigned char *re;
            size_t n_re;
            kv_job e = d;
            if (kv_job_encode(&e, &re, &n_re, err, sizeof err) != KV_OK) {
                reencode_bad++;
                continue;
            }
            if (n_re != len || memcmp(re, b, len) != 0 || strcmp(e.job_id, d.job_id) != 0) reencode_bad++;
            free(re);
        } else if (rc == KV_ERR_INVAL) {
            counts[1]++;
        } else if (rc == KV_ERR_FORMAT) {
            counts[2]++;
        } else if (rc == KV_ERR_LIMIT) {
            counts[3]++;
        } else {
            counts[4]++;
        }
        // The result decoder gets the same bytes: it must fail cleanly.
        kv_result r;
        rc = kv_result_decode(b, len, &r, err, sizeof err);
        if (rc != KV_ERR_INVAL && rc != KV_ERR_FORMAT && rc != KV_ERR_LIMIT) counts[4]++;
        kv_result_free(&r);
    }
    printf("\n  T2: %d iterations: %ld ok, %ld INVAL, %ld FORMAT, %ld LIMIT, %ld other\n", ITERS, counts[0],
           counts[1], counts[2], counts[3], counts[4]);
    CU_ASSERT_EQUAL(counts[4], 0);
    CU_ASSERT_EQUAL(reencode_bad, 0);
    CU_ASSERT(counts[0] > 0 && counts[1] > 0 && counts[2] > 0);
    free(b);
    for (int k = 0; k < N_SEEDS; k++) free(seeds[k]);
}

/* ---- catalog ----------------------------------------------------------- */

static void test_catalog(void) {
    static const char *const all[] = {"full", "window",  "streaming", "h2o",    "lazy_h2o", "sepllm",
                                      "unified", "knorm", "l2",  "fix_size_l2", "hybrid", "snapkv", "pyramidkv",
                                      "tova", "cake", "cam", "kivi", "think"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) CU_ASSERT(kv_policy_known(all[i]));
    int n = 0;
    while (kv_policy_name(n)) n++;
    CU_ASSERT_EQUAL(n, 18);
    CU_ASSERT(!kv_policy_known("lru") && !kv_policy_known("") && !kv_policy_known(NULL));
    CU_ASSERT(kv_policy_param_known("streaming", "sink") && kv_policy_param_known("streaming", "recent"));
    CU_ASSERT(kv_policy_param_known("streaming", "pos") && !kv_policy_param_known("streaming", "heavy"));
    CU_ASSERT(kv_policy_param_known("full", "pos") && !kv_policy_param_known("full", "sink"));
    CU_ASSERT(!kv_policy_param_known("nope", "sink") && kv_policy_param_known("l2", "skip_layers"));
    CU_ASSERT(kv_policy_param_known("kivi", "bits") && !kv_policy_param_known("kivi", "pos"));
    CU_ASSERT(kv_task_known("ppl") && kv_task_known("speed") && kv_task_known("spec") && kv_task_known("passkey"));
    CU_ASSERT(!kv_task_known("mmlu"));
    CU_ASSERT(kv_task_param_known("ppl", "chunk") && kv_task_param_known("ppl", "prefill"));
    CU_ASSERT(!kv_task_param_known("ppl", "decode"));
    CU_ASSERT(kv_task_param_known("speed", "prefill") && kv_task_param_known("speed", "decode"));
    CU_ASSERT(kv_task_param_known("spec", "top_p") && kv_task_param_known("passkey", "depth"));
    CU_ASSERT(kv_spec_param_known("draft") && kv_spec_param_known("gamma_max") && !kv_spec_param_known("chunk"));
    const kv_param_spec *ps = kv_spec_param_spec("schedule");
    CU_ASSERT(ps && ps->kind == KV_PK_STR && ps->choices && !strcmp(ps->choices[2], "aimd"));
    // Every table entry is sorted by key (docs list them so) and typed.
    for (int i = 0; kv_policy_name(i); i++) {
        const kv_param_spec *p = kv_policy_params(kv_policy_name(i));
        for (int k = 0; p[k].key; k++) {
            CU_ASSERT(p[k].kind >= KV_PK_INT && p[k].kind <= KV_PK_LAYERS);
            if (k) CU_ASSERT(strcmp(p[k - 1].key, p[k].key) < 0);
        }
    }
    CU_ASSERT(kv_name_problem("pg19/test.txt", 13) == NULL);
    CU_ASSERT(kv_name_problem("a..b", 4) == NULL);
    CU_ASSERT(kv_name_problem("/etc/passwd", 11) != NULL);
    CU_ASSERT(kv_name_problem("a/../../b", 9) != NULL);
    CU_ASSERT(kv_name_problem("..", 2) != NULL);
    CU_ASSERT(kv_name_problem("a\0b", 3) != NULL);
    CU_ASSERT(kv_name_problem("", 0) != NULL);
    CU_ASSERT(kv_utf8_valid("\xe2\x82\xac", 3) && !kv_utf8_valid("\xed\xa0\x80", 3) && !kv_utf8_valid("\xc0\xaf", 2));
}

/* The catalog (what kvsubmit accepts) and the engine (what a worker runs)
 * must name the same params for every policy: a key only the catalog knows
 * would fail every job on the workers, a key only the engine knows could
 * never be swept. The engine's keys are those of its default description
 * ("sink=4,recent=512,pos=shift"). */
static void test_catalog_matches_engine(void) {
    eng_config cfg = {.n_vocab = 512, .n_embd = 64, .n_layer = 4, .n_head = 2, .head_dim = 32, .n_rot = 8,
                      .n_ff = 256, .n_ctx_train = 2048, .rope_base = 10000.0f, .ln_eps = 1e-5f};
    int checked = 0;
    for (int i = 0; kv_policy_name(i); i++) {
        const char *name = kv_policy_name(i);
        eng_policy *p = NULL;
        char err[256], keys[512] = "", ckeys[512] = "";
        CU_ASSERT_FATAL(eng_policy_create(&p, name, NULL, &cfg, err, sizeof err) == ENG_OK);
        const char *d = eng_policy_describe(p);
        size_t o = 0;
        while (*d) {   // "k=v,k=v": the keys, comma-separated
            size_t kl = strcspn(d, "=");
            o += (size_t)snprintf(keys + o, sizeof keys - o, "%s%.*s", o ? "," : "", (int)kl, d);
            d += kl;
            d += strcspn(d, ",");
            d += *d == ',';
        }
        eng_policy_free(p);
        const kv_param_spec *ps = kv_policy_params(name);
        int n_c = 0, missing = 0;
        for (o = 0; ps[n_c].key; n_c++) {
            o += (size_t)snprintf(ckeys + o, sizeof ckeys - o, "%s%s", o ? "," : "", ps[n_c].key);
            char pat[64];
            snprintf(pat, sizeof pat, ",%s,", ps[n_c].key);
            char wrapped[520];
            snprintf(wrapped, sizeof wrapped, ",%s,", keys);
            missing += strstr(wrapped, pat) == NULL;
        }
        int n_e = 1;
        for (const char *c = keys; *c; c++) n_e += *c == ',';
        if (!*keys) n_e = 0;
        if (missing || n_e != n_c) printf("\n    policy %s: catalog {%s} vs engine {%s}", name, ckeys, keys);
        CU_ASSERT(missing == 0 && n_e == n_c);
        checked++;
    }
    CU_ASSERT_EQUAL(checked, 18);
}

/* docs/sweep.md's Policies and Tasks tables, rendered from the catalog: the
 * doc must contain them verbatim (regenerate: the expected text is written
 * to /tmp/kvsweep-catalog-tables.md when it does not). */
static size_t render_table(char *out, size_t cap, const char *head, const char *(*name_at)(int),
                           const kv_param_spec *(*params_of)(const char *)) {
    size_t o = (size_t)snprintf(out, cap, "| %s | param | type and range | meaning |\n|---|---|---|---|\n", head);
    for (int i = 0; name_at(i) && o < cap; i++) {
        const kv_param_spec *ps = params_of(name_at(i));
        for (int k = 0; ps[k].key && o < cap; k++) {
            char ty[160];
            const kv_param_spec *q = &ps[k];
            if (q->kind == KV_PK_INT || q->kind == KV_PK_NUM) {
                const char *t = q->kind == KV_PK_INT ? "int" : "number";
                if (q->hi >= 9e18) snprintf(ty, sizeof ty, "%s %s %.15g", t, q->lo_open ? ">" : ">=", q->lo);
                else snprintf(ty, sizeof ty, "%s %c%.15g, %.15g%c", t, q->lo_open ? '(' : '[', q->lo, q->hi,
                              q->hi_open ? ')' : ']');
            } else if (q->kind == KV_PK_STR && q->choices) {
                size_t t = (size_t)snprintf(ty, sizeof ty, "string:");
                for (const char *const *c = q->choices; *c && t < sizeof ty; c++)
                    t += (size_t)snprintf(ty + t, sizeof ty - t, " `%s`", *c);
            } else {
                snprintf(ty, sizeof ty, "%s", q->kind == KV_PK_LAYERS ? "int >= 0 or string `\"0;1\"`"
                                              : q->kind == KV_PK_BOOL ? "bool"
                                              : q->kind == KV_PK_NAME ? "model name" : "string");
            }
            char nm[48] = "";
            if (k == 0) snprintf(nm, sizeof nm, "`%s`", name_at(i));
            o += (size_t)snprintf(out + o, cap - o, "| %s | `%s` | %s | %s |\n", nm, q->key, ty, q->help);
        }
    }
    return o;
}

static void test_catalog_docs(void) {
    static char want[32768];
    size_t o = render_table(want, sizeof want, "policy", kv_policy_name, kv_policy_params);
    o += (size_t)snprintf(want + o, sizeof want - o, "\n");
    size_t t0 = o;
    render_table(want + o, sizeof want - o, "task", kv_task_name, kv_task_params);
    char *doc = tu_read_file("docs/sweep.md", NULL);
    CU_ASSERT_FATAL(doc != NULL);
    want[t0 - 1] = 0;   // the policy table, then the task table, each must appear verbatim
    int ok = strstr(doc, want) != NULL && strstr(doc, want + t0) != NULL;
    want[t0 - 1] = '\n';
    if (!ok) {
        FILE *f = fopen("/tmp/kvsweep-catalog-tables.md", "w");
        if (f) fputs(want, f), fclose(f);
        printf("\n    docs/sweep.md is out of date with worker/job_catalog.c: expected tables in /tmp/kvsweep-catalog-tables.md");
    }
    CU_ASSERT(ok);
    free(doc);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("job", NULL, NULL);
    CU_add_test(s, "sha256 known answers", test_sha256_known_answers);
    CU_add_test(s, "golden canonical bytes and id", test_golden_encoding);
    CU_add_test(s, "round trip, key order and 4 vs 4.0, nonce", test_round_trip_and_stability);
    CU_add_test(s, "encode refuses bad jobs", test_encode_refuses);
    CU_add_test(s, "T1 schema corpus", test_t1_schema_corpus);
    CU_add_test(s, "T1 raw corpus: guard, depth, truncation, caps", test_t1_raw_corpus);
    CU_add_test(s, "result round trip, NaN -> nil -> NaN", test_result_round_trip);
    CU_add_test(s, "T2 mutation loop (200k)", test_t2_mutation_loop);
    CU_add_test(s, "catalog of tasks and policies", test_catalog);
    CU_add_test(s, "catalog params == engine params, every policy", test_catalog_matches_engine);
    CU_add_test(s, "docs/sweep.md tables == the catalog", test_catalog_docs);
    return tu_run();
}
