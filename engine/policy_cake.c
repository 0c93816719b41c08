/* policy_cake.c — CAKE, cascading and adaptive KV eviction with layer
 * preferences (Qin et al., ICLR 2025; the authors' code as published in
 * qtris123/cakekv: cake/cake_cache.py, cake/utils.py, model/modify_llama.py).
 * Layers whose prompt attention is spread out (high entropy) and shifting
 * (high variance across the last queries) get more of a shared budget.
 *
 * Rule. At the end of the prompt (the first forward call, n tokens), if
 * n > budget + window (the reference's threshold), for each layer l, with
 * W[h, i, j] the attention of the last w prompt queries (causal inside the
 * window, fp32) and B = W restricted to the m = n − w older keys:
 *   H_l = −Σ_{h,i,j<m} B·log(B + 1e-10)                    (one scalar)
 *   V_l = Σ_{h, j<m} var_i B[h, i, j]                      (unbiased, over the w queries)
 *   P_l = H_l^(1/tau1) · V_l^(1/tau2)
 *   I[h, j] = mean_i W + gamma · var_i W, pooled along j (avg, `kernel`,
 *             zero padding counted, like F.avg_pool1d)
 * The non-window budget (budget − w)·L is split b_l = trunc(P_l/ΣP · total),
 * then adjust_budgets: each b_l is clipped to m, the excess spread evenly
 * over the layers below m (the remainder +1 to the lowest indices), and the
 * total restored the same way (a shortfall added to layers below m, a
 * surplus taken from layers above 1). Layer l keeps per head the top-b_l of
 * [0, m) by I plus the window [m, n). Scores: computed in double.
 * Decode: layer l holds at most b_l + w (b_l = budget − w when the prompt
 * did not trigger); at the start of a step a head holding more keeps the
 * top-b_l of [0, n − w) by the previous query's attention pooled the same
 * way, plus the newest w (the reference scores the current query and evicts
 * after the step: the same choice under this engine's timing rule).
 * Defaults: the reference's pred_cake.py (budget 1024 per layer, window
 * included; window 32; gamma 200; kernel 5; tau1 = tau2 = 1, its fallback:
 * its tau table has no GPT-NeoX entry), pos=original.
 * Deviations: kept slots stay in position order (the reference leaves them
 * in descending-score order, so its decode-time pooling smooths over
 * score-sorted neighbours); the optional cascading mode (budgets recomputed
 * after every layer of the prompt) is not offered — its final stage is the
 * rule above. If ΣP is 0 or not finite, every layer keeps budget − w. */
#include "policy_impl.h"

#include <math.h>
#include <stdio.h>

