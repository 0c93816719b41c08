/* testutil.h — shared plumbing for the CUnit binaries: the strict exit-code
 * rule (a failed suite init counts as a failure, see
 * ../shared/docs/queue-reliability.md §5), locating fixtures, and small file
 * helpers. Each tests/test_<module>.c builds its own suites and ends with
 * `return tu_run();`. */
#ifndef TESTS_TESTUTIL_H
#define TESTS_TESTUTIL_H

#include <stddef.h>
#include <CUnit/CUnit.h>

/* Runs the registry in verbose mode, prints the summary, cleans up and returns
 * the process exit code (0 only when no failure record of any kind exists). */
int tu_run(void);

/* Path of tests/data/<rel> (uses KV_TESTDATA if set, else the source tree). */
const char *tu_data(const char *rel);
/* Path of the real Pythia tokenizer, or NULL after printing a SKIP notice. */
const char *tu_tokenizer_path(const char *who);

/* Reads a whole file into a NUL-terminated malloc'd buffer; NULL on error. */
char *tu_read_file(const char *path, size_t *len);

/* Prints "SKIP <what>: <why>" in a form the runner counts. */
void tu_skip(const char *what, const char *why);

#endif /* TESTS_TESTUTIL_H */
