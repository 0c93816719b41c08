/* worker.h — kvworker's configuration, exit codes and the two halves of a
 * worker: the supervisor loop (run.c: queue, lease, heartbeat, janitor,
 * child supervision) and the evaluator (evaluate.c: job -> paths -> engine
 * task or fake evaluation -> kv_result). kvworker_main.c only parses flags. */
#ifndef WORKER_WORKER_H
#define WORKER_WORKER_H

#include <stddef.h>

#include "job.h"

/* Exit codes of kvworker (documented in README and --help). */
enum {
    WK_EXIT_OK = 0,         /* drained (--once / --max-jobs) or stopped by SIGTERM/SIGINT */
    WK_EXIT_RUNTIME = 1,    /* Redis unreachable at start, engine init failed, ... */
    WK_EXIT_USAGE = 2,      /* bad flags or configuration (also: --gpu without a CUDA backend library) */
    WK_EXIT_LOCKED = 3,     /* another live process holds this consumer name */
    WK_EXIT_AUTH = 4,       /* Redis refused the credentials or the ACL denies a needed command */
    WK_EXIT_STATE_LOST = 5, /* NOGROUP after a reconnect: Redis lost the queue (no AOF?) */
    WK_EXIT_DEVICE = 6      /* --gpu N: an evaluation could not open the device; its job was handed back */
};

/* Exit status of an evaluation child that could not open its device (the
 * job is fine, the worker is not: the parent hands the entry back and stops
 * with WK_EXIT_DEVICE). */
#define WK_CHILD_NO_DEVICE 10

#define WK_ENGINE_VERSION "kvsweep-engine 0.1"

typedef struct wk_config {
    int gpu;                 /* -1: CPU */
    int threads;             /* 0: all cores */
    const char *redis_url;   /* NULL: KV_REDIS_URL, then redis://127.0.0.1:6379 */
    const char *models_root; /* --models (required unless --fake-eval) */
    const char *data_root;   /* --data (required unless --fake-eval) */
    char name[KV_NAME_MAX];  /* consumer name */
    long max_jobs;           /* 0: unlimited */
    int once;
    long lease_ms, heartbeat_ms;
    int max_deliveries;
    int fake_eval;
    long fake_min_ms, fake_max_ms;
    const char *weights;     /* "auto" | "f32" */
    const char *tokenizer;   /* fallback tokenizer or NULL */
} wk_config;

void wk_config_default(wk_config *c);
/* Runs the worker until drained or stopped; returns a WK_EXIT_* code. */
int wk_worker_run(const wk_config *c);

typedef struct wk_eval wk_eval;

int wk_eval_init(wk_eval **out, const wk_config *c, char *err, size_t n_err);
void wk_eval_free(wk_eval *ev);
/* Parent side, before the fork: resolves the job's names beneath the roots and
 * prepares the engine (loads or keeps the model). On failure err holds the
 * deterministic failure to publish ("path_rejected: ...", "engine: ..."). The
 * job must stay alive and unchanged until wk_eval_run returns. */
int wk_eval_prepare(wk_eval *ev, const kv_job *job, char *err, size_t n_err);
/* Child side: runs the prepared job and fills r's status, error and metrics
 * (r's identity fields are the caller's). Returns 0, or -1 when the compute
 * device could not be opened (r->error says why; nothing to publish). */
int wk_eval_run(wk_eval *ev, const kv_job *job, kv_result *r);

#endif /* WORKER_WORKER_H */
