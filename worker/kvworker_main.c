/* kvworker_main.c — the kvworker CLI: parses and checks the flags, picks the
 * device and the consumer name, then hands over to wk_worker_run (run.c).
 * Everything about the queue, leases and children lives there; this file
 * only turns argv into a wk_config and a wk_config into an exit code.
 *
 * Exit codes: 0 ok (drained with --once/--max-jobs, or stopped by a signal),
 * 1 runtime error, 2 usage/configuration (also --gpu without a CUDA
 * backend library), 3 consumer name held by another live process, 4 Redis
 * refused the credentials or the ACL, 5 queue state lost (NOGROUP after a
 * reconnect), 6 --gpu N: an evaluation could not open the device (its job
 * was handed back to the queue). */
#include <getopt.h>
#include <omp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kn.h"
#include "kn_cuda.h"
#include "worker.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: kvworker (--cpu [--threads N] | --gpu N) [--redis URL] --models DIR --data DIR [options]\n"
            "\n"
            "Runs kvsweep jobs from the Redis stream kv:jobs (group kv:workers) and publishes results to kv:results.\n"
            "\n"
            "  --cpu                run on the CPU (default)\n"
            "  --threads N          CPU threads (default: all cores)\n"
            "  --gpu N              run on CUDA device N (KV policies and spec decoding in offload mode)\n"
            "  --redis URL          redis://[[user]:pass@]host[:port][/db] (default $KV_REDIS_URL, then\n"
            "                       redis://127.0.0.1:6379); a non-loopback host requires a password\n"
            "  --models DIR         root that job model names are resolved beneath\n"
            "  --data DIR           root that job dataset names are resolved beneath\n"
            "  --name NAME          consumer name (default <host>:cpu or <host>:gpuN); one live process per name\n"
            "  --max-jobs N         exit 0 after handling N entries\n"
            "  --once               handle what is queued now, then exit 0\n"
            "  --lease-ms MS        a job idle this long is taken over by another worker (default 300000)\n"
            "  --heartbeat-ms MS    lease renewal / lock / heartbeat period (default 30000; lease > 2x this)\n"
            "  --max-deliveries N   dead-letter a job delivered more than N times (default 3)\n"
            "  --weights auto|f32   keep 16-bit checkpoints 16-bit (auto, default) or convert to f32\n"
            "  --tokenizer PATH     tokenizer.json for models without one\n"
            "  --fake-eval          test mode: no engine; sleep U(A,B) ms, metrics = f(job_id)\n"
            "  --fake-sleep-ms A,B  fake evaluation time range (default 100,2000)\n"
            "  --help               this text\n"
            "\n"
            "Exit codes: 0 ok or stopped by SIGTERM/SIGINT, 1 runtime error, 2 usage, 3 name in use,\n"
            "4 Redis auth/ACL refused, 5 queue state lost (Redis restarted without its data),\n"
            "6 --gpu N: an evaluation could not open the device (its job was handed back).\n");
}

static int parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int name_ok(const char *s) {
    if (!*s || strlen(s) >= KV_NAME_MAX - 16) return 0;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || strchr("._:@-", *c)))
            return 0;
    return 1;
}

