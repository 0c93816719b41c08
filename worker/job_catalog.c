/* job_catalog.c — the static catalog of what a sweep may ask for: the tasks
 * and their task params, the KV policies and their params, the keys of the
 * spec-decoding block, each with a type and a range; plus the name check
 * applied to everything that later becomes a path under a worker's root.
 *
 * Why a table: sweep validation refuses an unknown policy or a misspelt
 * parameter ("recnet") before anything is enqueued, instead of a worker
 * failing 10,000 jobs an hour later. The table is the single place a new
 * policy or param is added; docs/sweep.md lists the same names. The job
 * codec (job.c) deliberately does not consult it.
 *
 * Sources: ../shared/docs/kv-policies.md for the policies and their usual
 * parameters (short, uniform names: "budget" is an absolute number of kept
 * tokens per layer and head), engine/spec.h and engine/task.c for the spec
 * block and the tasks. Names the doc does not
 * fix are this project's choice, marked "provisional" here and in
 * docs/sweep.md. For the policies and tasks the engine already implements
 * (engine/policy_*.c, engine/task.c), names and ranges are the engine's. */
#include <string.h>

#include "job.h"

#define BIG 9.2e18     /* "no upper bound" (int64 range) */
#define M24 16777216.0 /* 1 << 24, the engine's bound on token counts */
#define M20 1048576.0  /* 1 << 20, the engine's bound on task sizes */

static const char *const pos_choices[] = {"original", "shift", NULL};
static const char *const pool_choices[] = {"avg", "max", NULL};
static const char *const sched_choices[] = {"constant", "heuristic", "aimd", NULL};

/* Reused parameter definitions. Ranges follow engine/policy_*.c where the
 * policy exists; the engine remains the final judge (e.g. snapkv's odd
 * kernel, budget > window). */
#define P_POS {"pos", KV_PK_STR, 0, 0, 0, 0, pos_choices, "positions after eviction: original or shift (cache-relative)"}
#define P_SINK {"sink", KV_PK_INT, 0, M24, 0, 0, NULL, "leading tokens always kept (attention sinks)"}
#define P_RECENT {"recent", KV_PK_INT, 1, M24, 0, 0, NULL, "most recent tokens always kept"}
#define P_HEAVY {"heavy", KV_PK_INT, 0, M24, 0, 0, NULL, "heavy-hitter slots (top accumulated attention)"}
#define P_INTERVAL {"interval", KV_PK_INT, 1, M24, 0, 0, NULL, "evict once every N steps (batched, lazy eviction)"}
#define P_BUDGET {"budget", KV_PK_INT, 1, M24, 0, 0, NULL, "tokens kept per layer and head"}
#define P_WINDOW {"window", KV_PK_INT, 1, 65536, 0, 0, NULL, "observation window (last queries) used for scoring"}
#define P_KERNEL {"kernel", KV_PK_INT, 1, 1024, 0, 0, NULL, "pooling kernel size over the scores (odd)"}
#define P_POOLING {"pooling", KV_PK_STR, 0, 0, 0, 0, pool_choices, "score pooling: avg or max"}
#define P_SKIP {"skip_layers", KV_PK_LAYERS, 0, 0, 0, 0, NULL, "layers left uncompressed: an index or \"0;1\""}
#define P_END {NULL, 0, 0, 0, 0, 0, NULL, NULL}

typedef struct cat_entry {
    const char *name;
    const kv_param_spec *params; /* sorted by key, terminated by key == NULL */
} cat_entry;

/* Implemented in the engine (engine/policy_*.c) — names and ranges match. */
static const kv_param_spec p_full[] = {P_POS, P_END};
static const kv_param_spec p_window[] = {P_POS, P_RECENT, P_END};
static const kv_param_spec p_streaming[] = {P_POS, P_RECENT, P_SINK, P_END};
static const kv_param_spec p_h2o[] = {P_HEAVY, P_POS, P_RECENT, P_SINK, P_END};
static const kv_param_spec p_lazy_h2o[] = {P_HEAVY, P_INTERVAL, P_POS, P_RECENT, P_SINK, P_END};
static const kv_param_spec p_tova[] = {P_BUDGET, P_POS, P_END};
static const kv_param_spec p_norm[] = { /* knorm and l2 (l2compress) */
    {"keep_ratio", KV_PK_NUM, 0, 1, 0, 0, NULL, "fraction of tokens kept (lowest key norms)"},
    P_POS,
    {"prune_after", KV_PK_INT, 0, 1073741824.0, 0, 0, NULL, "compress only once the cache holds this many tokens"},
    P_SKIP,
    P_END};
