/* run.c — kvworker's supervisor loop (queue-reliability.md §0, items 2-6).
 *
 * Start: take the consumer-name lock (SET NX PX; refuse to start if another
 * live process holds it), make sure the job group exists (XGROUP CREATE id 0
 * MKSTREAM, BUSYGROUP is fine: creating it here and in kvsubmit is safe),
 * write the heartbeat key. Loop: first this consumer's own pending entries
 * (XREADGROUP ... 0: what a crashed predecessor, a lost reply or the janitor
 * left us), then new ones (">", with BLOCK shorter than the heartbeat).
 *
 * Each entry: deleted stream entry -> ack and drop; delivery count over the
 * limit -> dead letter "max_deliveries"; payload that fails the guarded
 * decode -> dead letter "bad_payload: ..." at once (parsing is
 * deterministic: retrying cannot help); a name rejected beneath the roots or
 * an engine refusal (unsupported policy, unloadable model) -> a published
 * result with status "failed" and the error, acked with the publish (it is
 * a deterministic outcome of the job, and it belongs next to the others in
 * results.db where `--retry-failed` can find it). Otherwise the evaluator
 * prepares the model in the parent and a forked child runs the job and
 * writes the encoded kv_result to a pipe; the parent polls the pipe and
 * waitpid(WNOHANG), and every heartbeat renews the lease (XCLAIM JUSTID after
 * an owner check), the name lock and the heartbeat key. A result is
 * published and the entry acked in one MULTI/EXEC — even when the lease was
 * lost meanwhile (logged "lease lost"; the sink de-duplicates on job_id).
 * A child that crashes, is killed or writes no result is not acked: the
 * entry stays in our PEL, the next "0" read re-delivers it and bumps its
 * delivery count, so a poison job reaches kv:dead after max_deliveries.
 *
 * Between jobs the janitor claims entries idle for longer than the lease
 * (XAUTOCLAIM JUSTID) from dead or frozen workers; they land in our PEL.
 *
 * Redis loss: the queue reconnects by itself and reports KV_ERR_IO once; we
 * go back to reading our own PEL. NOGROUP means Redis lost the queue: log
 * "queue state lost", exit WK_EXIT_STATE_LOST; never recreate the group.
 * SIGTERM/SIGINT: stop taking jobs, let the running child finish and publish,
 * release the lock, exit 0; a second signal kills the child and hands the
 * entry back (XCLAIM IDLE = lease, so any janitor takes it at once). */
#include "worker.h"
#include "kn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "queue.h"

#define WK_RESULT_MAX (8u << 20) /* cap on what a child may write */

typedef struct worker {
    const wk_config *cfg;
    kv_queue *q;
    wk_eval *ev;
    char token[40];
    long lock_ttl_ms;
    long n_done;
    const char *state;
    char cur_job[KV_JOB_ID_HEX];
    kv_job job;
    unsigned char *payload;
    size_t payload_len;
} worker;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    if (g_stop < 100) g_stop++;
}

void wk_config_default(wk_config *c) {
    memset(c, 0, sizeof *c);
    c->gpu = -1;
    c->lease_ms = 300000;
    c->heartbeat_ms = 30000;
    c->max_deliveries = 3;
    c->fake_min_ms = 100;
    c->fake_max_ms = 2000;
    c->weights = "auto";
}

