/* evaluate.c — the evaluator half of kvworker: turns a decoded kv_job into
 * an engine task (names resolved beneath the --models/--data roots, kv_param
 * -> eng_param) and its eng_task_result into kv_metrics; or, with
 * --fake-eval, sleeps U(a, b) ms and reports metrics that are a pure function
 * of the job_id (the queue tests compare them).
 *
 * Split across the fork: wk_eval_prepare runs in the parent (so the model is
 * loaded once and kept between jobs of the same model: the child inherits
 * the mapped weights copy-on-write), wk_eval_run in the child. Test hooks of
 * the fake evaluator: KV_FAKE_ABORT_JOB=<job_id prefix> makes that job
 * abort() on every execution (a poison job); KV_ATTEMPTS_LOG=<file> gets
 * one line per execution, "job_id worker attempt pid unix_ms", appended
 * with a single write (O_APPEND) so concurrent workers do not interleave. */
#include "worker.h"

#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "paths.h"
#include "task.h"

struct wk_eval {
    const wk_config *cfg;
    eng_task_ctx *ctx;
    eng_task task;
    char model_path[PATH_MAX], data_path[PATH_MAX], draft_path[PATH_MAX], mid_path[PATH_MAX];
};

int wk_eval_init(wk_eval **out, const wk_config *c, char *err, size_t n_err) {
    *out = NULL;
    wk_eval *ev = calloc(1, sizeof *ev);
    if (!ev) {
        snprintf(err, n_err, "out of memory");
        return KV_ERR_NOMEM;
    }
    ev->cfg = c;
    if (!c->fake_eval && eng_task_ctx_init(&ev->ctx, c->weights, c->tokenizer, err, n_err) != ENG_OK) {
        free(ev);
        return KV_ERR_INVAL;
    }
    if (ev->ctx) eng_task_ctx_set_device(ev->ctx, c->gpu);   /* opened by each run, in the child */
    *out = ev;
    return KV_OK;
}

void wk_eval_free(wk_eval *ev) {
    if (!ev) return;
    eng_task_ctx_free(ev->ctx);
    free(ev);
}

static void params_convert(const kv_params *in, eng_paramset *out) {
    memset(out, 0, sizeof *out);
    for (int i = 0; i < in->n && i < ENG_TASK_MAX_PARAMS; i++) {
        const kv_param *p = &in->p[i];
        eng_param *q = &out->p[out->n++];
        q->key = p->key;
        q->type = p->type == KV_VAL_INT ? ENG_PARAM_INT : p->type == KV_VAL_REAL ? ENG_PARAM_REAL
                : p->type == KV_VAL_BOOL ? ENG_PARAM_BOOL : ENG_PARAM_STR;
        q->i = p->i;
        q->r = p->r;
        q->s = p->s;
    }
}

/* Resolves an optional string param of the spec block as a model name. */
static int resolve_spec_model(wk_eval *ev, const kv_job *job, const char *key, char *out, const char **slot,
                              char *err, size_t n_err) {
    *slot = NULL;
    const kv_param *p = job->has_spec ? kv_params_get(&job->spec, key) : NULL;
    if (!p) return KV_OK;
    if (p->type != KV_VAL_STR) {
        snprintf(err, n_err, "path_rejected: spec.%s must be a model name", key);
        return KV_ERR_INVAL;
    }
    int rc = kv_path_resolve(ev->cfg->models_root, "model", p->s, strlen(p->s), out, PATH_MAX, err, n_err);
    if (rc == KV_OK) *slot = out;
    return rc;
}

int wk_eval_prepare(wk_eval *ev, const kv_job *job, char *err, size_t n_err) {
    const wk_config *c = ev->cfg;
    eng_task *t = &ev->task;
    memset(t, 0, sizeof *t);
    int check_paths = !c->fake_eval || c->models_root || c->data_root;
    if (check_paths) {
        int rc;
        if (!c->fake_eval || c->models_root) {
            rc = kv_path_resolve(c->models_root, "model", job->model, strlen(job->model), ev->model_path,
                                 sizeof ev->model_path, err, n_err);
            if (rc) return rc;
            if ((rc = resolve_spec_model(ev, job, "draft", ev->draft_path, &t->draft_dir, err, n_err)) ||
                (rc = resolve_spec_model(ev, job, "intermediate", ev->mid_path, &t->mid_dir, err, n_err)))
                return rc;
        }
        if (!c->fake_eval || c->data_root) {
            rc = kv_path_resolve(c->data_root, "dataset", job->dataset, strlen(job->dataset), ev->data_path,
                                 sizeof ev->data_path, err, n_err);
            if (rc) return rc;
        }
    }
    if (c->fake_eval) return KV_OK;
    t->task = job->task;
    t->model_dir = ev->model_path;
    t->data_path = ev->data_path;
    t->doc = job->doc;
    t->offset = job->offset;
    t->tokens = job->tokens;
    params_convert(&job->task_params, &t->task_params);
    t->policy = job->policy;
    params_convert(&job->params, &t->params);
    if (job->has_spec) params_convert(&job->spec, &t->spec);
    t->seed = (uint64_t)job->seed;
    if (eng_task_ctx_prepare(ev->ctx, t) != ENG_OK) {
        snprintf(err, n_err, "engine: %s", eng_task_errmsg(ev->ctx));
        return KV_ERR_INVAL;
    }
    return KV_OK;
}

