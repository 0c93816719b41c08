/* test_results.c — results.db (submit/results.c + schema/NNN_name.sql).
 *
 * Covers: migrations from an empty file and idempotent re-open; a file with
 * a newer user_version refused with a message naming both versions; STRICT
 * and CHECK constraints rejecting wrong types and statuses; add_job new vs
 * existing and unknown sweeps; batches that commit or roll back; put_result
 * duplicates (inserted = 0, one row, dup_results counted), unknown job_ids,
 * failed → done, late failures and dead letters never hiding a result;
 * progress counts; every view on a small hand-made dataset with exact
 * ratios and baseline choice; the each_unqueued crash-recovery walk (also
 * across pages while the callback changes the rows it walks); and
 * --retry-failed's reset. Each test uses its own file in a temp directory,
 * and reads back through a separate plain sqlite3 connection, as a user
 * would. */
#include <CUnit/Basic.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "results.h"
#include "testutil.h"

extern const size_t kv_schema_count;

static char g_tmp[256];
static int g_seq;

static int tmp_init(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/kvsweep_test_results_XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int tmp_clean(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

/* A fresh database path for each test. */
static const char *new_path(void) {
    static char p[512];
    snprintf(p, sizeof p, "%s/r%d.db", g_tmp, ++g_seq);
    return p;
}

/* ---- raw access, as a user of the file ---------------------------------- */

static sqlite3 *raw_open(const char *path) {
    sqlite3 *s = NULL;
    if (sqlite3_open_v2(path, &s, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        sqlite3_close(s);
        return NULL;
    }
    sqlite3_busy_timeout(s, 5000);
    return s;
}

/* First column of the first row as double (NAN for NULL or no row). */
static double q_real(const char *path, const char *sql, const char *arg) {
    sqlite3 *s = raw_open(path);
    sqlite3_stmt *st = NULL;
    double v = NAN;
    if (s && sqlite3_prepare_v2(s, sql, -1, &st, NULL) == SQLITE_OK) {
        if (arg) sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
            v = sqlite3_column_double(st, 0);
    } else {
        printf("\n  query failed: %s: %s\n", sql, s ? sqlite3_errmsg(s) : "open");
    }
    sqlite3_finalize(st);
    sqlite3_close(s);
    return v;
}

static long long q_int(const char *path, const char *sql, const char *arg) {
    double v = q_real(path, sql, arg);
    return isnan(v) ? -999 : (long long)v;
}

/* First column of the first row as text into buf ("<null>" / "<none>"). */
static const char *q_text(const char *path, const char *sql, const char *arg) {
    static char buf[1024];
    sqlite3 *s = raw_open(path);
    sqlite3_stmt *st = NULL;
    snprintf(buf, sizeof buf, "<none>");
    if (s && sqlite3_prepare_v2(s, sql, -1, &st, NULL) == SQLITE_OK) {
        if (arg) sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) == SQLITE_ROW)
            snprintf(buf, sizeof buf, "%s",
                     sqlite3_column_type(st, 0) == SQLITE_NULL ? "<null>" : (const char *)sqlite3_column_text(st, 0));
    } else {
        printf("\n  query failed: %s: %s\n", sql, s ? sqlite3_errmsg(s) : "open");
    }
    sqlite3_finalize(st);
    sqlite3_close(s);
    return buf;
}

/* Runs sql on a raw connection; returns the extended result code. */
static int raw_exec(const char *path, const char *sql) {
    sqlite3 *s = raw_open(path);
    if (!s) return -1;
    sqlite3_extended_result_codes(s, 1);
    int rc = sqlite3_exec(s, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) rc = sqlite3_extended_errcode(s);
    sqlite3_close(s);
    return rc;
}

/* ---- fixtures ------------------------------------------------------------ */

static kv_db *open_db(const char *path) {
    kv_db *db = NULL;
    char err[512];
    int st = kv_db_open(&db, path, err, sizeof err);
    if (st != KV_OK) printf("\n  kv_db_open: %s\n", err);
    return db;
}

static void param_int(kv_params *ps, const char *key, int64_t v) {
    kv_param *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", key);
    p->type = KV_VAL_INT;
    p->i = v;
}

/* A job with a synthetic id (n as 64 hex digits); ppl task over doc 0. */
static void make_job(kv_job *j, int n, const char *sweep, const char *model, const char *policy) {
    memset(j, 0, sizeof *j);
    snprintf(j->job_id, sizeof j->job_id, "%064x", n);
    snprintf(j->sweep, sizeof j->sweep, "%s", sweep);
    snprintf(j->model, sizeof j->model, "%s", model);
    snprintf(j->dataset, sizeof j->dataset, "wiki.txt");
    j->tokens = 512;
    snprintf(j->task, sizeof j->task, "ppl");
    param_int(&j->task_params, "chunk", 128);
    snprintf(j->policy, sizeof j->policy, "%s", policy);
    j->seed = 1;
}

/* Adds the job with a fake encoding "job-<id>"; returns is_new or -1. */
static int add(kv_db *db, const kv_job *j) {
    char bytes[80];
    int n = snprintf(bytes, sizeof bytes, "job-%s", j->job_id), is_new = -1;
    int st = kv_db_add_job(db, j, bytes, (size_t)n, &is_new);
    if (st != KV_OK) printf("\n  add_job: %s\n", kv_db_errmsg(db));
    return st == KV_OK ? is_new : -1;
}

static void make_result(kv_result *r, const char *job_id, const char *status) {
    memset(r, 0, sizeof *r);
    snprintf(r->job_id, sizeof r->job_id, "%s", job_id);
    snprintf(r->status, sizeof r->status, "%s", status);
    snprintf(r->worker, sizeof r->worker, "box:gpu0");
    snprintf(r->engine_version, sizeof r->engine_version, "test-1");
    r->attempt = 1;
    r->started_ms = 1000;
    r->finished_ms = 2000;
    /* kv_metrics_clear's convention, done here so this test needs only results.c */
    double *d[] = {&r->m.ppl, &r->m.nll_sum, &r->m.accuracy, &r->m.ttft_ms, &r->m.tpot_ms, &r->m.tokens_per_s,
                   &r->m.cache_tokens_mean, &r->m.spec_acceptance_rate, &r->m.spec_mean_accepted_len,
                   &r->m.spec_speedup};
    int64_t *i[] = {&r->m.tokens, &r->m.cache_tokens_max, &r->m.kv_bytes, &r->m.evictions, &r->m.peak_rss_bytes,
                    &r->m.spec_drafted, &r->m.spec_accepted, &r->m.spec_target_passes};
    for (size_t k = 0; k < sizeof d / sizeof d[0]; k++) *d[k] = NAN;
    for (size_t k = 0; k < sizeof i / sizeof i[0]; k++) *i[k] = -1;
}

static int put_ok(kv_db *db, const char *job_id, double ppl, double tps, double tpot, int64_t kv_bytes) {
    kv_result r;
    make_result(&r, job_id, "ok");
    r.m.ppl = ppl;
    r.m.tokens_per_s = tps;
    r.m.tpot_ms = tpot;
    r.m.kv_bytes = kv_bytes;
    r.m.tokens = 512;
    int ins = -1;
    int st = kv_db_put_result(db, &r, &ins);
    if (st != KV_OK) printf("\n  put_result: %s\n", kv_db_errmsg(db));
    return st == KV_OK ? ins : -1;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_migrate_and_reopen(void) {
    const char *path = new_path();
    kv_db *db = open_db(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(kv_db_schema_version(db), (int)kv_schema_count);
    CU_ASSERT(kv_schema_count >= 1);
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "s", "\x80", 1), KV_OK);
    kv_db_close(db);
    CU_ASSERT_STRING_EQUAL(q_text(path, "PRAGMA journal_mode", NULL), "wal");
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN "
                                "('sweeps', 'jobs', 'results', 'events')", NULL), 4);
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM sqlite_schema WHERE type = 'view' AND name IN "
                                "('v_results', 'v_vs_full', 'v_policy_summary', 'v_sweep_progress')", NULL), 4);
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM sqlite_schema WHERE sql LIKE '%STRICT' AND type = 'table'",
                          NULL), 4);
    /* re-open: nothing re-applied, data kept */
    db = open_db(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(kv_db_schema_version(db), (int)kv_schema_count);
    kv_db_close(db);
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM sweeps", NULL), 1);
    CU_ASSERT_EQUAL(q_int(path, "PRAGMA user_version", NULL), (long long)kv_schema_count);
    /* an in-memory database works too (no WAL there) */
    db = open_db(":memory:");
    CU_ASSERT_PTR_NOT_NULL(db);
    kv_db_close(db);
}