static const kv_param_spec p_snapkv[] = {
    {"budget", KV_PK_INT, 2, M24, 0, 0, NULL, "tokens kept per layer and head, window included"},
    P_KERNEL, P_POOLING, P_POS, P_WINDOW, P_END};
static const kv_param_spec p_pyramidkv[] = {
    {"beta", KV_PK_NUM, 1e-9, 1e9, 0, 0, NULL, "pyramid steepness (min budget = (budget - window) / beta)"},
    {"budget", KV_PK_INT, 2, M24, 0, 0, NULL, "average tokens kept per layer and head, window included"},
    P_KERNEL, P_POOLING, P_POS, P_WINDOW, P_END};

/* sepllm and unified: engine/policy_sepllm.c; fix_size_l2 and hybrid:
 * engine/policy_norm.c. */
#define P_SEPS {"seps", KV_PK_LAYERS, 0, 0, 0, 0, NULL, "separator token ids: an id or \"15;13;...\" (default: the Pythia list)"}
static const kv_param_spec p_sepllm[] = {
    {"cache", KV_PK_INT, 2, M24, 0, 0, NULL, "cache size that triggers compression (>= init + sep_cap + local)"},
    {"init", KV_PK_INT, 0, M24, 0, 0, NULL, "initial tokens always kept"},
    {"local", KV_PK_INT, 1, M24, 0, 0, NULL, "local window (recent tokens) kept"},
    P_POS,
    {"sep_cap", KV_PK_INT, 0, M24, 0, 0, NULL, "separator-token slots (newest kept)"},
    P_SEPS,
    P_END};
static const kv_param_spec p_unified[] = {
    P_HEAVY, {"interval", KV_PK_INT, 1, M24, 0, 0, NULL, "evict once every N steps (1: every step)"}, P_POS,
    P_RECENT, {"sep", KV_PK_INT, 0, M24, 0, 0, NULL, "separator-token slots (newest kept)"}, P_SEPS, P_SINK,
    P_END};
static const char *const fs_choices[] = {"keep_low", "keep_high", "random", NULL};
static const kv_param_spec p_fix_size_l2[] = {
    {"keep_ratio", KV_PK_NUM, 0, 1, 0, 0, NULL, "fraction of size protected as the most recent tokens"},
    P_POS,
    {"seed", KV_PK_INT, 0, 2147483647.0, 0, 0, NULL, "seed of strategy=random"},
    {"size", KV_PK_INT, 1, M24, 0, 0, NULL, "tokens kept per layer and head"},
    P_SKIP,
    {"strategy", KV_PK_STR, 0, 0, 0, 0, fs_choices, "what to keep of the older tokens: lowest or highest key norm, or random"},
    P_END};
static const kv_param_spec p_hybrid[] = {
    {"heavy", KV_PK_INT, 0, M24, 0, 0, NULL, "middle tokens kept by lowest key norm"},
    P_POS, P_RECENT, P_SINK, P_SKIP, P_END};
/* kivi and think: engine/policy_quant.c (names and ranges are the engine's;
 * it also checks bits in {2, 4, 8}, group | head_dim, group | residual). */
static const kv_param_spec p_kivi[] = {
    {"bits", KV_PK_INT, 2, 8, 0, 0, NULL, "bits per key and value code: 2, 4 or 8"},
    {"group", KV_PK_INT, 1, 4096, 0, 0, NULL, "quantization group (tokens for keys, channels for values)"},
    {"residual", KV_PK_INT, 1, M24, 0, 0, NULL, "recent tokens kept in fp32 (a multiple of group)"},
    P_END};
static const kv_param_spec p_think[] = {
    {"ratio", KV_PK_NUM, 0, 1, 0, 1, NULL, "fraction of key channels pruned per head"},
    {"recent", KV_PK_INT, 0, M24, 0, 0, NULL, "newest prompt keys kept with every channel"},
    P_WINDOW, P_END};
