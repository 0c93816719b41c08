/* kvrun_main.c — `kvrun`, the engine on one machine without Redis.
 *
 *   kvrun tokenize     stdin text -> ids             (HF-exact tokenizer)
 *   kvrun detokenize   stdin ids  -> text
 *   kvrun logits       teacher-forced logits of an id file, raw float32
 *   kvrun ppl          streaming (or chunked) perplexity over a dataset
 *   kvrun generate     greedy / sampled continuation with TTFT and TPOT
 *   kvrun random-model a random checkpoint in a real Pythia shape
 *
 * Each subcommand parses its own flags (getopt_long), calls the engine and
 * turns an engine status into a message on stderr and exit code 1 (2 for
 * usage errors). All flags are documented in README.md. */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data.h"
#include "forward.h"
#include "fwd.h"
#include "kn.h"
#include "model.h"
#include "policy.h"
#include "random_model.h"
#include "sampler.h"
#include "spec.h"
#include "tokenizer.h"

#define ERRLEN 1024

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int fail(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "kvrun: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    return 1;
}

static int usage_error(const char *cmd, const char *msg) {
    fprintf(stderr, "kvrun %s: %s (see README.md, or `kvrun help`)\n", cmd, msg);
    return 2;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, double lo, double hi, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

/* Reads all of a stream into a growable buffer. */
static int read_stream(FILE *f, eng_buf *b) {
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (b->n + n + 1 > b->cap) {
            size_t nc = (b->cap ? b->cap * 2 : 65536);
            while (nc < b->n + n + 1) nc *= 2;
            char *nv = eng_realloc(b->v, nc);
            if (!nv) return -1;
            b->v = nv;
            b->cap = nc;
        }
        memcpy(b->v + b->n, tmp, n);
        b->n += n;
        b->v[b->n] = 0;
    }
    return ferror(f) ? -1 : 0;
}

/* Whitespace-separated integer ids; `label` names the source in errors. */
static int parse_ids(const char *s, size_t len, eng_ids *ids, const char *label, char *err) {
    const char *p = s, *end = s + len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == ',')) p++;
        if (p >= end) break;
        char *q;
        long v = strtol(p, &q, 10);
        if (q == p || v < 0 || v > INT32_MAX) {
            snprintf(err, ERRLEN, "%s: expected a non-negative integer id at byte %zu", label, (size_t)(p - s));
            return -1;
        }
        if (eng_ids_push(ids, (int32_t)v) != ENG_OK) {
            snprintf(err, ERRLEN, "%s: out of memory", label);
            return -1;
        }
        p = q;
    }
    return 0;
}

/* --tokenizer, else DIR/tokenizer.json, else $KV_TOKENIZER when that file is
 * readable (a stale KV_TOKENIZER must not break commands that can do
 * without a tokenizer, such as generate --prompt-ids). */
static const char *pick_tokenizer(const char *flag, const char *model_dir, char *buf, size_t n) {
    if (flag) return flag;
    if (model_dir) {
        snprintf(buf, n, "%s/tokenizer.json", model_dir);
        if (access(buf, R_OK) == 0) return buf;
    }
    const char *env = getenv("KV_TOKENIZER");
    if (env && *env && access(env, R_OK) != 0) {
        fprintf(stderr, "kvrun: note: KV_TOKENIZER=%s is not readable; ignored\n", env);
        return NULL;
    }
    return env && *env ? env : NULL;
}

static int load_tokenizer(const char *path, eng_tokenizer **tok) {
    char err[ERRLEN];
    if (!path) return fail("%s%s", "no tokenizer: pass --tokenizer PATH, put tokenizer.json in the model directory, or set KV_TOKENIZER", "");
    if (eng_tokenizer_load(tok, path, err, sizeof err) != ENG_OK) return fail("%s%s", err, "");
    return 0;
}

/* --weights: "auto" keeps F16/BF16 matrices 16-bit (same results up to
 * summation order, half the memory traffic), "f32" converts everything. */
static const char *g_weights = "auto";

static int load_model(const char *dir, eng_model **m) {
    char err[ERRLEN];
    if (!dir) return fail("%s%s", "--model DIR is required", "");
    eng_load_opts o = {.keep_16bit = strcmp(g_weights, "f32") != 0};
    if (eng_model_load_ex(m, dir, &o, err, sizeof err) != ENG_OK) return fail("%s%s", err, "");
    return 0;
}

/* ---------------------------------------------------------------- tokenize */

static void print_json_ids(const eng_ids *ids) {
    putchar('[');
    for (size_t i = 0; i < ids->n; i++) printf(i ? ",%d" : "%d", ids->v[i]);
    puts("]");
}

