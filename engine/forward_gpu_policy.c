/* forward_gpu_policy.c — the KV policies the device cache runs itself
 * (forward_gpu.h): full, window and streaming as a moving window of each
 * head's slab, h2o, lazy_h2o and tova with their attention scores on the
 * device. Each keeps
 * the CPU hooks' rule, timing (evict at a step's start among held rows),
 * chunking (room = cap - target) and statistics (eng_policy_account_uniform,
 * in forward_gpu.c), so results equal the CPU path's; the other policies run
 * in offload mode (forward_gpu.h). */
#include <string.h>

#include "forward_gpu_impl.h"
#include "policy.h"

#define GPU_MAX_GRAPHS 256   /* graphs one moving window may keep (one per base; a policy's capacity gives 64) */

int eng_gpu_policy_supported(const struct eng_policy *p) {
    int a, b, c, d, e;
    return !p || eng_policy_sink_recent(p, &a, &b, &c) || eng_policy_h2o_rule(p, &a, &b, &c, &d, &e) ||
           eng_policy_tova_rule(p, &a, &b);
}

/* No policy on the device cache: what eng_gpu_state_init leaves, and what a
 * failed set_policy goes back to. */
static void policy_clear(eng_gpu_state *gs) {
    gs->policy = NULL;
    gs->sink = gs->heavy = gs->interval = 0;
    gs->recent = -1;
    gs->h2o = gs->tova = gs->pos_shift = 0;
    gs->base = 0;
    gs->shift_base = -1;
    gs->pol_steps = 0;
    gs->scores_stale = 0;
    gs->needs_reset = 0;
}

/* The policy's buffers (one device and one host allocation each, kept for
 * the state's lifetime once made): pos=shift's rotated keys and tables,
 * the attention-score policies' scores, probs and keep lists. */
static eng_status policy_buffers(eng_gpu_state *gs, int shift_on, int h2o) {
    const eng_config *c = &gs->model->cfg;
    size_t rows = (size_t)c->n_head * gs->cap, R2 = (size_t)c->n_rot / 2;
    if (shift_on && !gs->d_pol) {
        size_t bytes = align_up(rows * c->head_dim * sizeof(float)) + 2 * align_up(rows * R2 * sizeof(float)) +
                       align_up(rows * sizeof(int32_t));
        kn_status st = gs->api->mem_alloc(gs->ctx, &gs->d_pol, bytes);
        if (st == KN_OK && !(gs->h_shift_pos = eng_alloc(rows * sizeof(int32_t)))) {
            gs->api->mem_free(gs->ctx, gs->d_pol);
            gs->d_pol = NULL;
            eng_errf(gs->err, sizeof gs->err, "set_policy: out of host memory for pos=shift rows");
            return ENG_ERR_NOMEM;
        }
        if (st != KN_OK) {
            gs->d_pol = NULL;
            eng_errf(gs->err, sizeof gs->err, "set_policy: %.1f MiB of pos=shift buffers: %s",
                     (double)bytes / (1 << 20), gs->api->errmsg(gs->ctx));
            return status_of(st);
        }
        char *q = gs->d_pol;
        gs->ks = (float *)q;
        q += align_up(rows * c->head_dim * sizeof(float));
        gs->shift_cos = (float *)q;
        q += align_up(rows * R2 * sizeof(float));
        gs->shift_sin = (float *)q;
        q += align_up(rows * R2 * sizeof(float));
        gs->shift_pos = (int32_t *)q;
    }
    if (h2o && !gs->d_h2o) {
        size_t LH = (size_t)c->n_layer * c->n_head, cap = (size_t)gs->cap;
        size_t bytes = align_up(LH * cap * sizeof(float)) + align_up((size_t)c->n_head * gs->n_batch * cap * sizeof(float)) +
                       align_up(LH * cap * sizeof(int32_t)) + align_up(LH * sizeof(int32_t));
        size_t hbytes = LH * cap * sizeof(float) + LH * cap * sizeof(int32_t) + LH * sizeof(int32_t) + cap * sizeof(int32_t);
        kn_status st = gs->api->mem_alloc(gs->ctx, &gs->d_h2o, bytes);
        if (st == KN_OK && !(gs->h_h2o = eng_alloc(hbytes))) {
            gs->api->mem_free(gs->ctx, gs->d_h2o);
            gs->d_h2o = NULL;
            eng_errf(gs->err, sizeof gs->err, "set_policy: out of host memory for %.1f MiB of scores",
                     (double)hbytes / (1 << 20));
            return ENG_ERR_NOMEM;
        }
        if (st != KN_OK) {
            gs->d_h2o = NULL;
            eng_errf(gs->err, sizeof gs->err, "set_policy: %.1f MiB of attention-score buffers: %s",
                     (double)bytes / (1 << 20), gs->api->errmsg(gs->ctx));
            return status_of(st);
        }
        char *q = gs->d_h2o;
        gs->d_score = (float *)q;
        q += align_up(LH * cap * sizeof(float));
        gs->d_probs = (float *)q;
        q += align_up((size_t)c->n_head * gs->n_batch * cap * sizeof(float));
        gs->d_keep = (int32_t *)q;
        q += align_up(LH * cap * sizeof(int32_t));
        gs->d_nkeep = (int32_t *)q;
        gs->h_score = gs->h_h2o;
        gs->h_keep = (int32_t *)(gs->h_score + LH * cap);
        gs->h_nkeep = gs->h_keep + LH * cap;
        gs->h_ord = gs->h_nkeep + LH;
    }
    return ENG_OK;
}

