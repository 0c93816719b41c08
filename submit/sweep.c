/* sweep.c — a sweep file turned into the list of jobs it stands for.
 *
 * A sweep names models, dataset slices, tasks, KV policies (each task and
 * policy object may hold lists, which expand as a grid), an optional
 * spec-decoding block (a grid too, applied to "spec" tasks only), seeds and
 * a repeat count; the jobs are the cartesian product of all of it, in a
 * fixed order. Schema and order: docs/sweep.md.
 *
 * The file is outside input. sweep_tree.c parses JSON or msgpack into one
 * tree (size cap, guard, duplicate keys); this file validates that tree
 * completely against the catalog of tasks and policies (job_catalog.c)
 * before anything is kept: unknown keys, wrong types, empty lists, bad
 * names, ranges, duplicate list values, and the job-count limit, each
 * reported with the field path ("sweep.json: policies[1].recent[2]:
 * expected integer, got string"). Values are normalized on the way in
 * (integral reals become integers), so the same sweep written as 4 or 4.0,
 * in JSON or msgpack, in any key order, yields the same jobs and job_ids.
 *
 * Jobs are not materialized: kv_sweep_job(i) computes the i-th one from
 * mixed-radix digits. kv_sweep_to_msgpack writes the validated sweep back in
 * canonical msgpack (sorted keys, single-value lists as scalars), which
 * parses to the same jobs. */
#include "sweep.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpack_write.h"
#include "sweep_tree.h"

#define JOB_CAP ((uint64_t)KV_SWEEP_MAX_JOBS + 1) /* saturation point of every count */

typedef struct sw_axis {
    char key[64];
    size_t n;
    sw_val *v;
} sw_axis;

typedef struct sw_obj {
    char name[64];    /* task or policy name; "" for the spec block */
    size_t n_axes;
    sw_axis *axes;    /* sorted by key */
    uint64_t n_grid;  /* product of the axis lengths (saturated at JOB_CAP) */
    double n_grid_d;  /* the same, unsaturated, for messages */
    uint64_t n_total; /* n_grid, times the spec grid for a "spec" task */
} sw_obj;

typedef struct sw_dataset {
    char *name;
    int64_t doc, offset, tokens;
} sw_dataset;

struct kv_sweep {
    char name[KV_NAME_MAX];
    size_t n_models;
    sw_val *models;
    size_t n_datasets;
    sw_dataset *datasets;
    size_t n_tasks;
    sw_obj *tasks;
    uint64_t *task_end; /* prefix sums of n_total */
    size_t n_policies;
    sw_obj *policies;
    uint64_t *policy_end;
    int has_spec;
    sw_obj spec;
    size_t n_seeds;
    sw_val *seeds;
    int64_t repeats;
    size_t n_jobs;
};

/* ---- small helpers ----------------------------------------------------- */

static uint64_t cap_mul(uint64_t a, uint64_t b) {
    uint64_t r = a * b; // both <= JOB_CAP, no wrap
    return r > JOB_CAP ? JOB_CAP : r;
}

static void obj_free(sw_obj *o) {
    for (size_t a = 0; a < o->n_axes && o->axes; a++) {
        for (size_t k = 0; k < o->axes[a].n && o->axes[a].v; k++) sw_val_free(&o->axes[a].v[k]);
        free(o->axes[a].v);
    }
    free(o->axes);
    o->axes = NULL;
    o->n_axes = 0;
}

void kv_sweep_free(kv_sweep *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_models && s->models; i++) sw_val_free(&s->models[i]);
    free(s->models);
    for (size_t i = 0; i < s->n_datasets && s->datasets; i++) free(s->datasets[i].name);
    free(s->datasets);
    for (size_t i = 0; i < s->n_tasks && s->tasks; i++) obj_free(&s->tasks[i]);
    free(s->tasks);
    free(s->task_end);
    for (size_t i = 0; i < s->n_policies && s->policies; i++) obj_free(&s->policies[i]);
    free(s->policies);
    free(s->policy_end);
    obj_free(&s->spec);
    free(s->seeds);
    free(s);
}