static int cmd_tokenize(int argc, char **argv, int detok) {
    const char *cmd = detok ? "detokenize" : "tokenize";
    const char *tok_path = NULL;
    int jsonl = 0, c;
    static const struct option opts[] = {
        {"tokenizer", required_argument, 0, 't'}, {"jsonl", no_argument, 0, 'j'}, {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 't') tok_path = optarg;
        else if (c == 'j') jsonl = 1;
        else return usage_error(cmd, "unknown flag");
    }
    if (optind != argc) return usage_error(cmd, "unexpected argument");
    char tbuf[1100];
    eng_tokenizer *tok = NULL;
    if (load_tokenizer(pick_tokenizer(tok_path, NULL, tbuf, sizeof tbuf), &tok)) return 1;
    eng_buf in = {0}, out = {0};
    eng_ids ids = {0};
    char err[ERRLEN] = "";
    int rc = 0;
    if (read_stream(stdin, &in) != 0) {
        rc = fail("%s%s", "cannot read standard input", "");
        goto done;
    }
    if (!jsonl) {
        if (!detok) {
            if (eng_tokenizer_encode(tok, in.v ? in.v : "", in.n, &ids) != ENG_OK) {
                rc = fail("encode: %s%s", eng_tokenizer_errmsg(tok), "");
                goto done;
            }
            for (size_t i = 0; i < ids.n; i++) printf(i ? " %d" : "%d", ids.v[i]);
            putchar('\n');
        } else {
            if (parse_ids(in.v ? in.v : "", in.n, &ids, "stdin", err) ||
                eng_tokenizer_decode(tok, ids.v, ids.n, &out) != ENG_OK) {
                rc = fail("%s%s", err[0] ? err : eng_tokenizer_errmsg(tok), "");
                goto done;
            }
            fwrite(out.v, 1, out.n, stdout);
        }
        goto done;
    }
    /* JSONL: tokenize reads {"text": ...} per line and writes [ids]; detokenize the reverse. */
    size_t line = 0;
    for (char *p = in.v; p && p < in.v + in.n;) {
        char *nl = memchr(p, '\n', (size_t)(in.v + in.n - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(in.v + in.n - p);
        line++;
        if (n > 0) {
            json_error_t je;
            json_t *o = json_loadb(p, n, 0, &je);
            ids.n = 0;
            if (!detok) {
                json_t *t = o && json_is_object(o) ? json_object_get(o, "text") : NULL;
                if (!json_is_string(t)) {
                    snprintf(err, ERRLEN, "stdin line %zu: expected {\"text\": string}", line);
                } else if (eng_tokenizer_encode(tok, json_string_value(t), json_string_length(t), &ids) != ENG_OK) {
                    snprintf(err, ERRLEN, "stdin line %zu: %s", line, eng_tokenizer_errmsg(tok));
                } else {
                    print_json_ids(&ids);
                }
            } else {
                size_t i;
                json_t *v;
                if (!json_is_array(o)) snprintf(err, ERRLEN, "stdin line %zu: expected a JSON array of ids", line);
                json_array_foreach(o, i, v) {
                    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
                        snprintf(err, ERRLEN, "stdin line %zu: element %zu is not a token id", line, i);
                        break;
                    }
                    eng_ids_push(&ids, (int32_t)json_integer_value(v));
                }
                if (!err[0]) {
                    out.n = 0;
                    if (eng_tokenizer_decode(tok, ids.v, ids.n, &out) != ENG_OK) {
                        snprintf(err, ERRLEN, "stdin line %zu: %s", line, eng_tokenizer_errmsg(tok));
                    } else {
                        json_t *s = json_stringn(out.v, out.n);
                        json_t *obj = json_pack("{s:o}", "text", s);
                        char *dump = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII);
                        if (dump) puts(dump);
                        free(dump);
                        json_decref(obj);
                    }
                }
            }
            json_decref(o);
            if (err[0]) {
                rc = fail("%s%s", err, "");
                goto done;
            }
        }
        p += n + 1;
    }
done:
    eng_buf_free(&in);
    eng_buf_free(&out);
    eng_ids_free(&ids);
    eng_tokenizer_free(tok);
    return rc;
}

/* ------------------------------------------------------------------ common */

typedef struct run_opts {
    const char *model, *tokenizer, *data, *prompt, *prompt_ids, *ids_file, *out;
    const char *draft, *inter, *policy, *draft_policy, *inter_policy;
    long prefill;
    long gpu;          /* --gpu N, -1: CPU */
    long threads, doc, offset, tokens, chunk, max_new, top_k, seed, batch, gamma, gamma_max;
    int schedule, compare;
    double temperature, top_p;
    int json, ignore_eos, print_ids;
} run_opts;

enum { O_MODEL = 256, O_TOK, O_DATA, O_PROMPT, O_PROMPT_IDS, O_IDS_FILE, O_OUT, O_THREADS, O_DOC,
       O_OFFSET, O_TOKENS, O_CHUNK, O_MAX_NEW, O_TOP_K, O_SEED, O_TEMP, O_TOP_P, O_JSON, O_IGN_EOS,
       O_PRINT_IDS, O_BATCH, O_WEIGHTS, O_DRAFT, O_INTER, O_GAMMA, O_SCHEDULE, O_GAMMA_MAX, O_COMPARE,
       O_POLICY, O_PREFILL, O_DRAFT_POLICY, O_INTER_POLICY, O_GPU };