/* cake: engine/policy_cake.c; cam: engine/policy_cam.c. */
static const kv_param_spec p_cake[] = {
    {"budget", KV_PK_INT, 3, M24, 0, 0, NULL, "average tokens kept per layer and head, window included"},
    {"gamma", KV_PK_NUM, 0, 1e6, 0, 0, NULL, "eviction indicator: mean + gamma * variance of the window attention"},
    P_KERNEL, P_POS,
    {"tau1", KV_PK_NUM, 1e-6, 1e6, 0, 0, NULL, "entropy exponent 1/tau1 of the layer preference"},
    {"tau2", KV_PK_NUM, 1e-6, 1e6, 0, 0, NULL, "variance exponent 1/tau2 of the layer preference"},
    {"window", KV_PK_INT, 2, 65536, 0, 0, NULL, "observation window (last prompt queries), always kept"},
    P_END};
static const kv_param_spec p_cam[] = {
    {"merge", KV_PK_INT, 1, 65536, 0, 0, NULL, "successors an evicted value is merged into (divided by merge)"},
    P_POS, P_RECENT,
    {"seed", KV_PK_INT, 0, 2147483647.0, 0, 0, NULL, "seed of the merge draws"},
    P_SINK, P_END};

static const cat_entry policies[] = {
    {"full", p_full},           {"window", p_window},   {"streaming", p_streaming}, {"h2o", p_h2o},
    {"lazy_h2o", p_lazy_h2o},   {"sepllm", p_sepllm},   {"unified", p_unified},     {"knorm", p_norm},
    {"l2", p_norm},             {"fix_size_l2", p_fix_size_l2},                     {"hybrid", p_hybrid},
    {"snapkv", p_snapkv},       {"pyramidkv", p_pyramidkv},                         {"tova", p_tova},
    {"cake", p_cake},           {"cam", p_cam},         {"kivi", p_kivi},           {"think", p_think},
    {NULL, NULL}};

/* Task params: engine/task.c and engine/task_passkey.c. */
static const kv_param_spec t_ppl[] = {
    {"chunk", KV_PK_INT, 2, M20, 0, 0, NULL, "chunked baseline: independent windows of N tokens"},
    {"prefill", KV_PK_INT, 1, M20, 0, 0, NULL, "the first N tokens fed in one call (all their predictions scored), then token by token; "
                "prefill-time policies (snapkv, pyramidkv, cake, think) compress only this prompt"},
    P_END};
static const kv_param_spec t_speed[] = {
    {"decode", KV_PK_INT, 1, M20, 0, 0, NULL, "tokens decoded greedily after the prefill (default 128)"},
    {"prefill", KV_PK_INT, 1, M20, 0, 0, NULL, "prompt tokens prefilled (default 512)"},
    P_END};
static const kv_param_spec t_spec[] = {
    {"max_new", KV_PK_INT, 1, M20, 0, 0, NULL, "tokens generated (default 128)"},
    {"prefill", KV_PK_INT, 1, M20, 0, 0, NULL, "prompt tokens taken from the slice (default: all)"},
    {"temperature", KV_PK_NUM, 0, 100, 0, 0, NULL, "sampling temperature; 0 is greedy"},
    {"top_k", KV_PK_INT, 0, M20, 0, 0, NULL, "top-k cut (0: off)"},
    {"top_p", KV_PK_NUM, 0, 1, 0, 0, NULL, "nucleus cut (1: off)"},
    P_END};
static const char *const filler_choices[] = {"data", "repeat", NULL};
static const kv_param_spec t_passkey[] = {
    {"context", KV_PK_INT, 1, M20, 0, 0, NULL, "prompt length in tokens (default: the slice's tokens)"},
    {"depth", KV_PK_NUM, 0, 1, 0, 0, NULL, "needle position as a fraction of the haystack (0 start, 1 end; default 0.5)"},
    {"digits", KV_PK_INT, 1, 18, 0, 0, NULL, "passkey length in digits (default 5)"},
    {"filler", KV_PK_STR, 0, 0, 0, 0, filler_choices, "haystack: data (the slice's sentences) or repeat (default data)"},
    {"trials", KV_PK_INT, 1, 100000, 0, 0, NULL, "passkeys tried, one seed each; accuracy is the fraction retrieved (default 10)"},
    P_END};

static const cat_entry tasks[] = {
    {"ppl", t_ppl}, {"speed", t_speed}, {"spec", t_spec}, {"passkey", t_passkey}, {NULL, NULL}};

