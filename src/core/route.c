/*
 * route.c - routing strategies: which shard gets an event (DESIGN.md
 * decisions 4-7).  Everything here is pure and allocation-free except the
 * sticky-session table at the end.
 *
 * Keys.  hash_based and sticky_session read a key from the event data by a
 * dotted path ("customer.id", "items.0.sku"; numeric segments index arrays)
 * and turn the JSON value into text: strings as they are, numbers as %.17g
 * (integral values as plain integers, so 42 and 42.0 are the same key "42"),
 * true/false.  null, objects and arrays are not keys; the caller rejects the
 * event with a reason instead of routing it anywhere at random.  JSON
 * numbers are doubles: integers beyond 2^53 lose precision, so ids should be
 * strings.
 *
 * hash_based: rendezvous (highest random weight) hashing.  The key is hashed
 * once with XXH3-64; each shard i has a seed (XXH3-64 of its id); the shard
 * with the highest weight w(key, i) = XXH3-64(le64(keyhash), seed_i) owns the
 * key.  Why rendezvous and not a ring or jump hash:
 *   - a shard's weight for a key depends only on (key, that shard's id), not
 *     on which other shards exist, so when shard n+1 joins a key moves only
 *     if the newcomer's weight beats the old maximum: 1/(n+1) of the keys,
 *     all of them to the newcomer;
 *   - when any shard leaves, only keys it owned move (each to its own
 *     runner-up), no matter where the leaver sat in the list.  Jump hash
 *     relabels buckets when a shard other than the last leaves;
 *   - no ring, no virtual nodes, no state to agree on: every process that
 *     sees the same set of shard ids computes the same owner, in any list
 *     order (barring a 2^-64 weight tie, broken by list index).
 * Cost is O(n) per key, ~2.5 ns per shard (measured: 22 ns for 4 shards,
 * 160 ns for 64).  The keyhash is fed to the weight hash as 8 little-endian bytes so
 * that machines of either endianness agree in a NATS cluster.
 *
 * Bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent hashing with
 * bounded loads"): with a factor c > 1 a key goes to the first shard in its
 * rendezvous order whose load is still under capacity
 * ceil(c * (total + 1) / n).  Hot shards shed their overflow to each key's
 * own runner-up (still consistent, so caches keep some locality), and no
 * shard carries more than about c times the average.  Since sum(load) =
 * total and c >= 1, some shard is always under capacity.
 *
 * load_balanced: power of two choices (Mitzenmacher).  Draw two distinct
 * shards at random, send to the less loaded.  "Pick the global minimum" on
 * load reports that are a heartbeat old sends every event of the interval
 * to the same shard (herding) and overloads it; two random choices spread
 * the burst while still keeping the maximum load exponentially better than
 * one random choice.
 *
 * sticky_session: the first event of a session binds it to a shard (the
 * caller passes the least loaded as candidate); later events follow the
 * binding while the shard lives and the binding is fresh (last use + ttl).
 * Embedded flavour: a hash table shared by every shard thread, one mutex.
 * (The NATS flavour uses a JetStream KV bucket; not here.)
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

#include "internal.h"

/* ---- keys ------------------------------------------------------------- */

/* Parses an array index segment: only ASCII digits, no sign, no overflow.
 * Returns 0 and *idx, or -1. */
static int parse_index(const char *s, size_t len, size_t *idx) {
  if (len == 0 || len > 18) return -1; /* 10^18 > any real array */
  size_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (size_t)(s[i] - '0');
  }
  *idx = v;
  return 0;
}

