/* kvsubmit_main.c — the kvsubmit CLI: submit a sweep, collect its results
 * into results.db, report status, retry failures.
 *
 *   kvsubmit SWEEP_FILE [--db PATH] [--redis URL] [--detach] [--rerun] [--quiet] [--timeout S]
 *   kvsubmit --emit-msgpack SWEEP.json > SWEEP.msgpack
 *   kvsubmit --collect [SWEEP] [--db PATH] [--redis URL] [--quiet] [--timeout S]
 *   kvsubmit --status [SWEEP] [--db PATH]
 *   kvsubmit --retry-failed SWEEP [--db PATH] [--redis URL] [--detach] [--quiet] [--timeout S]
 *
 * Submitting: the sweep is loaded and validated first (any error: exit 2,
 * nothing written anywhere); then results.db records the sweep and all its
 * jobs in one transaction, the consumer groups are made sure of, every job
 * still 'new' is XADDed and marked queued (enqueue.c), and unless --detach
 * kvsubmit stays to collect (collect.c) until every job of the sweep is
 * done, failed or dead. SIGINT/SIGTERM stop it between two entries: what
 * was committed is acked, nothing else, and --collect resumes.
 *
 * Exit codes: 0 ok; 1 usage or I/O (Redis unreachable, results.db
 * unusable); 2 invalid sweep file; 3 every job finished but some failed or
 * are dead; 4 --timeout passed first; 5 Redis lost its queue state
 * (NOGROUP: restarted without AOF); 130 interrupted by SIGINT/SIGTERM.
 *
 * main() is the only place that exits; the work is in enqueue.c and
 * collect.c, the database in results.c, Redis in worker/queue.c. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "collect.h"
#include "enqueue.h"
#include "queue.h"
#include "results.h"
#include "sweep.h"

enum {
    EX_OK = 0,
    EX_USAGE_IO = 1,
    EX_BAD_SWEEP = 2,
    EX_JOBS_FAILED = 3,
    EX_TIMEOUT = 4,
    EX_QUEUE_LOST = 5,
    EX_INTERRUPTED = 130
};

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static const char usage_text[] =
    "usage:\n"
    "  kvsubmit SWEEP_FILE [--db PATH] [--redis URL] [--detach] [--rerun] [--quiet] [--timeout S]\n"
    "  kvsubmit --emit-msgpack SWEEP.json > SWEEP.msgpack\n"
    "  kvsubmit --collect [SWEEP] [--db PATH] [--redis URL] [--quiet] [--timeout S]\n"
    "  kvsubmit --status [SWEEP] [--db PATH]\n"
    "  kvsubmit --retry-failed SWEEP [--db PATH] [--redis URL] [--detach] [--quiet] [--timeout S]\n"
    "\n"
    "  --db PATH         results database (default ./results.db)\n"
    "  --redis URL       redis://[[user]:pass@]host[:port][/db] (default $KV_REDIS_URL, then\n"
    "                    redis://127.0.0.1:6379)\n"
    "  --detach          enqueue only; collect later with --collect\n"
    "  --rerun           run the sweep again: a fresh nonce gives every job a new job_id\n"
    "  --quiet           no progress output\n"
    "  --timeout S       stop collecting after S seconds (exit 4)\n"
    "  --emit-msgpack F  convert a JSON sweep to canonical msgpack on stdout\n"
    "  --collect         enqueue leftovers and collect results until SWEEP (or every sweep) finishes\n"
    "  --status          job counts per sweep from results.db (no Redis needed)\n"
    "  --retry-failed S  put sweep S's failed and dead jobs back on the queue, then collect\n"
    "\n"
    "exit: 0 ok, 1 usage/I/O, 2 invalid sweep, 3 jobs failed or dead, 4 timeout,\n"
    "      5 Redis lost its queue state, 130 interrupted\n";

typedef struct cli {
    const char *db_path, *redis, *emit, *retry, *positional;
    int detach, rerun, quiet, collect, status, timeout_s;
} cli;

static int parse_args(int argc, char **argv, cli *c) {
    enum { O_DB = 256, O_REDIS, O_DETACH, O_RERUN, O_QUIET, O_EMIT, O_COLLECT, O_STATUS, O_RETRY, O_TIMEOUT, O_HELP };
    static const struct option opts[] = {
        {"db", required_argument, NULL, O_DB},
        {"redis", required_argument, NULL, O_REDIS},
        {"detach", no_argument, NULL, O_DETACH},
        {"rerun", no_argument, NULL, O_RERUN},
        {"quiet", no_argument, NULL, O_QUIET},
        {"emit-msgpack", required_argument, NULL, O_EMIT},
        {"collect", no_argument, NULL, O_COLLECT},
        {"status", no_argument, NULL, O_STATUS},
        {"retry-failed", required_argument, NULL, O_RETRY},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    memset(c, 0, sizeof *c);
    c->db_path = "results.db";
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case O_DB: c->db_path = optarg; break;
        case O_REDIS: c->redis = optarg; break;
        case O_DETACH: c->detach = 1; break;
        case O_RERUN: c->rerun = 1; break;
        case O_QUIET: c->quiet = 1; break;
        case O_EMIT: c->emit = optarg; break;
        case O_COLLECT: c->collect = 1; break;
        case O_STATUS: c->status = 1; break;
        case O_RETRY: c->retry = optarg; break;
        case O_TIMEOUT: {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || v <= 0 || v > 100L * 24 * 3600) {
                fprintf(stderr, "kvsubmit: --timeout: expected a positive number of seconds, got '%s'\n", optarg);
                return -1;
            }
            c->timeout_s = (int)v;
            break;
        }
        case O_HELP: fputs(usage_text, stdout); return 1;
        default:
            fprintf(stderr, "kvsubmit: unknown or incomplete option '%s'\n%s", argv[optind - 1], usage_text);
            return -1;
        }
    }
    if (optind < argc) c->positional = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "kvsubmit: unexpected argument '%s'\n%s", argv[optind], usage_text);
        return -1;
    }
    int modes = !!c->emit + c->collect + c->status + !!c->retry;
    if (modes > 1) {
        fprintf(stderr, "kvsubmit: --emit-msgpack, --collect, --status and --retry-failed exclude each other\n");
        return -1;
    }
    if (modes == 0 && !c->positional) {
        fprintf(stderr, "kvsubmit: no sweep file given\n%s", usage_text);
        return -1;
    }
    if ((c->emit || c->retry) && c->positional) {
        fprintf(stderr, "kvsubmit: unexpected argument '%s'\n", c->positional);
        return -1;
    }
    if (c->rerun && modes) {
        fprintf(stderr, "kvsubmit: --rerun goes with submitting a sweep file\n");
        return -1;
    }
    return 0;
}

static int emit_msgpack(const char *path) {
    char err[1024];
    kv_sweep *s = NULL;
    if (kv_sweep_load(&s, path, err, sizeof err) != KV_OK) {
        fprintf(stderr, "kvsubmit: %s\n", err);
        return EX_BAD_SWEEP;
    }
    if (isatty(STDOUT_FILENO)) {
        fprintf(stderr, "kvsubmit: --emit-msgpack writes binary; redirect stdout to a file\n");
        kv_sweep_free(s);
        return EX_USAGE_IO;
    }
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = EX_OK;
    if (kv_sweep_to_msgpack(s, &buf, &len, err, sizeof err) != KV_OK) {
        fprintf(stderr, "kvsubmit: %s\n", err);
        rc = EX_BAD_SWEEP;
    } else if (fwrite(buf, 1, len, stdout) != len || fflush(stdout) != 0) {
        fprintf(stderr, "kvsubmit: writing stdout: %s\n", strerror(errno));
        rc = EX_USAGE_IO;
    }
    free(buf);
    kv_sweep_free(s);
    return rc;
}

/* Opens results.db; must_exist for the modes that only read what a submit wrote. */
static int open_db(const cli *c, int must_exist, kv_db **db) {
    char err[1024];
    if (must_exist && access(c->db_path, F_OK) != 0) {
        fprintf(stderr, "kvsubmit: %s: no such database (submit a sweep first, or pass --db)\n", c->db_path);
        return EX_USAGE_IO;
    }
    if (kv_db_open(db, c->db_path, err, sizeof err) != KV_OK) {
        fprintf(stderr, "kvsubmit: %s\n", err);
        return EX_USAGE_IO;
    }
    return EX_OK;
}

