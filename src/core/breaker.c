/*
 * breaker.c - a per-function circuit breaker (docs/architecture.md, decision
 * 8: a
 * candidate whose breaker is open is not selected).
 *
 * One breaker per (shard, function), owned by that shard's thread: no locks,
 * no atomics.  Times are milliseconds on any monotonic clock the caller
 * chooses; a clock that appears to go backwards counts as "no time passed".
 *
 *         success: failures = 0
 *            +---+
 *            |   v
 *         +--------+  threshold consecutive failures  +--------+
 *    +--->| CLOSED |--------------------------------->|  OPEN  |<----+
 *    |    +--------+        (opened_ms = now)         +--------+     |
 *    |                                                    |          |
 *    |                           allow() once cooldown_ms |          |
 *    |                           has passed: one trial    |          |
 *    |                           call goes through        v          |
 *    |    success: failures = 0                     +-----------+     |
 *    +----------------------------------------------| HALF-OPEN |-----+
 *                                                   +-----------+  failure:
 *                                                               opened_ms = now
 *
 * - closed: every call is allowed; a success resets the failure count, a
 *   failure increments it, and reaching `threshold` opens the breaker
 *   (opened_ms = now).  threshold 0 means the breaker never opens.
 * - open: calls are refused until `cooldown_ms` after opened_ms; then the
 *   first lu__breaker_allow() moves to half-open and grants one trial.
 * - half-open: the trial is in flight and further calls are refused.  Its
 *   success closes the breaker, its failure reopens it (opened_ms = now).
 *   If no result is recorded for a whole further cooldown (the trial was
 *   lost: its caller picked another candidate, or shut down), allow()
 *   grants a new trial, so a lost result cannot wedge the breaker.
 * - A result recorded while open comes from a call admitted before the
 *   breaker opened: a failure is counted, a success is ignored; only the
 *   half-open trial decides whether the function has recovered.
 *
 * lu__breaker_peek() answers the same question as lu__breaker_allow()
 * without changing anything (for scoring candidates before choosing one).
 */
#include <limits.h>

#include "internal.h"

/* Has cooldown_ms passed since since_ms? */
static int cooled(uint64_t since_ms, uint64_t now_ms, uint32_t cooldown_ms) {
  return now_ms >= since_ms && now_ms - since_ms >= cooldown_ms;
}

int lu__breaker_peek(const lu_breaker_t *b, uint64_t now_ms,
                     uint32_t cooldown_ms) {
  switch (b->state) {
  case LU_BREAKER_CLOSED:
    return 1;
  case LU_BREAKER_OPEN:
  case LU_BREAKER_HALF_OPEN:
    return cooled(b->opened_ms, now_ms, cooldown_ms);
  }
  return 1;
}

int lu__breaker_allow(lu_breaker_t *b, uint64_t now_ms, uint32_t cooldown_ms) {
  if (b->state == LU_BREAKER_CLOSED) return 1;
  if (!cooled(b->opened_ms, now_ms, cooldown_ms)) return 0;
  /* open -> half-open (or a lost half-open trial): grant one trial and
   * time it from now. */
  b->state = LU_BREAKER_HALF_OPEN;
  b->opened_ms = now_ms;
  return 1;
}

void lu__breaker_record(lu_breaker_t *b, int ok, uint64_t now_ms,
                        unsigned threshold) {
  if (threshold == 0) { /* breaker disabled: never open */
    b->state = LU_BREAKER_CLOSED;
    if (ok) b->failures = 0;
    else if (b->failures < UINT_MAX) b->failures++;
    return;
  }
  if (ok) {
    if (b->state == LU_BREAKER_OPEN) return; /* late result: ignore */
    b->state = LU_BREAKER_CLOSED;
    b->failures = 0;
    return;
  }
  if (b->failures < UINT_MAX) b->failures++;
  switch (b->state) {
  case LU_BREAKER_CLOSED:
    if (b->failures >= threshold) {
      b->state = LU_BREAKER_OPEN;
      b->opened_ms = now_ms;
    }
    break;
  case LU_BREAKER_HALF_OPEN:
    b->state = LU_BREAKER_OPEN;
    b->opened_ms = now_ms;
    break;
  case LU_BREAKER_OPEN:
    break; /* late failure: stays open, cooldown not extended */
  }
}