static eng_status cake_parse(eng_policy *p, char *err, size_t n_err) {
    eng_status st;
    if ((st = pol_param_int(p, "budget", 1024, 3, 1 << 24, &p->budget, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "window", 32, 2, 1 << 16, &p->window, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_real(p, "gamma", 200.0, 0.0, 1e6, &p->gamma, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_int(p, "kernel", 5, 1, 1 << 10, &p->kernel, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_real(p, "tau1", 1.0, 1e-6, 1e6, &p->tau1, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_real(p, "tau2", 1.0, 1e-6, 1e6, &p->tau2, err, n_err)) != ENG_OK) return st;
    if ((st = pol_param_pos(p, 0, err, n_err)) != ENG_OK) return st;
    if (p->cfg.n_layer > 1024) {
        eng_errf(err, n_err, "policy 'cake': at most 1024 layers (model has %d)", p->cfg.n_layer);
        return ENG_ERR_UNSUPPORTED;
    }
    if (p->kernel % 2 == 0) {
        eng_errf(err, n_err, "policy 'cake': param 'kernel' must be odd (got %d)", p->kernel);
        return ENG_ERR_INVAL;
    }
    if (p->budget <= p->window) {
        eng_errf(err, n_err, "policy 'cake': param 'budget' (%d) must exceed 'window' (%d)", p->budget, p->window);
        return ENG_ERR_INVAL;
    }
    snprintf(p->desc, sizeof p->desc, "budget=%d,window=%d,gamma=%g,kernel=%d,tau1=%g,tau2=%g,pos=%s", p->budget,
             p->window, p->gamma, p->kernel, p->tau1, p->tau2, p->pos_shift ? "shift" : "original");
    return ENG_OK;
}

static int cake_capacity(const eng_policy *p, int n_tokens) { (void)p; return n_tokens; }

static int cake_hh(const eng_policy *p, int l) { return p->lbudget[l] >= 0 ? p->lbudget[l] : p->budget - p->window; }

static int cake_target(const eng_policy *p, int l, int h, int n) {
    (void)h;
    if (p->in_prefill) return n;
    int c = cake_hh(p, l) + p->window;
    return n > c ? c : n;
}

/* keep top-hh of [0, n - w) by the pooled score row s, plus [n - w, n) */
static int cake_keep(eng_policy *p, const float *s, int n, int hh, int32_t *keep) {
    int m = n - p->window;
    float *pooled = p->tmp + p->cap;
    pol_pool1d(s, m, p->kernel, 0, pooled);
    for (int j = 0; j < m; j++) keep[j] = j;
    int k = pol_topk(pooled, keep, m, hh, keep, p->ord);
    for (int j = m; j < n; j++) keep[k++] = j;
    return k;
}

static int cake_select(eng_policy *p, int l, int h, int n, int k, int32_t *keep) {
    (void)k;
    return cake_keep(p, p->score + ((size_t)l * p->cfg.n_head + h) * p->cap, n, cake_hh(p, l), keep);
}

/* the last query's probabilities per slot: the next step's eviction scores */
static void cake_observe(eng_policy *p, int l, int T) {
    int NH = p->cfg.n_head, cap = p->cap;
    for (int h = 0; h < NH; h++) {
        const float *pr = p->probs + ((size_t)h * T + T - 1) * cap;
        float *sc = p->score + ((size_t)l * NH + h) * cap;
        int nv = p->st->n_vis[h * T + T - 1];
        for (int j = 0; j < nv; j++) sc[j] = pr[j];
    }
}

/* add `amount` (may be negative) spread evenly over the layers below cap
 * (below_cap) or above 1 (!below_cap), the remainder +1 to the lowest
 * indices first: adjust_budgets' distribution */
static void spread(int64_t *b, int L, int64_t amount, int64_t cap, int below_cap) {
    int nv = 0;
    for (int l = 0; l < L; l++) nv += below_cap ? b[l] < cap : b[l] > 1;
    if (!nv || !amount) return;
    int64_t mag = amount < 0 ? -amount : amount, each = mag / nv, rem = mag % nv;
    int64_t sign = amount < 0 ? -1 : 1, i = 0;
    for (int l = 0; l < L; l++)
        if (below_cap ? b[l] < cap : b[l] > 1) b[l] += sign * (each + (i++ < rem));
}

void pol_cake_budgets(const double *pref, int L, int64_t total, int64_t cap, int32_t *out) {
    int64_t b[1024];
    double sum = 0;
    for (int l = 0; l < L; l++) sum += pref[l];
    for (int l = 0; l < L; l++) b[l] = sum > 0 && isfinite(sum) ? (int64_t)(pref[l] / sum * (double)total) : total / L;
    int64_t excess = 0;
    for (int l = 0; l < L; l++)
        if (b[l] > cap) excess += b[l] - cap, b[l] = cap;
    if (excess) spread(b, L, excess, cap, 1);
    int64_t have = 0;
    for (int l = 0; l < L; l++) have += b[l];
    spread(b, L, total - have, cap, total - have > 0);
    for (int l = 0; l < L; l++) out[l] = (int32_t)(b[l] < 0 ? 0 : b[l] > cap ? cap : b[l]);
}

static void cake_prefill(eng_policy *p, int l) {
    eng_state *s = p->st;
    const eng_config *c = &p->cfg;
    int NH = c->n_head, D = c->head_dim, cap = p->cap, w = p->window, L = c->n_layer;
    int n = pol_held(p, l)[0], m = n - w;   // no eviction inside the prompt: every head holds n
    if (n <= p->budget + w || p->wn[l] < w) return;
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < w; i++) p->wvis[h * w + i] = m + i + 1;
    kn_attention(p->wout, p->winq + (size_t)l * w * c->n_embd, (size_t)c->n_embd, pol_keys(p, l),
                 eng_kvcache_v(&s->kv, l), w, NH, D, cap, p->wvis, s->att_scratch, p->wprobs);
    double ent = 0, var_sum = 0;
    for (int h = 0; h < NH; h++) {
        float *ind = p->score + ((size_t)l * NH + h) * cap, *raw = p->tmp;
        for (int j = 0; j < m; j++) {
            double mean = 0, ss = 0;
            for (int i = 0; i < w; i++) {
                double a = p->wprobs[((size_t)h * w + i) * cap + j];
                mean += a;
                ent -= a * log(a + 1e-10);
            }
            mean /= w;
            for (int i = 0; i < w; i++) {
                double d = p->wprobs[((size_t)h * w + i) * cap + j] - mean;
                ss += d * d;
            }
            double var = ss / (w - 1);
            var_sum += var;
            raw[j] = (float)(mean + p->gamma * var);
        }
        pol_pool1d(raw, m, p->kernel, 0, ind);
    }
    p->pref[l] = pow(ent, 1.0 / p->tau1) * pow(var_sum, 1.0 / p->tau2);
    if (l < L - 1) return;
    // the last layer: split the budget, then compress every layer by its stored indicator
    pol_cake_budgets(p->pref, L, (int64_t)(p->budget - w) * L, m, p->lbudget);
    for (int ll = 0; ll < L; ll++)
        for (int h = 0; h < NH; h++) {
            const float *ind = p->score + ((size_t)ll * NH + h) * cap;
            for (int j = 0; j < m; j++) p->keep[j] = j;
            int k = pol_topk(ind, p->keep, m, p->lbudget[ll], p->keep, p->ord);
            for (int j = m; j < n; j++) p->keep[k++] = j;
            pol_compact(p, ll, h, p->keep, k);
        }
}

const pol_ops pol_ops_cake = {"cake", POL_AT_PREFILL | POL_NEEDS_PROBS | POL_SLOT_SCORES, cake_parse, cake_capacity,
                              cake_target, cake_select, cake_observe, cake_prefill};