eng_status eng_gpu_state_set_policy(eng_gpu_state *gs, struct eng_policy *p) {
    const eng_config *c = &gs->model->cfg;
    int sink = 0, recent = -1, shift = 0, heavy = 0, h2o = 0, interval = 0, tova = 0;
    if (gs->n_past != 0 || gs->cap == 0) {
        eng_errf(gs->err, sizeof gs->err, "set_policy: %s", gs->cap ? "the state already holds tokens"
                                                                     : "offload mode: the host state runs the policy");
        return ENG_ERR_INVAL;
    }
    if (p && (!eng_policy_fits(p, c) || eng_policy_attached(p))) {
        eng_errf(gs->err, sizeof gs->err, "set_policy: policy '%s' %s", eng_policy_name(p),
                 eng_policy_attached(p) ? "is attached to a CPU state" : "was created for another model shape");
        return ENG_ERR_INVAL;
    }
    if (p && (tova = eng_policy_tova_rule(p, &heavy, &shift)))   /* as h2o with budget = heavy: sink 0, recent 0 */
        h2o = 1, sink = 0, recent = 0;
    else if (p && !eng_policy_sink_recent(p, &sink, &recent, &shift) &&
             !(h2o = eng_policy_h2o_rule(p, &sink, &heavy, &recent, &interval, &shift))) {
        eng_errf(gs->err, sizeof gs->err, "set_policy: '%s' does not run on the device cache (offload mode does it, "
                 "engine/fwd.h)", eng_policy_name(p));
        return ENG_ERR_UNSUPPORTED;
    }
    if (h2o && (int64_t)sink + heavy + recent >= gs->cap) h2o = tova = 0, recent = -1;   /* never evicts: as full */
    if (!h2o && recent >= 0 && (int64_t)sink + recent >= gs->cap) recent = -1;   /* never evicts in this capacity */
    int shift_on = shift && c->n_rot > 0, slides = !h2o && recent >= 0;
    /* graphs captured so far bake the previous policy's offsets and op mix: drop them */
    gs->api->graph_free(gs->ctx, gs->graph);
    gs->graph = NULL;
    for (int i = 0; gs->graphs && i < gs->cap; i++) gs->api->graph_free(gs->ctx, gs->graphs[i]);
    eng_free(gs->graphs);
    gs->graphs = NULL;
    gs->n_graphs = 0;
    gs->graph_warm = 0;   /* the new op mix runs eagerly once before a capture */
    policy_clear(gs);
    eng_status st = policy_buffers(gs, shift_on, h2o);
    if (st != ENG_OK) return st;   /* the state is left with no policy */
    gs->policy = p;
    gs->h2o = h2o;
    gs->tova = tova;
    gs->heavy = heavy;
    gs->interval = h2o ? interval : 0;
    gs->scores_stale = h2o;
    gs->sink = sink;
    gs->recent = recent;
    gs->pos_shift = shift_on;
    gs->graph_on = gs->graph_capable;
    if (!gs->graph_capable) return ENG_OK;   /* graph_status keeps the reason */
    if (slides) {   /* the window moves: one graph per base it can take (its offsets are baked in) */
        int bases = gs->cap - (sink + recent);
        if (bases > GPU_MAX_GRAPHS) {
            gs->graph_on = 0;
            eng_errf(gs->graph_status, sizeof gs->graph_status,
                     "off (the window can take %d positions, more than %d graphs; size n_ctx by eng_policy_capacity)",
                     bases, GPU_MAX_GRAPHS);
        } else if (!(gs->graphs = eng_calloc((size_t)gs->cap, sizeof *gs->graphs))) {
            gs->graph_on = 0;
            eng_errf(gs->graph_status, sizeof gs->graph_status, "off (no host memory for %d graph slots)", gs->cap);
        } else {
            eng_errf(gs->graph_status, sizeof gs->graph_status, "on (one graph per window position)");
        }
    } else {
        eng_errf(gs->graph_status, sizeof gs->graph_status, "on");
    }
    return ENG_OK;
}

