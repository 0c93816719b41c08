/* task_passkey.c — the `passkey` task: can the model, under the job's KV
 * policy, still retrieve a number it read thousands of tokens ago? (RULER's
 * needle-in-a-haystack, single needle, numeric value; issue 4 "Retrieval".)
 *
 * A prompt is assembled from token pieces, never from re-tokenized text:
 *
 *   [preamble] [haystack, first part] [needle] [haystack, rest] [question]
 *
 *   preamble  "A pass key is hidden in the text below. Find it and remember it."
 *   needle    " The pass key is KEY. Remember it. KEY is the pass key."
 *   question  " What is the pass key? The pass key is"
 *
 * The haystack is a cycle of units (sentences) repeated as far as needed:
 * with filler=data (the default) the units are the job's slice cut after
 * every token that ends a sentence ('.', '!', '?', or a newline; at most 48
 * tokens a unit), so sweeps choose the text by doc/offset; with
 * filler=repeat they are the classic five sentences ("The grass is green.
 * The sky is blue. ..."). The haystack fills the prompt to exactly `context`
 * tokens; its last unit may be cut short. The needle goes in at the unit
 * boundary nearest to depth x haystack tokens, so it starts within half a
 * unit of that point (depth 0: right after the preamble; 1: right before
 * the question). Units start with a space in both modes, so splicing token
 * pieces equals tokenizing the joined text (GPT-2 pre-tokenization splits
 * before the space) up to the slice's own boundaries.
 *
 * Trial i draws its key from (job seed, i) alone — `digits` digits, the
 * first never 0 — so a job is reproducible and trials are independent of
 * each other's order. Each trial: reset the state, prefill the prompt in ONE
 * forward call (prefill-time policies compress it; bounded decode-time
 * policies evict between the chunks the forward pass cuts), then decode
 * greedily (tokens of " KEY") + 2 tokens. Score: the first run of digits in
 * the decoded text must equal KEY (exact → accuracy); the per-digit match
 * (positions equal / digits) is averaged into extras.digit_accuracy.
 *
 * Not here: multi-needle / multi-value RULER variants, chat templates, and
 * sampling (greedy only). One allocation per piece per trial; none per
 * decoded token. */
#include "task_impl.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fwd.h"
#include "sampler.h"

#define PK_UNIT_MAX 48 /* tokens: the longest haystack unit cut from data */
#define PK_GEN_MAX 32  /* tokens generated per trial, at most */

const char *const task_passkey_keys[] = {"context", "depth", "digits", "trials", "filler", NULL};

static const char k_preamble[] = "A pass key is hidden in the text below. Find it and remember it.";
static const char k_question[] = " What is the pass key? The pass key is";
static const char *const k_repeat[] = {" The grass is green.", " The sky is blue.", " The sun is yellow.",
                                       " Here we go.", " There and back again.", NULL};

static double pk_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* splitmix64: a tiny, well-mixed generator; the key depends on (seed, i) only. */
static uint64_t pk_mix_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

eng_status task_passkey_opts_parse(eng_task_ctx *c, const eng_task *t, size_t n_slice, task_passkey_opts *o) {
    const eng_paramset *ps = &t->task_params;
    int64_t digits;
    eng_status st;
    memset(o, 0, sizeof *o);
    if ((st = task_param_int(c, ps, "passkey", "context", (int64_t)n_slice, 1, 1 << 20, &o->context)) ||
        (st = task_param_real(c, ps, "passkey", "depth", 0.5, 0.0, 1.0, &o->depth)) ||
        (st = task_param_int(c, ps, "passkey", "digits", 5, 1, 18, &digits)) ||
        (st = task_param_int(c, ps, "passkey", "trials", 10, 1, 100000, &o->trials)))
        return st;
    o->digits = (int)digits;
    o->filler_data = 1;
    const eng_param *f = task_param_find(ps, "filler");
    if (f) {
        if (f->type != ENG_PARAM_STR || (strcmp(f->s, "data") != 0 && strcmp(f->s, "repeat") != 0)) {
            eng_errf(c->err, sizeof c->err, "passkey.filler: expected data or repeat");
            return ENG_ERR_INVAL;
        }
        o->filler_data = !strcmp(f->s, "data");
    }
    return ENG_OK;
}