static const struct option g_run_opts[] = {
    {"model", required_argument, 0, O_MODEL}, {"tokenizer", required_argument, 0, O_TOK},
    {"data", required_argument, 0, O_DATA}, {"prompt", required_argument, 0, O_PROMPT},
    {"prompt-ids", required_argument, 0, O_PROMPT_IDS}, {"ids-file", required_argument, 0, O_IDS_FILE},
    {"out", required_argument, 0, O_OUT}, {"threads", required_argument, 0, O_THREADS},
    {"doc", required_argument, 0, O_DOC}, {"offset-tokens", required_argument, 0, O_OFFSET},
    {"tokens", required_argument, 0, O_TOKENS}, {"chunk", required_argument, 0, O_CHUNK},
    {"max-new", required_argument, 0, O_MAX_NEW}, {"top-k", required_argument, 0, O_TOP_K},
    {"seed", required_argument, 0, O_SEED}, {"temperature", required_argument, 0, O_TEMP},
    {"top-p", required_argument, 0, O_TOP_P}, {"json", no_argument, 0, O_JSON},
    {"ignore-eos", no_argument, 0, O_IGN_EOS}, {"print-ids", no_argument, 0, O_PRINT_IDS},
    {"batch", required_argument, 0, O_BATCH}, {"weights", required_argument, 0, O_WEIGHTS},
    {"draft", required_argument, 0, O_DRAFT}, {"intermediate", required_argument, 0, O_INTER},
    {"gamma", required_argument, 0, O_GAMMA}, {"schedule", required_argument, 0, O_SCHEDULE},
    {"gamma-max", required_argument, 0, O_GAMMA_MAX}, {"compare", no_argument, 0, O_COMPARE},
    {"policy", required_argument, 0, O_POLICY}, {"prefill", required_argument, 0, O_PREFILL},
    {"draft-policy", required_argument, 0, O_DRAFT_POLICY}, {"intermediate-policy", required_argument, 0, O_INTER_POLICY},
    {"gpu", required_argument, 0, O_GPU}, {0, 0, 0, 0}};

/* Parses the flags shared by logits/ppl/generate; `allowed` lists the
 * option codes this subcommand accepts (others are usage errors). */
static int parse_run_opts(const char *cmd, int argc, char **argv, run_opts *o, const int *allowed) {
    memset(o, 0, sizeof *o);
    o->threads = 0; o->tokens = -1; o->max_new = 64; o->seed = 0; o->top_p = 1.0; o->batch = 64;
    o->gamma = 5; o->gamma_max = 0; o->schedule = ENG_SPEC_CONSTANT; o->gpu = -1;
    int c;
    while ((c = getopt_long(argc, argv, "", g_run_opts, NULL)) != -1) {
        int ok = 0;
        for (const int *a = allowed; *a; a++) ok |= *a == c;
        if (!ok) return usage_error(cmd, "unknown or unsupported flag");
        int bad = 0;
        switch (c) {
        case O_MODEL: o->model = optarg; break;
        case O_TOK: o->tokenizer = optarg; break;
        case O_DATA: o->data = optarg; break;
        case O_PROMPT: o->prompt = optarg; break;
        case O_PROMPT_IDS: o->prompt_ids = optarg; break;
        case O_IDS_FILE: o->ids_file = optarg; break;
        case O_OUT: o->out = optarg; break;
        case O_THREADS: bad = parse_int(optarg, 1, 1024, &o->threads); break;
        case O_DOC: bad = parse_int(optarg, 0, INT32_MAX, &o->doc); break;
        case O_OFFSET: bad = parse_int(optarg, 0, INT32_MAX, &o->offset); break;
        case O_TOKENS: bad = parse_int(optarg, 2, INT32_MAX, &o->tokens); break;
        case O_CHUNK: bad = parse_int(optarg, 2, INT32_MAX, &o->chunk); break;
        case O_MAX_NEW: bad = parse_int(optarg, 0, 1 << 24, &o->max_new); break;
        case O_TOP_K: bad = parse_int(optarg, 0, INT32_MAX, &o->top_k); break;
        case O_SEED: bad = parse_int(optarg, 0, INT64_MAX, &o->seed); break;
        case O_BATCH: bad = parse_int(optarg, 1, 1 << 16, &o->batch); break;
        case O_TEMP: bad = parse_float(optarg, 0.0, 1e6, &o->temperature); break;
        case O_TOP_P: bad = parse_float(optarg, 1e-9, 1.0, &o->top_p); break;
        case O_JSON: o->json = 1; break;
        case O_IGN_EOS: o->ignore_eos = 1; break;
        case O_PRINT_IDS: o->print_ids = 1; break;
        case O_DRAFT: o->draft = optarg; break;
        case O_INTER: o->inter = optarg; break;
        case O_GAMMA: bad = parse_int(optarg, 1, ENG_SPEC_GAMMA_CAP, &o->gamma); break;
        case O_GAMMA_MAX: bad = parse_int(optarg, 1, ENG_SPEC_GAMMA_CAP, &o->gamma_max); break;
        case O_SCHEDULE:
            o->schedule = eng_spec_schedule_parse(optarg);
            bad = o->schedule < 0;
            break;
        case O_COMPARE: o->compare = 1; break;
        case O_POLICY: o->policy = optarg; break;
        case O_DRAFT_POLICY: o->draft_policy = optarg; break;
        case O_INTER_POLICY: o->inter_policy = optarg; break;
        case O_PREFILL: bad = parse_int(optarg, 1, INT32_MAX, &o->prefill); break;
        case O_GPU: bad = parse_int(optarg, 0, 1024, &o->gpu); break;
        case O_WEIGHTS:
            bad = strcmp(optarg, "auto") && strcmp(optarg, "f32");
            g_weights = optarg;
            break;
        default: return usage_error(cmd, "unknown flag");
        }
        if (bad) {
            fprintf(stderr, "kvrun %s: bad value '%s' for --%s\n", cmd, optarg, g_run_opts[c - O_MODEL].name);
            return 2;
        }
    }
    if (optind != argc) return usage_error(cmd, "unexpected argument");
    kn_set_threads((int)o->threads);
    return 0;
}