/* 1 when the key bytes equal the C string. */
static int key_is(const sw_key *k, const char *name) {
    return k->n == strlen(name) && memcmp(k->s, name, k->n) == 0;
}

/* Copies a key into a C string when it can possibly be a known name. */
static int key_copy(const sw_key *k, char *dst, size_t cap) {
    if (k->n >= cap || memchr(k->s, '\0', k->n)) return 0;
    memcpy(dst, k->s, k->n);
    dst[k->n] = '\0';
    return 1;
}

/* "a, b, c" from a spec list, for "allowed:" hints. */
static void spec_names(const kv_param_spec *ps, char *buf, size_t cap) {
    size_t len = 0;
    buf[0] = '\0';
    for (; ps && ps->key && len + 1 < cap; ps++) {
        int w = snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", ps->key);
        if (w < 0) break;
        len += (size_t)w;
    }
    if (!buf[0]) snprintf(buf, cap, "none");
}

/* ---- grid objects (tasks, policies, spec) ------------------------------ */

/* A parameter: one value, or a list of values that becomes a grid axis. */
static int axis_parse(sw_path *p, const sw_node *n, const kv_param_spec *ps, sw_axis *ax) {
    snprintf(ax->key, sizeof ax->key, "%s", ps->key);
    if (n->type == SW_OBJ)
        return sw_path_fail(p, KV_ERR_INVAL, "expected a value or a list of values, got object");
    if (n->type != SW_ARR) {
        ax->v = calloc(1, sizeof *ax->v);
        if (!ax->v) return sw_path_fail(p, KV_ERR_NOMEM, "out of memory");
        ax->n = 1;
        return sw_val_parse(p, n, ps, &ax->v[0]);
    }
    return sw_list_parse(p, n, ps, &ax->v, &ax->n);
}

static int axis_cmp(const void *x, const void *y) {
    return strcmp(((const sw_axis *)x)->key, ((const sw_axis *)y)->key);
}