static long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void logf_(const worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(const worker *w, const char *fmt, ...) {
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(ts, sizeof ts, "%H:%M:%S", localtime_r(&t, &tm));
    fprintf(stderr, "kvworker %s [%s]: ", ts, w->cfg->name);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Fatal queue outcomes become exit codes; 0 means "carry on". */
static int fatal_code(worker *w, int rc, const char *during) {
    if (rc == KV_ERR_NOGROUP) {
        logf_(w, "queue state lost: %s answered NOGROUP (%s); Redis lost the stream or group (restart without "
                 "AOF?); not recreating it",
              during, kv_queue_errmsg(w->q));
        return WK_EXIT_STATE_LOST;
    }
    if (rc == KV_ERR_AUTH) {
        logf_(w, "Redis refused %s: %s", during, kv_queue_errmsg(w->q));
        return WK_EXIT_AUTH;
    }
    return 0;
}

/* Lock refresh + heartbeat key; while a job runs also the lease renewal,
 * otherwise the janitor. Returns a WK_EXIT_* code to stop with, or 0. */
static int housekeeping(worker *w, const char *entry_id, int *lease_lost) {
    const wk_config *c = w->cfg;
    int rc = kv_queue_lock_renew(w->q, c->name, w->token, w->lock_ttl_ms);
    if (rc == 0) { /* expired (we were frozen, or Redis restarted): take it again if free */
        rc = kv_queue_lock_acquire(w->q, c->name, w->token, w->lock_ttl_ms);
        if (rc == 0) {
            logf_(w, "consumer-name lock kv:lock:%s is now held by another process; stopping", c->name);
            return WK_EXIT_LOCKED;
        }
        if (rc == 1) logf_(w, "consumer-name lock had expired; re-acquired");
    }
    int f;
    if (rc < 0 && (f = fatal_code(w, rc, "lock renewal"))) return f;
    char hb[512];
    snprintf(hb, sizeof hb, "{\"worker\":\"%s\",\"pid\":%ld,\"state\":\"%s\",\"job\":\"%s\",\"jobs_done\":%ld,\"ts\":%lld}",
             c->name, (long)getpid(), w->state, w->cur_job, w->n_done, (long long)wall_ms());
    rc = kv_queue_heartbeat(w->q, c->name, hb, c->lease_ms);
    if (rc < 0 && (f = fatal_code(w, rc, "heartbeat"))) return f;
    if (entry_id) {
        rc = kv_queue_renew(w->q, KV_STREAM_JOBS, KV_GROUP_WORKERS, c->name, entry_id);
        if (rc == 0 && !*lease_lost) {
            *lease_lost = 1;
            logf_(w, "lease lost on entry %s (job %.16s): another worker claimed or finished it; letting the "
                     "evaluation finish and publishing anyway (the results sink de-duplicates by job_id)",
                  entry_id, w->cur_job);
        }
        if (rc < 0 && (f = fatal_code(w, rc, "lease renewal"))) return f;
        return 0;
    }
    char ids[16][48];
    int n = 0;
    rc = kv_queue_autoclaim(w->q, KV_STREAM_JOBS, KV_GROUP_WORKERS, c->name, c->lease_ms, ids, 16, &n);
    if (rc < 0 && (f = fatal_code(w, rc, "janitor (XAUTOCLAIM)"))) return f;
    for (int i = 0; i < n; i++) logf_(w, "janitor: claimed %s (its lease of %ld ms expired)", ids[i], c->lease_ms);
    return 0;
}

/* Publishes (retrying across reconnects: a repeated result is a no-op in the
 * sink and XACK of an acked entry returns 0). Returns a WK_EXIT_* or 0. */
static int publish(worker *w, const char *entry_id, const char *job_id, const char *sweep, const void *bytes,
                   size_t len) {
    for (int attempt = 0; attempt < 5; attempt++) {
        int rc = kv_queue_publish_ack(w->q, entry_id, job_id, sweep, bytes, len);
        if (rc == KV_OK) return 0;
        int f = fatal_code(w, rc, "result publish");
        if (f) return f;
        logf_(w, "publishing the result of %s failed (%s); retrying", entry_id, kv_queue_errmsg(w->q));
        if (g_stop >= 2) break;
    }
    logf_(w, "giving up publishing %s; it stays pending and will be re-run", entry_id);
    return 0;
}

static int dead_letter(worker *w, const char *entry_id, const char *job_id, const char *sweep, const char *reason,
                       int64_t deliveries) {
    logf_(w, "dead-lettering %s (job %.16s): %s", entry_id, job_id[0] ? job_id : "?", reason);
    int rc = kv_queue_dead_letter(w->q, entry_id, job_id, sweep, w->payload, w->payload_len, reason, deliveries,
                                  w->cfg->name);
    if (rc == KV_OK) return 0;
    int f = fatal_code(w, rc, "dead-letter");
    if (!f) logf_(w, "dead-letter of %s failed (%s); it stays pending", entry_id, kv_queue_errmsg(w->q));
    return f;
}

static void result_init(worker *w, kv_result *r, int64_t deliveries) {
    memset(r, 0, sizeof *r);
    kv_metrics_clear(&r->m);
    snprintf(r->job_id, sizeof r->job_id, "%s", w->job.job_id);
    snprintf(r->sweep, sizeof r->sweep, "%s", w->job.sweep);
    snprintf(r->worker, sizeof r->worker, "%s", w->cfg->name);
    snprintf(r->engine_version, sizeof r->engine_version, "%s", WK_ENGINE_VERSION);
    r->attempt = deliveries;
    r->started_ms = wall_ms();
}

/* A deterministic failure, published like any result. */
static int publish_failure(worker *w, const char *entry_id, int64_t deliveries, const char *error) {
    kv_result r;
    result_init(w, &r, deliveries);
    snprintf(r.status, sizeof r.status, "failed");
    snprintf(r.error, sizeof r.error, "%s", error);
    r.finished_ms = r.started_ms;
    unsigned char *out = NULL;
    size_t n = 0;
    char err[256];
    if (kv_result_encode(&r, &out, &n, err, sizeof err) != KV_OK) {
        logf_(w, "cannot encode a failure result for %s: %s", entry_id, err);
        return 0;
    }
    logf_(w, "job %.16s failed: %s", w->job.job_id, error);
    int f = publish(w, entry_id, w->job.job_id, w->job.sweep, out, n);
    free(out);
    return f;
}

/* Child side of the fork: never returns. */
static void child_main(worker *w, int fd, int64_t deliveries) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* a kill -9'd parent takes its evaluation along */
    signal(SIGTERM, SIG_IGN);         /* the parent decides when a running job dies */
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_DFL);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    /* The parent never runs an OpenMP team of more than one thread (see
     * kvworker_main.c): libgomp's thread pool does not survive fork, so the
     * child is the first process to start worker threads. */
    kn_set_threads(w->cfg->threads);
    kv_result r;
    result_init(w, &r, deliveries);
    if (wk_eval_run(w->ev, &w->job, &r) != 0) {   /* the device, not the job: nothing to publish */
        fprintf(stderr, "kvworker child: %s\n", r.error);
        _exit(WK_CHILD_NO_DEVICE);
    }
    r.finished_ms = wall_ms();
    unsigned char *out = NULL;
    size_t n = 0;
    char err[256];
    if (kv_result_encode(&r, &out, &n, err, sizeof err) != KV_OK) {
        fprintf(stderr, "kvworker child: cannot encode the result: %s\n", err);
        _exit(3);
    }
    uint64_t len = n;
    unsigned char hdr[8];
    for (int i = 0; i < 8; i++) hdr[i] = (unsigned char)(len >> (8 * i));
    const unsigned char *parts[2] = {hdr, out};
    size_t sizes[2] = {8, n};
    for (int p = 0; p < 2; p++) {
        size_t off = 0;
        while (off < sizes[p]) {
            ssize_t k = write(fd, parts[p] + off, sizes[p] - off);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) _exit(4);
            off += (size_t)k;
        }
    }
    _exit(0);
}

