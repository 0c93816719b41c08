/* test_collect.c — the collector's pieces, plus a fake worker for
 * tests/test_submit.sh.
 *
 * Without arguments it is a CUnit binary like the others: progress-line
 * formatting (bar, percentage, ETA). The collector itself runs against a
 * real redis-server in tests/test_submit.sh.
 *
 * With arguments it is the fake worker the shell test drives (so that test
 * needs no engine and no model):
 *   test_collect work URL N [--fail-every K] [--dead-every K] [--dup-every K] [--sleep-ms M]
 *     reads up to N jobs from kv:jobs as consumer "fake:<pid>" (group
 *     kv:workers), decodes each, and publishes a result (metrics = f(job_id))
 *     with the same MULTI/EXEC publish+ack a real worker uses; every K-th job
 *     fails, is dead-lettered, or has its result published twice. Prints
 *     one "published <job_id>" line per job. Stops when kv:jobs has nothing
 *     new for 1 s.
 *   test_collect stray URL
 *     XADDs a well-formed result for a job_id nobody submitted. */
#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "collect.h"
#include "job.h"
#include "queue.h"
#include "testutil.h"

/* ---- fake worker -------------------------------------------------------- */

static void fake_metrics(const char *job_id, kv_metrics *m) {
    kv_metrics_clear(m);
    unsigned h = 0;
    for (const char *p = job_id; *p; p++) h = h * 31u + (unsigned char)*p;
    m->ppl = 10.0 + (double)(h % 1000) / 100.0;
    m->nll_sum = log(m->ppl) * 512;
    m->tokens = 512;
    m->tokens_per_s = 100.0 + (double)(h % 50);
    m->tpot_ms = 1000.0 / m->tokens_per_s;
    m->kv_bytes = 1000 + (int64_t)(h % 100);
}

static int fake_work(const char *url, long n, long fail_every, long dead_every, long dup_every, long sleep_ms) {
    char err[512], consumer[64];
    kv_url u;
    if (kv_url_parse(url, &u, err, sizeof err) != KV_OK) {
        fprintf(stderr, "fake: %s\n", err);
        return 1;
    }
    kv_queue_opts o;
    kv_queue_opts_default(&o);
    o.block_ms = 1000;
    o.max_reconnect_s = 5;
    kv_queue *q = NULL;
    if (kv_queue_open(&q, &u, &o, err, sizeof err) != KV_OK) {
        fprintf(stderr, "fake: %s\n", err);
        return 1;
    }
    snprintf(consumer, sizeof consumer, "fake:%d", (int)getpid());
    kv_job *job = malloc(sizeof *job);
    long done = 0;
    int rc = 0;
    while (done < n) {
        kv_entry e;
        int r = kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, consumer, ">", &e);
        if (r <= 0) {
            if (r < 0) {
                fprintf(stderr, "fake: read: %s\n", kv_queue_errmsg(q));
                rc = 1;
            }
            break;
        }
        char entry_id[48];
        snprintf(entry_id, sizeof entry_id, "%s", e.id);
        if (kv_job_decode(e.payload, e.payload_len, job, err, sizeof err) != KV_OK) {
            fprintf(stderr, "fake: job %s: %s\n", e.id, err);
            rc = 1;
            break;
        }
        done++;
        if (sleep_ms > 0) {
            struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (dead_every > 0 && done % dead_every == 0) {
            /* the job bytes must be copied: e's payload dies with the next call */
            unsigned char *jb = NULL;
            size_t jl = 0;
            kv_job_encode(job, &jb, &jl, err, sizeof err);
            if (kv_queue_dead_letter(q, entry_id, job->job_id, job->sweep, jb, jl, "crashed: fake poison", 3,
                                     consumer) != KV_OK)
                rc = 1;
            free(jb);
            printf("dead %s\n", job->job_id);
            continue;
        }
        kv_result res;
        memset(&res, 0, sizeof res);
        snprintf(res.job_id, sizeof res.job_id, "%s", job->job_id);
        snprintf(res.sweep, sizeof res.sweep, "%s", job->sweep);
        snprintf(res.worker, sizeof res.worker, "%s", consumer);
        snprintf(res.engine_version, sizeof res.engine_version, "fake");
        res.attempt = 1;
        res.started_ms = 1000;
        res.finished_ms = 2000;
        int failed = fail_every > 0 && done % fail_every == 0;
        snprintf(res.status, sizeof res.status, "%s", failed ? "failed" : "ok");
        if (failed) {
            kv_metrics_clear(&res.m);
            snprintf(res.error, sizeof res.error, "unsupported policy: fake failure");
        } else {
            fake_metrics(job->job_id, &res.m);
        }
        unsigned char *buf = NULL;
        size_t len = 0;
        if (kv_result_encode(&res, &buf, &len, err, sizeof err) != KV_OK) {
            fprintf(stderr, "fake: encode: %s\n", err);
            rc = 1;
            break;
        }
        if (kv_queue_publish_ack(q, entry_id, job->job_id, job->sweep, buf, len) != KV_OK) rc = 1;
        if (dup_every > 0 && done % dup_every == 0) /* a redelivered job's second result */
            kv_queue_add(q, KV_STREAM_RESULTS, job->job_id, job->sweep, "result", buf, len, NULL);
        free(buf);
        printf("published %s\n", job->job_id);
        fflush(stdout);
    }
    free(job);
    kv_queue_close(q);
    return rc;
}