/* name_key: "task" / "policy", or NULL for the spec block. */
static int obj_parse(sw_path *p, const sw_node *n, const char *name_key, sw_obj *o) {
    const kv_param_spec *params;
    const char *kind = name_key ? name_key : "spec";
    if (n->type != SW_OBJ) return sw_path_fail(p, KV_ERR_INVAL, "expected object, got %s", sw_type_name(n->type));
    size_t name_at = n->n;
    if (name_key) {
        for (size_t i = 0; i < n->n; i++)
            if (key_is(&n->keys[i], name_key)) name_at = i;
        if (name_at == n->n) return sw_path_fail(p, KV_ERR_INVAL, "missing key \"%s\"", name_key);
        const sw_node *nm = &n->kids[name_at];
        size_t old = sw_path_key(p, name_key, strlen(name_key));
        if (nm->type != SW_STR) return sw_path_fail(p, KV_ERR_INVAL, "expected string, got %s", sw_type_name(nm->type));
        int ok = nm->n < sizeof o->name && !memchr(nm->s, '\0', nm->n);
        if (ok) {
            memcpy(o->name, nm->s, nm->n);
            o->name[nm->n] = '\0';
        }
        int is_task = strcmp(name_key, "task") == 0;
        if (!ok || !(is_task ? kv_task_known(o->name) : kv_policy_known(o->name))) {
            char list[400] = "";
            size_t len = 0;
            for (int i = 0;; i++) {
                const char *nm_i = is_task ? kv_task_name(i) : kv_policy_name(i);
                if (!nm_i) break;
                int w = snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", nm_i);
                if (w < 0 || (size_t)w >= sizeof list - len) break;
                len += (size_t)w;
            }
            return sw_path_fail(p, KV_ERR_INVAL, "unknown %s \"%.*s\" (known: %s)", name_key,
                                (int)(nm->n > 40 ? 40 : nm->n), kv_utf8_valid(nm->s, nm->n) ? nm->s : "?", list);
        }
        sw_path_pop(p, old);
        params = is_task ? kv_task_params(o->name) : kv_policy_params(o->name);
    } else {
        params = kv_spec_params();
    }
    size_t n_axes = n->n - (name_key ? 1 : 0);
    if (n_axes > KV_MAX_PARAMS)
        return sw_path_fail(p, KV_ERR_LIMIT, "%zu parameters, the limit is %d", n_axes, KV_MAX_PARAMS);
    o->axes = n_axes ? calloc(n_axes, sizeof *o->axes) : NULL;
    if (n_axes && !o->axes) return sw_path_fail(p, KV_ERR_NOMEM, "out of memory");
    o->n_grid = 1;
    o->n_grid_d = 1;
    for (size_t i = 0; i < n->n; i++) {
        if (i == name_at) continue;
        char key[64];
        size_t old = sw_path_key(p, n->keys[i].s, n->keys[i].n);
        const kv_param_spec *ps = NULL;
        if (key_copy(&n->keys[i], key, sizeof key)) {
            for (const kv_param_spec *q = params; q && q->key && !ps; q++)
                if (strcmp(q->key, key) == 0) ps = q;
        }
        if (!ps) {
            char allowed[400];
            spec_names(params, allowed, sizeof allowed);
            if (name_key)
                return sw_path_fail(p, KV_ERR_INVAL, "unknown parameter for %s \"%s\" (allowed: %s)", kind, o->name,
                                    allowed);
            return sw_path_fail(p, KV_ERR_INVAL, "unknown key (allowed: %s)", allowed);
        }
        sw_axis *ax = &o->axes[o->n_axes++];
        int rc = axis_parse(p, &n->kids[i], ps, ax);
        if (rc) return rc;
        sw_path_pop(p, old);
        o->n_grid = cap_mul(o->n_grid, ax->n);
        o->n_grid_d *= (double)ax->n;
    }
    if (o->n_axes > 1) qsort(o->axes, o->n_axes, sizeof *o->axes, axis_cmp);
    if (!name_key) {
        int has_draft = 0;
        for (size_t a = 0; a < o->n_axes; a++) has_draft |= strcmp(o->axes[a].key, "draft") == 0;
        if (!has_draft) return sw_path_fail(p, KV_ERR_INVAL, "missing key \"draft\"");
    }
    o->n_total = o->n_grid;
    return KV_OK;
}

/* A list of grid objects: "tasks" or "policies". */
static int objs_parse(sw_path *p, const sw_node *n, const char *name_key, sw_obj **out, size_t *n_out) {
    if (n->type != SW_ARR) return sw_path_fail(p, KV_ERR_INVAL, "expected array, got %s", sw_type_name(n->type));
    if (n->n == 0) return sw_path_fail(p, KV_ERR_INVAL, "empty list");
    if (n->n > KV_SWEEP_MAX_JOBS)
        return sw_path_fail(p, KV_ERR_LIMIT, "%zu entries: the grid would exceed %d jobs", n->n, KV_SWEEP_MAX_JOBS);
    *out = calloc(n->n, sizeof **out);
    if (!*out) return sw_path_fail(p, KV_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n->n; i++) {
        size_t old = sw_path_idx(p, i);
        *n_out = i + 1;
        int rc = obj_parse(p, &n->kids[i], name_key, &(*out)[i]);
        if (rc) return rc;
        sw_path_pop(p, old);
    }
    return KV_OK;
}

/* ---- datasets ---------------------------------------------------------- */

static const kv_param_spec ds_name = {"name", KV_PK_NAME, 0, 0, 0, 0, NULL, "file or folder under the data root"};
static const kv_param_spec ds_int[3] = {
    {"doc", KV_PK_INT, 0, 9.2e18, 0, 0, NULL, "document index"},
    {"offset", KV_PK_INT, 0, 9.2e18, 0, 0, NULL, "token offset in the document"},
    {"tokens", KV_PK_INT, 0, 9.2e18, 0, 0, NULL, "tokens evaluated (0: to the end)"}};