static void test_newer_version_refused(void) {
    const char *path = new_path();
    kv_db *db = open_db(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    kv_db_close(db);
    CU_ASSERT_EQUAL(raw_exec(path, "PRAGMA user_version = 99"), SQLITE_OK);
    char err[512] = "";
    db = (kv_db *)1;
    int st = kv_db_open(&db, path, err, sizeof err);
    CU_ASSERT_NOT_EQUAL(st, KV_OK);
    CU_ASSERT_PTR_NULL(db);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "99"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "newer"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    /* the file is untouched */
    CU_ASSERT_EQUAL(q_int(path, "PRAGMA user_version", NULL), 99);
    /* a path that cannot be created */
    st = kv_db_open(&db, "/nonexistent-dir/x/results.db", err, sizeof err);
    CU_ASSERT_EQUAL(st, KV_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent-dir/x/results.db"));
}

static void test_strict_types(void) {
    const char *path = new_path();
    kv_db *db = open_db(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    kv_job j;
    make_job(&j, 1, "s", "m", "full");
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "s", "x", 1), KV_OK);
    CU_ASSERT_EQUAL(add(db, &j), 1);
    kv_db_close(db);
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO results(job_id, ppl, engine_version, worker, attempt, started_at, finished_at, stored_at) "
             "VALUES ('%s', 'high', 'e', 'w', 1, 1, 2, 3)", j.job_id);
    CU_ASSERT_EQUAL(raw_exec(path, sql), SQLITE_CONSTRAINT_DATATYPE);
    snprintf(sql, sizeof sql,
             "INSERT INTO results(job_id, ppl, engine_version, worker, attempt, started_at, finished_at, stored_at) "
             "VALUES ('%s', 1.5, 'e', 'w', 'first', 1, 2, 3)", j.job_id);
    CU_ASSERT_EQUAL(raw_exec(path, sql), SQLITE_CONSTRAINT_DATATYPE);
    snprintf(sql, sizeof sql, "UPDATE jobs SET status = 'running' WHERE job_id = '%s'", j.job_id);
    CU_ASSERT_EQUAL(raw_exec(path, sql), SQLITE_CONSTRAINT_CHECK);
    snprintf(sql, sizeof sql, "UPDATE jobs SET params_json = '{bad' WHERE job_id = '%s'", j.job_id);
    CU_ASSERT_EQUAL(raw_exec(path, sql), SQLITE_CONSTRAINT_CHECK);
    /* a result for a job that does not exist violates the foreign key */
    CU_ASSERT_EQUAL(raw_exec(path, "PRAGMA foreign_keys = ON; INSERT INTO results(job_id, engine_version, worker, "
                                   "attempt, started_at, finished_at, stored_at) VALUES ('x', 'e', 'w', 1, 1, 2, 3)"),
                    SQLITE_CONSTRAINT_FOREIGNKEY);
    /* an integer is fine in a REAL column (STRICT converts it) */
    snprintf(sql, sizeof sql,
             "INSERT INTO results(job_id, ppl, engine_version, worker, attempt, started_at, finished_at, stored_at) "
             "VALUES ('%s', 7, 'e', 'w', 1, 1, 2, 3)", j.job_id);
    CU_ASSERT_EQUAL(raw_exec(path, sql), SQLITE_OK);
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT typeof(ppl) FROM results", NULL), "real");
}

