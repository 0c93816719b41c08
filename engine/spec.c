/* spec.c — speculative decoding (see spec.h).
 *
 * The story. One token sequence `seq` holds the prompt, the committed
 * (emitted) tokens and, during a round, the tentative proposals. Every model
 * has its own eng_state and remembers in `hist` the ids it has processed
 * (hist[j] == the token at position j, for j < n_past). After a round the
 * committed sequence has grown; each model then keeps the longest prefix of
 * what it processed that still agrees with seq, capped at committed − 1
 * (eng_state_rollback drops exactly the rest), and before its next forward
 * it is fed the committed tokens it has not processed yet, ending with the
 * last committed token, whose logits are the ones needed next. (The prompt
 * itself is prefilled whole, its last logits kept in row 0 for the first
 * round, as target-only decoding does.) Invariant after every round
 * (counted in stats.invariant_violations), with hist agreeing with seq:
 *   target:        n_past == committed − 1        (the last token is unfed)
 *   draft / mid:   committed − 1 − lag <= n_past <= committed − 1,
 *                  lag <= 1 with two levels, <= 2 in the cascade
 *   any level with an evicting policy: n_past <= committed − 1 (see below)
 * (a draft that had all its proposals accepted never processed its last
 * proposal, nor the bonus token; it catches up at its next forward, with the
 * unfed tokens in one call).
 *
 * One round with two levels (draft D, target T), draft length γ:
 *   1. D samples d_1..d_γ autoregressively from its processed distributions
 *      q_i (temperature → top-k → top-p, eng_sampler_probs, the same
 *      processing as the target's).
 *   2. T runs ONE eng_forward over [last committed, d_1..d_γ] with all_logits:
 *      γ+1 rows p_1..p_{γ+1}, processed the same way.
 *   3. eng_spec_verify: accept d_i while r_i < p_i(d_i)/q_i(d_i) (r_i ~ U[0,1),
 *      i.e. with probability min(1, p/q)); on the first rejection sample from
 *      normalize(max(0, p_i − q_i)); when all γ are accepted sample a bonus
 *      token from p_{γ+1}. Temperature 0: accept while d_i == argmax p_i and
 *      emit argmax p_{n+1}, so the output is the target's greedy decoding.
 *   4. Commit the n accepted tokens and the extra one; roll back as above.
 *
 * Cascade (draft D → intermediate M → target T). Exact rule implemented:
 *   a. Inner round: D proposes γ tokens, M verifies them with the rule of
 *      step 3 (one M forward with all_logits) and produces n_M accepted
 *      tokens plus its own resampled/bonus token: a block x_1..x_m, m = n_M+1.
 *      By the losslessness of step 3 the block is distributed exactly as M's
 *      own autoregressive sampling, token by token: x_j ~ M(· | prefix, x_<j).
 *   b. Outer round: T verifies x_1..x_m with the same rule, using as q_j M's
 *      processed distribution at position j (the rows M computed in a.), so
 *      the emitted tokens follow T exactly (lossless w.r.t. T). Greedy: M's
 *      block is M's greedy continuation, T keeps its argmax-matching prefix
 *      and adds its own argmax.
 *   One target pass per inner round; the schedule adapts γ (the inner draft
 *   length) from the TARGET's outcome (full accept of the m tokens or not).
 *   stats.drafted/accepted/pos_* count the target level; mid_* the inner one.
 *
 * Policies (eng_spec_set_policy, a KV policy on the target and/or a draft).
 * The rule: the committed state of a level only ever holds what the policy
 * did on committed tokens. Per-token decoding under a policy evicts at the
 * start of every step, so a verification of [x_c, d_1..d_γ] that evicted
 * only once (at its start) would let d_i attend over i tokens more than
 * target-only decoding does, and would differ from it. Instead:
 *   - a level with an evicting policy runs every token of a multi-token
 *     forward as its own policy step (eng_state.policy_steps: evict, append,
 *     attend, score per token; the matmuls stay batched), so the logits of
 *     every row are those of target-only decoding under the policy;
 *   - the level's state is saved in a mark (policy_mark.h: held slots, fill
 *     counts, per-slot scores and ids, step counters, statistics) at the
 *     point where everything it has processed is committed: inside the
 *     verifier's one call, right after its committed rows (catch-up tokens
 *     and x_c; each layer is saved when its rows reach that point), and for
 *     a draft before its second proposal is fed;
 *   - after the round, if anything the level processed is not committed,
 *     the level is restored to its mark — the steps of rejected tokens, the
 *     evictions they made, the attention mass they added to h2o scores and
 *     the scores tova rewrote are all gone — and the accepted tokens past
 *     the mark are fed again as part of the level's next forward (which the
 *     per-token steps make equal to feeding them one by one). So every
 *     eviction that survives a round was decided at the step of a committed
 *     token, among committed tokens only.
 * Greedy output then equals target-only greedy decoding under the same
 * policy token for token, and the cache after a run equals that of a
 * target-only run over the committed tokens (tests/test_spec_policy.c).
 * Cost: one copy of the held slots per round and level, and the re-fed
 * committed tokens (≤ γ + 1) in the next batched forward. A "full" policy
 * evicts nothing, so it keeps truncation and needs no mark.
 *
 * Schedules (after every target pass, capped at gamma_max, floor 1):
 * constant; heuristic +2 on full accept, −1 otherwise; aimd +1 on full
 * accept, halve on a rejection. γ is also clipped to the tokens still to be
 * generated. Everything is allocated in eng_spec_init: generate allocates
 * nothing (beyond growing `out` when it has no room). */
