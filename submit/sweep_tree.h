/* sweep_tree.h — internal to the sweep parser: one read-only tree for both
 * input formats, plus the field-path bookkeeping used in every message.
 *
 * JSON (jansson) and msgpack (msgpack-c, after kv_mpack_guard) are turned
 * into the same sw_node tree, so sweep.c validates one structure and both
 * formats give the same errors and the same jobs. Strings in the tree are
 * NOT NUL-terminated and point into the parser's storage (the jansson
 * document or the caller's msgpack bytes): the tree is valid until
 * sw_tree_free and while the input buffer lives. Building the tree already
 * refuses what has no place in a sweep: map keys that are not strings,
 * duplicate keys (msgpack; jansson refuses them itself), nesting deeper than
 * KV_MPACK_MAX_DEPTH. */
#ifndef SUBMIT_SWEEP_TREE_H
#define SUBMIT_SWEEP_TREE_H

#include <stddef.h>
#include <stdint.h>

#include "job.h"

typedef enum sw_type { SW_NULL, SW_BOOL, SW_INT, SW_REAL, SW_STR, SW_ARR, SW_OBJ, SW_BIN, SW_EXT } sw_type;

typedef struct sw_key {
    const char *s;
    size_t n;
} sw_key;

typedef struct sw_node {
    sw_type type;
    int big;              /* SW_INT: an unsigned value above INT64_MAX (i is meaningless) */
    int64_t i;            /* SW_INT, SW_BOOL */
    double r;             /* SW_REAL */
    const char *s;        /* SW_STR bytes */
    size_t n;             /* SW_STR length; SW_ARR / SW_OBJ element count */
    struct sw_node *kids; /* SW_ARR items; SW_OBJ values */
    sw_key *keys;         /* SW_OBJ keys, parallel to kids */
} sw_node;

/* The field path of messages: "policies[1].recent[2]". */
typedef struct sw_path {
    const char *file; /* name used as the message prefix */
    char buf[512];
    size_t len;
    char *err;
    size_t n_err;
} sw_path;

/* Append ".key" (or "key" at the root) / "[i]"; return the old length for sw_path_pop. */
size_t sw_path_key(sw_path *p, const char *k, size_t n);
size_t sw_path_idx(sw_path *p, size_t i);
void sw_path_pop(sw_path *p, size_t old);
/* Writes "file: path: message" (or "file: message" at the root) into err
 * and returns code. */
int sw_path_fail(sw_path *p, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

typedef struct sw_tree sw_tree;

/* Parses buf as JSON (is_json 1) or msgpack (0) into a tree. Errors go
 * through p (its file name); *out is NULL on failure. */
int sw_tree_parse(sw_tree **out, const void *buf, size_t len, int is_json, sw_path *p);
const sw_node *sw_tree_root(const sw_tree *t);
void sw_tree_free(sw_tree *t);

/* "string", "integer", "real", "bool", "null", "array", "object", ... */
const char *sw_type_name(sw_type t);

/* A typed, normalized value of a sweep (integral reals are integers). */
typedef struct sw_val {
    kv_val_type type;
    int64_t i;
    double r;
    char *s; /* KV_VAL_STR, malloc'd */
} sw_val;

void sw_val_free(sw_val *v);
/* One scalar checked against ps (kind, range, choices, name rules) into *out. */
int sw_val_parse(sw_path *p, const sw_node *n, const kv_param_spec *ps, sw_val *out);
/* A non-empty array of such scalars without repeated values (*out calloc'd;
 * on failure the caller frees the *n_out entries already set). */
int sw_list_parse(sw_path *p, const sw_node *n, const kv_param_spec *ps, sw_val **out, size_t *n_out);

#endif /* SUBMIT_SWEEP_TREE_H */