/* Rows [src, src + rows) -> dst in every head of every layer's K and V:
 * one kv_move over the L·NH heads of each (the layers' slabs are
 * contiguous, keys first, then values). */
static eng_status move_rows(eng_gpu_state *gs, int src, int dst, int rows) {
    const eng_config *c = &gs->model->cfg;
    size_t slab = (size_t)c->n_head * gs->cap * c->head_dim;
    gs->layer = -1;
    GPU_OP(gs, "kv_move", gs->api->kv_move(gs->ctx, gs->d_kv, gs->d_kv + (size_t)c->n_layer * slab,
                                           c->n_layer * c->n_head, c->head_dim, gs->cap, src, dst, rows));
    return ENG_OK;
}

/* h2o's eviction at a step's start: the accumulated scores of every
 * (layer, head) come down, the policy's own selection picks the kept rows
 * (ascending), and one kv_compact over all layers' heads moves K, V and
 * the scores; the stale score tail is zeroed so new rows start at 0. */
static eng_status h2o_evict(eng_gpu_state *gs, int32_t budget) {
    const kn_cuda_api *A = gs->api;
    const eng_config *c = &gs->model->cfg;
    size_t LH = (size_t)c->n_layer * c->n_head, cap = (size_t)gs->cap;
    size_t slab = (size_t)c->n_head * cap * c->head_dim;
    gs->layer = -1;
    GPU_OP(gs, "download h2o scores", A->copy_d2h(gs->ctx, gs->h_score, gs->d_score, LH * cap * sizeof(float)));
    for (size_t lh = 0; lh < LH; lh++)
        gs->h_nkeep[lh] = eng_policy_h2o_select(gs->policy, gs->h_score + lh * cap, gs->n_held, gs->h_keep + lh * cap,
                                                gs->h_ord);
    GPU_OP(gs, "upload h2o keep", A->copy_h2d(gs->ctx, gs->d_keep, gs->h_keep, LH * cap * sizeof(int32_t)));
    GPU_OP(gs, "upload h2o n_keep", A->copy_h2d(gs->ctx, gs->d_nkeep, gs->h_nkeep, LH * sizeof(int32_t)));
    GPU_OP(gs, "kv_compact h2o", A->kv_compact(gs->ctx, gs->d_kv, gs->d_kv + (size_t)c->n_layer * slab, gs->d_score,
                                               NULL, gs->d_keep, gs->d_nkeep, (int)LH, c->head_dim, gs->cap));
    GPU_OP(gs, "fill_rows h2o scores", A->fill_rows(gs->ctx, gs->d_score, (int)LH, cap, budget, gs->cap, 0.0f));
    return ENG_OK;
}

/* tova's eviction: each layer's score row (the head mean of the last
 * query's attention, written after that layer's attention) comes down, the
 * policy's selection picks one kept set per layer, every head of the layer
 * keeps it; scores are rewritten at the next attention, so they are not
 * compacted. */