#include "spec.h"

#include "fwd.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct level {
    const eng_model *m;
    eng_state *st;
    eng_gpu_state *dev; /* opts.gpu >= 0: st's dense math (offload mode, fwd.h), else NULL */
    int32_t *hist;   /* (n_ctx) ids processed */
    float *logits;   /* (rows, V) */
    float *probs;    /* (rows, V) processed distributions */
    eng_policy *pol; /* KV policy (borrowed) or NULL */
    eng_state_mark *mark; /* policies that evict: the state before this round's tentative forwards */
    int marked;      /* mark saved in this round */
} level;

struct eng_spec {
    level lv[3];     /* 0 target, 1 draft, 2 intermediate */
    int n_lv;
    eng_spec_opts o;
    int V, n_ctx, rows;
    eng_sampler smp;
    int32_t *seq;    /* (n_ctx + rows) */
    float *resid;    /* (V) */
    char err[512];
};

void eng_spec_opts_default(eng_spec_opts *o) {
    memset(o, 0, sizeof *o);
    o->gamma = 5;
    o->gamma_max = 16;
    o->schedule = ENG_SPEC_CONSTANT;
    o->top_p = 1.0f;
    o->gpu = -1;
}

int eng_spec_schedule_parse(const char *name) {
    if (!name) return -1;
    if (!strcmp(name, "constant")) return ENG_SPEC_CONSTANT;
    if (!strcmp(name, "heuristic")) return ENG_SPEC_HEURISTIC;
    if (!strcmp(name, "aimd")) return ENG_SPEC_AIMD;
    return -1;
}

