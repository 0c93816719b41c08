/* bench_gpu.c — decode and prefill speed of the CUDA backend next to the
 * device's measured memory bandwidth, for `make bench-gpu`
 * (ops/bench_gpu.sh). Not a test: it prints figures, one JSON object per
 * line on stdout, and the same as a table on stderr.
 *
 *   bench_gpu [--gpu N] [--ctx 512,2048,4096] [--decode 64]
 *             [--policies full,streaming:sink=4,recent=508] MODEL_DIR...
 *
 * --gpu N       device index (default $KV_GPU, else 0)
 * --ctx LIST    prompt lengths, comma-separated (default 512,2048,4096)
 * --decode N    timed greedy decode steps per point (default 64)
 * --policies L  KV policy specs, comma-separated; a piece holding '=' but
 *               no ':' continues the spec before it, so the default
 *               "full,streaming:sink=4,recent=508" is two specs
 * No MODEL_DIR: probe the device and measure the bandwidth only.
 * Env: KV_THREADS (host threads for offload mode's attention; default all
 * cores), KV_REQUIRE_GPU=1 (no device is a failure, not a SKIP),
 * KV_CUDA_GRAPHS=0 (decode without CUDA graphs, engine/forward_gpu.h).
 *
 * Without a usable device it prints "SKIP bench_gpu: <reason>" and exits 0
 * (1 under KV_REQUIRE_GPU=1).
 *
 * Bandwidth: one device-to-device copy between two 512 MiB halves of a
 * 1 GiB allocation, repeated (best of 3 trials of 10 copies), counting
 * read + write bytes; only the kn_cuda table is used (kn_cuda.h).
 *
 * A point is (model, policy, context): eng_fwd_init on the device with
 * n_ctx = eng_policy_capacity(policy, ctx + warm-up + decode), n_batch 512.
 * In device mode (full, window, streaming: the device cache) one chunk is
 * run and the state reset first, so the timed prefill does not pay cuBLAS's
 * first-call costs; offload mode (every other policy: attention and cache
 * on the host, fwd.h) skips it. The policy's statistics are cleared before
 * the timed steps. Prefill: `ctx`
 * pseudo-random ids < n_vocab in chunks of n_batch, the last one asking for
 * its last row's logits (a host download, so the clock stops after the
 * device finished). Then two untimed decode steps (the first runs eagerly,
 * the second captures the CUDA graph; under window/streaming 66 more, one
 * graph per window position), then `decode` greedy steps, each
 * timed from the forward call to the host argmax of its logits.
 *
 * The bound for a decode step is bytes read / measured bandwidth:
 *   weights  every matrix at its stored width (qkv, dense, fc1, fc2 of each
 *            layer, embed_out; one row of embed_in) + LayerNorm and bias
 *            parameters (fp32 on the device);
 *   KV       2 · L · n_held · C · 4 (the caches are fp32), n_held = the
 *            mean number of slots held per head during the timed steps (the
 *            policy's statistics; min(ctx, capacity) if it has none).
 * ratio = mean TPOT / bound (the target is <= 1.3 for 2.8b, full cache). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "fwd.h"
#include "kn.h"
#include "kn_cuda.h"
#include "model.h"
#include "policy.h"
#include "random_model.h"
#include "sampler.h"

enum { MAX_CTX = 16, MAX_POL = 8, WARM_STEPS = 2, N_BATCH = 512 };

typedef struct bench_opts {
    int gpu;
    int ctx[MAX_CTX], n_ctx;
    int decode;
    char specs[MAX_POL][256];
    int n_pol;
} bench_opts;

/* What one model contributes to every point. */
typedef struct bench_model {
    const eng_model *m;
    const char *dir;
    char shape[64];
    double weight_bytes;   /* read per decode step */
    double load_s;
} bench_model;

