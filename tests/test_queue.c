/* test_queue.c — worker/queue.c against a live redis-server, and
 * worker/paths.c (T3 of queue-reliability.md §7.2).
 *
 * The suite starts its own redis-server (/usr/bin/redis-server, or
 * $KV_REDIS_SERVER) on a free loopback port with a private --dir, no RDB and
 * no AOF, and kills it by PID at the end; without the binary the Redis suite
 * prints SKIP and passes. Covered: URL parsing, add/read/ack, own-PEL
 * re-read, lease renewal keeps the delivery count, XAUTOCLAIM of an idle
 * entry (and the old owner's renewal then fails), deleted PEL entries,
 * publish+ack atomicity (an ACL refusal at queue time aborts both), dead
 * letters, the name lock, T9 (socket timeout <= BLOCK rejected; CLIENT KILL
 * while blocked -> reconnect with SO_RCVTIMEO re-applied), wrong password,
 * and NOGROUP after Redis restarts without its data. */
#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "paths.h"
#include "queue.h"
#include "testutil.h"

static pid_t g_redis = -1;
static int g_port;
static char g_dir[256];
static int g_have_redis;

static void msleep(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    int port = -1;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(s, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0) close(s);
    return port;
}

static const char *redis_bin(void) {
    const char *b = getenv("KV_REDIS_SERVER");
    return b && *b ? b : "/usr/bin/redis-server";
}