static void test_add_job(void) {
    const char *path = new_path();
    kv_db *db = open_db(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    kv_job j;
    make_job(&j, 7, "s", "m", "streaming");
    param_int(&j.params, "recent", 252);
    param_int(&j.params, "sink", 4);
    /* the sweep must be recorded first */
    int is_new = 5;
    CU_ASSERT_EQUAL(kv_db_add_job(db, &j, "b", 1, &is_new), KV_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(kv_db_errmsg(db), "sweep"));
    CU_ASSERT_EQUAL(is_new, 0);
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "s", "x", 1), KV_OK);
    CU_ASSERT_EQUAL(add(db, &j), 1);
    CU_ASSERT_EQUAL(add(db, &j), 0);
    /* re-adding the sweep updates its bytes, keeps created_at */
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "s", "yz", 2), KV_OK);
    /* bad ids */
    kv_job bad = j;
    snprintf(bad.job_id, sizeof bad.job_id, "ABC");
    CU_ASSERT_EQUAL(kv_db_add_job(db, &bad, "b", 1, &is_new), KV_ERR_INVAL);
    snprintf(bad.job_id, sizeof bad.job_id, "%064d", 0);
    bad.job_id[3] = 'G';
    CU_ASSERT_EQUAL(kv_db_add_job(db, &bad, "b", 1, &is_new), KV_ERR_INVAL);
    /* a non-finite real param cannot be canonical JSON */
    kv_job nf;
    make_job(&nf, 8, "s", "m", "x");
    nf.params.n = 1;
    snprintf(nf.params.p[0].key, sizeof nf.params.p[0].key, "r");
    nf.params.p[0].type = KV_VAL_REAL;
    nf.params.p[0].r = INFINITY;
    CU_ASSERT_EQUAL(kv_db_add_job(db, &nf, "b", 1, &is_new), KV_ERR_INVAL);
    /* params of every type, with escapes, as canonical JSON */
    kv_job t;
    make_job(&t, 9, "s", "m", "mix");
    kv_params *ps = &t.params;
    ps->n = 4;
    snprintf(ps->p[0].key, 64, "a");
    ps->p[0].type = KV_VAL_BOOL;
    ps->p[0].i = 1;
    snprintf(ps->p[1].key, 64, "b");
    ps->p[1].type = KV_VAL_REAL;
    ps->p[1].r = 0.1;
    snprintf(ps->p[2].key, 64, "c");
    ps->p[2].type = KV_VAL_STR;
    snprintf(ps->p[2].s, sizeof ps->p[2].s, "q\"\\\n");
    snprintf(ps->p[3].key, 64, "d");
    ps->p[3].type = KV_VAL_INT;
    ps->p[3].i = -3;
    t.has_spec = 1;
    param_int(&t.spec, "gamma", 4);
    snprintf(t.nonce, sizeof t.nonce, "n1");
    CU_ASSERT_EQUAL(add(db, &t), 1);
    kv_db_close(db);
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM jobs", NULL), 2);
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT status FROM jobs WHERE job_id = ?1", j.job_id), "new");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT params_json FROM jobs WHERE job_id = ?1", j.job_id),
                           "{\"recent\":252,\"sink\":4}");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT spec_json FROM jobs WHERE job_id = ?1", j.job_id), "<null>");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT params_json FROM jobs WHERE job_id = ?1", t.job_id),
                           "{\"a\":true,\"b\":0.1,\"c\":\"q\\\"\\\\\\u000a\",\"d\":-3}");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT params_json ->> '$.c' FROM jobs WHERE job_id = ?1", t.job_id),
                           "q\"\\\n");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT spec_json FROM jobs WHERE job_id = ?1", t.job_id), "{\"gamma\":4}");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT nonce FROM jobs WHERE job_id = ?1", t.job_id), "n1");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT CAST(job AS TEXT) FROM jobs WHERE job_id = ?1", j.job_id),
                           "job-0000000000000000000000000000000000000000000000000000000000000007");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT CAST(msgpack AS TEXT) FROM sweeps", NULL), "yz");
}

