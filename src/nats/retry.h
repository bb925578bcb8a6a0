/*
 * retry.h - riding through a JetStream leader election.  Internal.
 *
 * When the node that leads a stream dies, the other replicas elect a new
 * leader: ~5 s on nats-server 2.9 (docs/nats-notes.md a2: 4.4 to 7.5 s in
 * 19 of 20 kills, 19.4 s once).  Meanwhile a publish gets "no responders"
 * at once and what was in flight times out; an API request to the stream
 * times out or is answered 503 ("JetStream system temporarily
 * unavailable", 10008).  The same happens while a client reconnects to
 * another node.  A caller that must not fail for that wraps the call:
 *
 *   lu_retry_t r = {.window_ms = 20000, .what = "the events query"};
 *   for (;;) {
 *     s = call(&jerr);
 *     if (s == NATS_OK) { lu__retry_ok(&r); break; }
 *     if (!lu__retry_again(&r, s, jerr, NULL)) break;   // a clear error
 *   }
 *
 * One episode (from the first failure to the next success) logs one
 * warning when it starts and one line when it ends, not one per attempt;
 * an episode longer than window_ms gives up.  A lu_retry_t belongs to one
 * thread at a time; it holds no resources (no cleanup).
 */
#ifndef LUCENT_NATS_RETRY_H
#define LUCENT_NATS_RETRY_H

#include <stdint.h>

#include <nats/nats.h>

/** How long lucent's clients ride through an election by default: four
 *  times the median election, past the slowest one measured. */
#define LU_RETRY_DEFAULT_MS 20000u

typedef struct lu_retry_s {
  uint32_t window_ms; /**< longest episode; 0 = never retry */
  const char *what;   /**< for the log: "publish", "the events query" */
  const char *who;    /**< log component (a shard id), or NULL */
  uint64_t t0;        /**< start of the episode (ns), 0 = none */
  unsigned tries;     /**< failures in this episode */
  int quiet;          /**< 1: log nothing (a caller that says it itself) */
} lu_retry_t;

/** Is a failure one that a leader election or a reconnect explains:
 *  NATS_TIMEOUT, NATS_NO_RESPONDERS (a publish while a stream has no
 *  leader; nats.c also reports it as jerr 10076), a closed-for-now
 *  connection (NATS_CONNECTION_DISCONNECTED, NATS_NOT_YET_CONNECTED),
 *  jerr 10008 (503 "temporarily unavailable"), 10009 (not leader),
 *  10118/10119 (stream or consumer offline)?  1 or 0. */
int lu__retryable(natsStatus s, int jerr);

/** After a failure: when it is retryable and the episode is younger than
 *  window_ms, sleeps (50 ms doubling to 1 s, never past the window) and
 *  returns 1: try again.  Else returns 0: give up (and logs that the
 *  episode ended in failure).  The first failure of an episode logs a
 *  warning with `why` (NULL: the status text).  Thread: the caller's. */
int lu__retry_again(lu_retry_t *r, natsStatus s, int jerr, const char *why);

/** After a success: ends the episode, if one was open, with a log line
 *  saying how long it lasted. */
void lu__retry_ok(lu_retry_t *r);

/** Milliseconds the current episode has lasted (0 when none is open). */
uint64_t lu__retry_elapsed_ms(const lu_retry_t *r);

#endif /* LUCENT_NATS_RETRY_H */
