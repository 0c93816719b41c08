/* testutil.h — shared plumbing for the CUnit binaries: the strict exit-code
 * rule (a failed suite init counts as a failure, see
 * ../shared/docs/queue-reliability.md §5), locating fixtures, and small file
 * helpers. Each tests/test_<module>.c builds its own suites and ends with
 * `return tu_run();`. */
#ifndef TESTS_TESTUTIL_H
#define TESTS_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
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

/* Whitespace-separated integers of tests/data/<rel> into v (at most cap);
 * returns how many, or -1 if the file cannot be read. */
int tu_read_ids(const char *rel, int32_t *v, int cap);

/* Loads tests/data/models/<name> with weights converted to fp32; NULL after
 * printing why. */
struct eng_model *tu_load_model(const char *name);

/* A KV policy from a spec "name:k=v,..." for model m; NULL after printing why. */
struct eng_policy *tu_policy(const struct eng_model *m, const char *spec);
/* A state for n tokens under p (NULL: no policy; capacity from the policy),
 * chunks of n_batch, p attached; NULL on failure. */
struct eng_state *tu_state(const struct eng_model *m, struct eng_policy *p, int n, int n_batch);

/* Prints "SKIP <what>: <why>" in a form the runner counts. */
void tu_skip(const char *what, const char *why);

#endif /* TESTS_TESTUTIL_H */