static void test_batch(void) {
    const char *path = new_path();
    kv_db *db = open_db(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    kv_job j;
    CU_ASSERT_EQUAL(kv_db_begin(db), KV_OK);
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "s", "x", 1), KV_OK);
    for (int i = 1; i <= 3; i++) {
        make_job(&j, i, "s", "m", "full");
        CU_ASSERT_EQUAL(add(db, &j), 1);
    }
    /* a failing operation inside the batch undoes only itself */
    make_job(&j, 4, "nosuch", "m", "full");
    CU_ASSERT_EQUAL(add(db, &j), -1);
    CU_ASSERT_EQUAL(kv_db_rollback(db), KV_OK);
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM jobs", NULL), 0);
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM sweeps", NULL), 0);
    CU_ASSERT_EQUAL(kv_db_begin(db), KV_OK);
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "s", "x", 1), KV_OK);
    for (int i = 1; i <= 3; i++) {
        make_job(&j, i, "s", "m", "full");
        CU_ASSERT_EQUAL(add(db, &j), 1);
    }
    make_job(&j, 4, "nosuch", "m", "full");
    CU_ASSERT_EQUAL(add(db, &j), -1);
    /* not visible to another connection until commit */
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM jobs", NULL), 0);
    CU_ASSERT_EQUAL(kv_db_commit(db), KV_OK);
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM jobs", NULL), 3);
    CU_ASSERT_EQUAL(kv_db_commit(db), KV_ERR_INVAL);
    CU_ASSERT_EQUAL(kv_db_rollback(db), KV_ERR_INVAL);
    kv_db_close(db);
}

static void test_put_result(void) {
    const char *path = new_path();
    kv_db *db = open_db(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    kv_job j;
    make_job(&j, 1, "s", "m", "full");
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "s", "x", 1), KV_OK);
    CU_ASSERT_EQUAL(add(db, &j), 1);
    CU_ASSERT_EQUAL(kv_db_job_queued(db, j.job_id, "1-0"), KV_OK);
    CU_ASSERT_EQUAL(put_ok(db, j.job_id, 10.0, 100.0, 10.0, 1000), 1);
    CU_ASSERT_EQUAL(put_ok(db, j.job_id, 11.0, 100.0, 10.0, 1000), 0); /* duplicate: first wins */
    CU_ASSERT_EQUAL(put_ok(db, j.job_id, 12.0, 100.0, 10.0, 1000), 0);
    /* a late job_queued (another collector was faster) leaves done alone */
    CU_ASSERT_EQUAL(kv_db_job_queued(db, j.job_id, "2-0"), KV_OK);
    kv_db_progress p;
    CU_ASSERT_EQUAL(kv_db_progress_get(db, "s", &p), KV_OK);
    CU_ASSERT_EQUAL(p.total, 1);
    CU_ASSERT_EQUAL(p.done, 1);
    CU_ASSERT_EQUAL(p.dup_results, 2);
    /* unknown job: refused, nothing written */
    kv_result r;
    make_result(&r, "", "ok");
    snprintf(r.job_id, sizeof r.job_id, "%064x", 99);
    int ins = 7;
    CU_ASSERT_EQUAL(kv_db_put_result(db, &r, &ins), KV_ERR_INVAL);
    CU_ASSERT_EQUAL(ins, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(kv_db_errmsg(db), "unknown job_id"));
    make_result(&r, j.job_id, "weird");
    CU_ASSERT_EQUAL(kv_db_put_result(db, &r, &ins), KV_ERR_INVAL);
    /* NaN and -1 are stored as NULL; bad extras JSON is kept, wrapped */
    kv_job j2;
    make_job(&j2, 2, "s", "m", "full");
    CU_ASSERT_EQUAL(add(db, &j2), 1);
    make_result(&r, j2.job_id, "ok");
    r.m.ppl = 3.5;
    char extras[] = "{not json";
    r.extras_json = extras;
    CU_ASSERT_EQUAL(kv_db_put_result(db, &r, &ins), KV_OK);
    CU_ASSERT_EQUAL(ins, 1);
    kv_db_close(db);
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM results", NULL), 2);
    CU_ASSERT_DOUBLE_EQUAL(q_real(path, "SELECT ppl FROM results WHERE job_id = ?1", j.job_id), 10.0, 1e-12);
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT status FROM jobs WHERE job_id = ?1", j.job_id), "done");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT stream_id FROM jobs WHERE job_id = ?1", j.job_id), "1-0");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT tokens_per_s FROM results WHERE job_id = ?1", j2.job_id), "<null>");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT kv_bytes FROM results WHERE job_id = ?1", j2.job_id), "<null>");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT extras ->> '$.unparsed_extras' FROM results WHERE job_id = ?1",
                                  j2.job_id), "{not json");
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM events WHERE kind = 'duplicate'", NULL), 2);
    CU_ASSERT_EQUAL(q_int(path, "SELECT dup_results FROM v_sweep_progress WHERE sweep = 's'", NULL), 2);
}

