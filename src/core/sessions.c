/*
 * sessions.c - the embedded sticky-session table (docs/architecture.md,
 * decision 7): the first event of a session binds it to a shard (the
 * caller passes its candidate, the less loaded of two); later events
 * follow the binding while that shard lives and the binding is fresh
 * (last use + ttl).  One table shared by every shard of the process, one
 * mutex.  Across processes the NATS layer keeps bindings in a JetStream
 * KV bucket instead (src/nats/session_kv.c).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "internal.h"


/* Chained hash table: a power-of-two array of buckets, one malloc per entry
 * with the key inline.  It doubles when entries outnumber buckets (average
 * chain <= 1) and never shrinks: its size is the high-water mark of live
 * sessions.  Expired entries are removed lazily (rebound in place by bind)
 * and by lu__sessions_expire, which sweeps a persistent cursor over at most
 * SESSIONS_EXPIRE_BUCKETS buckets per call, so a call does O(that + the
 * entries in them) work under the lock (about 1024 + 1024 on average) and
 * a full sweep takes ceil(buckets / 1024) calls. */
#define SESSIONS_MIN_BUCKETS 64
#define SESSIONS_EXPIRE_BUCKETS 1024

typedef struct sess_ent_s {
  struct sess_ent_s *next;
  uint64_t hash;
  uint64_t last_use; /* ms */
  uint32_t ttl_ms;
  uint64_t shard; /* the bound shard's seed */
  size_t len;
  char key[]; /* len bytes + NUL */
} sess_ent_t;

struct lu_sessions_s {
  pthread_mutex_t mu;
  sess_ent_t **b;
  size_t nb;     /* power of two */
  size_t count;
  size_t cursor; /* next bucket lu__sessions_expire looks at */
};

static int sess_expired(const sess_ent_t *e, uint64_t now_ms, uint32_t ttl) {
  uint64_t until = e->last_use > UINT64_MAX - ttl ? UINT64_MAX
                                                  : e->last_use + ttl;
  return now_ms >= until;
}

lu_sessions_t *lu__sessions_new(void) {
  lu_sessions_t *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->b = calloc(SESSIONS_MIN_BUCKETS, sizeof *s->b);
  if (!s->b || pthread_mutex_init(&s->mu, NULL) != 0) {
    free(s->b);
    free(s);
    return NULL;
  }
  s->nb = SESSIONS_MIN_BUCKETS;
  return s;
}

void lu__sessions_free(lu_sessions_t *s) {
  if (!s) return;
  for (size_t i = 0; i < s->nb; i++) {
    sess_ent_t *e = s->b[i];
    while (e) {
      sess_ent_t *nx = e->next;
      free(e);
      e = nx;
    }
  }
  free(s->b);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

static sess_ent_t *sess_find(lu_sessions_t *s, uint64_t h, const char *key,
                             size_t len) {
  for (sess_ent_t *e = s->b[h & (s->nb - 1)]; e; e = e->next)
    if (e->hash == h && e->len == len && (!len || !memcmp(e->key, key, len)))
      return e;
  return NULL;
}

/* Doubles the bucket array; on allocation failure keeps the old one (the
 * table still works, with longer chains). */
static void sess_grow(lu_sessions_t *s) {
  if (s->nb > SIZE_MAX / 2 / sizeof *s->b) return;
  size_t nb = s->nb * 2;
  sess_ent_t **b = calloc(nb, sizeof *b);
  if (!b) return;
  for (size_t i = 0; i < s->nb; i++) {
    sess_ent_t *e = s->b[i];
    while (e) {
      sess_ent_t *nx = e->next;
      size_t j = e->hash & (nb - 1);
      e->next = b[j];
      b[j] = e;
      e = nx;
    }
  }
  free(s->b);
  s->b = b;
  s->nb = nb;
  s->cursor = 0;
}

static int is_live(uint64_t seed, const uint64_t *live, unsigned nlive) {
  if (!live) return 1;
  for (unsigned i = 0; i < nlive; i++)
    if (live[i] == seed) return 1;
  return 0;
}

uint64_t lu__sessions_bind(lu_sessions_t *s, const char *key, size_t len,
                           uint64_t candidate, uint32_t ttl_ms,
                           uint64_t now_ms, const uint64_t *live,
                           unsigned nlive, int *created) {
  uint64_t h = XXH3_64bits(key, len);
  uint64_t shard = candidate;
  int made = 0;
  pthread_mutex_lock(&s->mu);
  sess_ent_t *e = sess_find(s, h, key, len);
  if (e) {
    if (!sess_expired(e, now_ms, ttl_ms) && is_live(e->shard, live, nlive)) {
      shard = e->shard; /* follow the live binding */
      /* Callers read the clock before taking the lock, so times can arrive
       * slightly out of order: never move last use backwards. */
      if (now_ms > e->last_use) e->last_use = now_ms;
    } else {
      e->shard = candidate; /* expired or its shard is gone: rebind */
      e->last_use = now_ms;
      made = 1;
    }
    e->ttl_ms = ttl_ms;
  } else if (len < SIZE_MAX - sizeof *e &&
             (e = malloc(sizeof *e + len + 1)) != NULL) {
    e->hash = h;
    e->last_use = now_ms;
    e->ttl_ms = ttl_ms;
    e->shard = candidate;
    e->len = len;
    if (len) memcpy(e->key, key, len);
    e->key[len] = '\0';
    size_t i = h & (s->nb - 1);
    e->next = s->b[i];
    s->b[i] = e;
    s->count++;
    made = 1;
    if (s->count > s->nb) sess_grow(s);
  }
  /* else: out of memory; route to the candidate without a binding. */
  pthread_mutex_unlock(&s->mu);
  if (created) *created = made;
  return shard;
}

int lu__sessions_lookup(lu_sessions_t *s, const char *key, size_t len,
                        uint64_t now_ms, uint64_t *shard) {
  uint64_t h = XXH3_64bits(key, len);
  int rc = LU_ENOENT;
  pthread_mutex_lock(&s->mu);
  sess_ent_t *e = sess_find(s, h, key, len);
  if (e && !sess_expired(e, now_ms, e->ttl_ms)) {
    if (shard) *shard = e->shard;
    rc = 0;
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

size_t lu__sessions_expire(lu_sessions_t *s, uint64_t now_ms) {
  size_t dropped = 0;
  pthread_mutex_lock(&s->mu);
  size_t steps = s->nb < SESSIONS_EXPIRE_BUCKETS ? s->nb
                                                 : SESSIONS_EXPIRE_BUCKETS;
  for (size_t k = 0; k < steps; k++) {
    size_t i = s->cursor;
    s->cursor = (s->cursor + 1) & (s->nb - 1);
    sess_ent_t **pp = &s->b[i];
    while (*pp) {
      sess_ent_t *e = *pp;
      if (sess_expired(e, now_ms, e->ttl_ms)) {
        *pp = e->next;
        free(e);
        s->count--;
        dropped++;
      } else {
        pp = &e->next;
      }
    }
  }
  pthread_mutex_unlock(&s->mu);
  return dropped;
}

size_t lu__sessions_count(lu_sessions_t *s) {
  pthread_mutex_lock(&s->mu);
  size_t n = s->count;
  pthread_mutex_unlock(&s->mu);
  return n;
}
