/* paths.h — resolving a model or dataset name from a job beneath an
 * allowlisted root directory (the worker's --models / --data).
 *
 * Job messages are outside input (CWE-22): a name is accepted only if it is a
 * relative path of plain components — no "", ".", "..", no absolute path, no
 * NUL or control byte, at most KV_PATH_NAME_MAX bytes — and if the kernel can
 * open it beneath the root with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
 * | RESOLVE_NO_MAGICLINKS). Kernels without openat2 (ENOSYS, Linux < 5.6) get
 * a component-by-component O_NOFOLLOW walk plus a realpath prefix check.
 * The result is the root's real path + "/" + name, for the engine to open.
 * (The roots belong to the box's operator; a symlink planted inside a root
 * after the check is outside this module's threat model.) */
#ifndef WORKER_PATHS_H
#define WORKER_PATHS_H

#include <stddef.h>

#define KV_PATH_NAME_MAX 255

/* Resolves name[0..name_len) beneath root. what ("model", "dataset") labels
 * the message. Returns 0 with out filled, or KV_ERR_INVAL with err starting
 * "path_rejected: " (KV_ERR_IO when the root itself cannot be opened, also
 * with "path_rejected: "). Nothing outside the root is ever opened. */
int kv_path_resolve(const char *root, const char *what, const char *name, size_t name_len, char *out, size_t n_out,
                    char *err, size_t n_err);

/* Test hook: 1 forces the no-openat2 fallback, 0 restores auto-detection. */
void kv_path_force_fallback(int on);

#endif /* WORKER_PATHS_H */
