/*
 * route.c - which shard gets an event (docs/architecture.md, decisions
 * 4-7): the key it is routed by, and the strategy of its type's first
 * candidate function.
 *
 * Keys.  hash_based and sticky_session read a key from the event data by a
 * dotted path ("customer.id", "items.0.sku"; numeric segments index arrays)
 * and turn the JSON value into text: strings as they are, numbers as %.17g
 * (integral values as plain integers, so 42 and 42.0 are the same key "42"),
 * true/false.  null, objects and arrays are not keys; the event is
 * rejected with a reason instead of routed anywhere at random.  JSON
 * numbers are doubles: integers beyond 2^53 lose precision, so ids should be
 * strings.
 *
 * Strategies (the math is in src/util/placement.c):
 *   round_robin     the view in turn (a counter per function);
 *   load_balanced   power of two choices on the members' loads;
 *   hash_based      rendezvous hashing of the key over the view, with
 *                   bounded loads when the function asks for it;
 *   sticky_session  the key's binding (first sight binds it to the less
 *                   loaded of two shards drawn at random), in the
 *                   manager's table, or the bus's (a KV bucket on NATS).
 *
 * Routing happens once per event, before it is queued: queued items are
 * pinned to their shard (decision 4).
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Inlined: the weight hash runs once per shard per event (the library call
 * costs ~1.6x; the output is the same, XXH3's is stable since 0.8). */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "shard.h"

/* ---- routing ---------------------------------------------------------- */

/* Reads the key of fe's strategy from ev's data.  0, or LU_EINVAL with a
 * reason in why. */
static int event_key(const lu_fnent_t *fe, const lu_event_t *ev, char *kbuf,
                     size_t kcap, const char **key, size_t *klen, char *why,
                     size_t wcap) {
  const cJSON *v = lu__json_path(ev->data, fe->fn->key);
  if (!v || lu__key_text(v, kbuf, kcap, key, klen) != 0) {
    lu__fmt(why, wcap,
            "%s key '%s' of function %s is %s in the event data",
            fe->strategy == LU_STRAT_HASH ? "hash" : "session", fe->fn->key,
            fe->fn->name, v ? "not a string, number or boolean" : "missing");
    return LU_EINVAL;
  }
  return 0;
}

/* The sessions table key: the field path plus the key's hash, so functions
 * sticky on the same field share bindings (a customer's session is one
 * session) while equal values of different fields do not. */