static eng_status tova_evict(eng_gpu_state *gs) {
    const kn_cuda_api *A = gs->api;
    const eng_config *c = &gs->model->cfg;
    size_t L = (size_t)c->n_layer, NH = (size_t)c->n_head, cap = (size_t)gs->cap;
    size_t slab = NH * cap * c->head_dim;
    gs->layer = -1;
    GPU_OP(gs, "download tova scores", A->copy_d2h(gs->ctx, gs->h_score, gs->d_score, L * cap * sizeof(float)));
    for (size_t l = 0; l < L; l++) {
        int32_t *k0 = gs->h_keep + l * NH * cap;
        int got = eng_policy_tova_select(gs->policy, gs->h_score + l * cap, gs->n_held, k0, gs->h_ord);
        for (size_t h = 0; h < NH; h++) {
            if (h) memcpy(k0 + h * cap, k0, (size_t)got * sizeof(int32_t));
            gs->h_nkeep[l * NH + h] = got;
        }
    }
    GPU_OP(gs, "upload tova keep", A->copy_h2d(gs->ctx, gs->d_keep, gs->h_keep, L * NH * cap * sizeof(int32_t)));
    GPU_OP(gs, "upload tova n_keep", A->copy_h2d(gs->ctx, gs->d_nkeep, gs->h_nkeep, L * NH * sizeof(int32_t)));
    GPU_OP(gs, "kv_compact tova", A->kv_compact(gs->ctx, gs->d_kv, gs->d_kv + L * slab, NULL, NULL, gs->d_keep,
                                                gs->d_nkeep, (int)(L * NH), c->head_dim, gs->cap));
    return ENG_OK;
}

/* The start of a step (forward_gpu_impl.h): h2o/lazy_h2o/tova evict by
 * their scores (h2o_evict, tova_evict); window/streaming by the CPU hooks'
 * rule (policy_window.c) — a head holding n > sink + recent keeps [0, sink)
 * and the last `recent` — done by moving the sink rows up over the evicted
 * ones and advancing base; then the chunk is cut to the room left (as
 * eng_policy_room), and the window goes back to row 0 if the chunk would
 * pass the slab's end. *evicted: rows dropped per head. */
eng_status gpu_policy_step(eng_gpu_state *gs, int want, int *T, int32_t *evicted) {
    *evicted = 0;
    int32_t budget = gs->h2o ? gs->sink + gs->heavy + gs->recent : gs->sink + gs->recent;
    if (gs->scores_stale) {   /* a new sequence: every score back to 0 */
        const eng_config *c = &gs->model->cfg;
        GPU_OP(gs, "fill_rows h2o scores", gs->api->fill_rows(gs->ctx, gs->d_score, c->n_layer * c->n_head,
                                                             (size_t)gs->cap, 0, gs->cap, 0.0f));
        gs->scores_stale = 0;
    }
    /* lazy_h2o (engine/policy_h2o.c lazy_target): only at steps that are multiples of the interval, or when
     * the cache would outgrow budget + interval */
    int due = !gs->interval || (gs->pol_steps > 0 && gs->pol_steps % gs->interval == 0) ||
              gs->n_held + 1 > budget + gs->interval;
    if (gs->h2o && gs->n_held > budget && due) {
        eng_status st = gs->tova ? tova_evict(gs) : h2o_evict(gs, budget);
        if (st != ENG_OK) return st;
        *evicted = gs->n_held - budget;
        gs->n_held = budget;
    } else if (!gs->h2o && gs->recent >= 0 && gs->n_held > budget) {
        int32_t e = gs->n_held - budget;
        if (gs->sink > 0) {
            eng_status st = move_rows(gs, gs->base, gs->base + e, gs->sink);
            if (st != ENG_OK) return st;
        }
        gs->base += e;
        gs->n_held = budget;
        *evicted = e;
    }
    int room = gs->cap - gs->n_held;
    if (room <= 0) {
        eng_errf(gs->err, sizeof gs->err, "forward: KV cache of %d slots has no room after policy '%s'", gs->cap,
                 eng_policy_name(gs->policy));
        return ENG_ERR_CAPACITY;
    }
    *T = want < room ? want : room;
    if (gs->base + gs->n_held + *T > gs->cap) {
        eng_status st = move_rows(gs, gs->base, 0, gs->n_held);
        if (st != ENG_OK) return st;
        gs->base = 0;
    }
    if (gs->pos_shift && gs->shift_base < 0) {   /* once: every row j of every head rotated by j, as the CPU does */
        const eng_config *c = &gs->model->cfg;
        int rows = c->n_head * gs->cap;
        for (int i = 0; i < rows; i++) gs->h_shift_pos[i] = i % gs->cap;
        GPU_OP(gs, "upload pos=shift rows", gs->api->copy_h2d(gs->ctx, gs->shift_pos, gs->h_shift_pos,
                                                             (size_t)rows * sizeof(int32_t)));
        GPU_OP(gs, "rope_table pos=shift", gs->api->rope_table(gs->ctx, gs->shift_cos, gs->shift_sin, gs->inv_freq,
                                                               gs->shift_pos, rows, c->n_rot));
        gs->shift_base = 0;
    }
    return ENG_OK;
}