/* s as the body of a JSON string (quotes and controls escaped). */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static int usage(const char *why) {
    fprintf(stderr,
            "bench_gpu: %s\nusage: bench_gpu [--gpu N] [--ctx 512,2048,4096] [--decode 64]\n"
            "                 [--policies full,streaming:sink=4,recent=508] MODEL_DIR...\n",
            why);
    return 2;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int parse_ctx(const char *s, bench_opts *o) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    o->n_ctx = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->n_ctx == MAX_CTX || parse_int(t, 1, 1 << 24, &o->ctx[o->n_ctx]) != 0) return -1;
        o->n_ctx++;
    }
    return o->n_ctx > 0 ? 0 : -1;
}

/* "full,streaming:sink=4,recent=508" -> {"full", "streaming:sink=4,recent=508"}:
 * a piece with '=' and no ':' is another parameter of the spec before it. */
static int parse_policies(const char *s, bench_opts *o) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", s);
    o->n_pol = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int cont = strchr(t, '=') && !strchr(t, ':');
        if (cont && o->n_pol > 0) {
            char *d = o->specs[o->n_pol - 1];
            size_t n = strlen(d);
            if (n + 1 + strlen(t) >= sizeof o->specs[0]) return -1;
            snprintf(d + n, sizeof o->specs[0] - n, ",%s", t);
        } else {
            if (cont || o->n_pol == MAX_POL || strlen(t) >= sizeof o->specs[0]) return -1;
            snprintf(o->specs[o->n_pol++], sizeof o->specs[0], "%s", t);
        }
    }
    return o->n_pol > 0 ? 0 : -1;
}

/* ---- bandwidth: the kn_cuda table alone */

/* Device-to-device copy bandwidth of `gpu` in bytes/s (read + write), or 0
 * with err set. name gets the device's name. */
static double hbm_bandwidth(const kn_cuda_api *api, int gpu, char *name, size_t n_name, char *err, size_t n_err) {
    const size_t half = (size_t)512 << 20;
    enum { TRIALS = 3, COPIES = 10 };
    kn_cuda_ctx *c = NULL;
    void *a = NULL, *b = NULL;
    double best = 0;
    if (api->ctx_init(&c, gpu, (size_t)1 << 20, err, n_err) != KN_OK) return 0;
    snprintf(name, n_name, "%s", api->device_name(c));
    if (api->mem_alloc(c, &a, half) != KN_OK || api->mem_alloc(c, &b, half) != KN_OK ||
        api->mem_set(c, a, 1, half) != KN_OK || api->mem_set(c, b, 2, half) != KN_OK ||
        api->copy_d2d(c, b, a, half) != KN_OK || api->sync(c) != KN_OK) {   /* the last copy: a warm-up */
        snprintf(err, n_err, "bandwidth: %s", api->errmsg(c));
        goto out;
    }
    for (int t = 0; t < TRIALS; t++) {
        double t0 = now_s();
        for (int i = 0; i < COPIES; i++) {
            if (api->copy_d2d(c, (i & 1) ? a : b, (i & 1) ? b : a, half) != KN_OK) {
                snprintf(err, n_err, "bandwidth: %s", api->errmsg(c));
                best = 0;
                goto out;
            }
        }
        if (api->sync(c) != KN_OK) {
            snprintf(err, n_err, "bandwidth: %s", api->errmsg(c));
            best = 0;
            goto out;
        }
        double bw = 2.0 * (double)half * COPIES / (now_s() - t0);
        if (bw > best) best = bw;
    }
out:
    api->mem_free(c, a);
    api->mem_free(c, b);
    api->ctx_free(c);
    return best;
}

/* ---- per model and per point */

/* Bytes a decode step reads from the weights as the device holds them. */
static double weight_read_bytes(const eng_model *m) {
    const eng_config *c = &m->cfg;
    double L = c->n_layer, C = c->n_embd, F = c->n_ff, V = c->n_vocab;
    double mats = L * (3 * C * C + C * C + F * C + C * F) + V * C + C;   /* + one embed_in row */
    double fp32 = L * (4 * C + 3 * C + C + F + C) + 2 * C;                /* LN w/b, biases, final LN */
    return mats * eng_model_weight_bytes(m) + fp32 * 4;
}

