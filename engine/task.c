/* task.c — runs one sweep job with the engine (see task.h for the contract).
 *
 * This is where a job's words become engine calls: the slice is cut from
 * the dataset by tokenizing the chosen document and taking [offset,
 * offset + tokens); "ppl" feeds it token by token (or in chunks) and sums
 * the NLL of each next token; "speed" times a prefill and a greedy decode;
 * "spec" hands the slice as a prompt to engine/spec.c. Each task writes the
 * same eng_task_result, so kvworker can publish it without knowing which
 * task ran.
 *
 * The context keeps one target model, one draft, one intermediate and one
 * tokenizer loaded, keyed by directory; a job for another model replaces
 * them. The model fingerprint (sha-256 over config.json, the dtype and a
 * 4 KiB sample of every MiB of the loaded weights) tells two checkpoints
 * with the same config apart (random models of different seeds) without
 * hashing gigabytes per job. */
#include "task.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "data.h"
#include "fwd.h"
#include "kn.h"
#include "model.h"
#include "policy.h"
#include "sampler.h"
#include "spec.h"
#include "task_impl.h"
#include "tokenizer.h"

static const char *const g_tasks[] = {"ppl", "speed", "spec", "passkey", NULL};

int eng_task_known(const char *task) {
    for (int i = 0; g_tasks[i]; i++)
        if (!strcmp(task, g_tasks[i])) return 1;
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void eng_task_result_clear(eng_task_result *r) {
    memset(r, 0, sizeof *r);
    r->ppl = r->nll_sum = r->accuracy = NAN;
    r->ttft_ms = r->tpot_ms = r->tokens_per_s = r->cache_tokens_mean = NAN;
    r->spec_acceptance_rate = r->spec_mean_accepted_len = r->spec_speedup = NAN;
    r->tokens = r->cache_tokens_max = r->kv_bytes = r->evictions = r->peak_rss_bytes = -1;
    r->spec_drafted = r->spec_accepted = r->spec_target_passes = -1;
    strcpy(r->extras_json, "{}");
}

eng_status eng_task_ctx_init(eng_task_ctx **out, const char *weights, const char *tokenizer_path, char *err,
                             size_t n_err) {
    *out = NULL;
    int keep;
    if (!weights || !strcmp(weights, "auto")) keep = 1;
    else if (!strcmp(weights, "f32")) keep = 0;
    else {
        eng_errf(err, n_err, "task: weights must be auto or f32, got '%s'", weights);
        return ENG_ERR_INVAL;
    }
    eng_task_ctx *c = eng_calloc(1, sizeof *c);
    if (!c) {
        eng_errf(err, n_err, "task: out of memory");
        return ENG_ERR_NOMEM;
    }
    c->keep_16bit = keep;
    c->gpu = -1;
    if (tokenizer_path) snprintf(c->tok_fallback, sizeof c->tok_fallback, "%s", tokenizer_path);
    *out = c;
    return ENG_OK;
}

void eng_task_ctx_set_device(eng_task_ctx *c, int gpu) { c->gpu = gpu < 0 ? -1 : gpu; }

static void model_drop(task_model *tm) {
    eng_model_free(tm->m);
    memset(tm, 0, sizeof *tm);
}

void eng_task_ctx_free(eng_task_ctx *c) {
    if (!c) return;
    model_drop(&c->target);
    model_drop(&c->draft);
    model_drop(&c->mid);
    eng_tokenizer_free(c->tok);
    eng_free(c);
}

const char *eng_task_errmsg(const eng_task_ctx *c) { return c ? c->err : "no task context"; }

const struct eng_model *eng_task_ctx_target(const eng_task_ctx *c) { return c->target.m; }

static void fingerprint(const eng_model *m, char out[65]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    if (!h) {
        out[0] = 0;
        return;
    }
    EVP_DigestInit_ex(h, EVP_sha256(), NULL);
    char path[1100];
    snprintf(path, sizeof path, "%s/config.json", m->dir);
    FILE *f = fopen(path, "rb");
    if (f) {
        unsigned char buf[4096];
        size_t k;
        while ((k = fread(buf, 1, sizeof buf, f)) > 0) EVP_DigestUpdate(h, buf, k);
        fclose(f);
    }
    int32_t wt = (int32_t)m->w.wtype;
    EVP_DigestUpdate(h, &wt, sizeof wt);
    /* the single weight allocation: 16-bit matrices follow the fp32 part */
    size_t bytes = m->n_params * (size_t)(m->w.wtype == KN_W_F32 ? 4 : 2);
    const unsigned char *p = (const unsigned char *)m->mem;
    for (size_t off = 0; p && off < bytes; off += (size_t)1 << 20) {
        size_t k = bytes - off < 4096 ? bytes - off : 4096;
        EVP_DigestUpdate(h, p + off, k);
    }
    EVP_DigestFinal_ex(h, md, &n);
    EVP_MD_CTX_free(h);
    for (unsigned int i = 0; i < n && i < 32; i++) sprintf(out + 2 * i, "%02x", md[i]);
    out[64] = 0;
}

static eng_status model_get(eng_task_ctx *c, task_model *tm, const char *dir) {
    if (tm->m && !strcmp(tm->dir, dir)) return ENG_OK;
    model_drop(tm);
    eng_load_opts lo = {.keep_16bit = c->keep_16bit};
    eng_status st = eng_model_load_ex(&tm->m, dir, &lo, c->err, sizeof c->err);
    if (st != ENG_OK) return st;
    snprintf(tm->dir, sizeof tm->dir, "%s", dir);
    fingerprint(tm->m, tm->fingerprint);
    return ENG_OK;
}

static eng_status tokenizer_get(eng_task_ctx *c, const char *model_dir) {
    char path[1100];
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    else if (c->tok_fallback[0]) snprintf(path, sizeof path, "%s", c->tok_fallback);
    else {
        eng_errf(c->err, sizeof c->err, "%s: no tokenizer.json and no fallback tokenizer given", model_dir);
        return ENG_ERR_IO;
    }
    if (c->tok && !strcmp(c->tok_path, path)) return ENG_OK;
    eng_tokenizer_free(c->tok);
    c->tok = NULL;
    eng_status st = eng_tokenizer_load(&c->tok, path, c->err, sizeof c->err);
    if (st == ENG_OK) snprintf(c->tok_path, sizeof c->tok_path, "%s", path);
    return st;
}

static const eng_param *param_find(const eng_paramset *ps, const char *key) {
    for (int i = 0; i < ps->n; i++)
        if (!strcmp(ps->p[i].key, key)) return &ps->p[i];
    return NULL;
}

/* Integer parameter `key` of set `what` in [lo, hi], def when absent. */
static eng_status param_int(eng_task_ctx *c, const eng_paramset *ps, const char *what, const char *key, int64_t def,
                            int64_t lo, int64_t hi, int64_t *out) {
    const eng_param *p = param_find(ps, key);
    *out = def;
    if (!p) return ENG_OK;
    if (p->type != ENG_PARAM_INT || p->i < lo || p->i > hi) {
        eng_errf(c->err, sizeof c->err, "%s.%s: expected an integer in [%lld, %lld]", what, key, (long long)lo,
                 (long long)hi);
        return ENG_ERR_INVAL;
    }
    *out = p->i;
    return ENG_OK;
}

static eng_status param_real(eng_task_ctx *c, const eng_paramset *ps, const char *what, const char *key, double def,
                             double lo, double hi, double *out) {
    const eng_param *p = param_find(ps, key);
    *out = def;
    if (!p) return ENG_OK;
    double v = p->type == ENG_PARAM_INT ? (double)p->i : p->r;
    if ((p->type != ENG_PARAM_INT && p->type != ENG_PARAM_REAL) || !(v >= lo && v <= hi)) {
        eng_errf(c->err, sizeof c->err, "%s.%s: expected a number in [%g, %g]", what, key, lo, hi);
        return ENG_ERR_INVAL;
    }
    *out = v;
    return ENG_OK;
}

/* Every key of ps must be in the NULL-terminated list. */
static eng_status params_only(eng_task_ctx *c, const eng_paramset *ps, const char *what, const char *const *keys) {
    for (int i = 0; i < ps->n; i++) {
        int ok = 0;
        for (int k = 0; keys[k] && !ok; k++) ok = !strcmp(ps->p[i].key, keys[k]);
        if (!ok) {
            eng_errf(c->err, sizeof c->err, "%s: unknown parameter '%s'", what, ps->p[i].key);
            return ENG_ERR_INVAL;
        }
    }
    return ENG_OK;
}

static const char *const g_ppl_keys[] = {"chunk", "prefill", NULL};
static const char *const g_speed_keys[] = {"prefill", "decode", NULL};
static const char *const g_spec_task_keys[] = {"prefill", "max_new", "temperature", "top_k", "top_p", NULL};
static const char *const g_spec_keys[] = {"draft",        "intermediate",        "gamma", "gamma_max", "schedule",
                                          "draft_policy", "intermediate_policy", NULL};

/* A policy for a spec level from the spec block's `key` ("NAME:k=v,..." as
 * kvrun's --policy); *out NULL when the key is absent. */
static eng_status spec_level_policy(eng_task_ctx *c, const eng_task *t, const char *key, const eng_model *m,
                                    eng_policy **out) {
    *out = NULL;
    const eng_param *q = param_find(&t->spec, key);
    if (!q) return ENG_OK;
    if (q->type != ENG_PARAM_STR || !q->s) {
        eng_errf(c->err, sizeof c->err, "spec.%s: expected a policy string such as \"streaming:sink=4,recent=60\"",
                 key);
        return ENG_ERR_INVAL;
    }
    eng_paramset ps;
    char name[32], buf[512], err[384];
    eng_status st = eng_policy_parse_spec(q->s, &ps, name, sizeof name, buf, sizeof buf, err, sizeof err);
    if (st == ENG_OK) st = eng_policy_create(out, name, &ps, &m->cfg, err, sizeof err);
    if (st != ENG_OK) eng_errf(c->err, sizeof c->err, "spec.%s: %s", key, err);
    return st;
}

eng_status eng_task_ctx_prepare(eng_task_ctx *c, const eng_task *t) {
    c->err[0] = 0;
    if (!t->task || !eng_task_known(t->task)) {
        eng_errf(c->err, sizeof c->err, "unsupported task '%s' (known: ppl, speed, spec, passkey)",
                 t->task ? t->task : "");
        return ENG_ERR_UNSUPPORTED;
    }
    if (!t->policy) {
        eng_errf(c->err, sizeof c->err, "a policy name is required");
        return ENG_ERR_INVAL;
    }
    const char *const *keys = !strcmp(t->task, "ppl") ? g_ppl_keys : !strcmp(t->task, "speed") ? g_speed_keys
                                                                                                : g_spec_task_keys;
    if (!strcmp(t->task, "passkey")) keys = task_passkey_keys;
    eng_status st = params_only(c, &t->task_params, t->task, keys);
    if (st != ENG_OK) return st;
    task_passkey_opts pko; /* values checked before any model is loaded (context: checked at run) */
    if (!strcmp(t->task, "passkey") && (st = task_passkey_opts_parse(c, t, 1, &pko)) != ENG_OK) return st;
    if (!strcmp(t->task, "spec")) {
        if ((st = params_only(c, &t->spec, "spec", g_spec_keys)) != ENG_OK) return st;
        if (!t->draft_dir) {
            eng_errf(c->err, sizeof c->err, "spec: a draft model is required");
            return ENG_ERR_INVAL;
        }
        if ((st = model_get(c, &c->draft, t->draft_dir)) != ENG_OK) return st;
        if (t->mid_dir && (st = model_get(c, &c->mid, t->mid_dir)) != ENG_OK) return st;
    }
    if (t->doc < 0 || t->offset < 0 || t->tokens < 0) {
        eng_errf(c->err, sizeof c->err, "slice: doc, offset and tokens must be >= 0");
        return ENG_ERR_INVAL;
    }
    if ((st = model_get(c, &c->target, t->model_dir)) != ENG_OK) return st;
    /* the policy's name and params are checked against the model now, so a
     * bad job fails before any text is read */
    eng_policy *pol = NULL;
    if ((st = eng_policy_create(&pol, t->policy, &t->params, &c->target.m->cfg, c->err, sizeof c->err)) != ENG_OK)
        return st;
    eng_policy_free(pol);
    if (!strcmp(t->task, "spec")) {   /* the draft's and intermediate's policies, against their models */
        if ((st = spec_level_policy(c, t, "draft_policy", c->draft.m, &pol)) != ENG_OK) return st;
        eng_policy_free(pol);
        if ((st = spec_level_policy(c, t, "intermediate_policy", t->mid_dir ? c->mid.m : c->draft.m, &pol)) != ENG_OK)
            return st;
        eng_policy_free(pol);
    }
    return tokenizer_get(c, t->model_dir);
}

/* Tokenizes the slice into ids (ids.v[0..n)). */
static eng_status slice_tokens(eng_task_ctx *c, const eng_task *t, eng_ids *ids, const int32_t **v, size_t *n,
                               size_t *n_replaced) {
    eng_dataset *ds = NULL;
    const char *text;
    size_t len;
    eng_status st = eng_dataset_open(&ds, t->data_path, c->err, sizeof c->err);
    if (st != ENG_OK) return st;
    if ((st = eng_dataset_doc(ds, (int)t->doc, &text, &len)) != ENG_OK) {
        eng_errf(c->err, sizeof c->err, "%s", eng_dataset_errmsg(ds));
        eng_dataset_free(ds);
        return st;
    }
    st = eng_tokenizer_encode(c->tok, text, len, ids);
    eng_dataset_free(ds);
    if (st != ENG_OK) {
        eng_errf(c->err, sizeof c->err, "%s: %s", t->data_path, eng_tokenizer_errmsg(c->tok));
        return st;
    }
    *n_replaced = eng_tokenizer_n_replaced(c->tok);
    if ((size_t)t->offset >= ids->n) {
        eng_errf(c->err, sizeof c->err, "slice: offset %lld but document %lld of %s has %zu tokens",
                 (long long)t->offset, (long long)t->doc, t->data_path, ids->n);
        return ENG_ERR_INVAL;
    }
    size_t avail = ids->n - (size_t)t->offset;
    size_t want = t->tokens ? (size_t)t->tokens : avail;
    if (want > avail) {
        eng_errf(c->err, sizeof c->err, "slice: %lld tokens wanted from offset %lld but only %zu remain in %s",
                 (long long)t->tokens, (long long)t->offset, avail, t->data_path);
        return ENG_ERR_INVAL;
    }
    *v = ids->v + t->offset;
    *n = want;
    return ENG_OK;
}

/* Full-cache accounting: after step i (0-based) the cache holds i+1 tokens. */
static void full_cache_stats(const eng_model *m, size_t steps, size_t held_max, eng_task_result *r) {
    r->cache_tokens_mean = steps ? (double)(steps + 1) / 2.0 : 0.0;
    r->cache_tokens_max = (int64_t)held_max;
    r->kv_bytes = (int64_t)held_max * 2 * m->cfg.n_layer * m->cfg.n_embd * (int64_t)sizeof(float);
    r->evictions = 0;
}

/* Cache accounting from the policy into the result, and the policy part of
 * extras ("policy", "policy_triggered", per-layer means when they differ). */
static int policy_report(const eng_policy *pol, eng_task_result *r, char *x, size_t n_x) {
    eng_policy_stats ps;
    eng_policy_stats_get(pol, &ps);
    r->cache_tokens_mean = ps.cache_tokens_mean;
    r->cache_tokens_max = ps.cache_tokens_max;
    r->kv_bytes = ps.kv_bytes;
    r->evictions = ps.evictions;
    int k = snprintf(x, n_x, "\"policy\":\"%s\",\"policy_triggered\":%s,\"kv_bytes_alloc\":%lld",
                     eng_policy_describe(pol), ps.triggered ? "true" : "false", (long long)ps.kv_bytes_alloc);
    if (ps.layers_differ && ps.layer_tokens_mean) {
        k += snprintf(x + k, n_x - (size_t)k, ",\"layer_tokens_mean\":[");
        for (int l = 0; l < ps.n_layer && k < (int)n_x - 24; l++)
            k += snprintf(x + k, n_x - (size_t)k, "%s%.6g", l ? "," : "", ps.layer_tokens_mean[l]);
        k += snprintf(x + k, n_x - (size_t)k, "]");
    }
    return k;
}

static eng_status run_ppl(eng_task_ctx *c, const eng_task *t, const int32_t *v, size_t n, eng_task_result *r) {
    const eng_model *m = c->target.m;
    int64_t chunk, prefill;
    eng_status st = param_int(c, &t->task_params, "ppl", "chunk", 0, 2, 1 << 20, &chunk);
    if (st == ENG_OK) st = param_int(c, &t->task_params, "ppl", "prefill", 0, 1, 1 << 20, &prefill);
    if (st != ENG_OK) return st;
    if (n < 2) {
        eng_errf(c->err, sizeof c->err, "ppl: the slice has %zu tokens; at least 2 are needed", n);
        return ENG_ERR_INVAL;
    }
    if (chunk && (prefill || strcmp(t->policy, "full") != 0)) {
        eng_errf(c->err, sizeof c->err, "ppl.chunk: the chunked baseline runs with the full cache and no prefill; "
                                        "policy '%s' needs streaming PPL", t->policy);
        return ENG_ERR_INVAL;
    }
    if ((size_t)prefill >= n) {
        eng_errf(c->err, sizeof c->err, "ppl.prefill: %lld tokens leave none of the %zu-token slice to stream",
                 (long long)prefill, n);
        return ENG_ERR_INVAL;
    }
    eng_policy *pol = NULL;
    if ((st = eng_policy_create(&pol, t->policy, &t->params, &m->cfg, c->err, sizeof c->err)) != ENG_OK) return st;
    size_t cap = chunk ? ((size_t)chunk < n ? (size_t)chunk : n) : (size_t)eng_policy_capacity(pol, (int)n);
    int V = m->cfg.n_vocab;
    float *pre = NULL; /* (prefill, V) logits of the one-call prompt */
    eng_fwd f = {0};
    if ((st = eng_fwd_init(&f, m, c->gpu, (int)cap, chunk || prefill ? 64 : 1, chunk ? NULL : pol, c->err,
                           sizeof c->err)) != ENG_OK)
        goto out;
    if (prefill && !(pre = eng_alloc((size_t)prefill * (size_t)V * sizeof(float)))) {
        eng_errf(c->err, sizeof c->err, "ppl.prefill: no memory for %lld x %d logits", (long long)prefill, V);
        st = ENG_ERR_NOMEM;
        goto out;
    }
    double t0 = now_s();
    eng_ppl_sums sum;
    if ((st = eng_fwd_ppl(&f, v, n, (size_t)prefill, chunk ? cap : 0, pre, &sum)) != ENG_OK) goto fail;
    double nll = sum.nll, dt = now_s() - t0;
    size_t correct = sum.correct, scored = sum.scored;
    r->nll_sum = nll;
    r->tokens = (int64_t)scored;
    r->ppl = exp(nll / (double)scored);
    r->accuracy = (double)correct / (double)scored;
    r->tokens_per_s = dt > 0 ? (double)scored / dt : NAN;
    int k = snprintf(r->extras_json, sizeof r->extras_json, "{\"mode\":\"%s\",\"chunk\":%lld,\"prefill\":%lld,"
                     "\"context_over_train\":%s,\"backend\":\"%s\",", chunk ? "chunked" : "streaming",
                     (long long)chunk, (long long)prefill,
                     (chunk ? cap : n) > (size_t)m->cfg.n_ctx_train ? "true" : "false", eng_fwd_mode(&f));
    if (chunk) {
        r->cache_tokens_max = (int64_t)(cap - 1);
        r->cache_tokens_mean = (double)cap / 2.0;
        r->kv_bytes = r->cache_tokens_max * 2 * m->cfg.n_layer * m->cfg.n_embd * (int64_t)sizeof(float);
        r->evictions = 0;
        snprintf(r->extras_json + k, sizeof r->extras_json - (size_t)k, "\"policy\":\"full\",\"policy_triggered\":false}");
    } else {
        k += policy_report(pol, r, r->extras_json + k, sizeof r->extras_json - (size_t)k - 2);
        snprintf(r->extras_json + k, sizeof r->extras_json - (size_t)k, "}");
    }
    goto out;
fail:
    eng_errf(c->err, sizeof c->err, "%s", eng_fwd_errmsg(&f));
out:
    eng_free(pre);
    eng_fwd_free(&f);
    eng_policy_free(pol);
    return st;
}

static eng_status run_speed(eng_task_ctx *c, const eng_task *t, const int32_t *v, size_t n, eng_task_result *r) {
    const eng_model *m = c->target.m;
    int64_t prefill, decode;
    eng_status st = param_int(c, &t->task_params, "speed", "prefill", 512, 1, 1 << 20, &prefill);
    if (st == ENG_OK) st = param_int(c, &t->task_params, "speed", "decode", 128, 1, 1 << 20, &decode);
    if (st != ENG_OK) return st;
    if ((size_t)prefill > n) {
        eng_errf(c->err, sizeof c->err, "speed: prefill %lld tokens but the slice has %zu", (long long)prefill, n);
        return ENG_ERR_INVAL;
    }
    eng_policy *pol = NULL;
    if ((st = eng_policy_create(&pol, t->policy, &t->params, &m->cfg, c->err, sizeof c->err)) != ENG_OK) return st;
    eng_fwd f = {0};
    int cap = eng_policy_capacity(pol, (int)(prefill + decode));
    if ((st = eng_fwd_init(&f, m, c->gpu, cap, 64, pol, c->err, sizeof c->err)) != ENG_OK) goto out;
    double t0 = now_s();
    if ((st = eng_fwd_forward(&f, v, (int)prefill, f.logits, 0)) != ENG_OK) goto fail;
    int32_t next = eng_argmax(f.logits, m->cfg.n_vocab);
    double t1 = now_s();
    for (int64_t i = 1; i < decode; i++) {
        if ((st = eng_fwd_forward(&f, &next, 1, f.logits, 0)) != ENG_OK) goto fail;
        next = eng_argmax(f.logits, m->cfg.n_vocab);
    }
    double t2 = now_s();
    r->ttft_ms = (t1 - t0) * 1e3;
    r->tpot_ms = decode > 1 ? (t2 - t1) * 1e3 / (double)(decode - 1) : NAN;
    r->tokens_per_s = decode > 1 ? (double)(decode - 1) / (t2 - t1) : NAN;
    r->tokens = decode;
    int k = snprintf(r->extras_json, sizeof r->extras_json,
                     "{\"prefill\":%lld,\"decode\":%lld,\"prefill_tokens_per_s\":%.6g,\"threads\":%d,"
                     "\"backend\":\"%s\",\"device\":\"%s\",",
                     (long long)prefill, (long long)decode, (double)prefill / (t1 - t0), kn_get_threads(),
                     eng_fwd_mode(&f), eng_fwd_device(&f));
    k += policy_report(pol, r, r->extras_json + k, sizeof r->extras_json - (size_t)k - 2);
    snprintf(r->extras_json + k, sizeof r->extras_json - (size_t)k, "}");
    goto out;
fail:
    eng_errf(c->err, sizeof c->err, "%s", eng_fwd_errmsg(&f));
out:
    eng_fwd_free(&f);
    eng_policy_free(pol);
    return st;
}

static eng_status run_spec(eng_task_ctx *c, const eng_task *t, const int32_t *v, size_t n, eng_task_result *r) {
    eng_spec_opts o;
    eng_spec_opts_default(&o);
    int64_t prefill, max_new, gamma, gamma_max, top_k;
    double temp, top_p;
    eng_status st;
    if ((st = param_int(c, &t->task_params, "spec", "prefill", (int64_t)n, 1, 1 << 20, &prefill)) ||
        (st = param_int(c, &t->task_params, "spec", "max_new", 128, 1, 1 << 20, &max_new)) ||
        (st = param_real(c, &t->task_params, "spec", "temperature", 0.0, 0.0, 100.0, &temp)) ||
        (st = param_int(c, &t->task_params, "spec", "top_k", 0, 0, 1 << 20, &top_k)) ||
        (st = param_real(c, &t->task_params, "spec", "top_p", 1.0, 0.0, 1.0, &top_p)) ||
        (st = param_int(c, &t->spec, "spec", "gamma", 5, 1, ENG_SPEC_GAMMA_CAP, &gamma)) ||
        (st = param_int(c, &t->spec, "spec", "gamma_max", gamma > 16 ? gamma : 16, gamma, ENG_SPEC_GAMMA_CAP,
                        &gamma_max)))
        return st;
    const eng_param *sch = param_find(&t->spec, "schedule");
    if (sch) {
        int k = sch->type == ENG_PARAM_STR ? eng_spec_schedule_parse(sch->s) : -1;
        if (k < 0) {
            eng_errf(c->err, sizeof c->err, "spec.schedule: expected constant, heuristic or aimd");
            return ENG_ERR_INVAL;
        }
        o.schedule = (eng_spec_schedule)k;
    }
    if ((size_t)prefill > n) {
        eng_errf(c->err, sizeof c->err, "spec: prefill %lld tokens but the slice has %zu", (long long)prefill, n);
        return ENG_ERR_INVAL;
    }
    o.gamma = (int)gamma;
    o.gamma_max = (int)gamma_max;
    o.temperature = (float)temp;
    o.top_k = (int)top_k;
    o.top_p = (float)top_p;
    o.seed = t->seed;
    o.compare = 1;
    o.gpu = c->gpu;
    eng_spec *sp = NULL;
    eng_policy *pol[3] = {NULL, NULL, NULL};   /* target (the job's policy), draft, intermediate */
    eng_ids out = {0};
    eng_spec_stats ss;
    int cap = (int)(prefill + max_new) + 2;
    if ((st = eng_spec_init(&sp, c->target.m, c->draft.m, t->mid_dir ? c->mid.m : NULL, cap, &o, c->err,
                            sizeof c->err)) != ENG_OK)
        return st;
    if ((st = eng_policy_create(&pol[0], t->policy, &t->params, &c->target.m->cfg, c->err, sizeof c->err)) ||
        (st = spec_level_policy(c, t, "draft_policy", c->draft.m, &pol[1])) ||
        (t->mid_dir && (st = spec_level_policy(c, t, "intermediate_policy", c->mid.m, &pol[2]))))
        goto done;
    for (int i = 0; i < 3; i++)
        if (pol[i] && (st = eng_spec_set_policy(sp, i, pol[i])) != ENG_OK) {
            eng_errf(c->err, sizeof c->err, "%s", eng_spec_errmsg(sp));
            goto done;
        }
    st = eng_spec_generate(sp, v, (int)prefill, (int)max_new, &out, &ss);
    if (st != ENG_OK) {
        eng_errf(c->err, sizeof c->err, "%s", eng_spec_errmsg(sp));
        goto done;
    }
    r->tokens = ss.n_new;
    r->ttft_ms = ss.ttft_s * 1e3;
    r->tpot_ms = ss.tpot_s * 1e3;
    r->tokens_per_s = ss.tokens_per_s;
    r->spec_drafted = ss.drafted;
    r->spec_accepted = ss.accepted;
    r->spec_target_passes = ss.target_passes;
    r->spec_acceptance_rate = ss.acceptance_rate;
    r->spec_mean_accepted_len = ss.mean_accepted_len;
    r->spec_speedup = ss.speedup;
    int k = snprintf(r->extras_json, sizeof r->extras_json,
                     "{\"schedule\":\"%s\",\"gamma\":%d,\"gamma_max\":%d,\"base_tokens_per_s\":%.6g,"
                     "\"resampled\":%ld,\"draft_fingerprint\":\"%s\",\"backend\":\"%s\",",
                     eng_spec_schedule_name(o.schedule), o.gamma, o.gamma_max, ss.base_tokens_per_s, ss.resampled,
                     c->draft.fingerprint, c->gpu >= 0 ? "offload" : "cpu");
    /* cache columns: the target's policy (a full cache when the job's policy is full) */
    if (strcmp(t->policy, "full") != 0) k += policy_report(pol[0], r, r->extras_json + k, sizeof r->extras_json - (size_t)k - 64);
    else {
        full_cache_stats(c->target.m, (size_t)(prefill + ss.n_new), (size_t)(prefill + ss.n_new), r);
        k += snprintf(r->extras_json + k, sizeof r->extras_json - (size_t)k, "\"policy\":\"full\"");
    }
    for (int i = 1; i < 3; i++)
        if (pol[i])
            k += snprintf(r->extras_json + k, sizeof r->extras_json - (size_t)k, ",\"%s_policy\":\"%s:%s\"",
                          i == 1 ? "draft" : "intermediate", eng_policy_name(pol[i]), eng_policy_describe(pol[i]));
    k += snprintf(r->extras_json + k, sizeof r->extras_json - (size_t)k, ",\"pos_acceptance\":[");
    for (int i = 0; i < o.gamma_max && k < (int)sizeof r->extras_json - 32; i++)
        k += snprintf(r->extras_json + k, sizeof r->extras_json - (size_t)k, "%s%.4g", i ? "," : "",
                      ss.pos_drafted[i] ? (double)ss.pos_accepted[i] / (double)ss.pos_drafted[i] : 0.0);
    if (k < (int)sizeof r->extras_json - 4) snprintf(r->extras_json + k, sizeof r->extras_json - (size_t)k, "]}");
done:
    eng_ids_free(&out);
    eng_spec_free(sp);
    for (int i = 0; i < 3; i++) eng_policy_free(pol[i]);
    return st;
}

eng_status eng_task_run(eng_task_ctx *c, const eng_task *t, eng_task_result *r) {
    eng_task_result_clear(r);
    eng_status st = eng_task_ctx_prepare(c, t);
    if (st != ENG_OK) return st;
    snprintf(r->model_fingerprint, sizeof r->model_fingerprint, "%s", c->target.fingerprint);
    eng_ids ids = {0};
    const int32_t *v = NULL;
    size_t n = 0, n_rep = 0;
    if ((st = slice_tokens(c, t, &ids, &v, &n, &n_rep)) != ENG_OK) goto done;
    if (!strcmp(t->task, "ppl")) st = run_ppl(c, t, v, n, r);
    else if (!strcmp(t->task, "speed")) st = run_speed(c, t, v, n, r);
    else if (!strcmp(t->task, "passkey")) st = task_passkey_run(c, t, v, n, r);
    else st = run_spec(c, t, v, n, r);
    struct rusage ru;
    if (st == ENG_OK && getrusage(RUSAGE_SELF, &ru) == 0) r->peak_rss_bytes = (int64_t)ru.ru_maxrss * 1024;
    if (st == ENG_OK && n_rep) {
        size_t k = strlen(r->extras_json);
        if (k > 1 && k + 40 < sizeof r->extras_json)
            snprintf(r->extras_json + k - 1, sizeof r->extras_json - k + 1, ",\"utf8_replaced\":%zu}", n_rep);
    }
done:
    eng_ids_free(&ids);
    return st;
}

/* ---- helpers shared with task_<name>.c (contracts in task_impl.h) ---- */

eng_status task_param_int(eng_task_ctx *c, const eng_paramset *ps, const char *what, const char *key, int64_t def,
                          int64_t lo, int64_t hi, int64_t *out) {
    return param_int(c, ps, what, key, def, lo, hi, out);
}

eng_status task_param_real(eng_task_ctx *c, const eng_paramset *ps, const char *what, const char *key, double def,
                           double lo, double hi, double *out) {
    return param_real(c, ps, what, key, def, lo, hi, out);
}

const eng_param *task_param_find(const eng_paramset *ps, const char *key) { return param_find(ps, key); }

int task_policy_report(const eng_policy *pol, eng_task_result *r, char *x, size_t n_x) {
    return policy_report(pol, r, x, n_x);
}