const char *eng_spec_schedule_name(eng_spec_schedule s) {
    return s == ENG_SPEC_HEURISTIC ? "heuristic" : s == ENG_SPEC_AIMD ? "aimd" : "constant";
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int eng_spec_verify(eng_sampler *s, const float *p, const float *q, const int32_t *draft, int m,
                    float *resid, int32_t *next, int *resampled) {
    int V = s->n_vocab;
    if (s->temperature == 0.0f) {
        int n = 0;
        while (n < m && draft[n] == eng_argmax(p + (size_t)n * V, V)) n++;
        *next = eng_argmax(p + (size_t)n * V, V);
        *resampled = n < m;
        return n;
    }
    for (int i = 0; i < m; i++) {
        const float *pi = p + (size_t)i * V, *qi = q + (size_t)i * V;
        int32_t x = draft[i];
        double r = eng_sampler_uniform(s);
        if (qi[x] > 0 && r * (double)qi[x] < (double)pi[x]) continue;   /* accept: r < p/q */
        double sum = 0.0;
        for (int v = 0; v < V; v++) {
            float d = pi[v] - qi[v];
            resid[v] = d > 0 ? d : 0.0f;
            sum += resid[v];
        }
        *next = eng_sampler_sample_probs(s, sum > 0 ? resid : pi);
        *resampled = 1;
        return i;
    }
    *next = eng_sampler_sample_probs(s, p + (size_t)m * V);
    *resampled = 0;
    return m;
}

/* Feed seq[n_past .. upto) to level l. mode 0: no logits, 1: last row into
 * l->logits row `row0`, 2: all rows from row `row0`. A level with an
 * evicting policy runs every token as its own policy step (forward.h
 * policy_steps), except in the prefill (prefill = 1), which is one call as
 * in target-only decoding. Returns the number of tokens fed in *n_fed. */
static eng_status feed(eng_spec *sp, level *l, int upto, int mode, int row0, int prefill, int *n_fed) {
    int from = l->st->n_past, n = upto - from;
    if (n_fed) *n_fed = n;
    if (n <= 0) return ENG_OK;
    if (mode == 2 && n + row0 > sp->rows) {
        eng_errf(sp->err, sizeof sp->err, "spec: %s: %d tokens (from position %d) to verify exceed %d rows", l->m->dir,
                 n, from, sp->rows - row0);
        return ENG_ERR_CAPACITY;
    }
    l->st->policy_steps = l->mark && !prefill;
    float *lg = mode ? l->logits + (size_t)row0 * sp->V : NULL;
    eng_status st = eng_forward(l->st, sp->seq + from, n, lg, mode == 2);
    if (st != ENG_OK) {
        eng_errf(sp->err, sizeof sp->err, "spec: %s: %s", l->m->dir, eng_state_errmsg(l->st));
        return st;
    }
    memcpy(l->hist + from, sp->seq + from, (size_t)n * sizeof(int32_t));
    return ENG_OK;
}

/* Keep the part of what l processed that agrees with seq[0..committed), at
 * most committed − 1 tokens; positions < lo are known to agree. Without an
 * evicting policy the rest is truncated; with one, the level goes back to
 * its mark (everything it held then was committed) and catches up on the
 * committed tokens at its next forward. */
static eng_status sync_back(eng_spec *sp, level *l, int lo, int committed) {
    int n = l->st->n_past, keep = n < committed - 1 ? n : committed - 1;
    int v = lo < 0 ? 0 : lo;
    while (v < keep && l->hist[v] == sp->seq[v]) v++;
    int marked = l->marked;
    l->marked = 0;
    if (n <= v) return ENG_OK;
    eng_status st;
    if (!l->mark) {
        st = eng_state_rollback(l->st, n - v);
    } else if (!marked || eng_state_mark_pos(l->mark) > v) {
        eng_errf(l->st->err, sizeof l->st->err, "no mark at or before position %d", v);
        st = ENG_ERR_INVAL;
    } else {
        st = eng_state_mark_restore(l->mark, l->st);
    }
    if (st != ENG_OK)
        eng_errf(sp->err, sizeof sp->err, "spec: %s: rollback to %d: %s", l->m->dir, v, eng_state_errmsg(l->st));
    return st;
}

/* Before the level's first tentative forward of a round. */
static void mark_save(level *l) {
    if (!l->mark) return;
    eng_state_mark_save(l->mark, l->st);
    l->marked = 1;
}

/* Draft level d samples g tokens into seq[base..base+g); q rows in d->probs. */
static eng_status draft_tokens(eng_spec *sp, level *d, int base, int g) {
    for (int i = 0; i < g; i++) {
        if (i == 1) mark_save(d);   /* from here on d is fed its own proposals */
        eng_status st = feed(sp, d, base + i, 1, 0, 0, NULL);
        if (st != ENG_OK) return st;
        float *q = d->probs + (size_t)i * sp->V;
        eng_sampler_probs(&sp->smp, d->logits, q);
        sp->seq[base + i] = eng_sampler_sample_probs(&sp->smp, q);
    }
    return ENG_OK;
}

/* Verifier v checks seq[base..base+m) proposed with q rows (m, V): one
 * forward with all_logits. v->probs rows 0..m get v's distributions; the
 * extra token goes to seq[base + *n_acc]. */
static eng_status verify_level(eng_spec *sp, level *v, int base, int m, const float *q, int *n_acc,
                               int *resampled) {
    int n_fed;
    /* first round: the whole prompt was prefilled, so row 0 already holds the
     * logits of its last token and only the m proposals are fed */
    int pre = v->st->n_past == base;
    if (v->mark) {   /* mark right after the committed tokens, inside the one call */
        eng_state_mark_at(v->st, v->mark, base - v->st->n_past);
        v->marked = 1;
    }
    eng_status st = feed(sp, v, base + m, 2, pre, 0, &n_fed);
    if (st != ENG_OK) return st;
    int off = pre ? 0 : n_fed - (m + 1);
    size_t V = (size_t)sp->V;
    for (int r = 0; r <= m; r++) eng_sampler_probs(&sp->smp, v->logits + (size_t)(off + r) * V, v->probs + r * V);
    int32_t next;
    *n_acc = eng_spec_verify(&sp->smp, v->probs, q, sp->seq + base, m, sp->resid, &next, resampled);
    sp->seq[base + *n_acc] = next;
    return ENG_OK;
}

static void level_free(level *l) {
    eng_state_mark_free(l->mark);
    eng_state_free(l->st);
    eng_gpu_state_free(l->dev);
    eng_free(l->hist);
    eng_free(l->logits);
    eng_free(l->probs);
    memset(l, 0, sizeof *l);
}

void eng_spec_free(eng_spec *sp) {
    if (!sp) return;
    for (int i = 0; i < 3; i++) level_free(&sp->lv[i]);
    eng_sampler_free(&sp->smp);
    eng_free(sp->seq);
    eng_free(sp->resid);
    eng_free(sp);
}

eng_status eng_spec_init(eng_spec **out, const eng_model *target, const eng_model *draft,
                         const eng_model *mid, int n_ctx, const eng_spec_opts *opts, char *err,
                         size_t n_err) {
    *out = NULL;
    if (!target || !draft || !opts || n_ctx <= 1) {
        eng_errf(err, n_err, "spec: target, draft, options and n_ctx > 1 are required");
        return ENG_ERR_INVAL;
    }
    const eng_model *ms[3] = {target, draft, mid};
    for (int i = 1; i < 3; i++)
        if (ms[i] && ms[i]->cfg.n_vocab != target->cfg.n_vocab) {
            eng_errf(err, n_err, "spec: vocabulary mismatch: target %s has n_vocab %d but %s %s has %d",
                     target->dir, target->cfg.n_vocab, i == 1 ? "draft" : "intermediate", ms[i]->dir,
                     ms[i]->cfg.n_vocab);
            return ENG_ERR_INVAL;
        }
    if (opts->gamma < 1 || opts->gamma_max < opts->gamma || opts->gamma_max > ENG_SPEC_GAMMA_CAP ||
        (int)opts->schedule < 0 || opts->schedule > ENG_SPEC_AIMD) {
        eng_errf(err, n_err, "spec: need 1 <= gamma (%d) <= gamma_max (%d) <= %d and a known schedule",
                 opts->gamma, opts->gamma_max, ENG_SPEC_GAMMA_CAP);
        return ENG_ERR_INVAL;
    }
    eng_spec *sp = eng_calloc(1, sizeof *sp);
    if (!sp) goto nomem;
    sp->o = *opts;
    sp->V = target->cfg.n_vocab;
    sp->n_ctx = n_ctx;
    /* a verification feeds at most gamma_max + 2 tokens, plus, after a level
     * went back to its mark, up to gamma_max + 2 committed ones */
    sp->rows = 2 * opts->gamma_max + 8;
    sp->n_lv = mid ? 3 : 2;
    int n_batch = opts->n_batch > 0 ? opts->n_batch : 64;
    if (n_batch < sp->rows) n_batch = sp->rows;
    eng_status st = eng_sampler_init(&sp->smp, sp->V, opts->temperature, opts->top_k, opts->top_p, opts->seed);
    if (st != ENG_OK) {
        eng_errf(err, n_err, "spec: bad sampler settings (temperature %g, top_k %d, top_p %g)",
                 (double)opts->temperature, opts->top_k, (double)opts->top_p);
        eng_spec_free(sp);
        return st;
    }
    const kn_cuda_api *api = NULL;
    if (opts->gpu >= 0 && !(api = eng_fwd_open_device(opts->gpu, &st, err, n_err))) {
        eng_spec_free(sp);
        return st;
    }
    sp->seq = eng_alloc((size_t)(n_ctx + sp->rows) * sizeof(int32_t));
    sp->resid = eng_alloc((size_t)sp->V * sizeof(float));
    if (!sp->seq || !sp->resid) goto nomem;
    for (int i = 0; i < sp->n_lv; i++) {
        level *l = &sp->lv[i];
        l->m = ms[i];
        st = eng_state_init(&l->st, l->m, n_ctx, n_batch, err, n_err);
        if (st == ENG_OK && api) {
            st = eng_gpu_state_init(&l->dev, api, l->m, opts->gpu, 0, l->st->n_batch, err, n_err);
            if (st == ENG_OK && (st = eng_state_set_device(l->st, l->dev)) != ENG_OK)
                eng_errf(err, n_err, "%s", eng_state_errmsg(l->st));
        }
        if (st != ENG_OK) {
            eng_spec_free(sp);
            return st;
        }
        l->hist = eng_alloc((size_t)n_ctx * sizeof(int32_t));
        l->logits = eng_alloc((size_t)sp->rows * sp->V * sizeof(float));
        l->probs = eng_alloc((size_t)sp->rows * sp->V * sizeof(float));
        if (!l->hist || !l->logits || !l->probs) goto nomem;
    }
    *out = sp;
    return ENG_OK;
nomem:
    eng_errf(err, n_err, "spec: out of memory (n_ctx %d)", n_ctx);
    eng_spec_free(sp);
    return ENG_ERR_NOMEM;
}

void eng_spec_set_seed(eng_spec *sp, uint64_t seed) { sp->smp.rng = seed ? seed : 0x9E3779B97F4A7C15ull; }

eng_state *eng_spec_state(eng_spec *sp, int which) {
    return which >= 0 && which < sp->n_lv ? sp->lv[which].st : NULL;
}

const char *eng_spec_errmsg(const eng_spec *sp) { return sp ? sp->err : "no spec object"; }

eng_status eng_spec_set_policy(eng_spec *sp, int which, eng_policy *p) {
    sp->err[0] = 0;
    if (which < 0 || which >= sp->n_lv) {
        eng_errf(sp->err, sizeof sp->err, "spec: set_policy: no level %d (this object has %d)", which, sp->n_lv);
        return ENG_ERR_INVAL;
    }
    level *l = &sp->lv[which];
    eng_state_mark_free(l->mark);
    l->mark = NULL;
    l->marked = 0;
    l->pol = NULL;
    eng_state_reset(l->st);
    eng_status st = eng_state_set_policy(l->st, p);
    if (st == ENG_OK && p && strcmp(eng_policy_name(p), "full") != 0)
        st = eng_state_mark_init(&l->mark, l->st, l->st->err, sizeof l->st->err);
    if (st != ENG_OK) {
        eng_errf(sp->err, sizeof sp->err, "spec: %s: %s", l->m->dir, eng_state_errmsg(l->st));
        eng_state_set_policy(l->st, NULL);
        return st;
    }
    l->pol = p;
    return ENG_OK;
}

eng_policy *eng_spec_policy(eng_spec *sp, int which) {
    return which >= 0 && which < sp->n_lv ? sp->lv[which].pol : NULL;
}

/* Target-only decoding of the same prompt (for stats.speedup); tokens/s. */
static eng_status baseline(eng_spec *sp, const int32_t *prompt, int n_prompt, int max_new, double *tps) {
    eng_state *s = sp->lv[0].st;
    int eos = sp->lv[0].m->cfg.eos_id;
    eng_state_reset(s);
    s->policy_steps = 0;
    double t0 = now_s();
    eng_status st = eng_forward(s, prompt, n_prompt, s->logits, 0);
    int n = 0;
    while (st == ENG_OK && n < max_new) {
        int32_t next = eng_sampler_sample(&sp->smp, s->logits);
        n++;
        if ((sp->o.stop_at_eos && next == eos) || n == max_new) break;
        st = eng_forward(s, &next, 1, s->logits, 0);
    }
    double dt = now_s() - t0;
    *tps = dt > 0 ? n / dt : 0.0;
    if (st != ENG_OK) eng_errf(sp->err, sizeof sp->err, "spec: baseline: %s", eng_state_errmsg(s));
    return st;
}

eng_status eng_spec_generate(eng_spec *sp, const int32_t *prompt, int n_prompt, int max_new, eng_ids *out,
                             eng_spec_stats *stats) {
    eng_spec_stats dummy;
    eng_spec_stats *S = stats ? stats : &dummy;
    memset(S, 0, sizeof *S);
    sp->err[0] = 0;
    if (n_prompt < 1 || max_new < 0 || !prompt) {
        eng_errf(sp->err, sizeof sp->err, "spec: need a non-empty prompt and max_new >= 0");
        return ENG_ERR_INVAL;
    }
    if ((long)n_prompt + max_new + 2 > sp->n_ctx) {
        eng_errf(sp->err, sizeof sp->err, "spec: prompt %d + max_new %d + 2 exceeds the KV capacity %d",
                 n_prompt, max_new, sp->n_ctx);
        return ENG_ERR_CAPACITY;
    }
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= sp->V) {
            eng_errf(sp->err, sizeof sp->err, "spec: prompt id %d outside [0, %d)", prompt[i], sp->V);
            return ENG_ERR_INVAL;
        }
    if (out->cap - out->n < (size_t)max_new && eng_ids_reserve(out, (size_t)max_new) != ENG_OK) {
        eng_errf(sp->err, sizeof sp->err, "spec: out of memory");
        return ENG_ERR_NOMEM;
    }
    eng_status st = ENG_OK;
    uint64_t rng0 = sp->smp.rng;
    if (sp->o.compare && max_new > 0) {
        st = baseline(sp, prompt, n_prompt, max_new, &S->base_tokens_per_s);
        if (st != ENG_OK) return st;
        sp->smp.rng = rng0;   /* the speculative run sees the same seed */
    }
    level *T = &sp->lv[0], *D = &sp->lv[1], *M = sp->n_lv == 3 ? &sp->lv[2] : NULL;
    int eos = T->m->cfg.eos_id;
    double t0 = now_s(), t_first = t0;
    memcpy(sp->seq, prompt, (size_t)n_prompt * sizeof(int32_t));
    for (int i = 0; i < sp->n_lv; i++) {   /* the whole prompt, its last logits in row 0 */
        level *l = &sp->lv[i];
        eng_state_reset(l->st);
        l->marked = 0;
        if (l->pol) eng_policy_stats_reset(l->pol);
        if ((st = feed(sp, l, n_prompt, 1, 0, 1, NULL)) != ENG_OK) return st;
    }
    int committed = n_prompt, gamma = sp->o.gamma, done = max_new == 0;
    while (!done) {
        int base = committed, remaining = n_prompt + max_new - committed;
        int g = gamma < remaining ? gamma : remaining;
        int m, k, resampled, nm = 0;
        const float *q;
        if ((st = draft_tokens(sp, D, base, g)) != ENG_OK) return st;
        if (M) {
            if ((st = verify_level(sp, M, base, g, D->probs, &nm, &resampled)) != ENG_OK) return st;
            S->mid_drafted += g;
            S->mid_accepted += nm;
            S->mid_passes++;
            m = nm + 1;
            q = M->probs;
        } else {
            m = g;
            q = D->probs;
        }
        if ((st = verify_level(sp, T, base, m, q, &k, &resampled)) != ENG_OK) return st;
        S->target_passes++;
        S->drafted += m;
        S->accepted += k;
        S->resampled += resampled;
        for (int i = 0; i < m && i <= ENG_SPEC_GAMMA_CAP; i++) {
            S->pos_drafted[i]++;
            S->pos_accepted[i] += i < k;
        }
        /* emit seq[base .. base+k], stopping at max_new or EOS */
        int emit = k + 1;
        if (emit > remaining) emit = remaining;
        for (int i = 0; i < emit; i++)
            if (sp->o.stop_at_eos && sp->seq[base + i] == eos) {
                emit = i + 1;
                done = 1;
                break;
            }
        for (int i = 0; i < emit; i++) out->v[out->n++] = sp->seq[base + i];
        if (S->n_new == 0) t_first = now_s();
        S->n_new += emit;
        committed = base + emit;
        if (committed - n_prompt >= max_new) done = 1;
        for (int i = 0; i < sp->n_lv; i++)
            if ((st = sync_back(sp, &sp->lv[i], base - 1, committed)) != ENG_OK) return st;
        /* the invariant of the story comment */
        for (int i = 0; i < sp->n_lv; i++) {
            const level *l = &sp->lv[i];
            int np = l->st->n_past, lag = l->mark ? sp->rows : i == 0 ? 0 : M ? 2 : 1;
            if (np > committed - 1 || np < committed - 1 - lag) S->invariant_violations++;
            for (int j = base - 1 - sp->rows > 0 ? base - 1 - sp->rows : 0; j < np; j++)
                if (l->hist[j] != sp->seq[j]) {
                    S->invariant_violations++;
                    break;
                }
        }
        int full = k == m;
        switch (sp->o.schedule) {
        case ENG_SPEC_HEURISTIC: gamma = full ? gamma + 2 : gamma - 1; break;
        case ENG_SPEC_AIMD: gamma = full ? gamma + 1 : gamma / 2; break;
        default: break;
        }
        if (gamma < 1) gamma = 1;
        if (gamma > sp->o.gamma_max) gamma = sp->o.gamma_max;
    }
    double t_end = now_s();
    S->total_s = t_end - t0;
    S->ttft_s = S->n_new ? t_first - t0 : 0.0;
    S->tpot_s = S->n_new > 1 ? (t_end - t_first) / (double)(S->n_new - 1) : 0.0;
    S->tokens_per_s = S->total_s > 0 ? S->n_new / S->total_s : 0.0;
    S->acceptance_rate = S->drafted ? (double)S->accepted / (double)S->drafted : 0.0;
    S->mean_accepted_len = S->target_passes ? (double)S->n_new / (double)S->target_passes : 0.0;
    if (sp->o.compare && S->base_tokens_per_s > 0) S->speedup = S->tokens_per_s / S->base_tokens_per_s;
    return ENG_OK;
}
