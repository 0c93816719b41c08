/* data.h — evaluation text for `kvrun ppl` and sweep jobs.
 *
 * Three layouts, chosen by what the path is:
 *   - a directory: every regular *.txt file in it, sorted by name, one
 *     document each (the PG-19 layout);
 *   - a file ending in .jsonl: one JSON object per line with a string "text"
 *     field, one document per line (blank lines skipped);
 *   - any other regular file: one plain UTF-8 text document.
 * Anything else (a file with NUL bytes, a JSONL line that is not an object
 * with "text", an empty directory) is an error naming the file and line.
 * Documents are read on demand; the returned text is owned by the dataset
 * and valid until the next eng_dataset_doc call. */
#ifndef ENGINE_DATA_H
#define ENGINE_DATA_H

#include "eng.h"

typedef struct eng_dataset eng_dataset;

eng_status eng_dataset_open(eng_dataset **out, const char *path, char *err, size_t n_err);
void eng_dataset_free(eng_dataset *d);
int eng_dataset_n_docs(const eng_dataset *d);
/* Name of document i (file name, or "<file>:<line>"). */
const char *eng_dataset_doc_name(const eng_dataset *d, int i);
eng_status eng_dataset_doc(eng_dataset *d, int i, const char **text, size_t *len);
const char *eng_dataset_errmsg(const eng_dataset *d);

#endif /* ENGINE_DATA_H */