/* The forward state on the CPU or on --gpu N, with policy pol (may be
 * NULL); 1 after printing why. */
static int fwd_open(eng_fwd *f, const run_opts *o, const eng_model *m, int n_ctx, int n_batch, eng_policy *pol) {
    char err[ERRLEN];
    if (eng_fwd_init(f, m, (int)o->gpu, n_ctx, n_batch, pol, err, sizeof err) != ENG_OK) return fail("%s%s", err, "");
    if (f->gpu) fprintf(stderr, "kvrun: --gpu %ld: %s (%s mode)\n", o->gpu, eng_fwd_device(f), eng_fwd_mode(f));
    return 0;
}

/* ------------------------------------------------------------------ logits */

static int cmd_logits(int argc, char **argv) {
    static const int allowed[] = {O_MODEL, O_IDS_FILE, O_OUT, O_THREADS, O_BATCH, O_WEIGHTS, O_GPU, 0};
    run_opts o;
    int rc = parse_run_opts("logits", argc, argv, &o, allowed);
    if (rc) return rc;
    if (!o.ids_file || !o.out) return usage_error("logits", "--ids-file F and --out F.f32 are required");
    char err[ERRLEN] = "";
    eng_buf txt = {0};
    eng_ids ids = {0};
    eng_model *m = NULL;
    eng_fwd s = {0};
    float *logits = NULL;
    FILE *f = fopen(o.ids_file, "rb");
    rc = 1;
    if (!f) { fail("%s: cannot open", o.ids_file, ""); goto done; }
    int rd = read_stream(f, &txt);
    fclose(f);
    if (rd) { fail("%s: read error", o.ids_file, ""); goto done; }
    if (parse_ids(txt.v ? txt.v : "", txt.n, &ids, o.ids_file, err)) { fail("%s%s", err, ""); goto done; }
    if (ids.n == 0) { fail("%s: no ids", o.ids_file, ""); goto done; }
    if (load_model(o.model, &m)) goto done;
    if (fwd_open(&s, &o, m, (int)ids.n, (int)o.batch, NULL)) goto done;
    size_t V = (size_t)m->cfg.n_vocab;
    logits = eng_alloc(ids.n * V * sizeof(float));
    if (!logits) { fail("out of memory for %s logits", o.ids_file, ""); goto done; }
    if (eng_fwd_forward(&s, ids.v, (int)ids.n, logits, 1) != ENG_OK) {
        fail("%s: %s", o.ids_file, eng_fwd_errmsg(&s));
        goto done;
    }
    FILE *w = fopen(o.out, "wb");
    if (!w) { fail("%s: cannot create", o.out, ""); goto done; }
    size_t wr = fwrite(logits, sizeof(float), ids.n * V, w);
    if (fclose(w) != 0 || wr != ids.n * V) { fail("%s: write failed", o.out, ""); goto done; }
    fprintf(stderr, "kvrun logits: %zu tokens x %zu vocab -> %s\n", ids.n, V, o.out);
    rc = 0;
done:
    eng_free(logits);
    eng_fwd_free(&s);
    eng_model_free(m);
    eng_ids_free(&ids);
    eng_buf_free(&txt);
    return rc;
}

/* --------------------------------------------------------------------- ppl */

/* A KV policy from a --policy style spec for model m; 0 or 1 after printing why. */
static int policy_from_spec(const char *flag, const char *spec, const eng_model *m, eng_policy **out) {
    eng_paramset ps;
    char name[32], buf[512], err[ERRLEN];
    eng_status st = eng_policy_parse_spec(spec, &ps, name, sizeof name, buf, sizeof buf, err, sizeof err);
    if (st == ENG_OK) st = eng_policy_create(out, name, &ps, &m->cfg, err, sizeof err);
    if (st != ENG_OK) return fail("%s: %s", flag, err);
    return 0;
}

