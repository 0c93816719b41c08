/* policy_mark.h — a saved point of a state and its KV policy, so that
 * speculative decoding can undo tentative forwards exactly (spec.c).
 *
 * Truncation (eng_state_rollback) undoes a forward only when the forward
 * changed nothing but the tail of the cache. Under a KV policy a tentative
 * token also moves the rest: its step may evict committed slots, compacts
 * the heads, adds attention mass to every slot's score (h2o) or rewrites
 * them (tova). A mark keeps a copy of everything a forward can change —
 * per-head fill counts, the held keys, values and positions, the policy's
 * per-slot scores and token ids, kivi's quantized store, its step counters
 * and its statistics — and
 * restore puts the state back bit for bit, at the position it had when the
 * mark was saved. All memory is allocated in init; save and restore only
 * copy (the held slots, not the whole capacity). */
#ifndef ENGINE_POLICY_MARK_H
#define ENGINE_POLICY_MARK_H

#include "forward.h"

typedef struct eng_state_mark eng_state_mark;

/* Sized for s's KV capacity and the policy attached to s now (attach first;
 * a state without a policy gets a mark of its cache alone). */
eng_status eng_state_mark_init(eng_state_mark **out, const eng_state *s, char *err, size_t n_err);
void eng_state_mark_free(eng_state_mark *m);
/* Copy s (cache, policy state, policy statistics) into m. */
void eng_state_mark_save(eng_state_mark *m, const eng_state *s);
/* Save m during the next eng_forward on s, at row `row` of that call: the
 * state after the call's first `row` tokens, as if they had been a call of
 * their own (those rows run as policy steps). Each layer is saved when its
 * rows reach `row` (forward.c); the mark is complete when the call
 * returns. Speculative verification marks right after its committed
 * tokens, so that one call both catches up and verifies. */
void eng_state_mark_at(eng_state *s, eng_state_mark *m, int row);
/* forward.c only: layer l's rows of the chunk begin / reach the mark row. */
void eng_state_mark_layer_begin(eng_state_mark *m, const eng_state *s, int l);
void eng_state_mark_layer_save(eng_state_mark *m, const eng_state *s, int l, int row);
/* Put s back to the saved point. ENG_ERR_INVAL when nothing is saved or s
 * is not the state (or policy) the mark was sized for. */
eng_status eng_state_mark_restore(eng_state_mark *m, eng_state *s);
/* n_past when saved; -1 before the first save. */
int eng_state_mark_pos(const eng_state_mark *m);

#endif /* ENGINE_POLICY_MARK_H */