void task_passkey_job_free(task_passkey_job *j) {
    if (!j) return;
    eng_ids_free(&j->pre);
    eng_ids_free(&j->question);
    eng_ids_free(&j->hay);
    eng_free(j->ends);
    memset(j, 0, sizeof *j);
}

/* Does token id end a haystack unit (sentence end or newline)? */
static int pk_unit_end(const eng_tokenizer *tok, int32_t id) {
    size_t len = 0;
    const char *b = eng_tokenizer_token_bytes(tok, id, &len);
    if (!b || !len) return 0;
    if (memchr(b, '\n', len)) return 1;
    char last = b[len - 1];
    return last == '.' || last == '!' || last == '?';
}

static eng_status pk_encode(eng_tokenizer *tok, const char *text, eng_ids *ids, char *err, size_t n_err) {
    eng_status st = eng_tokenizer_encode(tok, text, strlen(text), ids);
    if (st != ENG_OK) eng_errf(err, n_err, "passkey: %s", eng_tokenizer_errmsg(tok));
    return st;
}

eng_status task_passkey_job_init(task_passkey_job *j, eng_tokenizer *tok, const int32_t *slice, size_t n_slice,
                                 const task_passkey_opts *o, char *err, size_t n_err) {
    memset(j, 0, sizeof *j);
    j->o = *o;
    eng_status st;
    if ((st = pk_encode(tok, k_preamble, &j->pre, err, n_err)) != ENG_OK ||
        (st = pk_encode(tok, k_question, &j->question, err, n_err)) != ENG_OK)
        goto fail;
    size_t max_units = o->filler_data ? n_slice : sizeof k_repeat / sizeof k_repeat[0];
    if (o->filler_data && n_slice == 0) {
        eng_errf(err, n_err, "passkey.filler: data needs a non-empty slice");
        st = ENG_ERR_INVAL;
        goto fail;
    }
    if (!(j->ends = eng_alloc(max_units * sizeof(int32_t)))) {
        eng_errf(err, n_err, "passkey: out of memory");
        st = ENG_ERR_NOMEM;
        goto fail;
    }
    if (o->filler_data) {
        size_t start = 0;
        for (size_t i = 0; i < n_slice; i++) {
            if ((st = eng_ids_push(&j->hay, slice[i])) != ENG_OK) goto nomem;
            if (i + 1 == n_slice || pk_unit_end(tok, slice[i]) || i + 1 - start >= PK_UNIT_MAX) {
                j->ends[j->n_units++] = (int32_t)(i + 1);
                start = i + 1;
            }
        }
    } else {
        for (int u = 0; k_repeat[u]; u++) {
            if ((st = pk_encode(tok, k_repeat[u], &j->hay, err, n_err)) != ENG_OK) goto fail;
            j->ends[j->n_units++] = (int32_t)j->hay.n;
        }
    }
    return ENG_OK;
nomem:
    eng_errf(err, n_err, "passkey: out of memory");
fail:
    task_passkey_job_free(j);
    return st;
}

void task_passkey_trial_free(task_passkey_trial *tr) {
    if (!tr) return;
    eng_ids_free(&tr->prompt);
    eng_ids_free(&tr->answer);
}

/* Haystack boundary (token count from the haystack start, a unit end or F)
 * nearest to target; ties go to the earlier one. */
static int64_t pk_boundary(const task_passkey_job *j, int64_t F, double target) {
    int64_t best = 0, cycle = (int64_t)j->hay.n;
    for (int64_t base = 0; base < F; base += cycle)
        for (int u = 0; u < j->n_units; u++) {
            int64_t b = base + j->ends[u];
            if (b > F) b = F;
            if (fabs((double)b - target) < fabs((double)best - target)) best = b;
            if (b == F) return best;
        }
    if (fabs((double)F - target) < fabs((double)best - target)) best = F;
    return best;
}

static void pk_copy_hay(const task_passkey_job *j, int64_t from, int64_t to, int32_t *dst) {
    size_t cycle = j->hay.n;
    for (int64_t p = from; p < to; p++) *dst++ = j->hay.v[(size_t)p % cycle];
}