enum {
    O_GPU = 256, O_CPU, O_THREADS, O_REDIS, O_MODELS, O_DATA, O_NAME, O_MAXJOBS, O_ONCE, O_LEASE, O_HB,
    O_MAXDEL, O_FAKE, O_FAKESLEEP, O_WEIGHTS, O_TOK, O_HELP
};

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"gpu", required_argument, 0, O_GPU}, {"cpu", no_argument, 0, O_CPU},
        {"threads", required_argument, 0, O_THREADS}, {"redis", required_argument, 0, O_REDIS},
        {"models", required_argument, 0, O_MODELS}, {"data", required_argument, 0, O_DATA},
        {"name", required_argument, 0, O_NAME}, {"max-jobs", required_argument, 0, O_MAXJOBS},
        {"once", no_argument, 0, O_ONCE}, {"lease-ms", required_argument, 0, O_LEASE},
        {"heartbeat-ms", required_argument, 0, O_HB}, {"max-deliveries", required_argument, 0, O_MAXDEL},
        {"fake-eval", no_argument, 0, O_FAKE}, {"fake-sleep-ms", required_argument, 0, O_FAKESLEEP},
        {"weights", required_argument, 0, O_WEIGHTS}, {"tokenizer", required_argument, 0, O_TOK},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};
    wk_config c;
    wk_config_default(&c);
    int cpu = 0, ch;
    long v;
    const char *name = NULL;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (ch) {
        case O_GPU: bad = parse_long(optarg, 0, 1024, &v); c.gpu = (int)v; break;
        case O_CPU: cpu = 1; break;
        case O_THREADS: bad = parse_long(optarg, 1, 4096, &v); c.threads = (int)v; break;
        case O_REDIS: c.redis_url = optarg; break;
        case O_MODELS: c.models_root = optarg; break;
        case O_DATA: c.data_root = optarg; break;
        case O_NAME: name = optarg; break;
        case O_MAXJOBS: bad = parse_long(optarg, 1, LONG_MAX, &c.max_jobs); break;
        case O_ONCE: c.once = 1; break;
        case O_LEASE: bad = parse_long(optarg, 100, 7L * 24 * 3600 * 1000, &c.lease_ms); break;
        case O_HB: bad = parse_long(optarg, 50, 24L * 3600 * 1000, &c.heartbeat_ms); break;
        case O_MAXDEL: bad = parse_long(optarg, 1, 1000, &v); c.max_deliveries = (int)v; break;
        case O_FAKE: c.fake_eval = 1; break;
        case O_FAKESLEEP: {
            char *end;
            c.fake_min_ms = strtol(optarg, &end, 10);
            bad = *end != ',' || c.fake_min_ms < 0;
            if (!bad) {
                c.fake_max_ms = strtol(end + 1, &end, 10);
                bad = *end || c.fake_max_ms < c.fake_min_ms || c.fake_max_ms > 3600000;
            }
            break;
        }
        case O_WEIGHTS:
            c.weights = optarg;
            bad = strcmp(optarg, "auto") != 0 && strcmp(optarg, "f32") != 0;
            break;
        case O_TOK: c.tokenizer = optarg; break;
        case O_HELP: usage(stdout); return WK_EXIT_OK;
        default:
            fprintf(stderr, "kvworker: unknown option or missing value: %s\n", argv[optind - 1]);
            usage(stderr);
            return WK_EXIT_USAGE;
        }
        if (bad) {
            fprintf(stderr, "kvworker: bad value '%s' for --%s\n", optarg, opts[ch - O_GPU].name);
            return WK_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kvworker: unexpected argument '%s'\n", argv[optind]);
        return WK_EXIT_USAGE;
    }
    if (cpu && c.gpu >= 0) {
        fprintf(stderr, "kvworker: --cpu and --gpu are mutually exclusive\n");
        return WK_EXIT_USAGE;
    }
    /* The parent forks every evaluation, and a CUDA context does not survive
     * fork(): the parent may dlopen libkvcuda.so (kn_cuda_load runs no CUDA
     * call) but never probes or touches the device; each evaluation child
     * opens it (engine/fwd.h) and exits WK_CHILD_NO_DEVICE if it cannot. */
    if (c.gpu >= 0 && !kn_cuda_load()) {
        fprintf(stderr, "kvworker: --gpu %d: no CUDA backend (%s); use --cpu\n", c.gpu, kn_cuda_unavailable_reason());
        return WK_EXIT_USAGE;
    }
    if (c.lease_ms <= 2 * c.heartbeat_ms) {
        fprintf(stderr, "kvworker: --lease-ms %ld must exceed 2 x --heartbeat-ms %ld\n", c.lease_ms, c.heartbeat_ms);
        return WK_EXIT_USAGE;
    }
    if (!c.fake_eval && (!c.models_root || !c.data_root)) {
        fprintf(stderr, "kvworker: --models DIR and --data DIR are required (job names resolve beneath them)\n");
        return WK_EXIT_USAGE;
    }
    if (name) {
        if (!name_ok(name)) {
            fprintf(stderr, "kvworker: --name must be 1..%d characters of [A-Za-z0-9._:@-]\n", KV_NAME_MAX - 17);
            return WK_EXIT_USAGE;
        }
        snprintf(c.name, sizeof c.name, "%s", name);
    } else {
        char host[128] = "localhost";
        gethostname(host, sizeof host - 1);
        for (char *p = host; *p; p++)
            if (!name_ok((char[]){*p, 0})) *p = '-';
        if (c.gpu >= 0) snprintf(c.name, sizeof c.name, "%s:gpu%d", host, c.gpu);
        else snprintf(c.name, sizeof c.name, "%s:cpu", host);
    }
    /* Evaluations run in forked children with c.threads threads; the parent
     * (which loads models, possibly with OpenMP loops) stays single-threaded,
     * because libgomp's thread pool does not survive fork: a child forked
     * after the parent started OpenMP threads hangs in its first parallel
     * region. */
    if (!c.threads) c.threads = omp_get_num_procs();
    kn_set_threads(1);
    return wk_worker_run(&c);
}