const cJSON *lu__json_path(const cJSON *root, const char *path) {
  if (!root || !path || !*path) return NULL;
  const cJSON *cur = root;
  const char *seg = path;
  for (;;) {
    const char *dot = strchr(seg, '.');
    size_t len = dot ? (size_t)(dot - seg) : strlen(seg);
    if (len == 0) return NULL; /* "a..b", ".a", "a." */
    const cJSON *next = NULL;
    if (cJSON_IsObject(cur)) {
      /* Case-sensitive; the first of duplicate keys wins, like
       * cJSON_GetObjectItemCaseSensitive. */
      for (const cJSON *c = cur->child; c; c = c->next) {
        if (c->string && strncmp(c->string, seg, len) == 0 &&
            c->string[len] == '\0') {
          next = c;
          break;
        }
      }
    } else if (cJSON_IsArray(cur)) {
      size_t idx;
      if (parse_index(seg, len, &idx) != 0) return NULL;
      const cJSON *c = cur->child;
      while (c && idx--) c = c->next;
      next = c;
    }
    if (!next) return NULL; /* missing, or a scalar in the middle */
    cur = next;
    if (!dot) return cur;
    seg = dot + 1;
  }
}

/* A number needs at most 24 bytes + NUL ("-2.2250738585072014e-308");
 * with a smaller buf the call fails with LU_E2BIG rather than truncate. */
int lu__key_text(const cJSON *v, char *buf, size_t cap, const char **key,
                 size_t *len) {
  if (!v || !key || !len) return LU_EINVAL;
  if (cJSON_IsString(v)) {
    if (!v->valuestring) return LU_EINVAL;
    *key = v->valuestring;
    *len = strlen(v->valuestring);
    return 0;
  }
  if (cJSON_IsTrue(v)) {
    *key = "true";
    *len = 4;
    return 0;
  }
  if (cJSON_IsFalse(v)) {
    *key = "false";
    *len = 5;
    return 0;
  }
  if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    int n;
    if (!buf || cap == 0) return LU_E2BIG;
    /* Integral values that fit an int64 print as plain integers (1e18 as
     * "1000000000000000000", not %.17g's "1e+18"); -0 prints as "0".
     * Everything else is %.17g, which round-trips every double. */
    if (d == floor(d) && d >= -9223372036854775808.0 &&
        d < 9223372036854775808.0)
      n = snprintf(buf, cap, "%" PRId64, (int64_t)d);
    else
      n = snprintf(buf, cap, "%.17g", d);
    if (n < 0 || (size_t)n >= cap) return LU_E2BIG;
    *key = buf;
    *len = (size_t)n;
    return 0;
  }
  return LU_EINVAL; /* null, object, array, raw, invalid */
}

/* ---- rendezvous ------------------------------------------------------- */

uint64_t lu__key_hash(const char *key, size_t len) {
  return XXH3_64bits(key, len);
}

uint64_t lu__shard_seed(const char *shard_id) {
  return XXH3_64bits(shard_id, strlen(shard_id));
}

/* The weight of a shard for a key: XXH3-64 of the key hash (8 little-endian
 * bytes, the same on every machine) seeded with the shard seed.  Tested for
 * even spread and for independence between shards (test_route.c). */
static inline uint64_t weight(uint64_t keyhash, uint64_t seed) {
  /* (Byte-wise stores into a buffer cost 4x here: a store-forwarding
   * stall when XXH3 reads them back as words.) */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  uint64_t le = __builtin_bswap64(keyhash);
#else
  uint64_t le = keyhash;
#endif
  return XXH3_64bits_withSeed(&le, sizeof le, seed);
}

unsigned lu__rendezvous(uint64_t keyhash, const uint64_t *seeds, unsigned n) {
  unsigned best = 0;
  uint64_t bw = 0;
  for (unsigned i = 0; i < n; i++) {
    uint64_t w = weight(keyhash, seeds[i]);
    if (i == 0 || w > bw) { /* strict: ties stay with the lower index */
      best = i;
      bw = w;
    }
  }
  return best;
}

/* Weights are cached on the stack up to this many shards; beyond it they are
 * recomputed per comparison (correct, just slower). */
#define ORDER_CACHE 256