/* log-softmax of the target under logits(V), in double. */
static int cmd_ppl(int argc, char **argv) {
    static const int allowed[] = {O_MODEL, O_TOK, O_DATA, O_DOC, O_OFFSET, O_TOKENS, O_CHUNK,
                                  O_THREADS, O_JSON, O_BATCH, O_WEIGHTS, O_POLICY, O_PREFILL, O_GPU, 0};
    run_opts o;
    int rc = parse_run_opts("ppl", argc, argv, &o, allowed);
    if (rc) return rc;
    if (!o.data) return usage_error("ppl", "--data FILE is required");
    if (o.chunk && (o.policy || o.prefill)) return usage_error("ppl", "--policy and --prefill apply to streaming PPL, not --chunk");
    char err[ERRLEN] = "", tbuf[1100];
    eng_policy *pol = NULL;
    float *pre_logits = NULL;
    eng_dataset *ds = NULL;
    eng_tokenizer *tok = NULL;
    eng_model *m = NULL;
    eng_fwd s = {0};
    eng_ids ids = {0};
    const char *text;
    size_t len;
    rc = 1;
    if (eng_dataset_open(&ds, o.data, err, sizeof err) != ENG_OK) { fail("%s%s", err, ""); goto done; }
    if (eng_dataset_doc(ds, (int)o.doc, &text, &len) != ENG_OK) { fail("%s%s", eng_dataset_errmsg(ds), ""); goto done; }
    if (load_model(o.model, &m)) goto done;
    if (load_tokenizer(pick_tokenizer(o.tokenizer, o.model, tbuf, sizeof tbuf), &tok)) goto done;
    if (eng_tokenizer_encode(tok, text, len, &ids) != ENG_OK) { fail("%s: %s", o.data, eng_tokenizer_errmsg(tok)); goto done; }
    if (eng_tokenizer_n_replaced(tok))
        fprintf(stderr, "kvrun ppl: warning: %s: %zu invalid UTF-8 sequences replaced by U+FFFD\n",
                eng_dataset_doc_name(ds, (int)o.doc), eng_tokenizer_n_replaced(tok));
    if ((size_t)o.offset >= ids.n) {
        snprintf(err, sizeof err, "%s: --offset-tokens %ld but the document has only %zu tokens", o.data, o.offset, ids.n);
        fail("%s%s", err, ""); goto done;
    }
    size_t avail = ids.n - (size_t)o.offset;
    size_t n = o.tokens < 0 ? avail : (size_t)o.tokens;
    if (n > avail) {
        snprintf(err, sizeof err, "%s: --tokens %ld but only %zu tokens from offset %ld", o.data, o.tokens, avail, o.offset);
        fail("%s%s", err, ""); goto done;
    }
    if (n < 2) { fail("%s: need at least 2 tokens to score", o.data, ""); goto done; }
    const int32_t *t = ids.v + o.offset;
    int V = m->cfg.n_vocab;
    if ((size_t)o.prefill >= n) { fail("%s: --prefill must leave tokens to stream%s", o.data, ""); goto done; }
    if (o.policy && policy_from_spec("--policy", o.policy, m, &pol)) goto done;
    size_t cap = o.chunk ? (size_t)o.chunk : n;
    if (cap > n) cap = n;
    if (pol) cap = (size_t)eng_policy_capacity(pol, (int)n);
    if (fwd_open(&s, &o, m, (int)cap, o.chunk || o.prefill ? (int)o.batch : 1, pol)) goto done;
    if (cap > (size_t)m->cfg.n_ctx_train)
        fprintf(stderr, "kvrun ppl: note: %zu tokens of context exceed the model's max_position_embeddings (%d)\n",
                cap, m->cfg.n_ctx_train);
    /* streaming: token i in, token i+1 scored (after an optional one-call
     * prompt of --prefill tokens); chunked: independent windows, fresh cache
     * each (engine/fwd.h eng_fwd_ppl, the ppl task's loop) */
    if (o.prefill && !(pre_logits = malloc((size_t)o.prefill * (size_t)V * sizeof(float)))) {
        fail("%s%s", "out of memory for --prefill logits", "");
        goto done;
    }
    double t0 = now_s();
    eng_ppl_sums sum;
    if (eng_fwd_ppl(&s, t, n, (size_t)o.prefill, o.chunk ? cap : 0, pre_logits, &sum) != ENG_OK) {
        fail("%s%s", eng_fwd_errmsg(&s), "");
        goto done;
    }
    double nll = sum.nll, dt = now_s() - t0, ppl = exp(nll / (double)sum.scored);
    size_t scored = sum.scored, correct = sum.correct;
    eng_policy_stats pst;
    if (pol) eng_policy_stats_get(pol, &pst);
    if (o.json) {
        printf("{\"ppl\":%.9g,\"nll_mean\":%.9g,\"accuracy\":%.6f,\"tokens\":%zu,\"tokens_per_s\":%.3f,\"mode\":\"%s\",\"chunk\":%ld",
               ppl, nll / (double)scored, (double)correct / (double)scored, scored, (double)scored / dt,
               o.chunk ? "chunked" : "streaming", o.chunk);
        if (pol) {
            printf(",\"policy\":\"%s\",\"params\":\"%s\",\"prefill\":%ld,\"cache_tokens_mean\":%.6f,\"cache_tokens_max\":%lld,"
                   "\"kv_bytes\":%lld,\"evictions\":%lld,\"triggered\":%s,\"layer_tokens_mean\":[",
                   eng_policy_name(pol), eng_policy_describe(pol), o.prefill, pst.cache_tokens_mean,
                   (long long)pst.cache_tokens_max, (long long)pst.kv_bytes, (long long)pst.evictions,
                   pst.triggered ? "true" : "false");
            for (int l = 0; l < pst.n_layer; l++) printf("%s%.6f", l ? "," : "", pst.layer_tokens_mean[l]);
            printf("]");
        }
        printf("}\n");
    } else {
        printf("ppl %.6f  accuracy %.4f  tokens %zu  tokens/s %.1f  (%s, chunk %ld)\n", ppl,
               (double)correct / (double)scored, scored, (double)scored / dt,
               o.chunk ? "chunked" : pol ? "streaming" : "streaming, full cache", o.chunk ? o.chunk : (long)n);
        if (pol) {
            printf("policy %s (%s)  cache tokens mean %.2f max %lld  kv bytes %lld  evictions %lld  %s\n",
                   eng_policy_name(pol), eng_policy_describe(pol), pst.cache_tokens_mean,
                   (long long)pst.cache_tokens_max, (long long)pst.kv_bytes, (long long)pst.evictions,
                   pst.triggered ? "triggered" : "NEVER TRIGGERED (budget not reached: same as full)");
            if (pst.layers_differ) {
                printf("per-layer cache tokens mean:");
                for (int l = 0; l < pst.n_layer; l++) printf(" %.1f", pst.layer_tokens_mean[l]);
                printf("\n");
            }
        }
    }
    rc = 0;
done:
    eng_fwd_free(&s);
    eng_policy_free(pol);
    free(pre_logits);
    eng_model_free(m);
    eng_tokenizer_free(tok);
    eng_dataset_free(ds);
    eng_ids_free(&ids);
    return rc;
}

