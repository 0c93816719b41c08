/* policy_spec.c — "NAME:key=value,..." (kvrun --policy, spec decoding's
 * draft_policy / intermediate_policy strings) into a policy name and typed
 * params, the same eng_paramset a sweep's JSON produces (policy.h). Values:
 * integers -> INT, other numbers -> REAL, true/false -> BOOL, else STR. */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_int_text(const char *s) {
    if (*s == '-' || *s == '+') s++;
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

eng_status eng_policy_parse_spec(const char *spec, eng_paramset *ps, char *name_out, size_t n_name, char *buf,
                                 size_t n_buf, char *err, size_t n_err) {
    memset(ps, 0, sizeof *ps);
    size_t len = strlen(spec);
    if (len + 1 > n_buf) {
        eng_errf(err, n_err, "policy spec: longer than %zu bytes", n_buf);
        return ENG_ERR_INVAL;
    }
    memcpy(buf, spec, len + 1);
    char *colon = strchr(buf, ':');
    if (colon) *colon = 0;
    if (!*buf || strlen(buf) + 1 > n_name) {
        eng_errf(err, n_err, "policy spec '%s': expected NAME or NAME:key=value,...", spec);
        return ENG_ERR_INVAL;
    }
    snprintf(name_out, n_name, "%s", buf);
    char *s = colon ? colon + 1 : NULL;
    while (s && *s) {
        char *comma = strchr(s, ',');
        if (comma) *comma = 0;
        char *eq = strchr(s, '=');
        if (!eq || eq == s) {
            eng_errf(err, n_err, "policy spec '%s': expected key=value, got '%s'", spec, s);
            return ENG_ERR_INVAL;
        }
        if (ps->n == ENG_TASK_MAX_PARAMS) {
            eng_errf(err, n_err, "policy spec '%s': more than %d params", spec, ENG_TASK_MAX_PARAMS);
            return ENG_ERR_INVAL;
        }
        *eq = 0;
        eng_param *q = &ps->p[ps->n++];
        q->key = s;
        const char *v = eq + 1;
        char *end;
        if (is_int_text(v)) {
            q->type = ENG_PARAM_INT;
            q->i = strtoll(v, NULL, 10);
        } else if (*v && (q->r = strtod(v, &end), !*end)) {
            q->type = ENG_PARAM_REAL;
        } else if (!strcmp(v, "true") || !strcmp(v, "false")) {
            q->type = ENG_PARAM_BOOL;
            q->i = v[0] == 't';
        } else {
            q->type = ENG_PARAM_STR;
            q->s = v;
        }
        s = comma ? comma + 1 : NULL;
    }
    return ENG_OK;
}