static int dataset_parse(sw_path *p, const sw_node *n, sw_dataset *d) {
    if (n->type != SW_OBJ) return sw_path_fail(p, KV_ERR_INVAL, "expected object, got %s", sw_type_name(n->type));
    int have_name = 0;
    for (size_t i = 0; i < n->n; i++) {
        size_t old = sw_path_key(p, n->keys[i].s, n->keys[i].n);
        const sw_node *v = &n->kids[i];
        sw_val x;
        int rc;
        if (key_is(&n->keys[i], "name")) {
            if ((rc = sw_val_parse(p, v, &ds_name, &x))) return rc;
            d->name = x.s;
            have_name = 1;
        } else {
            int k = 0;
            while (k < 3 && !key_is(&n->keys[i], ds_int[k].key)) k++;
            if (k == 3) return sw_path_fail(p, KV_ERR_INVAL, "unknown key (allowed: name, doc, offset, tokens)");
            if ((rc = sw_val_parse(p, v, &ds_int[k], &x))) return rc;
            *(k == 0 ? &d->doc : k == 1 ? &d->offset : &d->tokens) = x.i;
        }
        sw_path_pop(p, old);
    }
    if (!have_name) return sw_path_fail(p, KV_ERR_INVAL, "missing key \"name\"");
    return KV_OK;
}

static int datasets_parse(sw_path *p, const sw_node *n, kv_sweep *s) {
    if (n->type != SW_ARR) return sw_path_fail(p, KV_ERR_INVAL, "expected array, got %s", sw_type_name(n->type));
    if (n->n == 0) return sw_path_fail(p, KV_ERR_INVAL, "empty list");
    if (n->n > KV_SWEEP_MAX_JOBS)
        return sw_path_fail(p, KV_ERR_LIMIT, "%zu entries: the grid would exceed %d jobs", n->n, KV_SWEEP_MAX_JOBS);
    s->datasets = calloc(n->n, sizeof *s->datasets);
    if (!s->datasets) return sw_path_fail(p, KV_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n->n; i++) {
        size_t old = sw_path_idx(p, i);
        s->n_datasets = i + 1;
        int rc = dataset_parse(p, &n->kids[i], &s->datasets[i]);
        if (rc) return rc;
        sw_path_pop(p, old);
    }
    return KV_OK;
}

/* ---- the whole sweep --------------------------------------------------- */

enum { T_SWEEP, T_MODELS, T_DATASETS, T_TASKS, T_POLICIES, T_SPEC, T_SEEDS, T_REPEATS, T_COUNT };
static const char *const top_keys[T_COUNT] = {"sweep", "models", "datasets", "tasks",
                                              "policies", "spec", "seeds", "repeats"};

static const kv_param_spec top_name = {"sweep", KV_PK_NAME, 0, 0, 0, 0, NULL, "sweep name"};
static const kv_param_spec top_model = {"models", KV_PK_NAME, 0, 0, 0, 0, NULL, "model name"};
static const kv_param_spec top_seed = {"seeds", KV_PK_INT, 0, 9.2e18, 0, 0, NULL, "seed"};
static const kv_param_spec top_repeats = {"repeats", KV_PK_INT, 1, KV_SWEEP_MAX_JOBS, 0, 0, NULL, "repeats"};