static uint64_t job_hash64(const char *job_id) {
    uint64_t h = 0;
    for (int i = 0; i < 16 && job_id[i]; i++) {
        int ch = job_id[i], v = ch >= 'a' ? ch - 'a' + 10 : ch - '0';
        h = (h << 4) | (uint64_t)(v & 15);
    }
    return h;
}

static void fake_run(const wk_config *c, const kv_job *job, kv_result *r) {
    const char *poison = getenv("KV_FAKE_ABORT_JOB");
    if (poison && *poison && strncmp(job->job_id, poison, strlen(poison)) == 0) abort();
    uint64_t h = job_hash64(job->job_id);
    long span = c->fake_max_ms - c->fake_min_ms;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    unsigned seed = (unsigned)(h ^ (uint64_t)getpid() ^ (uint64_t)tv.tv_usec);
    long ms = c->fake_min_ms + (span > 0 ? (long)(rand_r(&seed) % (span + 1)) : 0);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {}
    /* metrics = f(job_id) only */
    r->m.tokens = 100 + (int64_t)(h % 900);
    r->m.ppl = 1.0 + (double)(h % 100000) / 1000.0;
    r->m.nll_sum = log(r->m.ppl) * (double)r->m.tokens;
    r->m.accuracy = (double)((h >> 20) % 1000) / 1000.0;
    snprintf(r->status, sizeof r->status, "ok");
}

static int engine_run(wk_eval *ev, kv_result *r) {
    eng_task_result er;
    eng_task_result_clear(&er);
    eng_status st = eng_task_run(ev->ctx, &ev->task, &er);
    if (st != ENG_OK) {
        snprintf(r->status, sizeof r->status, "failed");
        snprintf(r->error, sizeof r->error, "engine: %s", eng_task_errmsg(ev->ctx));
        return st == ENG_ERR_DEVICE ? -1 : 0;
    }
    kv_metrics *m = &r->m;
    m->ppl = er.ppl;
    m->nll_sum = er.nll_sum;
    m->accuracy = er.accuracy;
    m->tokens = er.tokens;
    m->ttft_ms = er.ttft_ms;
    m->tpot_ms = er.tpot_ms;
    m->tokens_per_s = er.tokens_per_s;
    m->cache_tokens_mean = er.cache_tokens_mean;
    m->cache_tokens_max = er.cache_tokens_max;
    m->kv_bytes = er.kv_bytes;
    m->evictions = er.evictions;
    m->peak_rss_bytes = er.peak_rss_bytes;
    m->spec_drafted = er.spec_drafted;
    m->spec_accepted = er.spec_accepted;
    m->spec_target_passes = er.spec_target_passes;
    m->spec_acceptance_rate = er.spec_acceptance_rate;
    m->spec_mean_accepted_len = er.spec_mean_accepted_len;
    m->spec_speedup = er.spec_speedup;
    snprintf(r->model_fingerprint, sizeof r->model_fingerprint, "%s", er.model_fingerprint);
    if (er.extras_json[0] && strcmp(er.extras_json, "{}") != 0) r->extras_json = strdup(er.extras_json);
    snprintf(r->status, sizeof r->status, "ok");
    return 0;
}

static void attempts_log(const kv_job *job, const kv_result *r) {
    const char *path = getenv("KV_ATTEMPTS_LOG");
    if (!path || !*path) return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    char line[512];
    int n = snprintf(line, sizeof line, "%s %s %lld %ld %lld\n", job->job_id, r->worker, (long long)r->attempt,
                     (long)getpid(), (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (n > 0 && write(fd, line, (size_t)n) < 0) { /* informational only */ }
    close(fd);
}

int wk_eval_run(wk_eval *ev, const kv_job *job, kv_result *r) {
    attempts_log(job, r);
    if (!ev->cfg->fake_eval) return engine_run(ev, r);
    fake_run(ev->cfg, job, r);
    return 0;
}