static redisContext *admin(void) {
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", g_port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* One admin command from argv; returns the reply (caller frees) or NULL. */
static redisReply *adm(int argc, const char **argv) {
    redisContext *c = admin();
    if (!c) return NULL;
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    redisFree(c);
    return r;
}

static long long adm_int(int argc, const char **argv) {
    redisReply *r = adm(argc, argv);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -999;
    if (r) freeReplyObject(r);
    return v;
}

static int redis_start(void) {
    char port[16], log[300];
    snprintf(port, sizeof port, "%d", g_port);
    snprintf(log, sizeof log, "%s/redis.log", g_dir);
    g_redis = fork();
    if (g_redis == 0) {
        execl(redis_bin(), "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", g_dir, "--save", "",
              "--appendonly", "no", "--logfile", log, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        msleep(50);
        redisContext *c = admin();
        if (c) {
            redisFree(c);
            return 0;
        }
    }
    return -1;
}

static void redis_kill(void) {
    if (g_redis > 0) {
        kill(g_redis, SIGKILL);
        waitpid(g_redis, NULL, 0);
        g_redis = -1;
    }
}

static int suite_init(void) {
    if (access(redis_bin(), X_OK) != 0) {
        tu_skip("queue (live Redis)", "no redis-server binary");
        return 0;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/kvq-test-XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    g_port = free_port();
    if (g_port <= 0 || redis_start() != 0) return 1;
    g_have_redis = 1;
    return 0;
}

static int suite_clean(void) {
    redis_kill();
    if (g_dir[0]) {
        char p[300];
        snprintf(p, sizeof p, "%s/redis.log", g_dir);
        unlink(p);
        rmdir(g_dir);
    }
    return 0;
}

static kv_queue *open_q(const char *name, int block_ms) {
    char url[64], err[256];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", g_port);
    kv_url u;
    if (kv_url_parse(url, &u, err, sizeof err) != KV_OK) return NULL;
    kv_queue_opts o;
    kv_queue_opts_default(&o);
    o.block_ms = block_ms;
    o.timeout_ms = block_ms + 2000;
    o.client_name = name;
    o.max_reconnect_s = 10;
    kv_queue *q = NULL;
    if (kv_queue_open(&q, &u, &o, err, sizeof err) != KV_OK) fprintf(stderr, "open: %s\n", err);
    return q;
}

static void flush(void) {
    const char *a[] = {"FLUSHALL"};
    redisReply *r = adm(1, a);
    if (r) freeReplyObject(r);
}

#define NEED_REDIS() \
    do { \
        if (!g_have_redis) return; \
    } while (0)

/* ---- URL ---------------------------------------------------------------- */

static void test_url_table(void) {
    static const struct {
        const char *in;
        int ok;
        const char *host, *user, *pass;
        int port, db;
    } t[] = {
        {"redis://127.0.0.1", 1, "127.0.0.1", "", "", 6379, 0},
        {"redis://localhost:7000/3", 1, "localhost", "", "", 7000, 3},
        {"redis://:s3cret@10.0.0.5:6380", 1, "10.0.0.5", "", "s3cret", 6380, 0},
        {"redis://kvworker:p%40ss@db.example:6379/2", 1, "db.example", "kvworker", "p@ss", 6379, 2},
        {"redis://u:a@b@h:1", 1, "h", "u", "a@b", 1, 0},
        {"redis://[::1]:6390", 1, "::1", "", "", 6390, 0},
        {"http://x", 0, 0, 0, 0, 0, 0},
        {"redis://", 0, 0, 0, 0, 0, 0},
        {"redis://h:0", 0, 0, 0, 0, 0, 0},
        {"redis://h:65536", 0, 0, 0, 0, 0, 0},
        {"redis://h:12x", 0, 0, 0, 0, 0, 0},
        {"redis://h/abc", 0, 0, 0, 0, 0, 0},
        {"redis://user@h", 0, 0, 0, 0, 0, 0},
        {"redis://u:@h", 0, 0, 0, 0, 0, 0},
        {"redis://u:%zz@h", 0, 0, 0, 0, 0, 0},
        {"redis://u:%00@h", 0, 0, 0, 0, 0, 0},
        {"redis://[::1", 0, 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        kv_url u;
        char err[256] = "";
        int rc = kv_url_parse(t[i].in, &u, err, sizeof err);
        if (t[i].ok) {
            CU_ASSERT_EQUAL(rc, KV_OK);
            if (rc == KV_OK) {
                CU_ASSERT_STRING_EQUAL(u.host, t[i].host);
                CU_ASSERT_STRING_EQUAL(u.user, t[i].user);
                CU_ASSERT_STRING_EQUAL(u.pass, t[i].pass);
                CU_ASSERT_EQUAL(u.port, t[i].port);
                CU_ASSERT_EQUAL(u.db, t[i].db);
            } else
                fprintf(stderr, "url %s: %s\n", t[i].in, err);
        } else {
            CU_ASSERT_EQUAL(rc, KV_ERR_INVAL);
            CU_ASSERT(strstr(err, "bad Redis URL") != NULL);
            CU_ASSERT(strstr(err, "s3cret") == NULL);
        }
    }
    kv_url u;
    char err[128];
    setenv("KV_REDIS_URL", "redis://:pw@127.0.0.2:7001", 1);
    CU_ASSERT(kv_url_parse(NULL, &u, err, sizeof err) == KV_OK && u.port == 7001 && !strcmp(u.pass, "pw"));
    CU_ASSERT(kv_url_is_loopback(&u));
    unsetenv("KV_REDIS_URL");
    CU_ASSERT(kv_url_parse("", &u, err, sizeof err) == KV_OK && u.port == 6379 && !strcmp(u.host, "127.0.0.1"));
    CU_ASSERT(kv_url_parse("redis://10.1.2.3", &u, err, sizeof err) == KV_OK && !kv_url_is_loopback(&u));
    CU_ASSERT(kv_url_parse("redis://[::1]", &u, err, sizeof err) == KV_OK && kv_url_is_loopback(&u));
}

/* ---- queue ---------------------------------------------------------------- */

static void test_timeout_vs_block(void) {
    kv_url u;
    char err[256];
    kv_url_parse("redis://127.0.0.1:1", &u, err, sizeof err);
    kv_queue_opts o;
    kv_queue_opts_default(&o);
    o.block_ms = 2000;
    o.timeout_ms = 1000; /* misconfiguration: rejected before any connect */
    kv_queue *q = NULL;
    CU_ASSERT_EQUAL(kv_queue_open(&q, &u, &o, err, sizeof err), KV_ERR_INVAL);
    CU_ASSERT_PTR_NULL(q);
    CU_ASSERT(strstr(err, "must exceed") != NULL);
    o.timeout_ms = 3000; /* == block + 1000: still too tight */
    CU_ASSERT_EQUAL(kv_queue_open(&q, &u, &o, err, sizeof err), KV_ERR_INVAL);
}

static void test_add_read_ack(void) {
    NEED_REDIS();
    flush();
    kv_queue *q = open_q("t:a", 200);
    CU_ASSERT_FATAL(q != NULL);
    CU_ASSERT_EQUAL(kv_queue_ensure_group(q, KV_STREAM_JOBS, KV_GROUP_WORKERS), KV_OK);
    CU_ASSERT_EQUAL(kv_queue_ensure_group(q, KV_STREAM_JOBS, KV_GROUP_WORKERS), KV_OK); /* BUSYGROUP is fine */
    char id1[48], id2[48];
    const unsigned char bin[] = {0x81, 0x00, 0xa1, 0x7a, 0xff}; /* binary-safe, with a NUL */
    CU_ASSERT_EQUAL(kv_queue_add(q, KV_STREAM_JOBS, "j1", "s", "job", bin, sizeof bin, id1), KV_OK);
    CU_ASSERT_EQUAL(kv_queue_add(q, KV_STREAM_JOBS, "j2", "s", "job", "x", 1, id2), KV_OK);
    kv_entry e;
    CU_ASSERT_EQUAL(kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", "0", &e), 0); /* empty PEL */
    CU_ASSERT_EQUAL(kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", ">", &e), 1);
    CU_ASSERT_STRING_EQUAL(e.id, id1);
    CU_ASSERT_STRING_EQUAL(e.job_id, "j1");
    CU_ASSERT(e.payload_len == sizeof bin && memcmp(e.payload, bin, sizeof bin) == 0);
    CU_ASSERT_EQUAL(e.deleted, 0);
    int64_t d = -1, pend = -1;
    CU_ASSERT_EQUAL(kv_queue_deliveries(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, id1, &d), KV_OK);
    CU_ASSERT_EQUAL(d, 1);
    /* own PEL re-read: the same entry, delivery count 2 */
    CU_ASSERT_EQUAL(kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", "0", &e), 1);
    CU_ASSERT_STRING_EQUAL(e.id, id1);
    kv_queue_deliveries(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, id1, &d);
    CU_ASSERT_EQUAL(d, 2);
    CU_ASSERT_EQUAL(kv_queue_pending(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, &pend), KV_OK);
    CU_ASSERT_EQUAL(pend, 1);
    CU_ASSERT_EQUAL(kv_queue_ack(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, id1), 1);
    CU_ASSERT_EQUAL(kv_queue_ack(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, id1), 0); /* twice: 0 */
    kv_queue_deliveries(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, id1, &d);
    CU_ASSERT_EQUAL(d, 0);
    CU_ASSERT_EQUAL(kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", ">", &e), 1);
    CU_ASSERT_STRING_EQUAL(e.id, id2);
    CU_ASSERT_EQUAL(kv_queue_ack(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, id2), 1);
    /* idle loops: BLOCK 200 returns "nothing" without an error, many times */
    for (int i = 0; i < 5; i++) CU_ASSERT_EQUAL(kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", ">", &e), 0);
    CU_ASSERT_EQUAL(kv_queue_reconnects(q), 0);
    CU_ASSERT_EQUAL(kv_queue_rcvtimeo_ms(q), 2200);
    kv_queue_close(q);
}

static void test_renew_autoclaim(void) {
    NEED_REDIS();
    flush();
    kv_queue *a = open_q("t:a", 200), *b = open_q("t:b", 200);
    CU_ASSERT_FATAL(a && b);
    kv_queue_ensure_group(a, KV_STREAM_JOBS, KV_GROUP_WORKERS);
    char id[48];
    kv_queue_add(a, KV_STREAM_JOBS, "j", "s", "job", "p", 1, id);
    kv_entry e;
    CU_ASSERT_EQUAL(kv_queue_read(a, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", ">", &e), 1);
    msleep(300);
    char owner[256];
    int64_t idle = -1, d = -1;
    CU_ASSERT_EQUAL(kv_queue_pending_entry(a, KV_STREAM_JOBS, KV_GROUP_WORKERS, id, owner, &idle, &d), 1);
    CU_ASSERT(idle >= 250);
    /* renewal: idle back near 0, delivery count unchanged */
    CU_ASSERT_EQUAL(kv_queue_renew(a, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", id), 1);
    CU_ASSERT_EQUAL(kv_queue_pending_entry(a, KV_STREAM_JOBS, KV_GROUP_WORKERS, id, owner, &idle, &d), 1);
    CU_ASSERT(idle < 100);
    CU_ASSERT_EQUAL(d, 1);
    CU_ASSERT_STRING_EQUAL(owner, "t:a");
    /* janitor with min-idle 250: nothing yet (just renewed) */
    char ids[4][48];
    int n = -1;
    CU_ASSERT_EQUAL(kv_queue_autoclaim(b, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:b", 250, ids, 4, &n), KV_OK);
    CU_ASSERT_EQUAL(n, 0);
    msleep(300);
    CU_ASSERT_EQUAL(kv_queue_autoclaim(b, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:b", 250, ids, 4, &n), KV_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_STRING_EQUAL(ids[0], id);
    CU_ASSERT_EQUAL(kv_queue_pending_entry(b, KV_STREAM_JOBS, KV_GROUP_WORKERS, id, owner, &idle, &d), 1);
    CU_ASSERT_STRING_EQUAL(owner, "t:b");
    CU_ASSERT_EQUAL(d, 1); /* JUSTID: not counted; the re-read with "0" counts */
    /* the old owner's renewal now reports the lease lost and does not steal it back */
    CU_ASSERT_EQUAL(kv_queue_renew(a, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", id), 0);
    CU_ASSERT_EQUAL(kv_queue_pending_entry(b, KV_STREAM_JOBS, KV_GROUP_WORKERS, id, owner, NULL, NULL), 1);
    CU_ASSERT_STRING_EQUAL(owner, "t:b");
    CU_ASSERT_EQUAL(kv_queue_read(b, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:b", "0", &e), 1);
    CU_ASSERT_STRING_EQUAL(e.id, id);
    kv_queue_deliveries(b, KV_STREAM_JOBS, KV_GROUP_WORKERS, id, &d);
    CU_ASSERT_EQUAL(d, 2);
    /* release: hands the entry back so a janitor with min-idle <= IDLE takes it at once */
    CU_ASSERT_EQUAL(kv_queue_release(b, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:b", id, 10000), 1);
    CU_ASSERT_EQUAL(kv_queue_autoclaim(a, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", 5000, ids, 4, &n), KV_OK);
    CU_ASSERT_EQUAL(n, 1);
    kv_queue_close(a);
    kv_queue_close(b);
}

static void test_deleted_entry(void) {
    NEED_REDIS();
    flush();
    kv_queue *q = open_q("t:a", 200);
    CU_ASSERT_FATAL(q != NULL);
    kv_queue_ensure_group(q, KV_STREAM_JOBS, KV_GROUP_WORKERS);
    char id[48], id2[48];
    kv_queue_add(q, KV_STREAM_JOBS, "j", "s", "job", "p", 1, id);
    kv_queue_add(q, KV_STREAM_JOBS, "j2", "s", "job", "p", 1, id2);
    kv_entry e;
    CU_ASSERT_EQUAL(kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", ">", &e), 1);
    CU_ASSERT_EQUAL(kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", ">", &e), 1);
    const char *x[] = {"XDEL", KV_STREAM_JOBS, id};
    CU_ASSERT_EQUAL(adm_int(3, x), 1);
    CU_ASSERT_EQUAL(kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", "0", &e), 1);
    CU_ASSERT_STRING_EQUAL(e.id, id);
    CU_ASSERT_EQUAL(e.deleted, 1);
    CU_ASSERT_PTR_NULL(e.payload);
    CU_ASSERT_EQUAL(e.payload_len, 0);
    /* the janitor drops it from the PEL (7.0's third reply element) and claims only the live one */
    char ids[4][48];
    int n = -1;
    msleep(20);
    CU_ASSERT_EQUAL(kv_queue_autoclaim(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", 0, ids, 4, &n), KV_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_STRING_EQUAL(ids[0], id2);
    int64_t pend = -1;
    kv_queue_pending(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, &pend);
    CU_ASSERT_EQUAL(pend, 1);
    CU_ASSERT_EQUAL(kv_queue_ack(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, id), 0);
    kv_queue_close(q);
}

static void test_publish_ack_dead_letter(void) {
    NEED_REDIS();
    flush();
    kv_queue *q = open_q("t:a", 200);
    CU_ASSERT_FATAL(q != NULL);
    kv_queue_ensure_group(q, KV_STREAM_JOBS, KV_GROUP_WORKERS);
    kv_queue_ensure_group(q, KV_STREAM_DEAD, KV_GROUP_COLLECT);
    char id[48], id2[48];
    kv_queue_add(q, KV_STREAM_JOBS, "j1", "s", "job", "J1", 2, id);
    kv_queue_add(q, KV_STREAM_JOBS, "j2", "s", "job", "J2", 2, id2);
    kv_entry e;
    kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", ">", &e);
    kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", ">", &e);
    CU_ASSERT_EQUAL(kv_queue_publish_ack(q, id, "j1", "s", "R\0S", 3), KV_OK);
    const char *xl[] = {"XLEN", KV_STREAM_RESULTS};
    CU_ASSERT_EQUAL(adm_int(2, xl), 1);
    int64_t d = -1;
    kv_queue_deliveries(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, id, &d);
    CU_ASSERT_EQUAL(d, 0);
    /* dead letter: moved with its reason and count, acked */
    CU_ASSERT_EQUAL(kv_queue_dead_letter(q, id2, "j2", "s", "J2", 2, "max_deliveries: x", 4, "t:a"), KV_OK);
    kv_queue_deliveries(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, id2, &d);
    CU_ASSERT_EQUAL(d, 0);
    CU_ASSERT_EQUAL(kv_queue_read(q, KV_STREAM_DEAD, KV_GROUP_COLLECT, "c", ">", &e), 1);
    CU_ASSERT_STRING_EQUAL(e.job_id, "j2");
    CU_ASSERT_STRING_EQUAL(e.reason, "max_deliveries: x");
    CU_ASSERT_EQUAL(e.deliveries, 4);
    CU_ASSERT(e.payload_len == 2 && memcmp(e.payload, "J2", 2) == 0);
    kv_queue_close(q);

    /* atomicity: a user whose ACL refuses XADD gets the whole MULTI refused at
     * queue time, so the entry is NOT acked without its result */
    const char *acl[] = {"ACL", "SETUSER", "noxadd", "on", ">pw", "~*", "&*", "+@all", "-xadd"};
    redisReply *r = adm(9, acl);
    CU_ASSERT(r && r->type == REDIS_REPLY_STATUS);
    if (r) freeReplyObject(r);
    kv_queue *a = open_q("t:a", 200);
    char id3[48];
    kv_queue_add(a, KV_STREAM_JOBS, "j3", "s", "job", "J3", 2, id3);
    kv_queue_read(a, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:a", ">", &e);
    kv_queue_close(a);
    char url[96], err[256];
    snprintf(url, sizeof url, "redis://noxadd:pw@127.0.0.1:%d", g_port);
    kv_url u;
    kv_url_parse(url, &u, err, sizeof err);
    kv_queue_opts o;
    kv_queue_opts_default(&o);
    kv_queue *n = NULL;
    CU_ASSERT_FATAL(kv_queue_open(&n, &u, &o, err, sizeof err) == KV_OK);
    int rc = kv_queue_publish_ack(n, id3, "j3", "s", "R", 1);
    CU_ASSERT(rc < 0);
    kv_queue_deliveries(n, KV_STREAM_JOBS, KV_GROUP_WORKERS, id3, &d);
    CU_ASSERT_EQUAL(d, 1); /* still pending */
    CU_ASSERT_EQUAL(adm_int(2, xl), 1);
    kv_queue_close(n);
}

static void test_lock(void) {
    NEED_REDIS();
    flush();
    kv_queue *q = open_q("t:a", 200);
    CU_ASSERT_FATAL(q != NULL);
    CU_ASSERT_EQUAL(kv_queue_lock_acquire(q, "box:gpu0", "tok1", 5000), 1);
    CU_ASSERT_EQUAL(kv_queue_lock_acquire(q, "box:gpu0", "tok2", 5000), 0);
    CU_ASSERT_EQUAL(kv_queue_lock_renew(q, "box:gpu0", "tok2", 5000), 0);
    CU_ASSERT_EQUAL(kv_queue_lock_renew(q, "box:gpu0", "tok1", 60000), 1);
    const char *pt[] = {"PTTL", "kv:lock:box:gpu0"};
    CU_ASSERT(adm_int(2, pt) > 50000);
    CU_ASSERT_EQUAL(kv_queue_lock_release(q, "box:gpu0", "tok2"), 0);
    CU_ASSERT(adm_int(2, pt) > 0);
    CU_ASSERT_EQUAL(kv_queue_lock_release(q, "box:gpu0", "tok1"), 1);
    CU_ASSERT_EQUAL(adm_int(2, pt), -2);
    CU_ASSERT_EQUAL(kv_queue_lock_renew(q, "box:gpu0", "tok1", 5000), 0); /* gone */
    CU_ASSERT_EQUAL(kv_queue_lock_acquire(q, "box:gpu0", "tok2", 100), 1);
    msleep(200); /* expired: free for anyone */
    CU_ASSERT_EQUAL(kv_queue_lock_acquire(q, "box:gpu0", "tok3", 5000), 1);
    CU_ASSERT_EQUAL(kv_queue_heartbeat(q, "box:gpu0", "{\"state\":\"idle\"}", 5000), KV_OK);
    const char *hp[] = {"PTTL", "kv:hb:box:gpu0"};
    CU_ASSERT(adm_int(2, hp) > 4000);
    kv_queue_close(q);
}

/* T9: CLIENT KILL from another connection while the queue is blocked in
 * XREADGROUP: EOF, reconnect (timeouts re-applied), KV_ERR_IO once, then the
 * worker's re-read of its own PEL finds the in-flight entry again. */
static void test_client_kill_while_blocked(void) {
    NEED_REDIS();
    flush();
    kv_queue *q = open_q("t:k", 1500);
    CU_ASSERT_FATAL(q != NULL);
    kv_queue_ensure_group(q, KV_STREAM_JOBS, KV_GROUP_WORKERS);
    char id[48];
    kv_queue_add(q, KV_STREAM_JOBS, "j", "s", "job", "p", 1, id);
    kv_entry e;
    CU_ASSERT_EQUAL(kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:k", ">", &e), 1); /* in flight */
    fflush(stdout);
    pid_t killer = fork();
    if (killer == 0) {
        msleep(300);
        const char *a[] = {"CLIENT", "KILL", "TYPE", "normal"};
        redisReply *r = adm(4, a);
        _exit(r && r->type == REDIS_REPLY_INTEGER && r->integer >= 1 ? 0 : 1);
    }
    int rc = kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:k", ">", &e); /* blocks */
    int st = 0;
    waitpid(killer, &st, 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT_EQUAL(rc, KV_ERR_IO);
    CU_ASSERT_EQUAL(kv_queue_reconnects(q), 1);
    CU_ASSERT_EQUAL(kv_queue_rcvtimeo_ms(q), 3500); /* re-applied, not hiredis' 0 */
    CU_ASSERT_EQUAL(kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:k", "0", &e), 1);
    CU_ASSERT_STRING_EQUAL(e.id, id);
    /* the client name was re-applied too */
    const char *cl[] = {"CLIENT", "LIST"};
    redisReply *r = adm(2, cl);
    CU_ASSERT(r && r->type == REDIS_REPLY_STRING && strstr(r->str, "name=t:k") != NULL);
    if (r) freeReplyObject(r);
    kv_queue_close(q);
}

static void test_auth(void) {
    NEED_REDIS();
    const char *acl[] = {"ACL", "SETUSER", "w", "on", ">right", "~kv:*", "+@all"};
    redisReply *r = adm(7, acl);
    if (r) freeReplyObject(r);
    char url[96], err[256];
    kv_url u;
    kv_queue_opts o;
    kv_queue_opts_default(&o);
    kv_queue *q = NULL;
    snprintf(url, sizeof url, "redis://w:wrong@127.0.0.1:%d", g_port);
    kv_url_parse(url, &u, err, sizeof err);
    CU_ASSERT_EQUAL(kv_queue_open(&q, &u, &o, err, sizeof err), KV_ERR_AUTH);
    CU_ASSERT(strstr(err, "wrong") == NULL); /* the password is not echoed */
    snprintf(url, sizeof url, "redis://w:right@127.0.0.1:%d/0", g_port);
    kv_url_parse(url, &u, err, sizeof err);
    CU_ASSERT_EQUAL(kv_queue_open(&q, &u, &o, err, sizeof err), KV_OK);
    CU_ASSERT_EQUAL(kv_queue_ping(q), KV_OK);
    kv_queue_close(q);
}

/* Redis killed and restarted without persistence: the first call reconnects
 * (KV_ERR_IO), the next one reports NOGROUP, and the group is not recreated. */
static void test_nogroup_after_restart(void) {
    NEED_REDIS();
    flush();
    kv_queue *q = open_q("t:n", 200);
    CU_ASSERT_FATAL(q != NULL);
    kv_queue_ensure_group(q, KV_STREAM_JOBS, KV_GROUP_WORKERS);
    redis_kill();
    CU_ASSERT_FATAL(redis_start() == 0);
    kv_entry e;
    int rc = kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:n", ">", &e);
    CU_ASSERT_EQUAL(rc, KV_ERR_IO);
    CU_ASSERT_EQUAL(kv_queue_reconnects(q), 1);
    CU_ASSERT(kv_queue_rcvtimeo_ms(q) > 0);
    rc = kv_queue_read(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, "t:n", "0", &e);
    CU_ASSERT_EQUAL(rc, KV_ERR_NOGROUP);
    int64_t p;
    CU_ASSERT_EQUAL(kv_queue_pending(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, &p), KV_ERR_NOGROUP);
    const char *ex[] = {"EXISTS", KV_STREAM_JOBS};
    CU_ASSERT_EQUAL(adm_int(2, ex), 0);
    kv_queue_close(q);
}

/* ---- paths (T3) ------------------------------------------------------------ */

static char g_root[256], g_outside[256];

static int paths_init(void) {
    snprintf(g_root, sizeof g_root, "/tmp/kvp-root-XXXXXX");
    snprintf(g_outside, sizeof g_outside, "/tmp/kvp-out-XXXXXX");
    if (!mkdtemp(g_root) || !mkdtemp(g_outside)) return 1;
    char p[512];
    snprintf(p, sizeof p, "%s/secret", g_outside);
    FILE *f = fopen(p, "w");
    if (!f) return 1;
    fputs("x", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/pythia-160m", g_root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/wiki.txt", g_root);
    f = fopen(p, "w");
    if (!f) return 1;
    fclose(f);
    snprintf(p, sizeof p, "%s/sub", g_root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/sub/doc.txt", g_root);
    if ((f = fopen(p, "w"))) fclose(f);
    char link[512];
    snprintf(link, sizeof link, "%s/escape", g_root);
    if (symlink(g_outside, link) != 0) return 1;
    snprintf(link, sizeof link, "%s/inner", g_root);
    if (symlink("wiki.txt", link) != 0) return 1;
    return 0;
}

static int paths_clean(void) {
    const char *files[] = {"escape", "inner", "wiki.txt", "sub/doc.txt", NULL};
    char p[512];
    for (int i = 0; files[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", g_root, files[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/sub", g_root);
    rmdir(p);
    snprintf(p, sizeof p, "%s/pythia-160m", g_root);
    rmdir(p);
    rmdir(g_root);
    snprintf(p, sizeof p, "%s/secret", g_outside);
    unlink(p);
    rmdir(g_outside);
    return 0;
}

static void paths_table(void) {
    static char big[5000];
    memset(big, 'a', sizeof big);
    static const struct {
        const char *name;
        size_t len; /* 0: strlen */
        const char *why;
    } bad[] = {
        {"../../etc/passwd", 0, "'..'"},
        {"/etc/passwd", 0, "absolute"},
        {"a/../../b", 0, "'..'"},
        {"escape/secret", 0, "symbolic"},
        {"escape", 0, "symbolic"},
        {"inner", 0, "symbolic"},
        {"a\0b", 3, "NUL"},
        {big, sizeof big, "too long"},
        {"..%2f..%2fetc%2fpasswd", 0, "no such"},
        {"..%2f", 0, "no such"},
        {"unknown-model", 0, "no such"},
        {"", 0, "empty"},
        {".", 0, "'.'"},
        {"sub//doc.txt", 0, "empty path component"},
        {"sub/", 0, "empty path component"},
        {"wiki\n.txt", 0, "control"},
        {"pyth\xd1\x96\x61-160m", 0, "no such"}, /* Cyrillic look-alike */
        {"wiki.txt/x", 0, "no such"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char out[4096] = "unset", err[512] = "";
        size_t len = bad[i].len ? bad[i].len : strlen(bad[i].name);
        int rc = kv_path_resolve(g_root, "model", bad[i].name, len, out, sizeof out, err, sizeof err);
        CU_ASSERT_EQUAL(rc, KV_ERR_INVAL);
        CU_ASSERT(strncmp(err, "path_rejected: ", 15) == 0);
        CU_ASSERT(strstr(err, bad[i].why) != NULL);
        CU_ASSERT_EQUAL(out[0], 0);
        if (rc != KV_ERR_INVAL || !strstr(err, bad[i].why)) fprintf(stderr, "case %zu: rc %d err %s\n", i, rc, err);
    }
    const char *good[] = {"pythia-160m", "wiki.txt", "sub/doc.txt", "sub"};
    char real_root[4096];
    CU_ASSERT_FATAL(realpath(g_root, real_root) != NULL);
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char out[4096], want[4200], err[512] = "";
        CU_ASSERT_EQUAL(kv_path_resolve(g_root, "dataset", good[i], strlen(good[i]), out, sizeof out, err, sizeof err),
                        KV_OK);
        snprintf(want, sizeof want, "%s/%s", real_root, good[i]);
        CU_ASSERT_STRING_EQUAL(out, want);
    }
    char out[64], err[256];
    CU_ASSERT_EQUAL(kv_path_resolve("/nonexistent-root-kv", "model", "x", 1, out, sizeof out, err, sizeof err),
                    KV_ERR_IO);
    CU_ASSERT(strncmp(err, "path_rejected: ", 15) == 0);
}

static void test_paths_openat2(void) {
    kv_path_force_fallback(0);
    paths_table();
}

static void test_paths_fallback(void) {
    kv_path_force_fallback(1);
    paths_table();
    kv_path_force_fallback(0);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("queue_url", NULL, NULL);
    CU_add_test(s, "URL parsing table", test_url_table);
    CU_add_test(s, "socket timeout <= BLOCK rejected at open (T9)", test_timeout_vs_block);
    s = CU_add_suite("queue_redis", suite_init, suite_clean);
    CU_add_test(s, "add / read / own PEL / ack", test_add_read_ack);
    CU_add_test(s, "lease renewal and XAUTOCLAIM", test_renew_autoclaim);
    CU_add_test(s, "deleted pending entry", test_deleted_entry);
    CU_add_test(s, "publish+ack and dead letter", test_publish_ack_dead_letter);
    CU_add_test(s, "name lock and heartbeat", test_lock);
    CU_add_test(s, "CLIENT KILL while blocked (T9)", test_client_kill_while_blocked);
    CU_add_test(s, "AUTH with ACL user, wrong password", test_auth);
    CU_add_test(s, "NOGROUP after a restart without AOF", test_nogroup_after_restart);
    s = CU_add_suite("paths", paths_init, paths_clean);
    CU_add_test(s, "T3 table, openat2", test_paths_openat2);
    CU_add_test(s, "T3 table, fallback walk", test_paths_fallback);
    return tu_run();
}