eng_status task_passkey_trial_make(const task_passkey_job *j, eng_tokenizer *tok, uint64_t seed, int64_t i,
                                   task_passkey_trial *tr, char *err, size_t n_err) {
    memset(tr, 0, sizeof *tr);
    uint64_t rng = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(i + 1));
    for (int d = 0; d < j->o.digits; d++)
        tr->key[d] = (char)('0' + (d == 0 ? 1 + pk_mix_next(&rng) % 9 : pk_mix_next(&rng) % 10));
    tr->key[j->o.digits] = 0;
    char text[160];
    eng_ids needle = {0};
    eng_status st;
    snprintf(text, sizeof text, " The pass key is %s. Remember it. %s is the pass key.", tr->key, tr->key);
    if ((st = pk_encode(tok, text, &needle, err, n_err)) != ENG_OK) goto fail;
    snprintf(text, sizeof text, " %s", tr->key);
    if ((st = pk_encode(tok, text, &tr->answer, err, n_err)) != ENG_OK) goto fail;
    tr->n_gen = (int)tr->answer.n + 2 < PK_GEN_MAX ? (int)tr->answer.n + 2 : PK_GEN_MAX;
    int64_t fixed = (int64_t)(j->pre.n + needle.n + j->question.n), ctx = j->o.context;
    if (ctx <= fixed) {
        eng_errf(err, n_err, "passkey.context: %lld tokens leave no room for a haystack (preamble, needle and "
                 "question take %lld)", (long long)ctx, (long long)fixed);
        st = ENG_ERR_INVAL;
        goto fail;
    }
    int64_t F = ctx - fixed, at = pk_boundary(j, F, j->o.depth * (double)F);
    if (!(tr->prompt.v = eng_alloc((size_t)ctx * sizeof(int32_t)))) {
        eng_errf(err, n_err, "passkey: no memory for a %lld-token prompt", (long long)ctx);
        st = ENG_ERR_NOMEM;
        goto fail;
    }
    tr->prompt.cap = (size_t)ctx;
    int32_t *p = tr->prompt.v;
    memcpy(p, j->pre.v, j->pre.n * sizeof(int32_t));
    p += j->pre.n;
    pk_copy_hay(j, 0, at, p);
    p += at;
    tr->needle_pos = p - tr->prompt.v;
    memcpy(p, needle.v, needle.n * sizeof(int32_t));
    p += needle.n;
    pk_copy_hay(j, at, F, p);
    p += F - at;
    memcpy(p, j->question.v, j->question.n * sizeof(int32_t));
    p += j->question.n;
    tr->prompt.n = (size_t)(p - tr->prompt.v);
    tr->hay_tokens = F;
    eng_ids_free(&needle);
    return ENG_OK;
fail:
    eng_ids_free(&needle);
    task_passkey_trial_free(tr);
    return st;
}

int task_passkey_score(const char *key, const char *text, size_t len, char *got, size_t n_got, double *digit_frac) {
    size_t a = 0, run = 0, nk = strlen(key);
    while (a < len && !(text[a] >= '0' && text[a] <= '9')) a++;
    while (a + run < len && text[a + run] >= '0' && text[a + run] <= '9') run++;
    size_t k = run < n_got ? run : n_got - 1;
    memcpy(got, text + a, k);
    got[k] = 0;
    size_t same = 0;
    for (size_t d = 0; d < nk && d < run; d++) same += text[a + d] == key[d];
    *digit_frac = nk ? (double)same / (double)nk : 0.0;
    return run == nk && same == nk;
}

/* Appends {"key":..,"got":..,"ok":..,"digits":..,"needle":..} to x when it fits. */
static int pk_detail(char *x, size_t n_x, int first, const task_passkey_trial *tr, const char *got, int ok,
                     double frac) {
    return snprintf(x, n_x, "%s{\"key\":\"%s\",\"got\":\"%s\",\"ok\":%d,\"digits\":%.4g,\"needle\":%lld}",
                    first ? "" : ",", tr->key, got, ok, frac, (long long)tr->needle_pos);
}