enum { RUN_RESULT, RUN_CRASHED, RUN_ABORTED };

/* Forks the evaluation and supervises it. On RUN_RESULT *out and *out_len hold
 * the encoded result (malloc'd). *fatal gets a WK_EXIT_* code if the queue
 * failed fatally meanwhile. */
static int run_child(worker *w, const char *entry_id, int64_t deliveries, unsigned char **out, size_t *out_len,
                     int *fatal) {
    *out = NULL;
    *out_len = 0;
    *fatal = 0;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        logf_(w, "pipe: %s", strerror(errno));
        return RUN_CRASHED;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        logf_(w, "fork: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return RUN_CRASHED;
    }
    if (pid == 0) {
        close(pfd[0]);
        child_main(w, pfd[1], deliveries);
    }
    close(pfd[1]);
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    int eof = 0, exited = 0, killed = 0, lease_lost = 0, overflow = 0, status = 0;
    long next_hb = mono_ms() + w->cfg->heartbeat_ms;
    while (!(exited && eof)) {
        if (!eof) {
            struct pollfd p = {pfd[0], POLLIN, 0};
            if (poll(&p, 1, 100) > 0) {
                unsigned char chunk[65536];
                ssize_t k = read(pfd[0], chunk, sizeof chunk);
                if (k == 0) eof = 1;
                else if (k > 0) {
                    if (len + (size_t)k > WK_RESULT_MAX) {
                        overflow = 1;
                        if (!killed) kill(pid, SIGKILL);
                        killed = 1;
                    } else {
                        if (len + (size_t)k > cap) {
                            size_t nc = cap ? cap * 2 : 65536;
                            while (nc < len + (size_t)k) nc *= 2;
                            unsigned char *nb = realloc(buf, nc);
                            if (!nb) {
                                overflow = 1;
                                continue;
                            }
                            buf = nb;
                            cap = nc;
                        }
                        memcpy(buf + len, chunk, (size_t)k);
                        len += (size_t)k;
                    }
                } else if (errno != EINTR && errno != EAGAIN) eof = 1;
            }
        } else {
            sleep_ms(100);
        }
        if (!exited && waitpid(pid, &status, WNOHANG) == pid) exited = 1;
        if (g_stop >= 2 && !killed && !exited) {
            logf_(w, "second signal: killing the evaluation of %s and handing the entry back", entry_id);
            kill(pid, SIGKILL);
            killed = 1;
        }
        if (!*fatal && mono_ms() >= next_hb) {
            next_hb = mono_ms() + w->cfg->heartbeat_ms;
            *fatal = housekeeping(w, entry_id, &lease_lost);
            if (*fatal && !killed && !exited) {
                kill(pid, SIGKILL);
                killed = 1;
            }
        }
    }
    close(pfd[0]);
    if (*fatal) {
        free(buf);
        return RUN_ABORTED;
    }
    if (killed && g_stop >= 2) {
        free(buf);
        kv_queue_release(w->q, KV_STREAM_JOBS, KV_GROUP_WORKERS, w->cfg->name, entry_id, w->cfg->lease_ms);
        return RUN_ABORTED;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == WK_CHILD_NO_DEVICE) {
        free(buf);
        logf_(w, "the evaluation of %s could not open --gpu %d (its message is above); handing the entry back "
                 "and stopping (exit %d)", entry_id, w->cfg->gpu, WK_EXIT_DEVICE);
        kv_queue_release(w->q, KV_STREAM_JOBS, KV_GROUP_WORKERS, w->cfg->name, entry_id, w->cfg->lease_ms);
        *fatal = WK_EXIT_DEVICE;
        return RUN_ABORTED;
    }
    uint64_t want = 0;
    if (len >= 8)
        for (int i = 0; i < 8; i++) want |= (uint64_t)buf[i] << (8 * i);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !overflow && len >= 8 && want == len - 8) {
        /* a frozen parent (SIGSTOP, swap storm) may wake up after its lease
         * moved on: say so before publishing the now-duplicate result */
        if (!lease_lost && kv_queue_renew(w->q, KV_STREAM_JOBS, KV_GROUP_WORKERS, w->cfg->name, entry_id) == 0)
            logf_(w, "lease lost on entry %s (job %.16s) while the evaluation ran; publishing anyway (the "
                     "results sink de-duplicates by job_id)", entry_id, w->job.job_id);
        memmove(buf, buf + 8, len - 8);
        *out = buf;
        *out_len = len - 8;
        return RUN_RESULT;
    }
    free(buf);
    char how[96];
    if (WIFSIGNALED(status)) snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
    else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(status));
    else snprintf(how, sizeof how, "no complete result on the pipe (%zu bytes)", len);
    logf_(w, "evaluation of %s (job %.16s, delivery %lld of at most %d) died: %s; not acked, it will be "
             "re-delivered",
          entry_id, w->job.job_id, (long long)deliveries, w->cfg->max_deliveries, how);
    return RUN_CRASHED;
}