static void test_failed_and_dead(void) {
    const char *path = new_path();
    kv_db *db = open_db(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "s", "x", 1), KV_OK);
    kv_job j[4];
    for (int i = 0; i < 4; i++) {
        make_job(&j[i], i + 1, "s", "m", "full");
        CU_ASSERT_EQUAL(add(db, &j[i]), 1);
        CU_ASSERT_EQUAL(kv_db_job_queued(db, j[i].job_id, "1-1"), KV_OK);
    }
    /* job 0: failed, then a successful retry → done, then a late failure → still done */
    kv_result r;
    int ins = 9;
    make_result(&r, j[0].job_id, "failed");
    snprintf(r.error, sizeof r.error, "path_rejected: ../x");
    r.attempt = 2;
    CU_ASSERT_EQUAL(kv_db_put_result(db, &r, &ins), KV_OK);
    CU_ASSERT_EQUAL(ins, 0);
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT status || '|' || error || '|' || attempts FROM jobs WHERE job_id = ?1",
                                  j[0].job_id), "failed|path_rejected: ../x|2");
    CU_ASSERT_EQUAL(put_ok(db, j[0].job_id, 5, 1, 1, 1), 1);
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT status || '|' || coalesce(error, '-') FROM jobs WHERE job_id = ?1",
                                  j[0].job_id), "done|-");
    CU_ASSERT_EQUAL(kv_db_put_result(db, &r, &ins), KV_OK);
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT status FROM jobs WHERE job_id = ?1", j[0].job_id), "done");
    /* job 1: dead letter */
    CU_ASSERT_EQUAL(kv_db_put_dead(db, j[1].job_id, "crashed: signal 6", 3, "box:gpu1"), KV_OK);
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT status || '|' || error || '|' || attempts || '|' || worker FROM jobs "
                                        "WHERE job_id = ?1", j[1].job_id), "dead|crashed: signal 6|3|box:gpu1");
    /* job 2: done, then a late dead letter → still done */
    CU_ASSERT_EQUAL(put_ok(db, j[2].job_id, 5, 1, 1, 1), 1);
    CU_ASSERT_EQUAL(kv_db_put_dead(db, j[2].job_id, "lease lost", 4, NULL), KV_OK);
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT status FROM jobs WHERE job_id = ?1", j[2].job_id), "done");
    /* unknown */
    char unk[KV_JOB_ID_HEX];
    snprintf(unk, sizeof unk, "%064x", 1234);
    CU_ASSERT_EQUAL(kv_db_put_dead(db, unk, "x", 3, NULL), KV_ERR_INVAL);
    CU_ASSERT_EQUAL(kv_db_put_dead(db, "short", "x", 3, NULL), KV_ERR_INVAL);
    char status[16];
    CU_ASSERT_EQUAL(kv_db_job_status(db, j[1].job_id, status), KV_OK);
    CU_ASSERT_STRING_EQUAL(status, "dead");
    CU_ASSERT_EQUAL(kv_db_job_status(db, unk, status), KV_ERR_INVAL);
    /* progress: 2 done, 1 dead, 1 queued; one duplicate (the late failure) */
    kv_db_progress p;
    CU_ASSERT_EQUAL(kv_db_progress_get(db, "s", &p), KV_OK);
    CU_ASSERT_EQUAL(p.total, 4);
    CU_ASSERT_EQUAL(p.done, 2);
    CU_ASSERT_EQUAL(p.failed, 0);
    CU_ASSERT_EQUAL(p.dead, 1);
    CU_ASSERT_EQUAL(p.queued, 1);
    CU_ASSERT_EQUAL(p.dup_results, 1);
    CU_ASSERT_EQUAL(kv_db_progress_get(db, "other", &p), KV_OK);
    CU_ASSERT_EQUAL(p.total, 0);
    CU_ASSERT_EQUAL(kv_db_progress_get(db, NULL, &p), KV_OK);
    CU_ASSERT_EQUAL(p.total, 4);
    /* job 3 fails; --retry-failed resets dead + failed to new */
    make_result(&r, j[3].job_id, "failed");
    snprintf(r.error, sizeof r.error, "engine: nan logits");
    CU_ASSERT_EQUAL(kv_db_put_result(db, &r, &ins), KV_OK);
    int64_t n = -1;
    CU_ASSERT_EQUAL(kv_db_reset_failed(db, "s", &n), KV_OK);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(kv_db_progress_get(db, "s", &p), KV_OK);
    CU_ASSERT_EQUAL(p.queued, 2);
    CU_ASSERT_EQUAL(p.done, 2);
    kv_db_close(db);
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM jobs WHERE status = 'new'", NULL), 2);
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM events WHERE kind = 'requeued'", NULL), 2);
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT detail FROM events WHERE kind = 'requeued' AND job_id = ?1",
                                  j[3].job_id), "failed: engine: nan logits");
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM v_failures", NULL), 0);
}

/* The hand-made dataset for the views:
 *   sweep s1, model m, doc 0: full ppl 10 tps 100 tpot 10 kv 1000;
 *        streaming recent=252: ppl 12 tps 150 tpot 8 kv 250
 *        streaming recent=508: ppl 11 tps 120 tpot 9 kv 500
 *   sweep s1, model m, doc 1: full ppl 20 tps 200 tpot 5 kv 2000;
 *        streaming recent=252: ppl 30 tps 250 tpot 4 kv 500
 *   sweep s1, model m, doc 0, seed 2: streaming recent=252 ppl 13 (no baseline)
 *   sweep s2, model m, doc 0: full ppl 99 (same slice: must not be s1's baseline)
 *   sweep s1: one queued job, one failed. */