void lu__rendezvous_order(uint64_t keyhash, const uint64_t *seeds,
                          unsigned n, unsigned *order) {
  uint64_t w[ORDER_CACHE];
  int cached = n <= ORDER_CACHE;
  if (cached)
    for (unsigned i = 0; i < n; i++) w[i] = weight(keyhash, seeds[i]);
  /* Insertion sort, descending weight.  Indexes enter in ascending order
   * and only strictly smaller weights are passed, so ties keep the lower
   * index first and order[0] == lu__rendezvous(). */
  for (unsigned i = 0; i < n; i++) {
    uint64_t wi = cached ? w[i] : weight(keyhash, seeds[i]);
    unsigned j = i;
    while (j > 0) {
      unsigned p = order[j - 1];
      uint64_t wp = cached ? w[p] : weight(keyhash, seeds[p]);
      if (wp >= wi) break;
      order[j] = p;
      j--;
    }
    order[j] = i;
  }
}

unsigned lu__rendezvous_bounded(uint64_t keyhash, const uint64_t *seeds,
                                unsigned n, const uint64_t *loads, double c) {
  if (n <= 1) return 0;
  if (!(c > 1.0) || !loads) return lu__rendezvous(keyhash, seeds, n);
  uint64_t total = 0;
  for (unsigned i = 0; i < n; i++)
    total = loads[i] > UINT64_MAX - total ? UINT64_MAX : total + loads[i];
  double cap = ceil(c * ((double)total + 1.0) / (double)n);
  /* Walking the rendezvous order and taking the first shard under capacity
   * is the same as taking the highest-weight shard among those under
   * capacity: one pass, no order array, any n. */
  int found = 0;
  unsigned best = 0;
  uint64_t bw = 0;
  /* Fallback if rounding (or saturation) left no shard under capacity:
   * the least loaded, higher weight first among equals. */
  unsigned least = 0;
  uint64_t lw = 0;
  for (unsigned i = 0; i < n; i++) {
    uint64_t w = weight(keyhash, seeds[i]);
    if (loads[i] < UINT64_MAX && (double)(loads[i] + 1) <= cap &&
        (!found || w > bw)) {
      found = 1;
      best = i;
      bw = w;
    }
    if (i == 0 || loads[i] < loads[least] ||
        (loads[i] == loads[least] && w > lw)) {
      least = i;
      lw = w;
    }
  }
  return found ? best : least;
}

/* ---- two choices ------------------------------------------------------ */

/* A uniform index in [0,n) (Lemire's multiply-shift; bias < n / 2^64). */
static unsigned rand_below(uint64_t *rng, unsigned n) {
  return (unsigned)(((unsigned __int128)lu__rand_next(rng) * n) >> 64);
}

unsigned lu__two_choices(const uint64_t *loads, unsigned n, uint64_t *rng) {
  if (n <= 1) return 0;
  unsigned a = rand_below(rng, n);
  unsigned b = rand_below(rng, n - 1);
  if (b >= a) b++; /* distinct from a, uniform over the other n - 1 */
  /* Ties go to the first draw, which is uniform: "ties to the lower index"
   * would starve the highest shards whenever loads are equal (idle). */
  return loads[b] < loads[a] ? b : a;
}

/* ---- sticky sessions -------------------------------------------------- */

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
  unsigned shard;
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

unsigned lu__sessions_bind(lu_sessions_t *s, const char *key, size_t len,
                           unsigned candidate, uint32_t ttl_ms,
                           uint64_t now_ms, const unsigned char *alive,
                           int *created) {
  uint64_t h = XXH3_64bits(key, len);
  unsigned shard = candidate;
  int made = 0;
  pthread_mutex_lock(&s->mu);
  sess_ent_t *e = sess_find(s, h, key, len);
  if (e) {
    if (!sess_expired(e, now_ms, ttl_ms) && (!alive || alive[e->shard])) {
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
                        uint64_t now_ms, unsigned *shard) {
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
