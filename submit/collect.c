/* collect.c — the collector loop of kvsubmit (see collect.h for the rule:
 * ack only what is committed).
 *
 * Reads kv:results and kv:dead through consumer group kv:collect as one
 * consumer ("kvsubmit:<host>"): first its own pending entries (start id
 * "0", then each entry's id to move on, so an entry left pending does not
 * block the scan), then new ones (">"). Reads never block (the queue is
 * opened with block_ms 0): both streams are polled, with a 200 ms pause
 * when neither had anything, so a quiet kv:dead never delays kv:results. Its own PEL is
 * scanned again after a reconnect, after a database failure and every 30 s,
 * which is how entries left pending (a failed commit, a lost XACK reply)
 * get stored and acked later. Each result is decoded by kv_result_decode
 * (guarded: size cap and pre-walk before msgpack-c), stored with
 * kv_db_put_result (its own committed transaction), then XACKed. A payload
 * that does not decode is stored as a failure of the job the entry names
 * ("bad_result: ..."), so a poison result cannot loop forever.
 *
 * Progress: on a TTY one line redrawn with \r every 0.5 s, otherwise a
 * plain line every 5 s. "running" is the XPENDING count of
 * kv:jobs/kv:workers: jobs some worker holds, across every sweep on this
 * Redis — an approximation for a single sweep. */
#include "collect.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum { H_ACKED = 1, H_LEFT = 2, H_DBFAIL = 3 };

#define RESCAN_MS 30000  /* re-read our own PEL this often */
#define PROGRESS_MS 250  /* recount progress at most this often while entries flow */
#define DRAIN_MS 2000    /* after the sweep finished, keep reading at most this long */
#define POLL_MS 200      /* idle wait between two polls of the streams */
#define MAX_DB_FAILURES 30
#define MAX_IO_ERRORS 3