/* "pythia-410m" when the config matches a Pythia shape, else the directory's last component. */
static void shape_name(const eng_model *m, const char *dir, char *out, size_t n) {
    const eng_config *c = &m->cfg;
    for (const eng_pythia_shape *s = eng_pythia_shapes(); s->name; s++) {
        if (s->n_layer == c->n_layer && s->n_embd == c->n_embd && s->n_head == c->n_head &&
            s->n_vocab == c->n_vocab && c->n_ff == 4 * c->n_embd) {
            snprintf(out, n, "%s", s->name);
            return;
        }
    }
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", dir);
    size_t len = strlen(buf);
    while (len > 1 && buf[len - 1] == '/') buf[--len] = 0;
    const char *base = strrchr(buf, '/');
    snprintf(out, n, "%s", base ? base + 1 : buf);
}

static void print_error(const bench_model *bm, const char *spec, int ctx, const char *err) {
    printf("{\"bench\":\"gpu_decode\",\"shape\":");
    json_str(stdout, bm->shape);
    printf(",\"model\":");
    json_str(stdout, bm->dir);
    printf(",\"policy\":");
    json_str(stdout, spec);
    printf(",\"ctx\":%d,\"error\":", ctx);
    json_str(stdout, err);
    printf("}\n");
    fflush(stdout);
    fprintf(stderr, "%-12s %-30s %6d  ERROR: %s\n", bm->shape, spec, ctx, err);
}