/* ---------------------------------------------------------------- generate */

static int cmd_generate(int argc, char **argv) {
    static const int allowed[] = {O_MODEL, O_TOK, O_PROMPT, O_PROMPT_IDS, O_MAX_NEW, O_TEMP, O_TOP_K,
                                  O_TOP_P, O_SEED, O_THREADS, O_JSON, O_IGN_EOS, O_PRINT_IDS, O_BATCH, O_WEIGHTS,
                                  O_DRAFT, O_INTER, O_GAMMA, O_SCHEDULE, O_GAMMA_MAX, O_COMPARE, O_POLICY,
                                  O_DRAFT_POLICY, O_INTER_POLICY, O_GPU, 0};
    run_opts o;
    int rc = parse_run_opts("generate", argc, argv, &o, allowed);
    if (rc) return rc;
    if (o.inter && !o.draft) return usage_error("generate", "--intermediate needs --draft");
    if (o.draft_policy && !o.draft) return usage_error("generate", "--draft-policy needs --draft");
    if (o.inter_policy && !o.inter) return usage_error("generate", "--intermediate-policy needs --intermediate");
    if (o.gamma_max == 0) o.gamma_max = o.gamma > 16 ? o.gamma : 16;
    if (o.gamma_max < o.gamma) return usage_error("generate", "--gamma-max must be >= --gamma");
    if (!o.prompt == !o.prompt_ids) return usage_error("generate", "give exactly one of --prompt TEXT or --prompt-ids \"ID ...\"");
    char err[ERRLEN] = "", tbuf[1100];
    eng_tokenizer *tok = NULL;
    eng_model *m = NULL, *dm = NULL, *im = NULL;
    eng_fwd s = {0};
    eng_spec *sp = NULL;
    eng_policy *pol[3] = {NULL, NULL, NULL};   /* target, draft, intermediate */
    eng_spec_stats sst;
    memset(&sst, 0, sizeof sst);
    eng_sampler smp = {0};
    eng_ids ids = {0};
    eng_buf text = {0};
    rc = 1;
    if (load_model(o.model, &m)) goto done;
    if (o.policy && policy_from_spec("--policy", o.policy, m, &pol[0])) goto done;
    const char *tp = pick_tokenizer(o.tokenizer, o.model, tbuf, sizeof tbuf);
    if (o.prompt || tp) {
        if (load_tokenizer(tp, &tok)) goto done;
    }
    if (o.prompt) {
        if (eng_tokenizer_encode(tok, o.prompt, strlen(o.prompt), &ids) != ENG_OK) { fail("--prompt: %s%s", eng_tokenizer_errmsg(tok), ""); goto done; }
    } else if (parse_ids(o.prompt_ids, strlen(o.prompt_ids), &ids, "--prompt-ids", err)) {
        fail("%s%s", err, ""); goto done;
    }
    if (ids.n == 0) { fail("%s%s", "the prompt encodes to no tokens", ""); goto done; }
    size_t n_prompt = ids.n, cap = n_prompt + (size_t)o.max_new;
    double ttft, tpot;
    size_t n_new = 0;
    if (o.draft) {
        if (load_model(o.draft, &dm) || (o.inter && load_model(o.inter, &im))) goto done;
        if (o.draft_policy && policy_from_spec("--draft-policy", o.draft_policy, dm, &pol[1])) goto done;
        if (o.inter_policy && policy_from_spec("--intermediate-policy", o.inter_policy, im, &pol[2])) goto done;
        eng_spec_opts so;
        eng_spec_opts_default(&so);
        so.gamma = (int)o.gamma; so.gamma_max = (int)o.gamma_max; so.schedule = (eng_spec_schedule)o.schedule;
        so.temperature = (float)o.temperature; so.top_k = (int)o.top_k; so.top_p = (float)o.top_p;
        so.seed = (uint64_t)o.seed; so.stop_at_eos = !o.ignore_eos; so.compare = o.compare; so.n_batch = (int)o.batch;
        so.gpu = (int)o.gpu;
        if (eng_spec_init(&sp, m, dm, im, (int)cap + 2, &so, err, sizeof err) != ENG_OK) { fail("%s%s", err, ""); goto done; }
        for (int l = 0; l < 3; l++)
            if (pol[l] && eng_spec_set_policy(sp, l, pol[l]) != ENG_OK) { fail("%s%s", eng_spec_errmsg(sp), ""); goto done; }
        eng_ids out = {0};
        if (eng_spec_generate(sp, ids.v, (int)n_prompt, (int)o.max_new, &out, &sst) != ENG_OK) {
            eng_ids_free(&out); fail("%s%s", eng_spec_errmsg(sp), ""); goto done;
        }
        for (size_t i = 0; i < out.n; i++)
            if (eng_ids_push(&ids, out.v[i]) != ENG_OK) { eng_ids_free(&out); fail("%s%s", "out of memory", ""); goto done; }
        n_new = out.n;
        eng_ids_free(&out);
        ttft = sst.ttft_s; tpot = sst.tpot_s;
        goto report;
    }
    if (pol[0]) cap = (size_t)eng_policy_capacity(pol[0], (int)cap);
    if (fwd_open(&s, &o, m, (int)cap, (int)o.batch, pol[0])) goto done;
    if (eng_sampler_init(&smp, m->cfg.n_vocab, (float)o.temperature, (int)o.top_k, (float)o.top_p, (uint64_t)o.seed) != ENG_OK) {
        fail("%s%s", "cannot set up the sampler (bad --temperature/--top-k/--top-p?)", ""); goto done;
    }
    double t0 = now_s(), t_first = 0;
    if (eng_fwd_forward(&s, ids.v, (int)n_prompt, s.logits, 0) != ENG_OK) { fail("%s%s", eng_fwd_errmsg(&s), ""); goto done; }
    for (; n_new < (size_t)o.max_new; n_new++) {
        int32_t next = eng_sampler_sample(&smp, s.logits);
        if (n_new == 0) t_first = now_s();
        if (eng_ids_push(&ids, next) != ENG_OK) { fail("%s%s", "out of memory", ""); goto done; }
        if (!o.ignore_eos && next == m->cfg.eos_id) { n_new++; break; }
        if (n_new + 1 == (size_t)o.max_new) { n_new++; break; }
        if (eng_fwd_forward(&s, &next, 1, s.logits, 0) != ENG_OK) { fail("%s%s", eng_fwd_errmsg(&s), ""); goto done; }
    }
    double t_end = now_s();
    ttft = n_new ? t_first - t0 : 0; tpot = n_new > 1 ? (t_end - t_first) / (double)(n_new - 1) : 0;
report:
    if (tok && eng_tokenizer_decode(tok, ids.v + n_prompt, n_new, &text) != ENG_OK) {
        fail("decode: %s%s", eng_tokenizer_errmsg(tok), ""); goto done;
    }
    if (o.json) {
        json_t *j = json_pack("{s:s%, s:f, s:f, s:f, s:I, s:I}", "text", text.v ? text.v : "", text.n, "ttft_s", ttft,
                              "tpot_s", tpot, "tokens_per_s", tpot > 0 ? 1.0 / tpot : 0.0, "n_prompt",
                              (json_int_t)n_prompt, "n_new", (json_int_t)n_new);
        json_t *arr = json_array();
        for (size_t i = n_prompt; i < ids.n; i++) json_array_append_new(arr, json_integer(ids.v[i]));
        json_object_set_new(j, "ids", arr);
        if (sp) {
            json_t *sj = json_pack("{s:I, s:I, s:f, s:f, s:I, s:f}", "drafted", (json_int_t)sst.drafted, "accepted",
                                   (json_int_t)sst.accepted, "acceptance_rate", sst.acceptance_rate,
                                   "mean_accepted_len", sst.mean_accepted_len, "target_passes",
                                   (json_int_t)sst.target_passes, "tokens_per_s", sst.tokens_per_s);
            if (o.compare) json_object_set_new(sj, "speedup", json_real(sst.speedup));
            json_object_set_new(j, "spec", sj);
        }
        if (pol[0]) {
            eng_policy_stats ps;
            eng_policy_stats_get(pol[0], &ps);
            json_object_set_new(j, "policy", json_pack("{s:s, s:s, s:f, s:I, s:I, s:I, s:b}", "name", eng_policy_name(pol[0]),
                                                       "params", eng_policy_describe(pol[0]), "cache_tokens_mean",
                                                       ps.cache_tokens_mean, "cache_tokens_max", (json_int_t)ps.cache_tokens_max,
                                                       "kv_bytes", (json_int_t)ps.kv_bytes, "evictions",
                                                       (json_int_t)ps.evictions, "triggered", ps.triggered));
        }
        char *d = json_dumps(j, JSON_COMPACT);
        if (d) puts(d);
        free(d);
        json_decref(j);
    } else {
        if (text.v) fwrite(text.v, 1, text.n, stdout);
        putchar('\n');
        if (o.print_ids) {
            for (size_t i = n_prompt; i < ids.n; i++) printf(i > n_prompt ? " %d" : "%d", ids.v[i]);
            putchar('\n');
        }
        fprintf(stderr, "prompt %zu tokens, generated %zu  TTFT %.1f ms  TPOT %.2f ms  %.1f tokens/s\n", n_prompt,
                n_new, ttft * 1e3, tpot * 1e3, tpot > 0 ? 1.0 / tpot : 0.0);
        if (sp) {
            fprintf(stderr, "spec: drafted %ld  accepted %ld  acceptance rate %.3f  mean accepted length %.2f  target passes %ld",
                    sst.drafted, sst.accepted, sst.acceptance_rate, sst.mean_accepted_len, sst.target_passes);
            if (o.compare) fprintf(stderr, "  speedup %.2fx", sst.speedup);
            fputc('\n', stderr);
        }
        for (int l = 0; l < 3; l++) {
            if (!pol[l]) continue;
            eng_policy_stats ps;
            eng_policy_stats_get(pol[l], &ps);
            fprintf(stderr, "%s policy %s (%s)  cache tokens mean %.2f max %lld  evictions %lld%s\n",
                    l == 0 ? "target" : l == 1 ? "draft" : "intermediate", eng_policy_name(pol[l]),
                    eng_policy_describe(pol[l]), ps.cache_tokens_mean, (long long)ps.cache_tokens_max,
                    (long long)ps.evictions, ps.triggered ? "" : "  NEVER TRIGGERED");
        }
    }
    rc = 0;
done:
    eng_sampler_free(&smp);
    eng_fwd_free(&s);
    eng_spec_free(sp);
    for (int l = 0; l < 3; l++) eng_policy_free(pol[l]);
    eng_model_free(m);
    eng_model_free(dm);
    eng_model_free(im);
    eng_tokenizer_free(tok);
    eng_ids_free(&ids);
    eng_buf_free(&text);
    return rc;
}

