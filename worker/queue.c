/* queue.c — kvsweep's Redis Streams client (hiredis 0.14.1, synchronous).
 *
 * What it does: parses redis:// URLs, opens one redisContext with a connect
 * timeout, a socket timeout (SO_RCVTIMEO/SO_SNDTIMEO) that must exceed the
 * XREADGROUP BLOCK time plus a margin, TCP keepalive, AUTH, SELECT and
 * CLIENT SETNAME, and wraps every Redis command the worker and the submitter
 * use. Every command goes through redisCommandArgv (or the Append/GetReply
 * pipeline with explicit lengths): no outside byte ever reaches a format
 * string.
 *
 * Failure model: when a call meets a dead connection (c->err set, or no
 * reply), the context is thrown away and rebuilt with capped exponential
 * backoff and jitter (100 ms .. max_backoff_ms), re-applying the socket
 * timeout, keepalive, AUTH, SELECT and the client name — hiredis 0.14's
 * redisReconnect would keep none of the timeouts (queue-reliability.md §2).
 * The call then returns KV_ERR_IO once, so that the caller re-reads its own
 * pending entries: a reply may have been lost in flight. A NOGROUP error is
 * returned as KV_ERR_NOGROUP and the group is never recreated here; only
 * kv_queue_ensure_group creates it, and callers use that at startup only.
 *
 * What it deliberately does not do: no Lua (the compare-and-refresh lock is
 * WATCH/GET/MULTI, so the worker's ACL needs no EVAL), no threads (a
 * redisContext is not thread-safe; one kv_queue per thread), no TLS
 * (hiredis 0.14 has none: tunnel it).
 *
 * Ownership: kv_entry fields that point into a reply stay valid until the
 * next call on the same kv_queue. */
#include "queue.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct kv_queue {
    redisContext *c;
    kv_url url;
    kv_queue_opts opts;
    char client_name[256];
    char err[512];
    long reconnects;
    long rcvtimeo_ms;
    redisReply *keep; /* the reply the last kv_entry points into */
    unsigned rng;
};

/* ---- URL ------------------------------------------------------------------ */

static int hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Copies s[0..n) into out (cap bytes incl. NUL), decoding %XX. Rejects NUL. */
static int url_copy_decoded(char *out, size_t cap, const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= n) return -1;
            int h = hexval((unsigned char)s[i + 1]), l = hexval((unsigned char)s[i + 2]);
            if (h < 0 || l < 0) return -1;
            ch = h * 16 + l;
            i += 2;
        }
        if (ch == 0 || k + 1 >= cap) return -1;
        out[k++] = (char)ch;
    }
    out[k] = 0;
    return 0;
}

static int url_fail(char *err, size_t n_err, const char *what, const char *url) {
    if (err && n_err) snprintf(err, n_err, "bad Redis URL '%.200s': %s", url, what);
    return KV_ERR_INVAL;
}

/* redis://[[user]:pass@]host[:port][/db]. The password is never echoed in
 * error messages (only the host part is). */