/* One (model, policy, context) point; 0 on success, else prints an error line. */
static int run_point(const bench_model *bm, const char *spec, int ctx, const bench_opts *o, double bw) {
    const eng_model *m = bm->m;
    const int V = m->cfg.n_vocab, n_dec = o->decode;
    char err[1024], name[64], pbuf[512];
    eng_paramset ps;
    eng_policy *pol = NULL;
    eng_fwd f;
    memset(&f, 0, sizeof f);
    int32_t *ids = malloc((size_t)ctx * sizeof *ids);
    double *dt = malloc((size_t)n_dec * sizeof *dt);
    int rc = -1;
    if (!ids || !dt) {
        print_error(bm, spec, ctx, "out of host memory");
        goto out;
    }
    if (eng_policy_parse_spec(spec, &ps, name, sizeof name, pbuf, sizeof pbuf, err, sizeof err) != ENG_OK ||
        eng_policy_create(&pol, name, &ps, &m->cfg, err, sizeof err) != ENG_OK) {
        print_error(bm, spec, ctx, err);
        goto out;
    }
    /* a moving window (window/streaming on the device) replays one graph per
     * window position: warm up over a whole cycle so no capture is timed */
    int sk, rk, sh, warm = WARM_STEPS;
    if (eng_policy_sink_recent(pol, &sk, &rk, &sh) && (rk >= 0 || sh)) warm += ENG_POLICY_SLACK + 2;
    int cap = eng_policy_capacity(pol, ctx + warm + n_dec);
    if (eng_fwd_init(&f, m, o->gpu, cap, N_BATCH, pol, err, sizeof err) != ENG_OK) {
        print_error(bm, spec, ctx, err);
        goto out;
    }
    const char *mode = eng_fwd_mode(&f);
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)ctx;   /* xorshift64: deterministic ids per context */
    for (int i = 0; i < ctx; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)V);
    }
    eng_status st = ENG_OK;
    const int B = f.n_batch;
    if (!strcmp(mode, "device")) {   /* warm-up chunk: cuBLAS and kernel first-call costs */
        int n = ctx < B ? ctx : B;
        st = eng_fwd_forward(&f, ids, n, f.logits, 0);
        eng_fwd_reset(&f);
    }
    double t0 = now_s();
    for (int i = 0; st == ENG_OK && i < ctx; i += B) {
        int n = ctx - i < B ? ctx - i : B, last = i + n == ctx;
        st = eng_fwd_forward(&f, ids + i, n, last ? f.logits : NULL, 0);
    }
    double prefill_s = now_s() - t0;
    int32_t next = eng_argmax(f.logits, V);
    for (int i = 0; st == ENG_OK && i < warm; i++) {
        st = eng_fwd_forward(&f, &next, 1, f.logits, 0);
        next = eng_argmax(f.logits, V);
    }
    eng_policy_stats_reset(pol);
    for (int i = 0; st == ENG_OK && i < n_dec; i++) {
        double a = now_s();
        st = eng_fwd_forward(&f, &next, 1, f.logits, 0);
        next = eng_argmax(f.logits, V);
        dt[i] = now_s() - a;
    }
    if (st != ENG_OK) {
        snprintf(err, sizeof err, "%s: %s", eng_status_str(st), eng_fwd_errmsg(&f));
        print_error(bm, spec, ctx, err);
        goto out;
    }
    double sum = 0;
    for (int i = 0; i < n_dec; i++) sum += dt[i];
    qsort(dt, (size_t)n_dec, sizeof *dt, cmp_double);
    double mean_ms = sum / n_dec * 1e3;
    double p50_ms = (n_dec & 1 ? dt[n_dec / 2] : 0.5 * (dt[n_dec / 2 - 1] + dt[n_dec / 2])) * 1e3;
    eng_policy_stats pst;
    eng_policy_stats_get(pol, &pst);
    double kv_tokens = pst.n_steps > 0 && pst.cache_tokens_mean > 0 ? pst.cache_tokens_mean : (ctx < cap ? ctx : cap);
    double kv_bytes = 2.0 * m->cfg.n_layer * kv_tokens * m->cfg.n_embd * 4;
    double bound_ms = (bm->weight_bytes + kv_bytes) / bw * 1e3;
    const char *graph = f.gpu ? eng_gpu_state_graph_status(f.gpu) : "n/a";
    printf("{\"bench\":\"gpu_decode\",\"shape\":");
    json_str(stdout, bm->shape);
    printf(",\"model\":");
    json_str(stdout, bm->dir);
    printf(",\"params\":%zu,\"weights\":\"%s\",\"weight_bytes\":%.0f,\"policy\":", m->n_params,
           m->w.wtype == KN_W_F32 ? "f32" : m->w.wtype == KN_W_F16 ? "f16" : "bf16", bm->weight_bytes);
    json_str(stdout, spec);
    printf(",\"policy_params\":");
    json_str(stdout, eng_policy_describe(pol));
    printf(",\"mode\":\"%s\",\"device\":", mode);
    json_str(stdout, eng_fwd_device(&f));
    printf(",\"graph\":");
    json_str(stdout, graph);
    printf(",\"ctx\":%d,\"n_ctx\":%d,\"kv_tokens\":%.1f,\"kv_bytes\":%.0f,\"load_s\":%.2f,\"prefill_tok_s\":%.1f,"
           "\"decode\":%d,\"tpot_ms_mean\":%.4f,\"tpot_ms_p50\":%.4f,\"tpot_ms_min\":%.4f,\"tpot_ms_max\":%.4f,"
           "\"tok_s\":%.2f,\"bw_GBps\":%.1f,\"bound_ms\":%.4f,\"ratio\":%.3f}\n",
           ctx, cap, kv_tokens, kv_bytes, bm->load_s, ctx / prefill_s, n_dec, mean_ms, p50_ms, dt[0] * 1e3,
           dt[n_dec - 1] * 1e3, 1e3 / mean_ms, bw / 1e9, bound_ms, mean_ms / bound_ms);
    fflush(stdout);
    fprintf(stderr, "%-12s %-30s %-8s %6d %8.0f %10.1f %9.3f %9.3f %9.1f %9.3f %6.2f  %s\n", bm->shape, spec, mode,
            ctx, kv_tokens, ctx / prefill_s, mean_ms, p50_ms, 1e3 / mean_ms, bound_ms, mean_ms / bound_ms, graph);
    rc = 0;
out:
    eng_fwd_free(&f);
    eng_policy_free(pol);
    free(ids);
    free(dt);
    return rc;
}