static void test_views(void) {
    const char *path = new_path();
    kv_db *db = open_db(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "s1", "x", 1), KV_OK);
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "s2", "x", 1), KV_OK);
    kv_job j[10];
    make_job(&j[0], 1, "s1", "m", "full");
    make_job(&j[1], 2, "s1", "m", "streaming");
    param_int(&j[1].params, "recent", 252);
    param_int(&j[1].params, "sink", 4);
    make_job(&j[2], 3, "s1", "m", "streaming");
    param_int(&j[2].params, "recent", 508);
    param_int(&j[2].params, "sink", 4);
    make_job(&j[3], 4, "s1", "m", "full");
    j[3].doc = 1;
    j[4] = j[1];
    snprintf(j[4].job_id, sizeof j[4].job_id, "%064x", 5);
    j[4].doc = 1;
    j[5] = j[1];
    snprintf(j[5].job_id, sizeof j[5].job_id, "%064x", 6);
    j[5].seed = 2;
    make_job(&j[6], 7, "s2", "m", "full");
    j[7] = j[1];
    snprintf(j[7].job_id, sizeof j[7].job_id, "%064x", 8);
    j[7].repeat = 1;
    j[8] = j[1];
    snprintf(j[8].job_id, sizeof j[8].job_id, "%064x", 9);
    j[8].repeat = 2;
    for (int i = 0; i < 9; i++) CU_ASSERT_EQUAL(add(db, &j[i]), 1);
    CU_ASSERT_EQUAL(put_ok(db, j[0].job_id, 10, 100, 10, 1000), 1);
    CU_ASSERT_EQUAL(put_ok(db, j[1].job_id, 12, 150, 8, 250), 1);
    CU_ASSERT_EQUAL(put_ok(db, j[2].job_id, 11, 120, 9, 500), 1);
    CU_ASSERT_EQUAL(put_ok(db, j[3].job_id, 20, 200, 5, 2000), 1);
    CU_ASSERT_EQUAL(put_ok(db, j[4].job_id, 30, 250, 4, 500), 1);
    CU_ASSERT_EQUAL(put_ok(db, j[5].job_id, 13, 100, 10, 250), 1);
    CU_ASSERT_EQUAL(put_ok(db, j[6].job_id, 99, 1, 1, 1), 1);
    kv_result r;
    make_result(&r, j[8].job_id, "failed");
    snprintf(r.error, sizeof r.error, "unsupported policy: streaming");
    int ins;
    CU_ASSERT_EQUAL(kv_db_put_result(db, &r, &ins), KV_OK);
    kv_db_close(db);

    /* v_results: one row per result, job fields joined */
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM v_results", NULL), 7);
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT params_label FROM v_results WHERE job_id = ?1", j[1].job_id),
                           "recent=252,sink=4");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT model || '|' || dataset || '|' || doc || '|' || slice_tokens || '|' "
                                        "|| tokens || '|' || task || '|' || policy FROM v_results WHERE job_id = ?1",
                                  j[4].job_id), "m|wiki.txt|1|512|512|ppl|streaming");
    /* v_vs_full: exact ratios, the same sweep's baseline, every result once */
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM v_vs_full", NULL), 7);
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(DISTINCT job_id) FROM v_vs_full", NULL), 7);
    const char *id = j[1].job_id;
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT full_job_id FROM v_vs_full WHERE job_id = ?1", id), j[0].job_id);
    CU_ASSERT_EQUAL(q_real(path, "SELECT ppl_ratio FROM v_vs_full WHERE job_id = ?1", id), 12.0 / 10.0);
    CU_ASSERT_EQUAL(q_real(path, "SELECT speedup FROM v_vs_full WHERE job_id = ?1", id), 1.5);
    CU_ASSERT_EQUAL(q_real(path, "SELECT tpot_ratio FROM v_vs_full WHERE job_id = ?1", id), 0.8);
    CU_ASSERT_EQUAL(q_real(path, "SELECT kv_bytes_ratio FROM v_vs_full WHERE job_id = ?1", id), 0.25);
    CU_ASSERT_EQUAL(q_real(path, "SELECT ppl_delta FROM v_vs_full WHERE job_id = ?1", id), 2.0);
    CU_ASSERT_EQUAL(q_real(path, "SELECT ppl_ratio FROM v_vs_full WHERE job_id = ?1", j[2].job_id), 11.0 / 10.0);
    CU_ASSERT_EQUAL(q_real(path, "SELECT kv_bytes_ratio FROM v_vs_full WHERE job_id = ?1", j[2].job_id), 0.5);
    CU_ASSERT_EQUAL(q_real(path, "SELECT ppl_ratio FROM v_vs_full WHERE job_id = ?1", j[4].job_id), 1.5);
    CU_ASSERT_EQUAL(q_real(path, "SELECT speedup FROM v_vs_full WHERE job_id = ?1", j[4].job_id), 1.25);
    CU_ASSERT_EQUAL(q_real(path, "SELECT ppl_ratio FROM v_vs_full WHERE job_id = ?1", j[0].job_id), 1.0);
    /* different seed: no baseline, NULL ratios, row still there */
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT full_job_id FROM v_vs_full WHERE job_id = ?1", j[5].job_id),
                           "<null>");
    CU_ASSERT(isnan(q_real(path, "SELECT ppl_ratio FROM v_vs_full WHERE job_id = ?1", j[5].job_id)));
    /* s2's full run is its own baseline, s1's does not leak in */
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT full_job_id FROM v_vs_full WHERE job_id = ?1", j[6].job_id),
                           j[6].job_id);
    /* v_policy_summary: per model × policy × params */
    CU_ASSERT_EQUAL(q_int(path, "SELECT count(*) FROM v_policy_summary", NULL), 3);
    const char *sum = "SELECT n || '|' || n_ppl || '|' || mean_ppl || '|' || mean_ppl_ratio || '|' || "
                      "mean_tokens_per_s || '|' || mean_speedup FROM v_policy_summary "
                      "WHERE policy = 'streaming' AND params_json = ?1";
    /* recent=252: ppl 12, 30, 13 → mean 55/3; ratios 1.2, 1.5 → 1.35; tps 150, 250, 100 → 500/3; speedups 1.5, 1.25 */
    CU_ASSERT_EQUAL(q_real(path, "SELECT mean_ppl_ratio FROM v_policy_summary WHERE params_json = ?1",
                           "{\"recent\":252,\"sink\":4}"), (1.2 + 1.5) / 2);
    CU_ASSERT_EQUAL(q_real(path, "SELECT mean_speedup FROM v_policy_summary WHERE params_json = ?1",
                           "{\"recent\":252,\"sink\":4}"), 1.375);
    CU_ASSERT_DOUBLE_EQUAL(q_real(path, "SELECT mean_ppl FROM v_policy_summary WHERE params_json = ?1",
                                  "{\"recent\":252,\"sink\":4}"), 55.0 / 3, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(q_real(path, "SELECT mean_tokens_per_s FROM v_policy_summary WHERE params_json = ?1",
                                  "{\"recent\":252,\"sink\":4}"), 500.0 / 3, 1e-12);
    CU_ASSERT_EQUAL(q_int(path, "SELECT n FROM v_policy_summary WHERE params_json = ?1", "{\"recent\":252,\"sink\":4}"),
                    3);
    CU_ASSERT_STRING_EQUAL(q_text(path, sum, "{\"recent\":508,\"sink\":4}"), "1|1|11.0|1.1|120.0|1.2");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT n || '|' || mean_ppl || '|' || mean_ppl_ratio FROM v_policy_summary "
                                        "WHERE policy = 'full'", NULL), "3|43.0|1.0");
    /* v_sweep_progress */
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT total || '|' || new || '|' || queued || '|' || done || '|' || failed "
                                        "|| '|' || dead || '|' || dup_results || '|' || pct_finished "
                                        "FROM v_sweep_progress WHERE sweep = 's1'", NULL), "8|1|0|6|1|0|0|87.5");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT total || '|' || done || '|' || pct_finished FROM v_sweep_progress "
                                        "WHERE sweep = 's2'", NULL), "1|1|100.0");
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT error FROM v_failures", NULL), "unsupported policy: streaming");
    /* the fallback: delete s1's doc-0 baseline; s1's streaming result now compares with s2's full run */
    char sql[256];
    snprintf(sql, sizeof sql, "DELETE FROM results WHERE job_id = '%s'", j[0].job_id);
    CU_ASSERT_EQUAL(raw_exec(path, sql), SQLITE_OK);
    CU_ASSERT_STRING_EQUAL(q_text(path, "SELECT full_job_id FROM v_vs_full WHERE job_id = ?1", id), j[6].job_id);
    CU_ASSERT_EQUAL(q_real(path, "SELECT ppl_ratio FROM v_vs_full WHERE job_id = ?1", id), 12.0 / 99.0);
}