static void consumer_name(char *out, size_t n) {
    char host[200] = "localhost";
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(out, n, "kvsubmit:%s", host);
}

static int open_queue(const cli *c, const char *consumer, kv_queue **q) {
    char err[1024];
    kv_url u;
    if (kv_url_parse(c->redis, &u, err, sizeof err) != KV_OK) {
        fprintf(stderr, "kvsubmit: --redis: %s\n", err);
        return EX_USAGE_IO;
    }
    kv_queue_opts o;
    kv_queue_opts_default(&o);
    o.block_ms = 0; /* collect.c polls; a read never blocks */
    o.timeout_ms = 5000;
    o.max_backoff_ms = 5000;
    o.max_reconnect_s = 60;
    o.client_name = consumer;
    o.interrupt = &g_stop;
    if (kv_queue_open(q, &u, &o, err, sizeof err) != KV_OK) {
        fprintf(stderr, "kvsubmit: redis %s:%d: %s\n", u.host, u.port, err);
        return EX_USAGE_IO;
    }
    return EX_OK;
}

static int queue_error(int st, const char *err) {
    fprintf(stderr, "kvsubmit: %s\n", err);
    return st == KV_ERR_NOGROUP ? EX_QUEUE_LOST : EX_USAGE_IO;
}

static int collect(const cli *c, kv_db *db, kv_queue *q, const char *sweep, const char *consumer) {
    sub_collect_opts o = {sweep, consumer, c->timeout_s, c->quiet, isatty(STDERR_FILENO), &g_stop};
    sub_collect_end end;
    sub_collect_stats s;
    char err[1024];
    int st = sub_collect_run(db, q, &o, &end, &s, err, sizeof err);
    if (st != KV_OK) return queue_error(st, err);
    const kv_db_progress *p = &s.final;
    if (!c->quiet || end != SUB_END_DONE) {
        printf("%s: %lld done, %lld failed, %lld dead, %lld unfinished (of %lld)", sweep ? sweep : "all sweeps",
               (long long)p->done, (long long)p->failed, (long long)p->dead, (long long)p->queued,
               (long long)p->total);
        if (s.duplicates) printf("; %lld duplicate result(s) ignored", (long long)s.duplicates);
        printf("\n");
    }
    switch (end) {
    case SUB_END_DONE: return EX_OK;
    case SUB_END_FAILED:
        fprintf(stderr, "kvsubmit: some jobs failed; see sqlite3 %s 'SELECT * FROM v_failures', then "
                        "kvsubmit --retry-failed SWEEP\n", c->db_path);
        return EX_JOBS_FAILED;
    case SUB_END_TIMEOUT:
        fprintf(stderr, "kvsubmit: --timeout %d s passed with %lld job(s) unfinished; resume with kvsubmit --collect\n",
                c->timeout_s, (long long)p->queued);
        return EX_TIMEOUT;
    case SUB_END_STOPPED:
    default:
        fprintf(stderr, "kvsubmit: interrupted; every stored result is acked; resume with kvsubmit --collect\n");
        return EX_INTERRUPTED;
    }
}