typedef struct collector {
    kv_db *db;
    kv_queue *q;
    const sub_collect_opts *o;
    sub_collect_stats *stats;
    char logged[256][48]; /* entry ids already reported as unstorable (ring) */
    int n_logged;
    int bar_shown; /* a progress bar is on screen (clear it before logging) */
} collector;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void c_log(collector *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void c_log(collector *c, const char *fmt, ...) {
    if (c->bar_shown) {
        fputs("\r\033[K", stderr);
        c->bar_shown = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    fputs("kvsubmit: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* 1 the first time an entry id is seen here (then it is remembered). */
static int first_time(collector *c, const char *id) {
    int n = c->n_logged < 256 ? c->n_logged : 256;
    for (int i = 0; i < n; i++)
        if (strcmp(c->logged[i], id) == 0) return 0;
    snprintf(c->logged[c->n_logged++ % 256], 48, "%s", id);
    if (c->n_logged >= 512) c->n_logged = 256;
    return 1;
}

static int ack(collector *c, const char *stream, const char *id) {
    int rc = kv_queue_ack(c->q, stream, KV_GROUP_COLLECT, id);
    if (rc < 0) return rc; /* still pending: the rescan stores it again as a duplicate and acks */
    c->stats->acked += rc;
    return H_ACKED;
}

static int handle_result(collector *c, const kv_entry *e) {
    if (e->deleted) { /* trimmed before we read it: nothing left to store */
        c_log(c, "%s entry %s has no payload (trimmed); acking it", KV_STREAM_RESULTS, e->id);
        return ack(c, KV_STREAM_RESULTS, e->id);
    }
    kv_result r;
    char derr[300] = "";
    int st = kv_result_decode(e->payload, e->payload_len, &r, derr, sizeof derr);
    if (st == KV_OK && e->job_id[0] && strcmp(r.job_id, e->job_id) != 0) {
        snprintf(derr, sizeof derr, "payload is for job %.16s…, the entry names %.16s…", r.job_id, e->job_id);
        kv_result_free(&r);
        st = KV_ERR_INVAL;
    }
    if (st != KV_OK) { /* store it as a failure of the job the entry names */
        memset(&r, 0, sizeof r);
        kv_metrics_clear(&r.m);
        snprintf(r.job_id, sizeof r.job_id, "%s", e->job_id);
        snprintf(r.status, sizeof r.status, "failed");
        snprintf(r.error, sizeof r.error, "bad_result: %s", derr);
        c->stats->bad_payload++;
        c_log(c, "%s entry %s: undecodable result (%s)", KV_STREAM_RESULTS, e->id, derr);
    }
    int inserted = 0;
    st = kv_db_put_result(c->db, &r, &inserted);
    kv_result_free(&r);
    if (st == KV_ERR_INVAL) {
        c->stats->unknown++;
        if (first_time(c, e->id))
            c_log(c, "%s entry %s: not stored, left pending: %s", KV_STREAM_RESULTS, e->id, kv_db_errmsg(c->db));
        return H_LEFT;
    }
    if (st != KV_OK) {
        c_log(c, "storing %s entry %s failed (will retry): %s", KV_STREAM_RESULTS, e->id, kv_db_errmsg(c->db));
        return H_DBFAIL;
    }
    if (inserted) c->stats->stored++;
    else c->stats->duplicates++;
    return ack(c, KV_STREAM_RESULTS, e->id);
}

static int handle_dead(collector *c, const kv_entry *e) {
    if (e->deleted) {
        c_log(c, "%s entry %s has no payload (trimmed); acking it", KV_STREAM_DEAD, e->id);
        return ack(c, KV_STREAM_DEAD, e->id);
    }
    int st = kv_db_put_dead(c->db, e->job_id, e->reason[0] ? e->reason : "dead", e->deliveries, NULL);
    if (st == KV_ERR_INVAL) {
        c->stats->unknown++;
        if (first_time(c, e->id))
            c_log(c, "%s entry %s: not stored, left pending: %s", KV_STREAM_DEAD, e->id, kv_db_errmsg(c->db));
        return H_LEFT;
    }
    if (st != KV_OK) {
        c_log(c, "storing %s entry %s failed (will retry): %s", KV_STREAM_DEAD, e->id, kv_db_errmsg(c->db));
        return H_DBFAIL;
    }
    c->stats->dead++;
    return ack(c, KV_STREAM_DEAD, e->id);
}

/* Where one stream's reading stands: scanning our own PEL from pos, or new. */
typedef struct cursor {
    const char *stream;
    int pel;
    char pos[48];
    int (*handle)(collector *c, const kv_entry *e);
} cursor;

static void cursor_rescan(cursor *k) {
    k->pel = 1;
    snprintf(k->pos, sizeof k->pos, "0");
}

/* Reads and handles at most one entry. Returns 1 (handled), 0 (nothing
 * there), H_DBFAIL, or a queue error < 0. */
static int cursor_step(collector *c, cursor *k) {
    kv_entry e;
    int rc = kv_queue_read(c->q, k->stream, KV_GROUP_COLLECT, c->o->consumer, k->pel ? k->pos : ">", &e);
    if (rc < 0) {
        cursor_rescan(k); /* a reply may have been lost: re-read what we hold */
        return rc;
    }
    if (rc == 0) {
        k->pel = 0; /* own PEL done (or nothing new): read new entries */
        return 0;
    }
    if (k->pel) snprintf(k->pos, sizeof k->pos, "%s", e.id);
    int h = k->handle(c, &e);
    if (h == H_DBFAIL) {
        cursor_rescan(k);
        return H_DBFAIL;
    }
    if (h < 0) {
        cursor_rescan(k);
        return h;
    }
    return 1;
}

static void fmt_duration(char *b, size_t n, double s) {
    if (s < 0) snprintf(b, n, "--");
    else if (s < 60) snprintf(b, n, "%.0fs", s);
    else if (s < 3600) snprintf(b, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(b, n, "%dh%02dm", (int)(s / 3600), ((int)s % 3600) / 60);
}

void sub_progress_format(char *buf, size_t n, const kv_db_progress *p, int64_t running, double eta_s, int bar) {
    int64_t fin = p->done + p->failed + p->dead;
    double pct = p->total ? 100.0 * (double)fin / (double)p->total : 100.0;
    char eta[32], b[32] = "";
    fmt_duration(eta, sizeof eta, eta_s);
    if (bar) {
        int w = 20, fill = p->total ? (int)(w * fin / p->total) : w;
        b[0] = '[';
        for (int i = 0; i < w; i++) b[1 + i] = i < fill ? '#' : '.';
        b[w + 1] = ']';
        b[w + 2] = ' ';
        b[w + 3] = '\0';
    }
    snprintf(buf, n, "%s%lld/%lld done, %lld running, %lld failed, %lld dead (%.0f%%) ETA %s", b,
             (long long)p->done, (long long)p->total, (long long)running, (long long)p->failed, (long long)p->dead,
             pct, eta);
}

static void draw(collector *c, const kv_db_progress *p, int64_t running, double eta) {
    char line[256];
    sub_progress_format(line, sizeof line, p, running, eta, c->o->tty);
    if (c->o->tty) {
        fprintf(stderr, "\r%s\033[K", line);
        c->bar_shown = 1;
    } else {
        fprintf(stderr, "kvsubmit: %s%s%s\n", c->o->sweep ? c->o->sweep : "all sweeps", ": ", line);
    }
    fflush(stderr);
}

int sub_collect_run(kv_db *db, kv_queue *q, const sub_collect_opts *o, sub_collect_end *end,
                    sub_collect_stats *stats, char *err, size_t n_err) {
    static collector c; /* big (the log-once ring); one collector per process */
    memset(&c, 0, sizeof c);
    memset(stats, 0, sizeof *stats);
    c.db = db;
    c.q = q;
    c.o = o;
    c.stats = stats;
    cursor k[2] = {{KV_STREAM_RESULTS, 1, "0", handle_result}, {KV_STREAM_DEAD, 1, "0", handle_dead}};
    int64_t t0 = now_ms(), last_draw = 0, last_rescan = t0, last_prog = -1, fin0 = -1, running = 0, done_at = -1;
    int db_fail = 0, io_err = 0, st = KV_OK, idle = 0;
    kv_db_progress p = {0};
    for (;;) {
        int64_t t = now_ms();
        /* progress is a count over the jobs: not once per entry under load */
        if (idle || last_prog < 0 || t - last_prog >= PROGRESS_MS) {
            if ((st = kv_db_progress_get(db, o->sweep, &p)) != KV_OK) {
                if (++db_fail > MAX_DB_FAILURES) goto db_gone;
                c_log(&c, "reading progress failed (will retry): %s", kv_db_errmsg(db));
                sleep_ms(1000);
                continue;
            }
            last_prog = t;
        }
        int64_t fin = p.done + p.failed + p.dead;
        if (fin0 < 0) fin0 = fin;
        int finished = p.queued == 0;
        if (finished && done_at < 0) done_at = t;
        /* finished: drain what is already there (late duplicates), briefly */
        int leave = finished && (idle || t - done_at >= DRAIN_MS);
        int stop = o->stop && *o->stop;
        int timed_out = o->timeout_s > 0 && t - t0 >= (int64_t)o->timeout_s * 1000;
        if (!o->quiet && (leave || stop || timed_out || last_draw == 0 || t - last_draw >= (o->tty ? 500 : 5000))) {
            int64_t pend = 0;
            int qs = kv_queue_pending(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, &pend);
            if (qs == KV_ERR_NOGROUP) {
                st = KV_ERR_NOGROUP;
                snprintf(err, n_err, "Redis lost its queue state: %s", kv_queue_errmsg(q));
                goto out;
            }
            if (qs == KV_OK) running = pend;
            double rate = (double)(fin - fin0) / ((double)(t - t0) / 1000.0 + 1e-9);
            double eta = fin > fin0 && rate > 0 ? (double)p.queued / rate : -1;
            draw(&c, &p, running, finished ? 0 : eta);
            last_draw = t;
        }
        if (leave) {
            *end = p.failed || p.dead ? SUB_END_FAILED : SUB_END_DONE;
            break;
        }
        if (stop) {
            *end = SUB_END_STOPPED;
            break;
        }
        if (timed_out) {
            *end = SUB_END_TIMEOUT;
            break;
        }
        if (t - last_rescan >= RESCAN_MS) {
            cursor_rescan(&k[0]);
            cursor_rescan(&k[1]);
            last_rescan = t;
        }
        int got = 0;
        for (int i = 0; i < 2 && !(o->stop && *o->stop); i++) {
            int rc = cursor_step(&c, &k[i]);
            if (rc == KV_ERR_NOGROUP) {
                st = KV_ERR_NOGROUP;
                snprintf(err, n_err, "Redis lost its queue state (%s/%s): %s", k[i].stream, KV_GROUP_COLLECT,
                         kv_queue_errmsg(q));
                goto out;
            }
            if (rc < 0) {
                if (o->stop && *o->stop) break;
                if (++io_err >= MAX_IO_ERRORS) {
                    st = KV_ERR_IO;
                    snprintf(err, n_err, "redis: %s", kv_queue_errmsg(q));
                    goto out;
                }
                c_log(&c, "redis: %s (re-reading own pending entries)", kv_queue_errmsg(q));
                got++;
                continue;
            }
            io_err = 0;
            if (rc == H_DBFAIL) {
                if (++db_fail > MAX_DB_FAILURES) goto db_gone;
                sleep_ms(1000);
                got++;
                continue;
            }
            db_fail = 0;
            got += rc;
        }
        idle = got == 0;
        if (idle && !finished) sleep_ms(POLL_MS); /* reads never block: poll both streams */
    }
    st = KV_OK;
    goto out;
db_gone:
    st = KV_ERR_IO;
    snprintf(err, n_err, "results.db keeps failing: %s", kv_db_errmsg(db));
out:
    if (c.bar_shown) fputc('\n', stderr);
    stats->final = p;
    return st;
}