/* Sums of the per-object counts, the prefix table, and the job total. */
static int sweep_count(sw_path *p, kv_sweep *s) {
    double total_d = (double)s->n_models * (double)s->n_datasets * (double)s->n_seeds * (double)s->repeats;
    double tasks_d = 0, policies_d = 0;
    uint64_t tp = 0, pp = 0;
    s->task_end = malloc(s->n_tasks * sizeof *s->task_end);
    s->policy_end = malloc(s->n_policies * sizeof *s->policy_end);
    if (!s->task_end || !s->policy_end) return sw_path_fail(p, KV_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < s->n_tasks; i++) {
        sw_obj *o = &s->tasks[i];
        double d = o->n_grid_d;
        if (strcmp(o->name, "spec") == 0) {
            o->n_total = cap_mul(o->n_grid, s->spec.n_grid);
            d *= s->spec.n_grid_d;
        }
        tp += o->n_total;
        if (tp > JOB_CAP) tp = JOB_CAP;
        s->task_end[i] = tp;
        tasks_d += d;
    }
    for (size_t i = 0; i < s->n_policies; i++) {
        pp += s->policies[i].n_total;
        if (pp > JOB_CAP) pp = JOB_CAP;
        s->policy_end[i] = pp;
        policies_d += s->policies[i].n_grid_d;
    }
    uint64_t n = cap_mul(cap_mul(cap_mul((uint64_t)s->n_models, (uint64_t)s->n_datasets), tp), pp);
    n = cap_mul(cap_mul(n, (uint64_t)s->n_seeds), (uint64_t)s->repeats);
    double n_d = total_d * tasks_d * policies_d;
    if (n > KV_SWEEP_MAX_JOBS && !(n_d < 1e300))
        return sw_path_fail(p, KV_ERR_LIMIT, "the grid expands to more than 1e300 jobs, over the limit of %d "
                            "(KV_SWEEP_MAX_JOBS)", KV_SWEEP_MAX_JOBS);
    if (n > KV_SWEEP_MAX_JOBS)
        return sw_path_fail(p, KV_ERR_LIMIT, "the grid expands to %.0f jobs, over the limit of %d (KV_SWEEP_MAX_JOBS)",
                            n_d, KV_SWEEP_MAX_JOBS);
    s->n_jobs = (size_t)n;
    return KV_OK;
}

static int sweep_from_tree(kv_sweep *s, const sw_node *root, sw_path *p) {
    const sw_node *at[T_COUNT] = {NULL};
    int rc;
    if (root->type != SW_OBJ)
        return sw_path_fail(p, KV_ERR_INVAL, "expected an object at the top level, got %s", sw_type_name(root->type));
    for (size_t i = 0; i < root->n; i++) {
        int k = 0;
        while (k < T_COUNT && !key_is(&root->keys[i], top_keys[k])) k++;
        if (k == T_COUNT) {
            sw_path_key(p, root->keys[i].s, root->keys[i].n);
            return sw_path_fail(p, KV_ERR_INVAL,
                                "unknown key (allowed: sweep, models, datasets, tasks, policies, spec, seeds, repeats)");
        }
        at[k] = &root->kids[i];
    }
    for (int k = 0; k < T_COUNT; k++) {
        if (!at[k] && k != T_SPEC && k != T_SEEDS && k != T_REPEATS) {
            sw_path_key(p, top_keys[k], strlen(top_keys[k]));
            return sw_path_fail(p, KV_ERR_INVAL, "missing required key");
        }
    }
    sw_val v;
    size_t old = sw_path_key(p, "sweep", 5);
    if ((rc = sw_val_parse(p, at[T_SWEEP], &top_name, &v))) return rc;
    snprintf(s->name, sizeof s->name, "%s", v.s);
    free(v.s);
    sw_path_pop(p, old);

    old = sw_path_key(p, "models", 6);
    if ((rc = sw_list_parse(p, at[T_MODELS], &top_model, &s->models, &s->n_models))) return rc;
    sw_path_pop(p, old);

    old = sw_path_key(p, "datasets", 8);
    if ((rc = datasets_parse(p, at[T_DATASETS], s))) return rc;
    sw_path_pop(p, old);

    old = sw_path_key(p, "tasks", 5);
    if ((rc = objs_parse(p, at[T_TASKS], "task", &s->tasks, &s->n_tasks))) return rc;
    sw_path_pop(p, old);

    old = sw_path_key(p, "policies", 8);
    if ((rc = objs_parse(p, at[T_POLICIES], "policy", &s->policies, &s->n_policies))) return rc;
    sw_path_pop(p, old);

    int spec_tasks = 0;
    size_t first_spec = 0;
    for (size_t i = s->n_tasks; i-- > 0;) {
        if (strcmp(s->tasks[i].name, "spec") == 0) {
            spec_tasks++;
            first_spec = i;
        }
    }
    if (at[T_SPEC]) {
        old = sw_path_key(p, "spec", 4);
        if ((rc = obj_parse(p, at[T_SPEC], NULL, &s->spec))) return rc;
        if (!spec_tasks) return sw_path_fail(p, KV_ERR_INVAL, "given, but no task is \"spec\"");
        sw_path_pop(p, old);
        s->has_spec = 1;
    } else if (spec_tasks) {
        sw_path_key(p, "tasks", 5);
        sw_path_idx(p, first_spec);
        return sw_path_fail(p, KV_ERR_INVAL, "task \"spec\" needs a top-level \"spec\" block (draft, gamma, ...)");
    }

    if (at[T_SEEDS]) {
        old = sw_path_key(p, "seeds", 5);
        if ((rc = sw_list_parse(p, at[T_SEEDS], &top_seed, &s->seeds, &s->n_seeds))) return rc;
        sw_path_pop(p, old);
    } else {
        s->seeds = calloc(1, sizeof *s->seeds);
        if (!s->seeds) return sw_path_fail(p, KV_ERR_NOMEM, "out of memory");
        s->seeds[0].type = KV_VAL_INT;
        s->n_seeds = 1;
    }
    s->repeats = 1;
    if (at[T_REPEATS]) {
        old = sw_path_key(p, "repeats", 7);
        if ((rc = sw_val_parse(p, at[T_REPEATS], &top_repeats, &v))) return rc;
        s->repeats = v.i;
        sw_path_pop(p, old);
    }
    return sweep_count(p, s);
}

