/* eng.c — status strings, error formatting and the allocation hook shared by
 * every engine module (see eng.h for why allocation goes through here). */
#include "eng.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *eng_status_str(eng_status st) {
    switch (st) {
    case ENG_OK: return "ok";
    case ENG_ERR_INVAL: return "invalid argument";
    case ENG_ERR_NOMEM: return "out of memory";
    case ENG_ERR_IO: return "I/O error";
    case ENG_ERR_FORMAT: return "malformed file";
    case ENG_ERR_CUDA: return "CUDA error";
    case ENG_ERR_UNSUPPORTED: return "unsupported";
    case ENG_ERR_CAPACITY: return "capacity exceeded";
    case ENG_ERR_DEVICE: return "device unavailable";
    }
    return "unknown status";
}

void eng_errf(char *err, size_t n_err, const char *fmt, ...) {
    if (!err || n_err == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n_err, fmt, ap);
    va_end(ap);
}

/* Not thread-safe by design: the hooks are for single-threaded tests, and
 * the engine never allocates inside its OpenMP regions. */
static long g_fail_countdown = -1;
static unsigned long g_alloc_count;

static int alloc_should_fail(void) {
    g_alloc_count++;
    if (g_fail_countdown < 0) return 0;
    if (g_fail_countdown == 0) return 1;
    g_fail_countdown--;
    return 0;
}

void eng_alloc_fail_after(long k) { g_fail_countdown = k; }
unsigned long eng_alloc_count(void) { return g_alloc_count; }

void *eng_alloc(size_t n) {
    if (alloc_should_fail()) return NULL;
    return malloc(n ? n : 1);
}

void *eng_calloc(size_t count, size_t size) {
    if (alloc_should_fail()) return NULL;
    if (count == 0 || size == 0) return calloc(1, 1);
    return calloc(count, size);
}

void *eng_realloc(void *p, size_t n) {
    if (alloc_should_fail()) return NULL;
    return realloc(p, n ? n : 1);
}

void eng_free(void *p) { free(p); }

char *eng_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = eng_alloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