struct walk {
    kv_db *db;
    int calls, bad_bytes, mark;
    char seen[400][KV_JOB_ID_HEX];
};

static int walk_fn(void *ud, const char *job_id, const void *job, size_t len) {
    struct walk *w = ud;
    char want[80];
    int n = snprintf(want, sizeof want, "job-%s", job_id);
    if ((size_t)n != len || memcmp(want, job, len) != 0) w->bad_bytes++;
    if (w->calls < 400) snprintf(w->seen[w->calls], KV_JOB_ID_HEX, "%s", job_id);
    w->calls++;
    if (w->mark && kv_db_job_queued(w->db, job_id, "9-9") != KV_OK) return KV_ERR_IO;
    return 0;
}

static int stop_fn(void *ud, const char *job_id, const void *job, size_t len) {
    (void)job_id, (void)job, (void)len;
    return ++*(int *)ud == 2 ? -42 : 0;
}

static void test_each_unqueued(void) {
    const char *path = new_path();
    kv_db *db = open_db(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "s", "x", 1), KV_OK);
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "t", "x", 1), KV_OK);
    kv_job j;
    /* a crashed kvsubmit: 300 jobs inserted, only the first 5 enqueued */
    CU_ASSERT_EQUAL(kv_db_begin(db), KV_OK);
    for (int i = 1; i <= 300; i++) {
        make_job(&j, i, "s", "m", "full");
        j.doc = i;
        CU_ASSERT_EQUAL(add(db, &j), 1);
    }
    make_job(&j, 1000, "t", "m", "full");
    CU_ASSERT_EQUAL(add(db, &j), 1);
    CU_ASSERT_EQUAL(kv_db_commit(db), KV_OK);
    for (int i = 1; i <= 5; i++) {
        snprintf(j.job_id, sizeof j.job_id, "%064x", i);
        CU_ASSERT_EQUAL(kv_db_job_queued(db, j.job_id, "1-0"), KV_OK);
    }
    struct walk *w = calloc(1, sizeof *w);
    w->db = db;
    CU_ASSERT_EQUAL(kv_db_each_unqueued(db, "s", walk_fn, w), KV_OK);
    CU_ASSERT_EQUAL(w->calls, 295);
    CU_ASSERT_EQUAL(w->bad_bytes, 0);
    CU_ASSERT_STRING_EQUAL(w->seen[0], "0000000000000000000000000000000000000000000000000000000000000006");
    /* the recovery: walk and mark each queued from inside the callback; every job exactly once */
    memset(w, 0, sizeof *w);
    w->db = db;
    w->mark = 1;
    CU_ASSERT_EQUAL(kv_db_each_unqueued(db, "s", walk_fn, w), KV_OK);
    CU_ASSERT_EQUAL(w->calls, 295);
    int dup = 0;
    for (int a = 1; a < w->calls && a < 400; a++)
        if (strcmp(w->seen[a - 1], w->seen[a]) >= 0) dup++;
    CU_ASSERT_EQUAL(dup, 0);
    memset(w, 0, sizeof *w);
    CU_ASSERT_EQUAL(kv_db_each_unqueued(db, "s", walk_fn, w), KV_OK);
    CU_ASSERT_EQUAL(w->calls, 0);
    /* sweep t untouched */
    CU_ASSERT_EQUAL(kv_db_each_unqueued(db, "t", walk_fn, w), KV_OK);
    CU_ASSERT_EQUAL(w->calls, 1);
    /* a callback error stops the walk and is returned */
    int count = 0;
    CU_ASSERT_EQUAL(kv_db_reset_failed(db, "s", NULL), KV_OK);
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "u", "x", 1), KV_OK);
    for (int i = 2000; i < 2003; i++) {
        make_job(&j, i, "u", "m", "full");
        CU_ASSERT_EQUAL(add(db, &j), 1);
    }
    CU_ASSERT_EQUAL(kv_db_each_unqueued(db, "u", stop_fn, &count), -42);
    CU_ASSERT_EQUAL(count, 2);
    /* each_failed sees failed and dead only */
    for (int i = 2000; i < 2003; i++) {
        snprintf(j.job_id, sizeof j.job_id, "%064x", i);
        CU_ASSERT_EQUAL(kv_db_job_queued(db, j.job_id, "1-0"), KV_OK);
    }
    snprintf(j.job_id, sizeof j.job_id, "%064x", 2001);
    CU_ASSERT_EQUAL(kv_db_put_dead(db, j.job_id, "poison", 3, NULL), KV_OK);
    memset(w, 0, sizeof *w);
    CU_ASSERT_EQUAL(kv_db_each_failed(db, "u", walk_fn, w), KV_OK);
    CU_ASSERT_EQUAL(w->calls, 1);
    CU_ASSERT_STRING_EQUAL(w->seen[0], j.job_id);
    free(w);
    kv_db_close(db);
}