/* Contract in sweep.h. Detection (is_json < 0): the first byte that is not
 * JSON whitespace is '{' or '[' → JSON, else msgpack. */
int kv_sweep_parse(kv_sweep **out, const void *buf, size_t len, int is_json, const char *name, char *err,
                   size_t n_err) {
    sw_path p = {.file = name ? name : "sweep", .err = err, .n_err = n_err};
    *out = NULL;
    if (err && n_err) err[0] = '\0';
    if (!buf && len) return sw_path_fail(&p, KV_ERR_INVAL, "no buffer");
    if (is_json < 0) {
        const unsigned char *b = buf;
        size_t i = 0;
        while (i < len && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) i++;
        is_json = i < len && (b[i] == '{' || b[i] == '[');
    }
    sw_tree *t;
    int rc = sw_tree_parse(&t, buf, len, is_json, &p);
    if (rc) return rc;
    kv_sweep *s = calloc(1, sizeof *s);
    if (!s) {
        sw_tree_free(t);
        return sw_path_fail(&p, KV_ERR_NOMEM, "out of memory");
    }
    rc = sweep_from_tree(s, sw_tree_root(t), &p);
    sw_tree_free(t);
    if (rc) {
        kv_sweep_free(s);
        return rc;
    }
    *out = s;
    return KV_OK;
}

/* Contract in sweep.h. A path ending in ".json" is JSON; anything else is
 * detected from its first byte. */
int kv_sweep_load(kv_sweep **out, const char *path, char *err, size_t n_err) {
    sw_path p = {.file = path ? path : "(null)", .err = err, .n_err = n_err};
    *out = NULL;
    if (!path) return sw_path_fail(&p, KV_ERR_INVAL, "no path");
    FILE *f = fopen(path, "rb");
    if (!f) return sw_path_fail(&p, KV_ERR_IO, "%s", strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return sw_path_fail(&p, KV_ERR_IO, "not a regular file");
    }
    if (st.st_size > KV_SWEEP_MAX_BYTES) {
        fclose(f);
        return sw_path_fail(&p, KV_ERR_LIMIT, "%lld bytes is over the cap of %d bytes", (long long)st.st_size,
                            KV_SWEEP_MAX_BYTES);
    }
    // Read one byte more than the cap allows, in case the file grew.
    size_t cap = (size_t)st.st_size + 1;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return sw_path_fail(&p, KV_ERR_NOMEM, "out of memory");
    }
    size_t len = fread(buf, 1, cap, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return sw_path_fail(&p, KV_ERR_IO, "read error");
    }
    if (len > (size_t)st.st_size) {
        free(buf);
        return sw_path_fail(&p, KV_ERR_IO, "file changed while being read");
    }
    size_t pl = strlen(path);
    int is_json = pl >= 5 && strcmp(path + pl - 5, ".json") == 0 ? 1 : -1;
    int rc = kv_sweep_parse(out, buf, len, is_json, path, err, n_err);
    free(buf);
    return rc;
}