/* The spec block: engine/task.c g_spec_keys, engine/spec.h. */
static const kv_param_spec s_spec[] = {
    {"draft", KV_PK_NAME, 0, 0, 0, 0, NULL, "draft model name (required)"},
    {"draft_policy", KV_PK_STR, 0, 0, 0, 0, NULL, "the draft's KV policy, \"NAME:k=v,...\" (default: full cache)"},
    {"gamma", KV_PK_INT, 1, 32, 0, 0, NULL, "initial draft length (default 5)"},
    {"gamma_max", KV_PK_INT, 1, 32, 0, 0, NULL, "cap on the draft length for every schedule (>= gamma)"},
    {"intermediate", KV_PK_NAME, 0, 0, 0, 0, NULL, "optional middle model (3-level cascade)"},
    {"intermediate_policy", KV_PK_STR, 0, 0, 0, 0, NULL, "the intermediate's KV policy, \"NAME:k=v,...\""},
    {"schedule", KV_PK_STR, 0, 0, 0, 0, sched_choices, "draft-length schedule: constant, heuristic or aimd"},
    P_END};

static const cat_entry *cat_find(const cat_entry *t, const char *name) {
    if (!name) return NULL;
    for (; t->name; t++)
        if (strcmp(t->name, name) == 0) return t;
    return NULL;
}

static const kv_param_spec *spec_find(const kv_param_spec *p, const char *key) {
    if (!p || !key) return NULL;
    for (; p->key; p++)
        if (strcmp(p->key, key) == 0) return p;
    return NULL;
}

int kv_policy_known(const char *name) { return cat_find(policies, name) != NULL; }
int kv_task_known(const char *task) { return cat_find(tasks, task) != NULL; }

const kv_param_spec *kv_policy_param_spec(const char *policy, const char *key) {
    const cat_entry *e = cat_find(policies, policy);
    return e ? spec_find(e->params, key) : NULL;
}

const kv_param_spec *kv_task_param_spec(const char *task, const char *key) {
    const cat_entry *e = cat_find(tasks, task);
    return e ? spec_find(e->params, key) : NULL;
}

const kv_param_spec *kv_spec_param_spec(const char *key) { return spec_find(s_spec, key); }

const kv_param_spec *kv_policy_params(const char *policy) {
    const cat_entry *e = cat_find(policies, policy);
    return e ? e->params : NULL;
}

const kv_param_spec *kv_task_params(const char *task) {
    const cat_entry *e = cat_find(tasks, task);
    return e ? e->params : NULL;
}

const kv_param_spec *kv_spec_params(void) { return s_spec; }

int kv_policy_param_known(const char *policy, const char *key) { return kv_policy_param_spec(policy, key) != NULL; }
int kv_task_param_known(const char *task, const char *key) { return kv_task_param_spec(task, key) != NULL; }
int kv_spec_param_known(const char *key) { return kv_spec_param_spec(key) != NULL; }

const char *kv_policy_name(int i) {
    return i >= 0 && i < (int)(sizeof policies / sizeof policies[0]) - 1 ? policies[i].name : NULL;
}

const char *kv_task_name(int i) {
    return i >= 0 && i < (int)(sizeof tasks / sizeof tasks[0]) - 1 ? tasks[i].name : NULL;
}

/* Contract in job.h. Checks bytes per RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF. */
int kv_utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t k;
        unsigned lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else {
            return 0;
        }
        if (n - i - 1 < k) return 0;
        if (p[i + 1] < lo || p[i + 1] > hi) return 0;
        for (size_t j = 2; j <= k; j++)
            if (p[i + j] < 0x80 || p[i + j] > 0xbf) return 0;
        i += k + 1;
    }
    return 1;
}

/* Contract in job.h. */
const char *kv_name_problem(const char *s, size_t n) {
    if (!s || n == 0) return "is empty";
    if (n >= KV_NAME_MAX) return "is longer than 255 bytes";
    if (memchr(s, '\0', n)) return "contains a NUL byte";
    if (!kv_utf8_valid(s, n)) return "is not valid UTF-8";
    if (s[0] == '/') return "is an absolute path";
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && s[j] != '/') j++;
        if (j - i == 2 && s[i] == '.' && s[i + 1] == '.') return "has a '..' component";
        i = j + 1;
    }
    return NULL;
}
