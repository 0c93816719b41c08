/* fuzz_dataset.c — libFuzzer target for the JSONL dataset reader (data.c):
 * the input is written to a temporary .jsonl file and opened; every document
 * that opens must be readable, and nothing may crash or leak. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len);
int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len) {
    char path[] = "/tmp/kvfuzz-XXXXXX.jsonl";
    int fd = mkstemps(path, 6);
    if (fd < 0) return 0;
    if (write(fd, buf, len) != (ssize_t)len) {
        close(fd);
        unlink(path);
        return 0;
    }
    close(fd);
    eng_dataset *d = NULL;
    char err[512];
    if (eng_dataset_open(&d, path, err, sizeof err) == 0) {
        for (int i = 0; i < eng_dataset_n_docs(d); i++) {
            const char *t;
            size_t n;
            if (eng_dataset_doc(d, i, &t, &n) != 0 || strlen(t) > n) abort();
        }
        eng_dataset_free(d);
    } else if (!strstr(err, "kvfuzz")) {
        abort();   /* every error names the file */
    }
    unlink(path);
    return 0;
}