int kv_url_parse(const char *s, kv_url *u, char *err, size_t n_err) {
    memset(u, 0, sizeof *u);
    u->port = 6379;
    if (!s || !*s) s = getenv("KV_REDIS_URL");
    if (!s || !*s) s = "redis://127.0.0.1:6379";
    const char *shown = "(redacted)";
    if (strncmp(s, "redis://", 8) != 0) return url_fail(err, n_err, "must start with redis://", shown);
    const char *p = s + 8;
    const char *end = p + strlen(p);
    const char *slash = strchr(p, '/');
    const char *auth_end = NULL;
    for (const char *a = p; a < (slash ? slash : end); a++)
        if (*a == '@') auth_end = a; /* the last '@' before the path ends the credentials */
    if (auth_end) {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        if (!colon) return url_fail(err, n_err, "credentials must be [user]:password@", shown);
        if (url_copy_decoded(u->user, sizeof u->user, p, (size_t)(colon - p)) != 0)
            return url_fail(err, n_err, "bad or too long user name", shown);
        if (url_copy_decoded(u->pass, sizeof u->pass, colon + 1, (size_t)(auth_end - colon - 1)) != 0)
            return url_fail(err, n_err, "bad or too long password", shown);
        if (!u->pass[0]) return url_fail(err, n_err, "empty password", shown);
        p = auth_end + 1;
    }
    slash = memchr(p, '/', (size_t)(end - p));
    const char *hostpart_end = slash ? slash : end;
    shown = p;
    const char *h = p, *h_end, *port_s = NULL;
    if (*h == '[') { /* [ipv6] */
        const char *rb = memchr(h, ']', (size_t)(hostpart_end - h));
        if (!rb) return url_fail(err, n_err, "unterminated [ipv6]", shown);
        h++;
        h_end = rb;
        if (rb + 1 < hostpart_end) {
            if (rb[1] != ':') return url_fail(err, n_err, "junk after ]", shown);
            port_s = rb + 2;
        }
    } else {
        const char *colon = memchr(h, ':', (size_t)(hostpart_end - h));
        h_end = colon ? colon : hostpart_end;
        if (colon) port_s = colon + 1;
    }
    if (h_end == h) return url_fail(err, n_err, "empty host", shown);
    if ((size_t)(h_end - h) >= sizeof u->host) return url_fail(err, n_err, "host too long", shown);
    for (const char *c = h; c < h_end; c++)
        if (*c <= ' ' || *c == '@' || *c == '/' || *c == '%' || (unsigned char)*c >= 0x7f)
            return url_fail(err, n_err, "bad character in host", shown);
    memcpy(u->host, h, (size_t)(h_end - h));
    u->host[h_end - h] = 0;
    if (port_s) {
        if (port_s == hostpart_end) return url_fail(err, n_err, "empty port", shown);
        long v = 0;
        for (const char *c = port_s; c < hostpart_end; c++) {
            if (*c < '0' || *c > '9') return url_fail(err, n_err, "port is not a number", shown);
            v = v * 10 + (*c - '0');
            if (v > 65535) return url_fail(err, n_err, "port out of range", shown);
        }
        if (v < 1) return url_fail(err, n_err, "port out of range", shown);
        u->port = (int)v;
    }
    if (slash && slash + 1 < end) {
        long v = 0;
        for (const char *c = slash + 1; c < end; c++) {
            if (*c < '0' || *c > '9') return url_fail(err, n_err, "database is not a number", shown);
            v = v * 10 + (*c - '0');
            if (v > 1000000) return url_fail(err, n_err, "database out of range", shown);
        }
        u->db = (int)v;
    }
    return KV_OK;
}

int kv_url_is_loopback(const kv_url *u) {
    return strcmp(u->host, "localhost") == 0 || strncmp(u->host, "127.", 4) == 0 || strcmp(u->host, "::1") == 0;
}

/* ---- connection ----------------------------------------------------------- */

void kv_queue_opts_default(kv_queue_opts *o) {
    memset(o, 0, sizeof *o);
    o->block_ms = 2000;
    o->timeout_ms = 5000;
    o->max_backoff_ms = 10000;
    o->max_reconnect_s = 0;
    o->client_name = NULL;
    o->interrupt = NULL;
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* a signal cuts it short; callers re-check their flags */
}

static int is_auth_error(const char *s) {
    return strncmp(s, "WRONGPASS", 9) == 0 || strncmp(s, "NOAUTH", 6) == 0 || strncmp(s, "NOPERM", 6) == 0 ||
           strstr(s, "invalid password") != NULL || strstr(s, "invalid username-password") != NULL;
}

/* One synchronous command on a fresh context during setup; returns the reply
 * or NULL with q->err set. */
static redisReply *setup_cmd(kv_queue *q, int argc, const char **argv, int *rc) {
    redisReply *r = redisCommandArgv(q->c, argc, argv, NULL);
    if (!r || q->c->err) {
        snprintf(q->err, sizeof q->err, "redis %s:%d: %s during %s", q->url.host, q->url.port,
                 q->c->err ? q->c->errstr : "no reply", argv[0]);
        if (r) freeReplyObject(r);
        *rc = KV_ERR_IO;
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(q->err, sizeof q->err, "redis %.100s:%d: %.20s refused: %.300s", q->url.host, q->url.port, argv[0],
                 r->str);
        *rc = is_auth_error(r->str) || strcmp(argv[0], "AUTH") == 0 ? KV_ERR_AUTH : KV_ERR_IO;
        freeReplyObject(r);
        return NULL;
    }
    *rc = KV_OK;
    return r;
}

