/* canon_json.h — canonical JSON of a kv_params (see canon_json.c). */
#ifndef SUBMIT_CANON_JSON_H
#define SUBMIT_CANON_JSON_H

#include <stddef.h>

#include "job.h"

/* *out = malloc'd '{"key":value,...}' (NULL when ps is NULL); what names
 * the field in messages. KV_ERR_INVAL for a non-finite real or bad type,
 * KV_ERR_NOMEM; the message goes to err. */
int sub_params_json(const kv_params *ps, const char *what, char **out, char *err, size_t n_err);

#endif /* SUBMIT_CANON_JSON_H */