/* ------------------------------------------------------------ random-model */

static int cmd_random_model(int argc, char **argv) {
    const char *shape = NULL, *out = NULL, *dtype = "f32", *tok = NULL;
    long seed = 1234;
    int c;
    static const struct option opts[] = {{"shape", required_argument, 0, 's'}, {"out", required_argument, 0, 'o'},
                                         {"dtype", required_argument, 0, 'd'}, {"seed", required_argument, 0, 'r'},
                                         {"tokenizer", required_argument, 0, 't'}, {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 's') shape = optarg;
        else if (c == 'o') out = optarg;
        else if (c == 'd') dtype = optarg;
        else if (c == 't') tok = optarg;
        else if (c == 'r') {
            if (parse_int(optarg, 0, INT64_MAX, &seed)) return usage_error("random-model", "bad --seed");
        } else return usage_error("random-model", "unknown flag");
    }
    if (optind != argc) return usage_error("random-model", "unexpected argument");
    if (!shape || !out) return usage_error("random-model", "--shape NAME and --out DIR are required");
    const eng_pythia_shape *sh = eng_pythia_shape_find(shape);
    if (!sh) {
        fprintf(stderr, "kvrun random-model: unknown --shape '%s'; one of:", shape);
        for (const eng_pythia_shape *p = eng_pythia_shapes(); p->name; p++) fprintf(stderr, " %s", p->name);
        fprintf(stderr, "\n");
        return 2;
    }
    char err[ERRLEN];
    kn_set_threads(0);
    if (eng_random_model_write(out, sh, dtype, (uint64_t)seed, tok, err, sizeof err) != ENG_OK) return fail("%s%s", err, "");
    fprintf(stderr, "kvrun random-model: wrote %s (%s, %s, seed %ld) — RANDOM weights\n", out, sh->name, dtype, seed);
    return 0;
}