/* One connection attempt with every setting applied. */
static int q_connect_once(kv_queue *q) {
    if (q->c) redisFree(q->c);
    struct timeval ct = {2, 0};
    q->c = redisConnectWithTimeout(q->url.host, q->url.port, ct);
    if (!q->c) {
        snprintf(q->err, sizeof q->err, "redis %s:%d: cannot allocate a context", q->url.host, q->url.port);
        return KV_ERR_NOMEM;
    }
    if (q->c->err) {
        snprintf(q->err, sizeof q->err, "redis %s:%d: %s", q->url.host, q->url.port, q->c->errstr);
        redisFree(q->c);
        q->c = NULL;
        return KV_ERR_IO;
    }
    struct timeval st = {q->opts.timeout_ms / 1000, (q->opts.timeout_ms % 1000) * 1000};
    if (redisSetTimeout(q->c, st) != REDIS_OK || redisEnableKeepAlive(q->c) != REDIS_OK) {
        snprintf(q->err, sizeof q->err, "redis %s:%d: setting socket options: %s", q->url.host, q->url.port,
                 q->c->errstr);
        redisFree(q->c);
        q->c = NULL;
        return KV_ERR_IO;
    }
    struct timeval got = {0, 0};
    socklen_t gl = sizeof got;
    if (getsockopt(q->c->fd, SOL_SOCKET, SO_RCVTIMEO, &got, &gl) == 0)
        q->rcvtimeo_ms = (long)got.tv_sec * 1000 + got.tv_usec / 1000;
    else
        q->rcvtimeo_ms = -1;
    int rc = KV_OK;
    redisReply *r;
    if (q->url.pass[0]) {
        const char *a3[] = {"AUTH", q->url.user, q->url.pass};
        const char *a2[] = {"AUTH", q->url.pass};
        r = q->url.user[0] ? setup_cmd(q, 3, a3, &rc) : setup_cmd(q, 2, a2, &rc);
        if (!r) goto fail;
        freeReplyObject(r);
    }
    if (q->url.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", q->url.db);
        const char *a[] = {"SELECT", db};
        if (!(r = setup_cmd(q, 2, a, &rc))) goto fail;
        freeReplyObject(r);
    }
    if (q->client_name[0]) {
        const char *a[] = {"CLIENT", "SETNAME", q->client_name};
        if (!(r = setup_cmd(q, 3, a, &rc))) goto fail;
        freeReplyObject(r);
    }
    return KV_OK;
fail:
    redisFree(q->c);
    q->c = NULL;
    return rc;
}

/* Rebuilds the connection with capped exponential backoff and jitter. Stops
 * on an auth refusal (retrying a wrong password only spins), on
 * *opts.interrupt, or after max_reconnect_s. */
static int q_reconnect(kv_queue *q) {
    char first[512];
    snprintf(first, sizeof first, "%s", q->err);
    long start = now_ms(), delay = 100, attempts = 0;
    for (;;) {
        int rc = q_connect_once(q);
        attempts++;
        if (rc == KV_OK) {
            q->reconnects++;
            fprintf(stderr, "kvq: reconnected to %s:%d after %ld attempt(s) (%s)\n", q->url.host, q->url.port,
                    attempts, first);
            snprintf(q->err, sizeof q->err, "connection lost and re-established (%.400s)", first);
            return KV_OK;
        }
        if (rc == KV_ERR_AUTH || rc == KV_ERR_NOMEM) return rc;
        if (attempts == 1 || attempts % 10 == 0)
            fprintf(stderr, "kvq: redis unavailable (%s); retrying with backoff\n", q->err);
        if (q->opts.interrupt && *q->opts.interrupt) return KV_ERR_IO;
        if (q->opts.max_reconnect_s > 0 && now_ms() - start > (long)q->opts.max_reconnect_s * 1000) {
            snprintf(q->err + strlen(q->err), sizeof q->err - strlen(q->err), " (gave up after %d s)",
                     q->opts.max_reconnect_s);
            return KV_ERR_IO;
        }
        q->rng = q->rng * 1103515245u + 12345u;
        long jittered = delay / 2 + (long)((q->rng >> 8) % (unsigned)(delay / 2 + 1));
        sleep_ms(jittered);
        delay = delay * 2 > q->opts.max_backoff_ms ? q->opts.max_backoff_ms : delay * 2;
    }
}