static int fake_stray(const char *url) {
    char err[512];
    kv_url u;
    kv_queue *q = NULL;
    if (kv_url_parse(url, &u, err, sizeof err) != KV_OK || kv_queue_open(&q, &u, NULL, err, sizeof err) != KV_OK) {
        fprintf(stderr, "fake: %s\n", err);
        return 1;
    }
    kv_result res;
    memset(&res, 0, sizeof res);
    memset(res.job_id, 'e', 64);
    snprintf(res.sweep, sizeof res.sweep, "nobody");
    snprintf(res.status, sizeof res.status, "ok");
    snprintf(res.worker, sizeof res.worker, "stray");
    snprintf(res.engine_version, sizeof res.engine_version, "fake");
    fake_metrics(res.job_id, &res.m);
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = kv_result_encode(&res, &buf, &len, err, sizeof err) == KV_OK &&
                     kv_queue_add(q, KV_STREAM_RESULTS, res.job_id, res.sweep, "result", buf, len, NULL) == KV_OK
                 ? 0
                 : 1;
    free(buf);
    kv_queue_close(q);
    return rc;
}

/* ---- CUnit --------------------------------------------------------------- */

static void test_progress_format(void) {
    char b[256];
    kv_db_progress p = {.total = 40, .done = 10, .failed = 1, .dead = 1, .queued = 28};
    sub_progress_format(b, sizeof b, &p, 3, 125, 0);
    CU_ASSERT_STRING_EQUAL(b, "10/40 done, 3 running, 1 failed, 1 dead (30%) ETA 2m05s");
    sub_progress_format(b, sizeof b, &p, 0, -1, 1);
    CU_ASSERT_STRING_EQUAL(b, "[######..............] 10/40 done, 0 running, 1 failed, 1 dead (30%) ETA --");
    kv_db_progress z = {0};
    sub_progress_format(b, sizeof b, &z, 0, 0, 1);
    CU_ASSERT_STRING_EQUAL(b, "[####################] 0/0 done, 0 running, 0 failed, 0 dead (100%) ETA 0s");
    kv_db_progress big = {.total = 100000, .done = 99999, .queued = 1};
    sub_progress_format(b, sizeof b, &big, 1, 7300, 0);
    CU_ASSERT_STRING_EQUAL(b, "99999/100000 done, 1 running, 0 failed, 0 dead (100%) ETA 2h01m");
}

static long arg_long(int argc, char **argv, const char *flag, long def) {
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], flag) == 0) return strtol(argv[i + 1], NULL, 10);
    return def;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "work") == 0)
        return fake_work(argv[2], strtol(argv[3], NULL, 10), arg_long(argc, argv, "--fail-every", 0),
                         arg_long(argc, argv, "--dead-every", 0), arg_long(argc, argv, "--dup-every", 0),
                         arg_long(argc, argv, "--sleep-ms", 0));
    if (argc == 3 && strcmp(argv[1], "stray") == 0) return fake_stray(argv[2]);
    if (argc > 1) {
        fprintf(stderr, "usage: test_collect [work URL N [--fail-every K] [--dead-every K] [--dup-every K] "
                        "[--sleep-ms M] | stray URL]\n");
        return 2;
    }
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("collect", NULL, NULL);
    CU_add_test(s, "progress line: bar, percentage, ETA", test_progress_format);
    return tu_run();
}
