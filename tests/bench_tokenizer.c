/* bench_tokenizer.c — encode speed of the C tokenizer, single-threaded, on
 * English prose, for `make bench` (ops/bench.sh). Not a test: it prints one
 * JSON object per line, to set next to ops/bench_tokenizer.py (HF `tokenizers`
 * on the same text; equal "ids_fnv" means equal ids).
 *
 *   bench_tokenizer TOKENIZER_JSON [TEXT] [REPS]
 *
 * TEXT defaults to tests/data/tokenizer/bench_prose.txt (Python's pydoc
 * topics, prose paragraphs; ops/bench_tokenizer.py --write-prose rebuilds it).
 * The whole text is encoded as one string, REPS (default 10) times after a
 * first "cold" encode by the freshly loaded tokenizer (empty word cache);
 * MB/s and tokens/s are from the median rep. A second line does the same with
 * the text encoded paragraph by paragraph (lines), as HF's encode_batch row. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "tokenizer.h"

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, n = 0, got;
    char *b = malloc(cap);
    while (b && (got = fread(b + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) { free(b); b = NULL; }
            b = nb;
        }
    }
    fclose(f);
    *len = n;
    return b;
}

/* Encodes text whole (by_line = 0) or line by line (newline kept). */
static int encode_all(eng_tokenizer *t, const char *s, size_t n, int by_line, eng_ids *ids) {
    ids->n = 0;
    if (!by_line) return eng_tokenizer_encode(t, s, n, ids) == ENG_OK ? 0 : -1;
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t l = nl ? (size_t)(nl - (s + i)) + 1 : n - i;
        if (eng_tokenizer_encode(t, s + i, l, ids) != ENG_OK) return -1;
        i += l;
    }
    return 0;
}

static int bench(const char *tok_path, const char *text_path, const char *s, size_t n, int reps, int by_line) {
    char err[512];
    eng_tokenizer *t = NULL;
    if (eng_tokenizer_load(&t, tok_path, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", err);
        return 1;
    }
    eng_ids ids = {0};
    double t0 = now_s();
    if (encode_all(t, s, n, by_line, &ids)) {
        fprintf(stderr, "bench_tokenizer: encode: %s\n", eng_tokenizer_errmsg(t));
        return 1;
    }
    double cold = now_s() - t0;
    double *times = malloc((size_t)reps * sizeof *times);
    for (int r = 0; r < reps; r++) {
        t0 = now_s();
        encode_all(t, s, n, by_line, &ids);
        times[r] = now_s() - t0;
    }
    qsort(times, (size_t)reps, sizeof *times, cmp_double);
    double med = times[reps / 2];
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < ids.n; i++)
        for (int k = 0; k < 4; k++) h = (h ^ (((uint32_t)ids.v[i] >> (8 * k)) & 0xFF)) * 0x100000001B3ull;
    printf("{\"bench\": \"%s\", \"text\": \"%s\", \"bytes\": %zu, \"tokens\": %zu, \"reps\": %d, \"threads\": 1, "
           "\"cold_MBps\": %.2f, \"MBps\": %.2f, \"tokens_per_s\": %.0f, \"ids_fnv\": \"%016llx\"}\n",
           by_line ? "tokenizer_c_lines" : "tokenizer_c", text_path, n, ids.n, reps, (double)n / cold / 1e6,
           (double)n / med / 1e6, (double)ids.n / med, (unsigned long long)h);
    fflush(stdout);
    free(times);
    eng_ids_free(&ids);
    eng_tokenizer_free(t);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_tokenizer TOKENIZER_JSON [TEXT] [REPS]\n");
        return 2;
    }
    const char *text_path = argc > 2 ? argv[2] : "tests/data/tokenizer/bench_prose.txt";
    int reps = argc > 3 ? atoi(argv[3]) : 10;
    if (reps < 1) reps = 1;
    size_t n;
    char *s = read_all(text_path, &n);
    if (!s) {
        fprintf(stderr, "bench_tokenizer: cannot read %s\n", text_path);
        return 1;
    }
    int rc = bench(argv[1], text_path, s, n, reps, 0) || bench(argv[1], text_path, s, n, reps, 1);
    free(s);
    return rc;
}