int kv_queue_open(kv_queue **out, const kv_url *u, const kv_queue_opts *o, char *err, size_t n_err) {
    *out = NULL;
    kv_queue_opts def;
    if (!o) {
        kv_queue_opts_default(&def);
        o = &def;
    }
    if (o->timeout_ms <= 0 || o->block_ms < 0 || o->timeout_ms <= o->block_ms + 1000) {
        snprintf(err, n_err,
                 "socket timeout %d ms must exceed the XREADGROUP block time %d ms + 1000 ms (a blocked read "
                 "would time out and kill the connection)",
                 o->timeout_ms, o->block_ms);
        return KV_ERR_INVAL;
    }
    if (o->max_backoff_ms < 100) {
        snprintf(err, n_err, "max_backoff_ms %d must be >= 100", o->max_backoff_ms);
        return KV_ERR_INVAL;
    }
    kv_queue *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, n_err, "out of memory");
        return KV_ERR_NOMEM;
    }
    q->url = *u;
    q->opts = *o;
    if (o->client_name) snprintf(q->client_name, sizeof q->client_name, "%s", o->client_name);
    for (char *c = q->client_name; *c; c++) /* CLIENT SETNAME refuses spaces */
        if (*c <= ' ' || *c >= 0x7f) *c = '_';
    q->opts.client_name = NULL;
    q->rng = (unsigned)getpid() ^ (unsigned)now_ms();
    int rc = q_connect_once(q);
    if (rc != KV_OK) {
        snprintf(err, n_err, "%s", q->err);
        kv_queue_close(q);
        return rc;
    }
    *out = q;
    return KV_OK;
}

void kv_queue_close(kv_queue *q) {
    if (!q) return;
    if (q->keep) freeReplyObject(q->keep);
    if (q->c) redisFree(q->c);
    memset(q->url.pass, 0, sizeof q->url.pass);
    free(q);
}

const char *kv_queue_errmsg(const kv_queue *q) { return q ? q->err : "no queue"; }
long kv_queue_reconnects(const kv_queue *q) { return q->reconnects; }
long kv_queue_rcvtimeo_ms(const kv_queue *q) { return q->rcvtimeo_ms; }

static int map_error_reply(kv_queue *q, const char *cmd, const char *msg) {
    snprintf(q->err, sizeof q->err, "%s: %.400s", cmd, msg);
    if (strncmp(msg, "NOGROUP", 7) == 0) return KV_ERR_NOGROUP;
    if (is_auth_error(msg)) return KV_ERR_AUTH;
    return KV_ERR_IO;
}

/* Handles a dead connection after a failed call: reconnect, then report
 * KV_ERR_IO once (or KV_ERR_AUTH if the credentials are now refused). */
static int q_lost(kv_queue *q, const char *cmd) {
    char why[160];
    snprintf(why, sizeof why, "%s: %s", cmd, q->c ? q->c->errstr : "not connected");
    snprintf(q->err, sizeof q->err, "%s", why);
    if (q->c) {
        redisFree(q->c);
        q->c = NULL;
    }
    int rc = q_reconnect(q);
    return rc == KV_ERR_AUTH ? KV_ERR_AUTH : KV_ERR_IO;
}

/* Runs one command; *out gets a non-error reply (caller frees). */
static int q_cmd(kv_queue *q, redisReply **out, int argc, const char **argv, const size_t *lens) {
    *out = NULL;
    if (q->keep) {
        freeReplyObject(q->keep);
        q->keep = NULL;
    }
    if (!q->c) return q_lost(q, argv[0]);
    redisReply *r = redisCommandArgv(q->c, argc, argv, lens);
    if (!r || q->c->err) {
        if (r) freeReplyObject(r);
        return q_lost(q, argv[0]);
    }
    if (r->type == REDIS_REPLY_ERROR) {
        int rc = map_error_reply(q, argv[0], r->str);
        freeReplyObject(r);
        return rc;
    }
    *out = r;
    return KV_OK;
}

/* A MULTI ... EXEC block sent as one pipeline. cmds[i] has argc[i] args.
 * On success *exec is EXEC's array reply (caller frees). */