/* One entry. Returns a WK_EXIT_* to stop with, or 0. */
static int handle_entry(worker *w, const kv_entry *e, int from_pel) {
    const wk_config *c = w->cfg;
    char id[48], job_id[KV_JOB_ID_HEX], sweep[KV_NAME_MAX], reason[600];
    snprintf(id, sizeof id, "%s", e->id);
    snprintf(job_id, sizeof job_id, "%s", e->job_id);
    snprintf(sweep, sizeof sweep, "%s", e->sweep);
    free(w->payload);
    w->payload = NULL;
    w->payload_len = 0;
    if (e->deleted) {
        logf_(w, "entry %s is pending but was deleted from the stream; acking it away", id);
        int rc = kv_queue_ack(w->q, KV_STREAM_JOBS, KV_GROUP_WORKERS, id);
        return rc < 0 ? fatal_code(w, rc, "XACK") : 0;
    }
    size_t plen = e->payload_len;
    int oversized = plen > KV_JOB_MAX_BYTES;
    if (!oversized && plen) { /* copy before the next queue call frees the reply */
        w->payload = malloc(plen);
        if (!w->payload) return WK_EXIT_RUNTIME;
        memcpy(w->payload, e->payload, plen);
        w->payload_len = plen;
    }
    int64_t deliveries = 1;
    if (from_pel) {
        char owner[256];
        int rc = kv_queue_pending_entry(w->q, KV_STREAM_JOBS, KV_GROUP_WORKERS, id, owner, NULL, &deliveries);
        if (rc < 0) return fatal_code(w, rc, "XPENDING");
        if (rc == 0 || strcmp(owner, c->name) != 0) return 0; /* acked or claimed meanwhile */
    }
    w->n_done++;
    if (deliveries > c->max_deliveries) {
        snprintf(reason, sizeof reason, "max_deliveries: delivered %lld times (limit %d); the evaluation kept "
                 "dying", (long long)deliveries, c->max_deliveries);
        return dead_letter(w, id, job_id, sweep, reason, deliveries);
    }
    char err[512];
    if (oversized) {
        snprintf(reason, sizeof reason, "bad_payload: job is %zu bytes (limit %d)", plen, KV_JOB_MAX_BYTES);
        return dead_letter(w, id, job_id, sweep, reason, deliveries);
    }
    if (kv_job_decode(w->payload, w->payload_len, &w->job, err, sizeof err) != KV_OK) {
        snprintf(reason, sizeof reason, "bad_payload: %s", err);
        return dead_letter(w, id, job_id, sweep, reason, deliveries);
    }
    if (strcmp(w->job.job_id, job_id) != 0) {
        snprintf(reason, sizeof reason, "bad_payload: the entry's job_id field does not match the job's hash %.16s",
                 w->job.job_id);
        return dead_letter(w, id, job_id, sweep, reason, deliveries);
    }
    snprintf(w->cur_job, sizeof w->cur_job, "%s", w->job.job_id);
    w->state = "running";
    int f = 0;
    if (wk_eval_prepare(w->ev, &w->job, err, sizeof err) != KV_OK) {
        f = publish_failure(w, id, deliveries, err);
    } else {
        unsigned char *out;
        size_t n;
        int how = run_child(w, id, deliveries, &out, &n, &f);
        if (how == RUN_RESULT) {
            f = publish(w, id, w->job.job_id, w->job.sweep, out, n);
            free(out);
        } else if (how == RUN_CRASHED) {
            sleep_ms(500); /* do not spin on a job that kills its evaluator */
        }
    }
    w->state = "idle";
    w->cur_job[0] = 0;
    return f;
}