static size_t session_key(const lu_fnent_t *fe, const char *key, size_t klen,
                          char *buf, size_t cap) {
  int n = snprintf(buf, cap, "%s\x1f%016llx", fe->fn->key,
                   (unsigned long long)lu__key_hash(key, klen));
  return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

static int sticky(lu_manager_t *m, const lu_view_t *v, const lu_fnent_t *fe,
                  const char *key, size_t klen, uint64_t *loads,
                  lu_member_t **target) {
  char sk[320];
  size_t sl = session_key(fe, key, klen, sk, sizeof sk);
  unsigned vn = v->n;
  /* First sight binds the session to the less loaded of two shards drawn
   * at random (power of two choices, as load_balanced; decision 6).  The
   * plain least-loaded shard would take every new session of a burst:
   * loads are equal when idle, and a peer's load is a heartbeat old. */
  for (unsigned i = 0; i < vn; i++) loads[i] = lu__member_load(v->v[i]);
  uint64_t r = lu__manager_rand(m);
  lu_member_t *best = v->v[lu__two_choices(loads, vn, &r)];
  *target = best;
  if (m->has_bus && m->bus.sticky) {
    char bound[LU_SHARD_ID_MAX];
    if (m->bus.sticky(m->bus.ud, sk, sl, best->id, bound, sizeof bound) == 0)
      for (unsigned i = 0; i < vn; i++)
        if (!strcmp(v->v[i]->id, bound)) *target = v->v[i];
    return LU_ROUTE_OK; /* KV unreachable or bound elsewhere: best */
  }
  uint64_t seed = lu__sessions_bind(m->sessions, sk, sl, best->seed,
                                    fe->ttl_ms, lu__now_ns() / NS_PER_MS,
                                    v->seeds, vn, NULL);
  for (unsigned i = 0; i < vn; i++)
    if (v->seeds[i] == seed) *target = v->v[i];
  return LU_ROUTE_OK;
}

/* Picks the member for ev, under the view's read lock. */
static int route_locked(lu_manager_t *m, const lu_event_t *ev,
                        lu_member_t **target, char *why, size_t wcap) {
  const lu_view_t *v = &m->view;
  if (ev->depth > m->cfg.max_depth) {
    lu__fmt(why, wcap,
            "causation depth %u exceeds the limit of %u (a loop of "
            "functions emitting events?)", ev->depth, m->cfg.max_depth);
    return LU_ROUTE_DEAD;
  }
  size_t n;
  const lu_fnent_t *const *c = lu__registry_candidates(m->reg, ev->type, &n);
  if (!n) {
    lu__fmt(why, wcap, "no function handles event type '%s'", ev->type);
    return LU_ROUTE_DEAD;
  }
  unsigned vn = v->n;
  if (!vn) {
    lu__fmt(why, wcap, "no shard in the view");
    return LU_ROUTE_DEAD;
  }
  const lu_fnent_t *fe = c[0];
  uint64_t loads[LU_VIEW_MAX];
  char kbuf[64];
  const char *key = NULL;
  size_t klen = 0;
  if (fe->strategy == LU_STRAT_HASH || fe->strategy == LU_STRAT_STICKY) {
    if (event_key(fe, ev, kbuf, sizeof kbuf, &key, &klen, why, wcap))
      return LU_ROUTE_REJECT; /* a missing key is never a random route */
  }
  if (vn == 1) {
    *target = v->v[0];
    return LU_ROUTE_OK;
  }
  switch (fe->strategy) {
    case LU_STRAT_ROUND_ROBIN:
      *target = v->v[atomic_fetch_add_explicit(&m->rr[fe->index], 1,
                                               memory_order_relaxed) %
                     vn];
      return LU_ROUTE_OK;
    case LU_STRAT_LOAD_BALANCED: {
      for (unsigned i = 0; i < vn; i++) loads[i] = lu__member_load(v->v[i]);
      uint64_t r = lu__manager_rand(m);
      *target = v->v[lu__two_choices(loads, vn, &r)];
      return LU_ROUTE_OK;
    }
    case LU_STRAT_HASH: {
      uint64_t h = lu__key_hash(key, klen);
      if (fe->fn->load_bound > 1) {
        for (unsigned i = 0; i < vn; i++) loads[i] = lu__member_load(v->v[i]);
        *target = v->v[lu__rendezvous_bounded(h, v->seeds, vn, loads,
                                              fe->fn->load_bound)];
      } else {
        *target = v->v[lu__rendezvous(h, v->seeds, vn)];
      }
      return LU_ROUTE_OK;
    }
    case LU_STRAT_STICKY:
      return sticky(m, v, fe, key, klen, loads, target);
  }
  lu__fmt(why, wcap, "function %s has no usable strategy", fe->fn->name);
  return LU_ROUTE_DEAD;
}

int lu__route(lu_manager_t *m, const lu_event_t *ev, lu_dest_t *to,
              char *why, size_t wcap) {
  lu_member_t *target = NULL;
  pthread_rwlock_rdlock(&m->view.lock);
  int rc = route_locked(m, ev, &target, why, wcap);
  if (rc == LU_ROUTE_OK) {
    memcpy(to->id, target->id, sizeof to->id);
    to->local = target->local;
  }
  pthread_rwlock_unlock(&m->view.lock);
  return rc;
}

/* Affinity of a candidate for this event on this shard, in [0,1]: 1 when
 * its own strategy would place the event here (hash owner, session
 * binding), 0 when it would place it elsewhere, 0.5 for an unbound session;
 * round_robin and load_balanced functions run anywhere equally well. */
double lu__affinity(lu_manager_t *m, const lu_shard_t *s,
                    const lu_fnent_t *fe, const lu_event_t *ev) {
  char kbuf[64], why[8];
  const char *key;
  size_t klen;
  if (fe->strategy == LU_STRAT_HASH) {
    if (event_key(fe, ev, kbuf, sizeof kbuf, &key, &klen, why, sizeof why))
      return 0;
    pthread_rwlock_rdlock(&m->view.lock);
    double a = m->view.n &&
                       m->view.v[lu__rendezvous(lu__key_hash(key, klen),
                                                m->view.seeds, m->view.n)] ==
                           s->member
                   ? 1.0 : 0.0;
    pthread_rwlock_unlock(&m->view.lock);
    return a;
  }
  if (fe->strategy == LU_STRAT_STICKY) {
    uint64_t b;
    if (m->has_bus && m->bus.sticky) return 0.5; /* bindings live in KV */
    if (event_key(fe, ev, kbuf, sizeof kbuf, &key, &klen, why, sizeof why))
      return 0;
    char sk[320];
    size_t sl = session_key(fe, key, klen, sk, sizeof sk);
    if (lu__sessions_lookup(m->sessions, sk, sl, lu__now_ns() / NS_PER_MS,
                            &b))
      return 0.5;
    return b == s->member->seed ? 1.0 : 0.0;
  }
  return 1.0;
}

void lu__route_expire(lu_manager_t *m, uint64_t now_ms) {
  lu__sessions_expire(m->sessions, now_ms);
}