static int q_multi(kv_queue *q, int n, const int *argc, const char **const *argv, const size_t *const *lens,
                   redisReply **exec) {
    *exec = NULL;
    if (q->keep) {
        freeReplyObject(q->keep);
        q->keep = NULL;
    }
    if (!q->c) return q_lost(q, "MULTI");
    const char *m[] = {"MULTI"}, *e[] = {"EXEC"};
    redisAppendCommandArgv(q->c, 1, m, NULL);
    for (int i = 0; i < n; i++) redisAppendCommandArgv(q->c, argc[i], argv[i], lens[i]);
    redisAppendCommandArgv(q->c, 1, e, NULL);
    int rc = KV_OK;
    for (int i = 0; i < n + 2; i++) {
        void *rv = NULL;
        if (redisGetReply(q->c, &rv) != REDIS_OK || !rv) {
            if (rv) freeReplyObject(rv);
            if (*exec) freeReplyObject(*exec);
            *exec = NULL;
            return q_lost(q, "EXEC");
        }
        redisReply *r = rv;
        if (r->type == REDIS_REPLY_ERROR && rc == KV_OK) rc = map_error_reply(q, i == n + 1 ? "EXEC" : "MULTI", r->str);
        if (i == n + 1 && r->type == REDIS_REPLY_ARRAY && rc == KV_OK) {
            *exec = r;
            continue;
        }
        freeReplyObject(r);
    }
    if (rc == KV_OK && !*exec) {
        snprintf(q->err, sizeof q->err, "EXEC: transaction aborted");
        rc = KV_ERR_IO;
    }
    if (rc == KV_OK)
        for (size_t i = 0; i < (*exec)->elements; i++)
            if ((*exec)->element[i]->type == REDIS_REPLY_ERROR) {
                rc = map_error_reply(q, "EXEC", (*exec)->element[i]->str);
                break;
            }
    if (rc != KV_OK && *exec) {
        freeReplyObject(*exec);
        *exec = NULL;
    }
    return rc;
}

int kv_queue_ping(kv_queue *q) {
    const char *a[] = {"PING"};
    redisReply *r;
    int rc = q_cmd(q, &r, 1, a, NULL);
    if (r) freeReplyObject(r);
    return rc;
}

int kv_queue_ensure_group(kv_queue *q, const char *stream, const char *group) {
    const char *a[] = {"XGROUP", "CREATE", stream, group, "0", "MKSTREAM"};
    redisReply *r;
    int rc = q_cmd(q, &r, 6, a, NULL);
    if (r) freeReplyObject(r);
    if (rc == KV_ERR_IO && strstr(q->err, "BUSYGROUP")) return KV_OK;
    return rc;
}

/* ---- entries ------------------------------------------------------------- */

static int str_eq(const redisReply *r, const char *s) {
    return r->type == REDIS_REPLY_STRING && r->len == strlen(s) && memcmp(r->str, s, r->len) == 0;
}

/* Copies a reply string into a fixed buffer; 0 if it does not fit or has a NUL. */
static int copy_field(char *out, size_t cap, const redisReply *v) {
    if (v->type != REDIS_REPLY_STRING || (size_t)v->len >= cap || memchr(v->str, 0, v->len)) {
        out[0] = 0;
        return 0;
    }
    memcpy(out, v->str, v->len);
    out[v->len] = 0;
    return 1;
}

/* Fills e from [id, [f, v, ...] | nil]. */
static int parse_entry(kv_queue *q, const redisReply *x, kv_entry *e) {
    memset(e, 0, sizeof *e);
    if (x->type != REDIS_REPLY_ARRAY || x->elements < 2 || !copy_field(e->id, sizeof e->id, x->element[0])) {
        snprintf(q->err, sizeof q->err, "XREADGROUP: unexpected entry shape");
        return KV_ERR_FORMAT;
    }
    const redisReply *f = x->element[1];
    if (f->type == REDIS_REPLY_NIL) {
        e->deleted = 1;
        return KV_OK;
    }
    if (f->type != REDIS_REPLY_ARRAY) {
        snprintf(q->err, sizeof q->err, "XREADGROUP: unexpected field list");
        return KV_ERR_FORMAT;
    }
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (v->type != REDIS_REPLY_STRING) continue;
        if (str_eq(k, "job_id")) copy_field(e->job_id, sizeof e->job_id, v);
        else if (str_eq(k, "sweep")) copy_field(e->sweep, sizeof e->sweep, v);
        else if (str_eq(k, "reason")) copy_field(e->reason, sizeof e->reason, v);
        else if (str_eq(k, "deliveries")) e->deliveries = strtoll(v->str, NULL, 10);
        else if (str_eq(k, "job") || str_eq(k, "result")) {
            e->payload = (const unsigned char *)v->str;
            e->payload_len = v->len;
        }
    }
    return KV_OK;
}

int kv_queue_add(kv_queue *q, const char *stream, const char *job_id, const char *sweep,
                 const char *payload_field, const void *payload, size_t len, char id_out[48]) {
    const char *a[] = {"XADD", stream, "*", "job_id", job_id, "sweep", sweep, payload_field, payload};
    size_t l[] = {4, strlen(stream), 1, 6, strlen(job_id), 5, strlen(sweep), strlen(payload_field), len};
    redisReply *r;
    int rc = q_cmd(q, &r, 9, a, l);
    if (rc != KV_OK) return rc;
    if (id_out) {
        if (r->type != REDIS_REPLY_STRING || !copy_field(id_out, 48, r)) id_out[0] = 0;
    }
    freeReplyObject(r);
    return KV_OK;
}

