/* eng.h — the engine's shared vocabulary: status codes and the allocator hook.
 *
 * Every fallible engine function returns an eng_status and writes its results
 * through out-parameters. The detailed message (file, field, tensor name) lives
 * in the object that failed (`<object>_errmsg()`), or, for constructors that
 * fail before an object exists, in a caller-provided `char *err, size_t n_err`
 * buffer. Nothing below main() calls exit().
 *
 * All engine allocations go through eng_alloc/eng_calloc/eng_realloc/eng_free.
 * Tests use the hooks to (a) fail the N-th allocation and prove every error
 * path unwinds cleanly, and (b) count allocations around a decode loop to
 * prove that no allocation happens per token. */
#ifndef ENGINE_ENG_H
#define ENGINE_ENG_H

#include <stddef.h>
#include <stdint.h>

typedef enum eng_status {
    ENG_OK = 0,
    ENG_ERR_INVAL = -1,       /* bad argument or bad user input */
    ENG_ERR_NOMEM = -2,       /* allocation failed */
    ENG_ERR_IO = -3,          /* open/read/mmap/write failed */
    ENG_ERR_FORMAT = -4,      /* a file is malformed (JSON, safetensors, config) */
    ENG_ERR_CUDA = -5,        /* a CUDA or cuBLAS call failed */
    ENG_ERR_UNSUPPORTED = -6, /* valid input we deliberately do not handle */
    ENG_ERR_CAPACITY = -7,    /* a fixed capacity (KV cache, batch) would overflow */
    ENG_ERR_DEVICE = -8       /* the compute device could not be opened (no CUDA library, driver or device) */
} eng_status;

/* Static string for a status; never NULL. */
const char *eng_status_str(eng_status st);

/* printf into a caller's error buffer (NULL or n_err == 0 is allowed). */
void eng_errf(char *err, size_t n_err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void *eng_alloc(size_t n);
void *eng_calloc(size_t count, size_t size);
void *eng_realloc(void *p, size_t n);
void eng_free(void *p);
char *eng_strdup(const char *s);

/* Test hooks. eng_alloc_fail_after(k): the k-th next allocation (0-based)
 * fails, and every one after it too; k < 0 disables. eng_alloc_count():
 * allocations made so far (monotonic). */
void eng_alloc_fail_after(long k);
unsigned long eng_alloc_count(void);

#endif /* ENGINE_ENG_H */
