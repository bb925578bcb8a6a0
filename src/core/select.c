/*
 * select.c - choosing one of the candidate functions for an event on this
 * shard: the composite score (docs/architecture.md, decision 8).
 *
 * Every candidate gets four sub-scores, each in [0,1], higher is better:
 *
 *   load      = 1 - min(1, ewma_ns / (timeout_ms * 1e6))
 *               ewma_ns is the function's execution-latency EWMA on this
 *               shard and timeout_ms its timeout (0 = the default 1000 ms).
 *               A function that has no history yet (ewma 0) scores 1; one
 *               whose typical run takes its whole deadline or more scores 0.
 *
 *   resources = 1 - max(cpu_millis / cpu_free, memory_mb / mem_free)
 *               for a candidate that fits (cpu_millis <= cpu_free and
 *               memory_mb <= mem_free), where cpu_free and mem_free are
 *               the shard's free capacity.  A need of 0 counts as 0 (so when
 *               cpu_free or mem_free is 0, only a zero need fits).  A
 *               candidate needing nothing scores 1; one that would take all
 *               that is left of either scores 0.  A candidate that does not
 *               fit scores 0 and is excluded.
 *
 *   priority  = (p - 1) / 9
 *               p is the function's priority, 0 meaning the default 5,
 *               clamped to [1,10]: 1 scores 0, 5 scores 0.444, 10 scores 1.
 *
 *   affinity  = the caller's affinity value clamped to [0,1] (not a number
 *               counts as 0).
 *
 *   total     = w.load * load + w.resources * resources
 *               + w.priority * priority + w.affinity * affinity
 *               with the configured weights (default 0.3, 0.25, 0.25, 0.2,
 *               the pattern's; a NULL weight set means the default; a
 *               negative or non-finite weight counts as 0).
 *
 * Excluded (never chosen, whatever its total): a candidate whose circuit
 * breaker is open ("circuit breaker open") and one whose cpu or memory need
 * does not fit the shard's free capacity ("does not fit: ...").  Excluded
 * candidates still get every sub-score and total filled in, so --explain
 * shows what they would have scored.
 *
 * The winner is the eligible candidate with the highest total.  Totals
 * within 1e-9 of the highest count as tied; among the tied, the higher
 * (effective) priority wins, then the smaller name (strcmp).  The tied set
 * is taken relative to the highest total, so the choice does not depend on
 * the order of the candidates.  No eligible candidate: -1.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define TIE_EPS 1e-9
#define DEFAULT_TIMEOUT_MS 1000u
#define DEFAULT_PRIORITY 5

static const char WHY_BREAKER[] = "circuit breaker open";
static const char WHY_NOFN[] = "no function descriptor";
static const char WHY_CPU[] =
    "does not fit: needs more cpu than the shard has free";
static const char WHY_MEM[] =
    "does not fit: needs more memory than the shard has free";
static const char WHY_BOTH[] =
    "does not fit: needs more cpu and memory than the shard has free";

static double clamp01(double x) {
  if (!(x > 0)) return 0; /* also NaN */
  return x < 1 ? x : 1;
}

static double weight(double w) { return isfinite(w) && w > 0 ? w : 0; }

static int eff_priority(const lu_fn_t *fn) {
  int32_t p = fn ? fn->priority : 0;
  if (p == 0) p = DEFAULT_PRIORITY;
  if (p < 1) p = 1;
  if (p > 10) p = 10;
  return (int)p;
}

static const char *fn_name(const lu_fn_t *fn) {
  return fn && fn->name ? fn->name : "?";
}

/* A need against what is free: 0 for no need, else need/free (the caller
 * has checked need <= free, so free > 0 here). */
static double share(uint32_t need, uint32_t free_) {
  return need ? (double)need / (double)free_ : 0;
}

static void score_one(const lu_candidate_t *c, const lu_weights_t *w,
                      uint32_t cpu_free, uint32_t mem_free, lu_scores_t *s) {
  const lu_fn_t *fn = c->fn;
  uint32_t timeout_ms = fn && fn->timeout_ms ? fn->timeout_ms
                                             : DEFAULT_TIMEOUT_MS;
  s->load = 1 - fmin(1, (double)c->ewma_ns / ((double)timeout_ms * 1e6));

  uint32_t cpu = fn ? fn->cpu_millis : 0, mem = fn ? fn->memory_mb : 0;
  int cpu_ok = cpu <= cpu_free, mem_ok = mem <= mem_free;
  if (cpu_ok && mem_ok)
    s->resources = clamp01(1 - fmax(share(cpu, cpu_free), share(mem, mem_free)));
  else
    s->resources = 0;

  s->priority = (eff_priority(fn) - 1) / 9.0;
  s->affinity = clamp01(c->affinity);
  s->total = weight(w->load) * s->load +
             weight(w->resources) * s->resources +
             weight(w->priority) * s->priority +
             weight(w->affinity) * s->affinity;

  if (!fn) s->excluded = WHY_NOFN;
  else if (c->breaker_open) s->excluded = WHY_BREAKER;
  else if (!cpu_ok && !mem_ok) s->excluded = WHY_BOTH;
  else if (!cpu_ok) s->excluded = WHY_CPU;
  else if (!mem_ok) s->excluded = WHY_MEM;
  else s->excluded = NULL;
}