const char *kv_sweep_name(const kv_sweep *s) { return s->name; }
size_t kv_sweep_n_jobs(const kv_sweep *s) { return s->n_jobs; }

/* ---- jobs -------------------------------------------------------------- */

/* Index of the object whose [start, end) range of points holds k. */
static size_t find_obj(const uint64_t *end, size_t n, uint64_t k) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (end[mid] > k)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void val_to_param(const char *key, const sw_val *v, kv_param *p) {
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", key);
    p->type = v->type;
    p->i = v->i;
    p->r = v->r;
    if (v->type == KV_VAL_STR) snprintf(p->s, sizeof p->s, "%s", v->s);
}

/* Grid point k of o (last axis fastest) appended to ps. */
static void obj_point(const sw_obj *o, uint64_t k, kv_params *ps) {
    int base = ps->n;
    ps->n += (int)o->n_axes;
    for (size_t a = o->n_axes; a-- > 0;) {
        const sw_axis *ax = &o->axes[a];
        val_to_param(ax->key, &ax->v[k % ax->n], &ps->p[base + (int)a]);
        k /= ax->n;
    }
}

/* Contract in sweep.h. Order (outermost first): model, dataset, task point
 * (a task's own grid, then the spec grid for "spec" tasks), policy point,
 * seed, repeat. */
int kv_sweep_job(const kv_sweep *s, size_t i, const char *nonce, kv_job *job, char *err, size_t n_err) {
    sw_path p = {.file = s->name, .err = err, .n_err = n_err};
    if (i >= s->n_jobs) return sw_path_fail(&p, KV_ERR_INVAL, "job %zu out of range (%zu jobs)", i, s->n_jobs);
    if (nonce && (strlen(nonce) >= sizeof job->nonce || !kv_utf8_valid(nonce, strlen(nonce))))
        return sw_path_fail(&p, KV_ERR_INVAL, "nonce longer than %zu bytes or not UTF-8", sizeof job->nonce - 1);
    memset(job, 0, sizeof *job);
    uint64_t k = i;
    uint64_t rep = k % (uint64_t)s->repeats;
    k /= (uint64_t)s->repeats;
    uint64_t seed = k % s->n_seeds;
    k /= s->n_seeds;
    uint64_t pp = k % s->policy_end[s->n_policies - 1];
    k /= s->policy_end[s->n_policies - 1];
    uint64_t tp = k % s->task_end[s->n_tasks - 1];
    k /= s->task_end[s->n_tasks - 1];
    uint64_t ds = k % s->n_datasets;
    uint64_t model = k / s->n_datasets;

    snprintf(job->sweep, sizeof job->sweep, "%s", s->name);
    snprintf(job->model, sizeof job->model, "%s", s->models[model].s);
    const sw_dataset *d = &s->datasets[ds];
    snprintf(job->dataset, sizeof job->dataset, "%s", d->name);
    job->doc = d->doc;
    job->offset = d->offset;
    job->tokens = d->tokens;

    size_t ti = find_obj(s->task_end, s->n_tasks, tp);
    const sw_obj *t = &s->tasks[ti];
    uint64_t tk = tp - (ti ? s->task_end[ti - 1] : 0);
    snprintf(job->task, sizeof job->task, "%.31s", t->name);
    if (strcmp(t->name, "spec") == 0) {
        job->has_spec = 1;
        obj_point(&s->spec, tk % s->spec.n_grid, &job->spec);
        tk /= s->spec.n_grid;
    }
    obj_point(t, tk, &job->task_params);

    size_t pi = find_obj(s->policy_end, s->n_policies, pp);
    const sw_obj *po = &s->policies[pi];
    snprintf(job->policy, sizeof job->policy, "%s", po->name);
    obj_point(po, pp - (pi ? s->policy_end[pi - 1] : 0), &job->params);

    job->seed = s->seeds[seed].i;
    job->repeat = (int64_t)rep;
    if (nonce) snprintf(job->nonce, sizeof job->nonce, "%s", nonce);
    return KV_OK;
}