int kv_queue_read(kv_queue *q, const char *stream, const char *group, const char *consumer, const char *start,
                  kv_entry *e) {
    char block[16];
    const char *a[12];
    int n = 0;
    a[n++] = "XREADGROUP";
    a[n++] = "GROUP";
    a[n++] = group;
    a[n++] = consumer;
    a[n++] = "COUNT";
    a[n++] = "1";
    if (strcmp(start, ">") == 0 && q->opts.block_ms > 0) { /* BLOCK 0 would mean forever */
        snprintf(block, sizeof block, "%d", q->opts.block_ms);
        a[n++] = "BLOCK";
        a[n++] = block;
    }
    a[n++] = "STREAMS";
    a[n++] = stream;
    a[n++] = start;
    redisReply *r;
    int rc = q_cmd(q, &r, n, a, NULL);
    if (rc != KV_OK) return rc;
    if (r->type == REDIS_REPLY_NIL) { /* BLOCK timed out */
        freeReplyObject(r);
        return 0;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_ARRAY ||
        r->element[0]->elements < 2 || r->element[0]->element[1]->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        snprintf(q->err, sizeof q->err, "XREADGROUP: unexpected reply shape");
        return KV_ERR_FORMAT;
    }
    const redisReply *entries = r->element[0]->element[1];
    if (entries->elements == 0) {
        freeReplyObject(r);
        return 0;
    }
    rc = parse_entry(q, entries->element[0], e);
    if (rc != KV_OK) {
        freeReplyObject(r);
        return rc;
    }
    q->keep = r; /* e->payload points into it */
    return 1;
}

int kv_queue_ack(kv_queue *q, const char *stream, const char *group, const char *id) {
    const char *a[] = {"XACK", stream, group, id};
    redisReply *r;
    int rc = q_cmd(q, &r, 4, a, NULL);
    if (rc != KV_OK) return rc;
    int n = r->type == REDIS_REPLY_INTEGER ? (int)r->integer : 0;
    freeReplyObject(r);
    return n;
}

int kv_queue_pending_entry(kv_queue *q, const char *stream, const char *group, const char *id, char owner[256],
                           int64_t *idle_ms, int64_t *deliveries) {
    const char *a[] = {"XPENDING", stream, group, id, id, "1"};
    redisReply *r;
    int rc = q_cmd(q, &r, 6, a, NULL);
    if (rc != KV_OK) return rc;
    int found = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1) {
        const redisReply *x = r->element[0];
        if (x->type == REDIS_REPLY_ARRAY && x->elements >= 4 && str_eq(x->element[0], id)) {
            found = 1;
            if (owner) copy_field(owner, 256, x->element[1]);
            if (idle_ms) *idle_ms = x->element[2]->type == REDIS_REPLY_INTEGER ? x->element[2]->integer : -1;
            if (deliveries) *deliveries = x->element[3]->type == REDIS_REPLY_INTEGER ? x->element[3]->integer : -1;
        }
    }
    freeReplyObject(r);
    if (!found) {
        if (owner) owner[0] = 0;
        if (deliveries) *deliveries = 0;
    }
    return found;
}

int kv_queue_deliveries(kv_queue *q, const char *stream, const char *group, const char *id, int64_t *out) {
    int rc = kv_queue_pending_entry(q, stream, group, id, NULL, NULL, out);
    return rc < 0 ? rc : KV_OK;
}

/* Lease renewal. XCLAIM with min-idle 0 would succeed even when another
 * worker's janitor has taken the entry, silently stealing it back, so the
 * owner is checked first (extended XPENDING). The window between the two
 * calls is one round trip; losing that race only means two executions, which
 * the idempotent sink absorbs. */
int kv_queue_renew(kv_queue *q, const char *stream, const char *group, const char *consumer, const char *id) {
    char owner[256];
    int rc = kv_queue_pending_entry(q, stream, group, id, owner, NULL, NULL);
    if (rc <= 0) return rc;
    if (strcmp(owner, consumer) != 0) return 0;
    const char *a[] = {"XCLAIM", stream, group, consumer, "0", id, "JUSTID"};
    redisReply *r;
    rc = q_cmd(q, &r, 7, a, NULL);
    if (rc != KV_OK) return rc;
    int n = r->type == REDIS_REPLY_ARRAY && r->elements == 1;
    freeReplyObject(r);
    return n;
}