int main(int argc, char **argv) {
    bench_opts o = {.gpu = 0, .decode = 64};
    const char *env_gpu = getenv("KV_GPU");
    if (env_gpu && *env_gpu && parse_int(env_gpu, 0, 1023, &o.gpu) != 0) return usage("bad KV_GPU");
    parse_ctx("512,2048,4096", &o);
    parse_policies("full,streaming:sink=4,recent=508", &o);
    int argi = 1;
    for (; argi < argc && !strncmp(argv[argi], "--", 2); argi++) {
        const char *flag = argv[argi];
        if (!strcmp(flag, "--")) {
            argi++;
            break;
        }
        if (!strcmp(flag, "--help")) {
            usage("help");
            return 0;
        }
        if (argi + 1 >= argc) return usage("a flag needs a value");
        const char *val = argv[++argi];
        if (!strcmp(flag, "--gpu")) {
            if (parse_int(val, 0, 1023, &o.gpu) != 0) return usage("bad --gpu");
        } else if (!strcmp(flag, "--ctx")) {
            if (parse_ctx(val, &o) != 0) return usage("bad --ctx (positive integers, comma-separated)");
        } else if (!strcmp(flag, "--decode")) {
            if (parse_int(val, 1, 1 << 20, &o.decode) != 0) return usage("bad --decode");
        } else if (!strcmp(flag, "--policies")) {
            if (parse_policies(val, &o) != 0) return usage("bad --policies");
        } else {
            return usage("unknown flag");
        }
    }
    kn_set_threads(getenv("KV_THREADS") ? atoi(getenv("KV_THREADS")) : 0);

    const char *req = getenv("KV_REQUIRE_GPU");
    int require = req && !strcmp(req, "1");
    const kn_cuda_api *api = kn_cuda_load();
    int n_dev = api ? kn_cuda_device_count() : 0;
    if (n_dev <= 0) {
        if (require) {
            printf("FAIL bench_gpu: KV_REQUIRE_GPU=1 and no usable CUDA device: %s\n", kn_cuda_unavailable_reason());
            return 1;
        }
        printf("SKIP bench_gpu: %s\n", kn_cuda_unavailable_reason());
        return 0;
    }
    if (o.gpu >= n_dev) {
        fprintf(stderr, "bench_gpu: --gpu %d: no such device (this machine has %d)\n", o.gpu, n_dev);
        return 1;
    }

    char err[1024], dev[256] = "";
    double bw = hbm_bandwidth(api, o.gpu, dev, sizeof dev, err, sizeof err);
    if (bw <= 0) {
        fprintf(stderr, "bench_gpu: %s\n", err);
        return 1;
    }
    printf("{\"bench\":\"gpu_bandwidth\",\"gpu\":%d,\"device\":", o.gpu);
    json_str(stdout, dev);
    printf(",\"build_info\":");
    json_str(stdout, api->build_info);
    printf(",\"method\":\"copy_d2d 512 MiB, read+write, best of 3x10\",\"GBps\":%.1f}\n", bw / 1e9);
    fflush(stdout);
    fprintf(stderr, "bench_gpu: %s, device-to-device copy %.1f GB/s (read + write)\n", dev, bw / 1e9);
    if (argi >= argc) return 0;

    fprintf(stderr, "%-12s %-30s %-8s %6s %8s %10s %9s %9s %9s %9s %6s  %s\n", "shape", "policy", "mode", "ctx",
            "kv_tok", "prefill/s", "tpot_ms", "p50_ms", "tok/s", "bound_ms", "ratio", "graph");
    int failed = 0;
    for (; argi < argc; argi++) {
        eng_load_opts lo = {.keep_16bit = 1};
        eng_model *m = NULL;
        double t0 = now_s();
        if (eng_model_load_ex(&m, argv[argi], &lo, err, sizeof err) != ENG_OK) {
            bench_model bm = {.dir = argv[argi]};
            snprintf(bm.shape, sizeof bm.shape, "?");
            print_error(&bm, "-", 0, err);
            failed++;
            continue;
        }
        bench_model bm = {.m = m, .dir = argv[argi], .weight_bytes = weight_read_bytes(m), .load_s = now_s() - t0};
        shape_name(m, argv[argi], bm.shape, sizeof bm.shape);
        for (int p = 0; p < o.n_pol; p++)
            for (int c = 0; c < o.n_ctx; c++) failed += run_point(&bm, o.specs[p], o.ctx[c], &o, bw) != 0;
        eng_model_free(m);
    }
    return failed ? 1 : 0;
}