struct prog {
    int n;
    char names[4][32];
    kv_db_progress p[4];
};

static int prog_fn(void *ud, const char *sweep, const kv_db_progress *p) {
    struct prog *g = ud;
    if (g->n < 4) {
        snprintf(g->names[g->n], sizeof g->names[0], "%s", sweep);
        g->p[g->n] = *p;
    }
    g->n++;
    return 0;
}

static void test_each_progress(void) {
    const char *path = new_path();
    kv_db *db = open_db(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "a", "x", 1), KV_OK);
    CU_ASSERT_EQUAL(kv_db_add_sweep(db, "b", "x", 1), KV_OK);
    kv_job j;
    for (int i = 1; i <= 3; i++) {
        make_job(&j, i, "a", "m", "full");
        CU_ASSERT_EQUAL(add(db, &j), 1);
    }
    CU_ASSERT_EQUAL(put_ok(db, j.job_id, 1, 1, 1, 1), 1);
    CU_ASSERT_EQUAL(put_ok(db, j.job_id, 1, 1, 1, 1), 0);
    struct prog g = {0};
    CU_ASSERT_EQUAL(kv_db_each_progress(db, NULL, prog_fn, &g), KV_OK);
    CU_ASSERT_EQUAL(g.n, 2);
    CU_ASSERT_STRING_EQUAL(g.names[0], "a");
    CU_ASSERT_EQUAL(g.p[0].total, 3);
    CU_ASSERT_EQUAL(g.p[0].done, 1);
    CU_ASSERT_EQUAL(g.p[0].queued, 2);
    CU_ASSERT_EQUAL(g.p[0].dup_results, 1);
    CU_ASSERT_STRING_EQUAL(g.names[1], "b");
    CU_ASSERT_EQUAL(g.p[1].total, 0);
    memset(&g, 0, sizeof g);
    CU_ASSERT_EQUAL(kv_db_each_progress(db, "b", prog_fn, &g), KV_OK);
    CU_ASSERT_EQUAL(g.n, 1);
    memset(&g, 0, sizeof g);
    CU_ASSERT_EQUAL(kv_db_each_progress(db, "zz", prog_fn, &g), KV_OK);
    CU_ASSERT_EQUAL(g.n, 0);
    kv_db_close(db);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("results", tmp_init, tmp_clean);
    CU_add_test(s, "migrate an empty file; re-open is idempotent", test_migrate_and_reopen);
    CU_add_test(s, "newer user_version refused with a message", test_newer_version_refused);
    CU_add_test(s, "STRICT and CHECK constraints", test_strict_types);
    CU_add_test(s, "add_job: new vs existing, bad ids, canonical params JSON", test_add_job);
    CU_add_test(s, "batches commit or roll back as a whole", test_batch);
    CU_add_test(s, "put_result: duplicates, unknown jobs, NULL metrics", test_put_result);
    CU_add_test(s, "failed, dead, late outcomes, retry reset, progress", test_failed_and_dead);
    CU_add_test(s, "views: v_results, v_vs_full, v_policy_summary, v_sweep_progress", test_views);
    CU_add_test(s, "each_unqueued recovery walk (paged, callback writes)", test_each_unqueued);
    CU_add_test(s, "each_progress over v_sweep_progress", test_each_progress);
    return tu_run();
}