int kv_queue_release(kv_queue *q, const char *stream, const char *group, const char *consumer, const char *id,
                     long idle_ms) {
    char idle[24];
    snprintf(idle, sizeof idle, "%ld", idle_ms);
    const char *a[] = {"XCLAIM", stream, group, consumer, "0", id, "IDLE", idle, "JUSTID"};
    redisReply *r;
    int rc = q_cmd(q, &r, 9, a, NULL);
    if (rc != KV_OK) return rc;
    int n = r->type == REDIS_REPLY_ARRAY && r->elements == 1;
    freeReplyObject(r);
    return n;
}

/* Janitor. Walks the PEL with the cursor until it wraps ("0-0") or max ids
 * are claimed (at most 64 round trips). Redis 7.0 replies
 * [cursor, [ids], [deleted ids]]; 6.2 has no third element. */
int kv_queue_autoclaim(kv_queue *q, const char *stream, const char *group, const char *consumer,
                       long min_idle_ms, char ids[][48], int max, int *n_ids) {
    *n_ids = 0;
    char idle[24], cursor[48] = "0-0";
    snprintf(idle, sizeof idle, "%ld", min_idle_ms);
    for (int round = 0; round < 64 && *n_ids < max; round++) {
        const char *a[] = {"XAUTOCLAIM", stream, group, consumer, idle, cursor, "COUNT", "10", "JUSTID"};
        redisReply *r;
        int rc = q_cmd(q, &r, 9, a, NULL);
        if (rc != KV_OK) return rc;
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || r->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            snprintf(q->err, sizeof q->err, "XAUTOCLAIM: unexpected reply shape");
            return KV_ERR_FORMAT;
        }
        const redisReply *got = r->element[1];
        for (size_t i = 0; i < got->elements && *n_ids < max; i++)
            if (copy_field(ids[*n_ids], 48, got->element[i])) (*n_ids)++;
        if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY && r->element[2]->elements > 0)
            fprintf(stderr, "kvq: XAUTOCLAIM dropped %zu pending entr%s whose stream entry was deleted\n",
                    r->element[2]->elements, r->element[2]->elements == 1 ? "y" : "ies");
        int done = !copy_field(cursor, sizeof cursor, r->element[0]) || strcmp(cursor, "0-0") == 0;
        freeReplyObject(r);
        if (done) break;
    }
    return KV_OK;
}

int kv_queue_publish_ack(kv_queue *q, const char *job_entry_id, const char *job_id, const char *sweep,
                         const void *result, size_t len) {
    const char *x[] = {"XADD", KV_STREAM_RESULTS, "*", "job_id", job_id, "sweep", sweep, "result", result};
    size_t xl[] = {4, strlen(KV_STREAM_RESULTS), 1, 6, strlen(job_id), 5, strlen(sweep), 6, len};
    const char *k[] = {"XACK", KV_STREAM_JOBS, KV_GROUP_WORKERS, job_entry_id};
    size_t kl[] = {4, strlen(KV_STREAM_JOBS), strlen(KV_GROUP_WORKERS), strlen(job_entry_id)};
    const int argc[] = {9, 4};
    const char **const argv[] = {x, k};
    const size_t *const lens[] = {xl, kl};
    redisReply *e;
    int rc = q_multi(q, 2, argc, argv, lens, &e);
    if (rc != KV_OK) return rc;
    freeReplyObject(e);
    return KV_OK;
}

int kv_queue_dead_letter(kv_queue *q, const char *job_entry_id, const char *job_id, const char *sweep,
                         const void *job, size_t job_len, const char *reason, int64_t deliveries,
                         const char *worker) {
    char d[24];
    snprintf(d, sizeof d, "%lld", (long long)deliveries);
    const char *x[] = {"XADD",  KV_STREAM_DEAD, "*",    "job_id",     job_id, "sweep",  sweep,
                       "job",   job ? (const char *)job : "", "reason", reason, "deliveries", d, "worker", worker};
    size_t xl[] = {4, strlen(KV_STREAM_DEAD), 1, 6, strlen(job_id), 5, strlen(sweep), 3, job ? job_len : 0,
                   6, strlen(reason), 10, strlen(d), 6, strlen(worker)};
    const char *k[] = {"XACK", KV_STREAM_JOBS, KV_GROUP_WORKERS, job_entry_id};
    size_t kl[] = {4, strlen(KV_STREAM_JOBS), strlen(KV_GROUP_WORKERS), strlen(job_entry_id)};
    const int argc[] = {15, 4};
    const char **const argv[] = {x, k};
    const size_t *const lens[] = {xl, kl};
    redisReply *e;
    int rc = q_multi(q, 2, argc, argv, lens, &e);
    if (rc != KV_OK) return rc;
    freeReplyObject(e);
    return KV_OK;
}

