/* bench_util.h — the two helpers every bench program (tests/bench_*.c)
 * needs: a monotonic clock in seconds and a qsort comparator for medians. */
#ifndef TESTS_BENCH_UTIL_H
#define TESTS_BENCH_UTIL_H

#include <time.h>

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif /* TESTS_BENCH_UTIL_H */