static void make_nonce(char out[33]) {
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        unsigned x = (unsigned)getpid() ^ (unsigned)time(NULL);
        for (size_t i = 0; i < sizeof b; i++) b[i] = (unsigned char)((x = x * 1103515245u + 12345u) >> 16);
    }
    for (size_t i = 0; i < sizeof b; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static int submit(const cli *c) {
    char err[2048], consumer[256];
    kv_sweep *s = NULL;
    kv_db *db = NULL;
    kv_queue *q = NULL;
    if (kv_sweep_load(&s, c->positional, err, sizeof err) != KV_OK) {
        fprintf(stderr, "kvsubmit: %s\n", err);
        return EX_BAD_SWEEP;
    }
    const char *name = kv_sweep_name(s);
    consumer_name(consumer, sizeof consumer);
    int rc = open_db(c, 0, &db);
    if (rc == EX_OK) rc = open_queue(c, consumer, &q);
    if (rc != EX_OK) goto out;
    int st = sub_queue_prepare(db, q, err, sizeof err);
    if (st != KV_OK) {
        rc = queue_error(st, err);
        goto out;
    }
    char nonce[33] = "";
    if (c->rerun) make_nonce(nonce);
    int64_t n_new = 0, n_old = 0, n_queued = 0;
    if (sub_sweep_record(db, s, nonce, &n_new, &n_old, err, sizeof err) != KV_OK) {
        fprintf(stderr, "kvsubmit: %s\n", err);
        rc = EX_USAGE_IO;
        goto out;
    }
    if (!c->quiet) {
        printf("%s: %lld new, %lld existing\n", name, (long long)n_new, (long long)n_old);
        if (c->rerun) printf("%s: rerun nonce %s\n", name, nonce);
        fflush(stdout);
    }
    st = sub_enqueue_unqueued(db, q, name, &g_stop, &n_queued, err, sizeof err);
    if (st != KV_OK) {
        rc = queue_error(st, err);
        goto out;
    }
    if (!c->quiet) {
        printf("%s: %lld enqueued\n", name, (long long)n_queued);
        fflush(stdout);
    }
    if (g_stop) {
        fprintf(stderr, "kvsubmit: interrupted while enqueueing; kvsubmit --collect enqueues the rest\n");
        rc = EX_INTERRUPTED;
    } else if (!c->detach) {
        rc = collect(c, db, q, name, consumer);
    }
out:
    kv_queue_close(q);
    kv_db_close(db);
    kv_sweep_free(s);
    return rc;
}

static int status_row(void *ud, const char *sweep, const kv_db_progress *p) {
    int *n = ud;
    if ((*n)++ == 0)
        printf("%-32s %8s %8s %8s %8s %8s %6s %9s\n", "sweep", "total", "done", "pending", "failed", "dead", "dups",
               "finished");
    int64_t fin = p->done + p->failed + p->dead;
    printf("%-32s %8lld %8lld %8lld %8lld %8lld %6lld %8.1f%%\n", sweep, (long long)p->total, (long long)p->done,
           (long long)p->queued, (long long)p->failed, (long long)p->dead, (long long)p->dup_results,
           p->total ? 100.0 * (double)fin / (double)p->total : 100.0);
    return 0;
}

static int status(const cli *c) {
    kv_db *db = NULL;
    int rc = open_db(c, 1, &db), n = 0;
    if (rc != EX_OK) return rc;
    if (kv_db_each_progress(db, c->positional, status_row, &n) != KV_OK) {
        fprintf(stderr, "kvsubmit: %s\n", kv_db_errmsg(db));
        rc = EX_USAGE_IO;
    } else if (n == 0 && c->positional) {
        fprintf(stderr, "kvsubmit: no sweep named '%s' in %s\n", c->positional, c->db_path);
        rc = EX_USAGE_IO;
    } else if (n == 0) {
        printf("no sweeps in %s\n", c->db_path);
    }
    kv_db_close(db);
    return rc;
}

static int count_rows(void *ud, const char *sweep, const kv_db_progress *p) {
    (void)sweep, (void)p;
    ++*(int *)ud;
    return 0;
}

/* --collect and --retry-failed: Redis, leftovers enqueued, then collect. */
static int resume(const cli *c) {
    char err[2048], consumer[256];
    kv_db *db = NULL;
    kv_queue *q = NULL;
    const char *sweep = c->retry ? c->retry : c->positional;
    int rc = open_db(c, 1, &db), n = 0;
    if (rc != EX_OK) return rc;
    if (sweep && (kv_db_each_progress(db, sweep, count_rows, &n) != KV_OK || n == 0)) {
        fprintf(stderr, "kvsubmit: no sweep named '%s' in %s\n", sweep, c->db_path);
        rc = EX_USAGE_IO;
        goto out;
    }
    consumer_name(consumer, sizeof consumer);
    if ((rc = open_queue(c, consumer, &q)) != EX_OK) goto out;
    int st = sub_queue_prepare(db, q, err, sizeof err);
    if (st != KV_OK) {
        rc = queue_error(st, err);
        goto out;
    }
    int64_t n_reset = 0, n_queued = 0;
    if (c->retry && kv_db_reset_failed(db, sweep, &n_reset) != KV_OK) {
        fprintf(stderr, "kvsubmit: %s\n", kv_db_errmsg(db));
        rc = EX_USAGE_IO;
        goto out;
    }
    st = sweep ? sub_enqueue_unqueued(db, q, sweep, &g_stop, &n_queued, err, sizeof err)
               : sub_enqueue_all_unqueued(db, q, &g_stop, &n_queued, err, sizeof err);
    if (st != KV_OK) {
        rc = queue_error(st, err);
        goto out;
    }
    if (!c->quiet && (c->retry || n_queued))
        printf("%s: %lld %s\n", sweep ? sweep : "all sweeps", (long long)n_queued,
               c->retry ? "failed/dead job(s) re-enqueued" : "left-over job(s) enqueued");
    fflush(stdout);
    if (g_stop) rc = EX_INTERRUPTED;
    else if (!(c->retry && c->detach)) rc = collect(c, db, q, sweep, consumer);
out:
    kv_queue_close(q);
    kv_db_close(db);
    return rc;
}

int main(int argc, char **argv) {
    cli c;
    int p = parse_args(argc, argv, &c);
    if (p != 0) return p > 0 ? EX_OK : EX_USAGE_IO;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked read returns and the loop sees g_stop */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (c.emit) return emit_msgpack(c.emit);
    if (c.status) return status(&c);
    if (c.collect || c.retry) return resume(&c);
    return submit(&c);
}