/* -------------------------------------------------------------------- main */

static void usage(FILE *f) {
    fputs("usage: kvrun COMMAND [flags]   (every flag is documented in README.md)\n"
          "  tokenize     --tokenizer PATH [--jsonl]            stdin text -> ids\n"
          "  detokenize   --tokenizer PATH [--jsonl]            stdin ids -> text\n"
          "  logits       --model DIR --ids-file F --out F.f32  teacher-forced logits, float32 [n x vocab]\n"
          "  ppl          --model DIR --data PATH [--doc N] [--offset-tokens N] [--tokens N] [--chunk N] [--json]\n"
          "               [--policy NAME[:k=v,...]] [--prefill N]   KV policy (README \"KV policies\")\n"
          "  generate     --model DIR (--prompt TEXT | --prompt-ids IDS) [--max-new N] [--temperature T]\n"
               "               [--top-k K] [--top-p P] [--seed S] [--ignore-eos] [--print-ids] [--json]\n"
          "               [--draft DIR [--intermediate DIR] [--gamma N] [--schedule constant|heuristic|aimd]\n"
          "                [--gamma-max N] [--compare] [--draft-policy P] [--intermediate-policy P]]\n"
          "               [--policy NAME[:k=v,...]]   speculative decoding; a KV policy per model\n"
          "  random-model --shape pythia-160m --out DIR [--dtype f32|f16|bf16] [--seed S] [--tokenizer PATH]\n"
          "common: --threads N (default: all cores), --tokenizer PATH (default DIR/tokenizer.json, then $KV_TOKENIZER),\n"
          "        --batch N (prefill chunk, default 64), --weights auto|f32 (keep 16-bit matrices 16-bit, or not)\n"
          "        --gpu N (logits, ppl, generate: run on CUDA device N; with a --policy or --draft the\n"
          "          attention block and KV cache stay on the CPU: offload mode)\n",
          f);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    argc--;
    argv++;
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc, argv, 0);
    if (!strcmp(cmd, "detokenize")) return cmd_tokenize(argc, argv, 1);
    if (!strcmp(cmd, "logits")) return cmd_logits(argc, argv);
    if (!strcmp(cmd, "ppl")) return cmd_ppl(argc, argv);
    if (!strcmp(cmd, "generate")) return cmd_generate(argc, argv);
    if (!strcmp(cmd, "random-model")) return cmd_random_model(argc, argv);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "kvrun: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
