/* forward_gpu_impl.h — what forward_gpu.c (the pass) and forward_gpu_policy.c
 * (the KV policies the device cache runs itself) share: buffer alignment,
 * status mapping and the GPU_OP check that turns a failing table op into
 * "gpu forward: <op> (layer l): <backend message>" in gs->err. Internal to
 * those two files. */
#ifndef ENGINE_FORWARD_GPU_IMPL_H
#define ENGINE_FORWARD_GPU_IMPL_H

#include "forward_gpu.h"

#define GPU_ALIGN 256   /* bytes: every carved device buffer starts on this */

static inline size_t align_up(size_t n) { return (n + GPU_ALIGN - 1) & ~(size_t)(GPU_ALIGN - 1); }

static inline eng_status status_of(kn_status st) {
    switch (st) {
    case KN_OK: return ENG_OK;
    case KN_ERR_INVAL: return ENG_ERR_INVAL;
    case KN_ERR_UNSUPPORTED: return ENG_ERR_UNSUPPORTED;
    default: return ENG_ERR_CUDA;
    }
}

/* A failed op: "<op> (layer l): <backend message>" into gs->err. */
static inline eng_status op_fail(eng_gpu_state *gs, const char *op, kn_status st) {
    const char *why = gs->api->errmsg(gs->ctx);
    if (gs->layer >= 0)
        eng_errf(gs->err, sizeof gs->err, "gpu forward: %s (layer %d): %s [%s]", op, gs->layer, why ? why : "",
                 kn_status_str(st));
    else
        eng_errf(gs->err, sizeof gs->err, "gpu forward: %s: %s [%s]", op, why ? why : "", kn_status_str(st));
    return status_of(st);
}

#define GPU_OP(gs, name, call)                                 \
    do {                                                       \
        kn_status st_ = (call);                                \
        if (st_ != KN_OK) return op_fail((gs), (name), st_);   \
    } while (0)

/* forward_gpu_policy.c: the start of a step under a device-cache policy —
 * eviction (window move or h2o selection), the chunk cut to the room left
 * (*T <= want), the window back to row 0 when needed, pos=shift tables and
 * h2o score resets. *evicted: rows dropped per head. */
eng_status gpu_policy_step(eng_gpu_state *gs, int want, int *T, int32_t *evicted);

#endif /* ENGINE_FORWARD_GPU_IMPL_H */