/* ---- canonical msgpack ------------------------------------------------- */

static void emit_val(kv_mw *w, const sw_val *v) {
    switch (v->type) {
    case KV_VAL_INT: kv_mw_int(w, v->i); break;
    case KV_VAL_REAL: kv_mw_num(w, v->r); break;
    case KV_VAL_BOOL: kv_mw_bool(w, (int)v->i); break;
    default: kv_mw_cstr(w, v->s); break;
    }
}

static void emit_list(kv_mw *w, const sw_val *v, size_t n) {
    kv_mw_array(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) emit_val(w, &v[i]);
}

/* Keys in bytewise order: the axes (already sorted) merged with the name key. */
static void emit_obj(kv_mw *w, const sw_obj *o, const char *name_key) {
    kv_mw_map(w, (uint32_t)(o->n_axes + (name_key ? 1 : 0)));
    int named = name_key == NULL;
    for (size_t a = 0; a <= o->n_axes; a++) {
        if (!named && (a == o->n_axes || strcmp(name_key, o->axes[a].key) < 0)) {
            kv_mw_cstr(w, name_key);
            kv_mw_cstr(w, o->name);
            named = 1;
        }
        if (a == o->n_axes) break;
        const sw_axis *ax = &o->axes[a];
        kv_mw_cstr(w, ax->key);
        if (ax->n == 1)
            emit_val(w, &ax->v[0]);
        else
            emit_list(w, ax->v, ax->n);
    }
}

/* Contract in sweep.h. */
int kv_sweep_to_msgpack(const kv_sweep *s, unsigned char **out, size_t *out_len, char *err, size_t n_err) {
    sw_path p = {.file = s->name, .err = err, .n_err = n_err};
    kv_mw w;
    *out = NULL;
    *out_len = 0;
    kv_mw_init(&w, KV_SWEEP_MAX_BYTES);
    kv_mw_map(&w, s->has_spec ? 8 : 7);
    kv_mw_cstr(&w, "datasets");
    kv_mw_array(&w, (uint32_t)s->n_datasets);
    for (size_t i = 0; i < s->n_datasets; i++) {
        const sw_dataset *d = &s->datasets[i];
        kv_mw_map(&w, 4);
        kv_mw_cstr(&w, "doc");
        kv_mw_int(&w, d->doc);
        kv_mw_cstr(&w, "name");
        kv_mw_cstr(&w, d->name);
        kv_mw_cstr(&w, "offset");
        kv_mw_int(&w, d->offset);
        kv_mw_cstr(&w, "tokens");
        kv_mw_int(&w, d->tokens);
    }
    kv_mw_cstr(&w, "models");
    emit_list(&w, s->models, s->n_models);
    kv_mw_cstr(&w, "policies");
    kv_mw_array(&w, (uint32_t)s->n_policies);
    for (size_t i = 0; i < s->n_policies; i++) emit_obj(&w, &s->policies[i], "policy");
    kv_mw_cstr(&w, "repeats");
    kv_mw_int(&w, s->repeats);
    kv_mw_cstr(&w, "seeds");
    emit_list(&w, s->seeds, s->n_seeds);
    if (s->has_spec) {
        kv_mw_cstr(&w, "spec");
        emit_obj(&w, &s->spec, NULL);
    }
    kv_mw_cstr(&w, "sweep");
    kv_mw_cstr(&w, s->name);
    kv_mw_cstr(&w, "tasks");
    kv_mw_array(&w, (uint32_t)s->n_tasks);
    for (size_t i = 0; i < s->n_tasks; i++) emit_obj(&w, &s->tasks[i], "task");
    int rc = kv_mw_status(&w);
    if (rc) {
        kv_mw_free(&w);
        return sw_path_fail(&p, rc, rc == KV_ERR_LIMIT ? "canonical form exceeds the sweep size cap"
                                                       : "out of memory");
    }
    *out = kv_mw_take(&w, out_len);
    return KV_OK;
}