static void make_token(char out[40]) {
    unsigned char r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        uint64_t x = (uint64_t)wall_ms() ^ ((uint64_t)getpid() << 32);
        memcpy(r, &x, 8);
        memcpy(r + 8, &x, 8);
    }
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", r[i]);
}

static int worker_loop(worker *w) {
    const wk_config *c = w->cfg;
    long next_house = 0;
    for (;;) {
        if (g_stop) {
            logf_(w, "signal received: stopping");
            return WK_EXIT_OK;
        }
        if (c->max_jobs && w->n_done >= c->max_jobs) {
            logf_(w, "--max-jobs %ld reached", c->max_jobs);
            return WK_EXIT_OK;
        }
        if (mono_ms() >= next_house) {
            int lost = 0, f = housekeeping(w, NULL, &lost);
            if (f) return f;
            next_house = mono_ms() + c->heartbeat_ms;
        }
        kv_entry e;
        int from_pel = 1;
        int rc = kv_queue_read(w->q, KV_STREAM_JOBS, KV_GROUP_WORKERS, c->name, "0", &e);
        if (rc == 0) {
            from_pel = 0;
            rc = kv_queue_read(w->q, KV_STREAM_JOBS, KV_GROUP_WORKERS, c->name, ">", &e);
            if (rc == 0) {
                if (c->once) {
                    logf_(w, "--once: nothing left to do");
                    return WK_EXIT_OK;
                }
                continue;
            }
        }
        if (rc < 0) {
            int f = fatal_code(w, rc, "XREADGROUP");
            if (f) return f;
            logf_(w, "read: %s; re-reading own pending entries", kv_queue_errmsg(w->q));
            if (rc != KV_ERR_IO) sleep_ms(500);
            continue;
        }
        int f = handle_entry(w, &e, from_pel);
        if (f) return f;
    }
}