/* ---- lock and heartbeat ---------------------------------------------------- */

static int name_key(kv_queue *q, char *out, size_t cap, const char *prefix, const char *name) {
    if ((size_t)snprintf(out, cap, "%s%s", prefix, name) >= cap) {
        snprintf(q->err, sizeof q->err, "name too long");
        return KV_ERR_INVAL;
    }
    return KV_OK;
}

int kv_queue_lock_acquire(kv_queue *q, const char *name, const char *token, long ttl_ms) {
    char key[320], ttl[24];
    if (name_key(q, key, sizeof key, "kv:lock:", name)) return KV_ERR_INVAL;
    snprintf(ttl, sizeof ttl, "%ld", ttl_ms);
    const char *a[] = {"SET", key, token, "NX", "PX", ttl};
    redisReply *r;
    int rc = q_cmd(q, &r, 6, a, NULL);
    if (rc != KV_OK) return rc;
    int got = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    return got;
}

/* Compare-and-act without Lua: WATCH the key, GET it, and only if it still
 * holds our token run the action in MULTI/EXEC; a concurrent write makes
 * EXEC return nil. Returns 1 done, 0 not ours (other token or missing). */
static int lock_cas(kv_queue *q, const char *name, const char *token, const char *action, const char *ttl) {
    char key[320];
    if (name_key(q, key, sizeof key, "kv:lock:", name)) return KV_ERR_INVAL;
    const char *w[] = {"WATCH", key};
    redisReply *r;
    int rc = q_cmd(q, &r, 2, w, NULL);
    if (rc != KV_OK) return rc;
    freeReplyObject(r);
    const char *g[] = {"GET", key};
    if ((rc = q_cmd(q, &r, 2, g, NULL)) != KV_OK) return rc; /* a reconnect drops the WATCH too */
    int ours = r->type == REDIS_REPLY_STRING && str_eq(r, token);
    freeReplyObject(r);
    if (!ours) {
        const char *u[] = {"UNWATCH"};
        if ((rc = q_cmd(q, &r, 1, u, NULL)) != KV_OK) return rc;
        freeReplyObject(r);
        return 0;
    }
    const char *act3[] = {action, key, ttl};
    const int argc[] = {ttl ? 3 : 2};
    const char **const argv[] = {act3};
    const size_t *const lens[] = {NULL};
    rc = q_multi(q, 1, argc, argv, lens, &r);
    if (rc == KV_ERR_IO && strstr(q->err, "aborted")) return 0; /* changed under us */
    if (rc != KV_OK) return rc;
    int done = r->elements == 1 && r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer >= 1;
    freeReplyObject(r);
    return done;
}

int kv_queue_lock_renew(kv_queue *q, const char *name, const char *token, long ttl_ms) {
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%ld", ttl_ms);
    return lock_cas(q, name, token, "PEXPIRE", ttl);
}

int kv_queue_lock_release(kv_queue *q, const char *name, const char *token) {
    return lock_cas(q, name, token, "DEL", NULL);
}

int kv_queue_heartbeat(kv_queue *q, const char *name, const char *status_json, long ttl_ms) {
    char key[320], ttl[24];
    if (name_key(q, key, sizeof key, "kv:hb:", name)) return KV_ERR_INVAL;
    snprintf(ttl, sizeof ttl, "%ld", ttl_ms);
    const char *a[] = {"SET", key, status_json, "PX", ttl};
    redisReply *r;
    int rc = q_cmd(q, &r, 5, a, NULL);
    if (r) freeReplyObject(r);
    return rc;
}

int kv_queue_pending(kv_queue *q, const char *stream, const char *group, int64_t *pending) {
    const char *a[] = {"XPENDING", stream, group};
    redisReply *r;
    int rc = q_cmd(q, &r, 3, a, NULL);
    if (rc != KV_OK) return rc;
    *pending = r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_INTEGER
                   ? r->element[0]->integer
                   : 0;
    freeReplyObject(r);
    return KV_OK;
}