eng_status task_passkey_run(eng_task_ctx *c, const eng_task *t, const int32_t *v, size_t n, eng_task_result *r) {
    const eng_model *m = c->target.m;
    task_passkey_opts o;
    eng_status st = task_passkey_opts_parse(c, t, n, &o);
    if (st != ENG_OK) return st;
    task_passkey_job job;
    if ((st = task_passkey_job_init(&job, c->tok, v, n, &o, c->err, sizeof c->err)) != ENG_OK) return st;
    eng_policy *pol = NULL;
    eng_fwd f = {0};
    task_passkey_trial tr = {0};
    eng_buf text = {0};
    if ((st = eng_policy_create(&pol, t->policy, &t->params, &m->cfg, c->err, sizeof c->err)) != ENG_OK) goto out;
    int cap = eng_policy_capacity(pol, (int)o.context + PK_GEN_MAX);
    if ((st = eng_fwd_init(&f, m, c->gpu, cap, 64, pol, c->err, sizeof c->err)) != ENG_OK) goto out;
    char *x = r->extras_json;
    size_t n_x = sizeof r->extras_json;
    char detail[3000];
    int det_end[48], shown = 0, k_det = 0;
    int64_t exact = 0, ran = 0, steps = 0;
    double frac_sum = 0, needle_sum = 0, t_pre = 0, t_dec = 0;
    for (int64_t i = 0; i < o.trials; i++) {
        if ((st = task_passkey_trial_make(&job, c->tok, t->seed, i, &tr, c->err, sizeof c->err)) != ENG_OK)
            goto out;
        int32_t gen[PK_GEN_MAX];
        eng_fwd_reset(&f);
        double t0 = pk_now_s();
        if ((st = eng_fwd_forward(&f, tr.prompt.v, (int)tr.prompt.n, f.logits, 0)) != ENG_OK) goto fail;
        gen[0] = eng_argmax(f.logits, m->cfg.n_vocab);
        double t1 = pk_now_s();
        for (int g = 1; g < tr.n_gen; g++) {
            if ((st = eng_fwd_forward(&f, &gen[g - 1], 1, f.logits, 0)) != ENG_OK) goto fail;
            gen[g] = eng_argmax(f.logits, m->cfg.n_vocab);
        }
        double t2 = pk_now_s();
        t_pre += t1 - t0;
        t_dec += t2 - t1;
        steps += tr.n_gen - 1;
        ran += (int64_t)tr.prompt.n + tr.n_gen;
        text.n = 0;
        if ((st = eng_tokenizer_decode(c->tok, gen, (size_t)tr.n_gen, &text)) != ENG_OK) {
            eng_errf(c->err, sizeof c->err, "passkey: %s", eng_tokenizer_errmsg(c->tok));
            goto out;
        }
        char got[24];
        double frac;
        int ok = task_passkey_score(tr.key, text.v, text.n, got, sizeof got, &frac);
        exact += ok;
        frac_sum += frac;
        needle_sum += (double)tr.needle_pos;
        if (shown < 48 && k_det < (int)sizeof detail - 120) {
            k_det += pk_detail(detail + k_det, sizeof detail - (size_t)k_det, shown == 0, &tr, got, ok, frac);
            det_end[shown++] = k_det;
        }
        task_passkey_trial_free(&tr);
    }
    r->accuracy = (double)exact / (double)o.trials;
    r->tokens = ran;
    r->ttft_ms = t_pre * 1e3 / (double)o.trials;
    r->tpot_ms = steps ? t_dec * 1e3 / (double)steps : NAN;
    r->tokens_per_s = steps && t_dec > 0 ? (double)steps / t_dec : NAN;
    int k = snprintf(x, n_x, "{\"filler\":\"%s\",\"context\":%lld,\"depth\":%.6g,\"digits\":%d,\"trials\":%lld,"
                     "\"exact\":%lld,\"digit_accuracy\":%.6g,\"needle_pos_mean\":%.6g,\"context_over_train\":%s,",
                     o.filler_data ? "data" : "repeat", (long long)o.context, o.depth, o.digits,
                     (long long)o.trials, (long long)exact, frac_sum / (double)o.trials,
                     needle_sum / (double)o.trials, o.context > m->cfg.n_ctx_train ? "true" : "false");
    k += task_policy_report(pol, r, x + k, n_x - (size_t)k - 2);
    /* per-trial detail last: the first trials, as many as fit */
    while (shown > 0 && k + det_end[shown - 1] + 48 >= (int)n_x) shown--;
    snprintf(x + k, n_x - (size_t)k, ",\"detail_shown\":%d,\"detail\":[%.*s]}", shown,
             shown ? det_end[shown - 1] : 0, detail);
    goto out;
fail:
    eng_errf(c->err, sizeof c->err, "%s", eng_fwd_errmsg(&f));
out:
    task_passkey_trial_free(&tr);
    eng_buf_free(&text);
    eng_fwd_free(&f);
    eng_policy_free(pol);
    task_passkey_job_free(&job);
    return st;
}