int wk_worker_run(const wk_config *c) {
    worker w;
    memset(&w, 0, sizeof w);
    w.cfg = c;
    w.state = "idle";
    w.lock_ttl_ms = 3 * c->heartbeat_ms;
    char err[512];
    kv_url url;
    if (kv_url_parse(c->redis_url, &url, err, sizeof err) != KV_OK) {
        fprintf(stderr, "kvworker: %s\n", err);
        return WK_EXIT_USAGE;
    }
    if (!url.pass[0] && !kv_url_is_loopback(&url)) {
        fprintf(stderr, "kvworker: refusing Redis at %s without a password: a non-loopback Redis must require "
                        "AUTH (redis://user:pass@host:port)\n", url.host);
        return WK_EXIT_USAGE;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    kv_queue_opts o;
    kv_queue_opts_default(&o);
    o.block_ms = c->once ? 0 : (c->heartbeat_ms / 2 < 2000 ? (int)(c->heartbeat_ms / 2) : 2000);
    o.timeout_ms = o.block_ms + 3000;
    o.client_name = c->name;
    o.interrupt = &g_stop;
    int rc = kv_queue_open(&w.q, &url, &o, err, sizeof err);
    if (rc != KV_OK) {
        fprintf(stderr, "kvworker: %s\n", err);
        return rc == KV_ERR_AUTH ? WK_EXIT_AUTH : rc == KV_ERR_INVAL ? WK_EXIT_USAGE : WK_EXIT_RUNTIME;
    }
    int code = WK_EXIT_RUNTIME;
    make_token(w.token);
    rc = kv_queue_lock_acquire(w.q, c->name, w.token, w.lock_ttl_ms);
    if (rc != 1) {
        if (rc == 0) {
            fprintf(stderr, "kvworker: consumer name '%s' is in use by another live process (kv:lock:%s); "
                            "refusing to start\n", c->name, c->name);
            code = WK_EXIT_LOCKED;
        } else {
            fprintf(stderr, "kvworker: taking the name lock: %s\n", kv_queue_errmsg(w.q));
            code = rc == KV_ERR_AUTH ? WK_EXIT_AUTH : WK_EXIT_RUNTIME;
        }
        kv_queue_close(w.q);
        return code;
    }
    rc = kv_queue_ensure_group(w.q, KV_STREAM_JOBS, KV_GROUP_WORKERS);
    if (rc != KV_OK) {
        fprintf(stderr, "kvworker: creating group %s on %s: %s\n", KV_GROUP_WORKERS, KV_STREAM_JOBS,
                kv_queue_errmsg(w.q));
        code = rc == KV_ERR_AUTH ? WK_EXIT_AUTH : WK_EXIT_RUNTIME;
        goto out;
    }
    if (wk_eval_init(&w.ev, c, err, sizeof err) != KV_OK) {
        fprintf(stderr, "kvworker: %s\n", err);
        goto out;
    }
    logf_(&w, "started (pid %ld, %s, lease %ld ms, heartbeat %ld ms, max deliveries %d)", (long)getpid(),
          c->fake_eval ? "fake evaluation" : c->gpu >= 0 ? "gpu" : "cpu", c->lease_ms, c->heartbeat_ms,
          c->max_deliveries);
    code = worker_loop(&w);
out:
    if (code != WK_EXIT_LOCKED && code != WK_EXIT_STATE_LOST) {
        kv_queue_lock_release(w.q, c->name, w.token);
    }
    logf_(&w, "exiting with code %d after %ld entr%s", code, w.n_done, w.n_done == 1 ? "y" : "ies");
    wk_eval_free(w.ev);
    free(w.payload);
    kv_queue_close(w.q);
    return code;
}
