/* common.c — status strings, thread control and the elementwise residual add
 * shared by the CPU ops. Threads: one knob sets both OpenMP and OpenBLAS (the
 * OpenMP build of OpenBLAS, so both use the same pool). */
#include "kn.h"

#include <cblas.h>
#include <omp.h>

const char *kn_status_str(kn_status st) {
    switch (st) {
    case KN_OK: return "ok";
    case KN_ERR_INVAL: return "invalid argument";
    case KN_ERR_CUDA: return "CUDA error";
    case KN_ERR_UNSUPPORTED: return "unsupported";
    }
    return "unknown";
}

static int g_threads;

void kn_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    g_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int kn_get_threads(void) { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

void kn_add2(float *y, const float *a, const float *b, size_t n) {
    if (b) {
        for (size_t i = 0; i < n; i++) y[i] += a[i] + b[i];
    } else {
        for (size_t i = 0; i < n; i++) y[i] += a[i];
    }
}