int lu__select(const lu_candidate_t *cands, size_t n, const lu_weights_t *w,
               uint32_t cpu_free, uint32_t mem_free, lu_scores_t *scores) {
  static const lu_weights_t defaults = {0.3, 0.25, 0.25, 0.2};
  if (!w) w = &defaults;

  double best_total = -1;
  for (size_t i = 0; i < n; i++) {
    score_one(&cands[i], w, cpu_free, mem_free, &scores[i]);
    if (!scores[i].excluded && scores[i].total > best_total)
      best_total = scores[i].total;
  }
  if (best_total < 0) return -1; /* totals are >= 0: nothing eligible */

  /* Among those within TIE_EPS of the best: priority, then name. */
  int chosen = -1;
  for (size_t i = 0; i < n; i++) {
    if (scores[i].excluded || scores[i].total < best_total - TIE_EPS) continue;
    if (chosen < 0) {
      chosen = (int)i;
      continue;
    }
    int pi = eff_priority(cands[i].fn), pc = eff_priority(cands[chosen].fn);
    if (pi > pc ||
        (pi == pc && strcmp(fn_name(cands[i].fn),
                            fn_name(cands[chosen].fn)) < 0))
      chosen = (int)i;
  }
  return chosen;
}

/* ---- explain ------------------------------------------------------------ */

typedef struct {
  char *p;
  size_t cap, len; /* len < cap always */
  int trunc;
} out_t;

static void put(out_t *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void put(out_t *o, const char *fmt, ...) {
  if (o->trunc) return;
  size_t room = o->cap - o->len;
  va_list ap;
  va_start(ap, fmt);
  int r = vsnprintf(o->p + o->len, room, fmt, ap);
  va_end(ap);
  if (r < 0) {
    o->p[o->len] = 0;
    o->trunc = 1;
  } else if ((size_t)r >= room) {
    o->len = o->cap - 1;
    o->trunc = 1;
  } else {
    o->len += (size_t)r;
  }
}

/* Outside text (an event id) on a log line: control bytes, spaces and
 * quotes become '?' so the line stays one line with one field; at most
 * 128 bytes. */
static void put_text(out_t *o, const char *s) {
  char tmp[129];
  size_t i = 0;
  if (!s || !*s) s = "-";
  for (; s[i] && i < sizeof tmp - 1; i++) {
    unsigned char c = (unsigned char)s[i];
    tmp[i] = (c <= 0x20 || c == 0x7f || c == '"') ? '?' : (char)c;
  }
  tmp[i] = 0;
  put(o, "%s%s", tmp, s[i] ? "..." : "");
}

char *lu__explain(char *buf, size_t cap, const char *shard,
                  const char *event_id, const lu_candidate_t *cands,
                  const lu_scores_t *scores, size_t n, int chosen) {
  if (!buf || cap == 0) return buf;
  out_t o = {buf, cap, 0, 0};
  buf[0] = 0;
  put(&o, "explain shard=");
  put_text(&o, shard);
  put(&o, " event=");
  put_text(&o, event_id);
  if (chosen >= 0 && (size_t)chosen < n)
    put(&o, " chosen=%s", fn_name(cands[chosen].fn));
  else
    put(&o, " chosen=none");
  put(&o, " candidates:");
  if (n == 0) put(&o, " none");
  for (size_t i = 0; i < n; i++) {
    const lu_scores_t *s = &scores[i];
    put(&o, " %s{load=%.3f res=%.3f prio=%.3f aff=%.3f total=%.3f",
        fn_name(cands[i].fn), s->load, s->resources, s->priority,
        s->affinity, s->total);
    const lu_fn_t *fn = cands[i].fn;
    const char *short_of = s->excluded == WHY_CPU    ? "cpu"
                           : s->excluded == WHY_MEM  ? "memory"
                           : s->excluded == WHY_BOTH ? "cpu and memory"
                                                     : NULL;
    if (short_of && fn)
      put(&o,
          " excluded=\"does not fit: needs %" PRIu32 " millicores / %" PRIu32
          " MB, more %s than the shard has free\"",
          fn->cpu_millis, fn->memory_mb, short_of);
    else if (s->excluded)
      put(&o, " excluded=\"%s\"", s->excluded);
    put(&o, "}");
  }
  /* Mark a cut line so nobody mistakes it for the whole decision. */
  if (o.trunc && cap >= 4) memcpy(buf + cap - 4, "...", 4);
  return buf;
}
