/*
 * session_kv.c - sticky-session bindings shared by every shard process
 * (docs/architecture.md, decision 7, distributed flavour): a JetStream KV
 * bucket,
 * lucent_sessions, maps a session key to the shard id it is bound to.
 *
 *   bind(key, candidate):
 *
 *     cache hit, fresh, bound shard alive --------------------> bound
 *        | (written >= ttl/4 ago: Update(bound, rev) first, to keep it)
 *     miss / stale / dead shard
 *        v
 *     Get(key) --not found--> Create(candidate) --ok--------> candidate
 *        |                         | exists (someone won) --> Get again
 *        | found
 *        +-- alive, not expired ----------------------------> bound
 *        +-- shard dead, or older than the TTL:
 *              Update(candidate, rev) --ok-------------------> candidate
 *                     | wrong revision (someone else did) --> Get again
 *
 * Design notes:
 *
 *  1. First binder wins.  kvStore_Create writes only when the key has no
 *     value, so when shards race on a new session exactly one Create
 *     succeeds (measured: docs/nats-notes.md) and everyone else reads the
 *     winner's value.  A failed Create is plain NATS_ERR (trap in
 *     docs/nats-notes.md), the same status a bad request would give, so we
 *     never
 *     trust it: we read the key again.
 *
 *  2. Replacing a binding is a compare-and-set: kvStore_Update with the
 *     revision we read.  If two shards both find the bound shard dead,
 *     only the first update lands; the other sees "wrong last sequence"
 *     and reads the new binding.
 *
 *  3. TTL.  NATS 2.9 has one TTL per bucket (the stream's MaxAge), counted
 *     from a key's last write, and its expiry sends no event.  A binding
 *     in use is written again at most every ttl/4 (so it never expires
 *     while events keep coming), and one older than the TTL by the
 *     server's timestamp is treated as gone even if the server has not
 *     removed it yet (its expiry timer runs on its own schedule).  If the
 *     bucket exists with another TTL (made by a lucent with another
 *     registry), its TTL is the one that counts, and is used here.
 *
 *  4. Local cache.  A hot session costs no round trip: the binding, its
 *     revision and when it was last written are cached, and trusted until
 *     the TTL would have expired it.  The cache is bounded
 *     (LU_KV_CACHE_MAX; when full, expired entries go, then everything)
 *     and guarded by one mutex, never held across a KV call or the
 *     caller's alive() callback.  The price: a takeover made by another
 *     process (it found the bound shard dead before we did) is seen here
 *     at our next refresh, at most ttl/4 later, or at once when alive()
 *     calls the shard dead here too.
 *
 *  5. Keys.  A KV key allows only [-/_=.A-Za-z0-9] and no empty levels,
 *     while session keys are any bytes (a customer name, an e-mail).  They
 *     are encoded injectively: [A-Za-z0-9_-] stay, every other byte is
 *     =XX (upper-case hex), the empty key is =e, and a key whose encoding
 *     would exceed LU_KV_KEY_MAX is =h + its XXH3-128 in hex.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "nats_internal.h"

#define LU_KV_CACHE_MAX 65536
#define LU_KV_KEY_MAX 240      /* encoded key length limit */
#define LU_KV_SHARD_MAX 128    /* shard id length limit */
#define LU_KV_API_WAIT_MS 2000 /* a KV call (binding is on the routing path) */
#define LU_KV_ATTEMPTS 8       /* Get/Create/Update rounds under contention */

typedef struct centry_s {
  struct centry_s *next;
  uint64_t hash;
  uint64_t rev;
  uint64_t written_ns; /* monotonic time of the binding's last write */
  char shard[LU_KV_SHARD_MAX];
  size_t klen;
  char key[]; /* raw key, klen bytes */
} centry_t;

struct lu_kvsess_s {
  jsCtx *js;
  kvStore *kv;
  uint64_t ttl_ns; /* 0: bindings never expire */
  pthread_mutex_t mu;
  centry_t **tab;
  size_t nb, n;
};

/* ---- keys (note 5) ---------------------------------------------------- */

/* Writes the KV key for (key, klen) into buf (LU_KV_KEY_MAX + 1 bytes). */
static void encode_key(const char *key, size_t klen, char *buf) {
  static const char hex[] = "0123456789ABCDEF";
  if (klen == 0) {
    memcpy(buf, "=e", 3);
    return;
  }
  size_t o = 0;
  for (size_t i = 0; i < klen; i++) {
    unsigned char c = (unsigned char)key[i];
    int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (o + (plain ? 1 : 3) > LU_KV_KEY_MAX) goto hashed;
    if (plain) {
      buf[o++] = (char)c;
    } else {
      buf[o++] = '=';
      buf[o++] = hex[c >> 4];
      buf[o++] = hex[c & 15];
    }
  }
  buf[o] = 0;
  return;
hashed:;
  XXH128_hash_t h = XXH3_128bits(key, klen);
  lu__fmt(buf, LU_KV_KEY_MAX + 1, "=h%016llx%016llx",
          (unsigned long long)h.high64, (unsigned long long)h.low64);
}

/* ---- cache (note 4) --------------------------------------------------- */

static centry_t *cache_find(lu_kvsess_t *s, uint64_t h, const char *key,
                            size_t klen) {
  if (!s->nb) return NULL;
  for (centry_t *e = s->tab[h & (s->nb - 1)]; e; e = e->next)
    if (e->hash == h && e->klen == klen && !memcmp(e->key, key, klen))
      return e;
  return NULL;
}

static int fresh(const lu_kvsess_t *s, uint64_t written, uint64_t now) {
  return !s->ttl_ns || now - written < s->ttl_ns;
}

static void cache_clear(lu_kvsess_t *s) {
  for (size_t i = 0; i < s->nb; i++) {
    centry_t *e = s->tab[i];
    while (e) {
      centry_t *next = e->next;
      free(e);
      e = next;
    }
    s->tab[i] = NULL;
  }
  s->n = 0;
}

/* Drops expired entries; if the cache is still full, everything. */
static void cache_sweep(lu_kvsess_t *s, uint64_t now) {
  for (size_t i = 0; i < s->nb; i++) {
    centry_t **pp = &s->tab[i];
    while (*pp) {
      centry_t *e = *pp;
      if (!fresh(s, e->written_ns, now)) {
        *pp = e->next;
        free(e);
        s->n--;
      } else {
        pp = &e->next;
      }
    }
  }
  if (s->n >= LU_KV_CACHE_MAX) cache_clear(s);
}

static void cache_put(lu_kvsess_t *s, uint64_t h, const char *key,
                      size_t klen, const char *shard, uint64_t rev,
                      uint64_t written) {
  pthread_mutex_lock(&s->mu);
  centry_t *e = cache_find(s, h, key, klen);
  if (!e) {
    uint64_t now = lu__now_ns();
    if (s->n >= LU_KV_CACHE_MAX) cache_sweep(s, now);
    if (!s->nb) {
      s->tab = calloc(1024, sizeof *s->tab);
      if (!s->tab) goto out;
      s->nb = 1024;
    } else if (s->n >= s->nb && s->nb < LU_KV_CACHE_MAX) {
      size_t nb = s->nb * 2;
      centry_t **tab = calloc(nb, sizeof *tab);
      if (tab) {
        for (size_t i = 0; i < s->nb; i++) {
          for (centry_t *x = s->tab[i], *next; x; x = next) {
            next = x->next;
            x->next = tab[x->hash & (nb - 1)];
            tab[x->hash & (nb - 1)] = x;
          }
        }
        free(s->tab);
        s->tab = tab;
        s->nb = nb;
      }
    }
    e = malloc(sizeof *e + klen);
    if (!e) goto out; /* not caching costs a round trip, nothing more */
    e->hash = h;
    e->klen = klen;
    memcpy(e->key, key, klen);
    e->next = s->tab[h & (s->nb - 1)];
    s->tab[h & (s->nb - 1)] = e;
    s->n++;
  }
  lu__fmt(e->shard, sizeof e->shard, "%s", shard);
  e->rev = rev;
  e->written_ns = written;
out:
  pthread_mutex_unlock(&s->mu);
}

static void cache_drop(lu_kvsess_t *s, uint64_t h, const char *key,
                       size_t klen) {
  pthread_mutex_lock(&s->mu);
  if (s->nb) {
    for (centry_t **pp = &s->tab[h & (s->nb - 1)]; *pp; pp = &(*pp)->next) {
      centry_t *e = *pp;
      if (e->hash == h && e->klen == klen && !memcmp(e->key, key, klen)) {
        *pp = e->next;
        free(e);
        s->n--;
        break;
      }
    }
  }
  pthread_mutex_unlock(&s->mu);
}

/* Copies the cached binding out: 1 if there is one. */
static int cache_get(lu_kvsess_t *s, uint64_t h, const char *key, size_t klen,
                     char *shard, uint64_t *rev, uint64_t *written) {
  pthread_mutex_lock(&s->mu);
  centry_t *e = cache_find(s, h, key, klen);
  if (e) {
    memcpy(shard, e->shard, LU_KV_SHARD_MAX);
    *rev = e->rev;
    *written = e->written_ns;
  }
  pthread_mutex_unlock(&s->mu);
  return e != NULL;
}

/* ---- open / close ----------------------------------------------------- */

int lu__kvsess_open(lu_kvsess_t **out, natsConnection *nc, uint32_t ttl_ms,
                    char *err, size_t errlen) {
  return lu__kvsess_open_with(out, nc, ttl_ms, NULL, err, errlen);
}

int lu__kvsess_open_with(lu_kvsess_t **out, natsConnection *nc,
                         uint32_t ttl_ms, const lu_assets_opts_t *ao,
                         char *err, size_t errlen) {
  char dummy[8], why[512];
  if (!err || !errlen) {
    err = dummy;
    errlen = sizeof dummy;
  }
  err[0] = 0;
  if (!out) return LU_EINVAL;
  *out = NULL;
  if (!nc) {
    lu__fmt(err, errlen, "cannot open the session table: no NATS "
                         "connection");
    return LU_EINVAL;
  }
  lu_kvsess_t *s = calloc(1, sizeof *s);
  if (!s) return LU_ENOMEM;
  pthread_mutex_init(&s->mu, NULL);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = LU_KV_API_WAIT_MS;
  natsStatus st = natsConnection_JetStream(&s->js, nc, &jo);
  int rc = 0;
  if (st == NATS_OK) {
    rc = lu__assets_sessions(s->js, (int64_t)ttl_ms * 1000000, ao, &s->kv,
                             why, sizeof why);
    if (rc) {
      lu__fmt(err, errlen, "cannot open the session table (KV bucket "
                           LU_KV_SESSIONS "): %s", why);
      lu__kvsess_close(s);
      return rc;
    }
  }
  kvStatus *ks = NULL;
  if (st == NATS_OK) st = kvStore_Status(&ks, s->kv);
  if (st != NATS_OK) {
    lu__nats_reason(st, why, sizeof why);
    lu__fmt(err, errlen, "cannot open the session table (KV bucket "
                         LU_KV_SESSIONS "): %s", why);
    lu__kvsess_close(s);
    return st == NATS_NO_MEMORY ? LU_ENOMEM : LU_EIO;
  }
  int64_t ttl = kvStatus_TTL(ks); /* ns */
  kvStatus_Destroy(ks);
  s->ttl_ns = ttl > 0 ? (uint64_t)ttl : 0;
  *out = s;
  return 0;
}

void lu__kvsess_close(lu_kvsess_t *s) {
  if (!s) return;
  cache_clear(s);
  free(s->tab);
  kvStore_Destroy(s->kv);
  jsCtx_Destroy(s->js);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

/* ---- bind / lookup ---------------------------------------------------- */

static int put_out(char *out, size_t cap, const char *shard) {
  size_t n = strlen(shard);
  if (!out || n >= cap) return LU_E2BIG;
  memcpy(out, shard, n + 1);
  return 0;
}

/* The binding in the KV: 1 found (shard, rev, age set), 0 none, or
 * LU_EIO. */
static int kv_read(lu_kvsess_t *s, const char *ekey, char *shard,
                   uint64_t *rev, uint64_t *age_ns) {
  kvEntry *e = NULL;
  natsStatus st = kvStore_Get(&e, s->kv, ekey);
  if (st == NATS_NOT_FOUND) return 0;
  if (st != NATS_OK) return LU_EIO;
  if (kvEntry_Operation(e) != kvOp_Put) {
    kvEntry_Destroy(e);
    return 0;
  }
  int len = kvEntry_ValueLen(e);
  if (len <= 0 || len >= LU_KV_SHARD_MAX) {
    /* Not a shard id lucent wrote: treat as unbound-but-taken, so that a
     * CAS replaces it (rev set, empty shard = never alive). */
    shard[0] = 0;
  } else {
    memcpy(shard, kvEntry_Value(e), (size_t)len);
    shard[len] = 0;
  }
  *rev = kvEntry_Revision(e);
  int64_t created = kvEntry_Created(e); /* server time, ns since epoch */
  int64_t now = lu__wall_ms() * 1000000;
  *age_ns = created > 0 && now > created ? (uint64_t)(now - created) : 0;
  kvEntry_Destroy(e);
  return 1;
}

int lu__kvsess_bind(lu_kvsess_t *s, const char *key, size_t klen,
                    const char *candidate,
                    int (*alive)(void *ud, const char *shard), void *ud,
                    char *out, size_t cap) {
  if (!s || (!key && klen) || !candidate || !*candidate || !out || !cap)
    return LU_EINVAL;
  size_t clen = strlen(candidate);
  if (clen >= LU_KV_SHARD_MAX) return LU_EINVAL;
  if (!key) key = "";
  uint64_t h = lu__key_hash(key, klen);
  char shard[LU_KV_SHARD_MAX];
  uint64_t rev = 0, written = 0, now = lu__now_ns();

  /* Hot path: the cached binding, refreshed every ttl/4 (note 3). */
  if (cache_get(s, h, key, klen, shard, &rev, &written) &&
      fresh(s, written, now) && shard[0] && (!alive || alive(ud, shard))) {
    if (s->ttl_ns && now - written >= s->ttl_ns / 4) {
      char ekey[LU_KV_KEY_MAX + 1];
      uint64_t nrev = 0;
      encode_key(key, klen, ekey);
      natsStatus st = kvStore_Update(&nrev, s->kv, ekey, shard,
                                     (int)strlen(shard), rev);
      if (st == NATS_OK) {
        cache_put(s, h, key, klen, shard, nrev, now);
        return put_out(out, cap, shard);
      }
      cache_drop(s, h, key, klen);
      if (st != NATS_ERR) /* KV unreachable: still bound until expiry */
        return put_out(out, cap, shard);
      /* NATS_ERR: someone else wrote it (a takeover): read it. */
    } else {
      return put_out(out, cap, shard);
    }
  }

  char ekey[LU_KV_KEY_MAX + 1];
  encode_key(key, klen, ekey);
  for (int attempt = 0; attempt < LU_KV_ATTEMPTS; attempt++) {
    uint64_t age = 0;
    now = lu__now_ns();
    int found = kv_read(s, ekey, shard, &rev, &age);
    if (found < 0) break;
    natsStatus st;
    uint64_t nrev = 0;
    if (!found) {
      st = kvStore_Create(&nrev, s->kv, ekey, candidate, (int)clen);
      if (st == NATS_OK) {
        cache_put(s, h, key, klen, candidate, nrev, now);
        return put_out(out, cap, candidate);
      }
      if (st == NATS_ERR) continue; /* taken meanwhile (note 1) */
      break;
    }
    int expired = s->ttl_ns && age >= s->ttl_ns;
    if (!expired && shard[0] && (!alive || alive(ud, shard))) {
      if (s->ttl_ns && age >= s->ttl_ns / 4) {
        /* In use again: keep it from expiring. */
        st = kvStore_Update(&nrev, s->kv, ekey, shard, (int)strlen(shard),
                            rev);
        if (st == NATS_ERR) continue; /* changed meanwhile */
        if (st == NATS_OK) {
          cache_put(s, h, key, klen, shard, nrev, now);
          return put_out(out, cap, shard);
        }
        return put_out(out, cap, shard); /* unreachable now: not cached */
      }
      cache_put(s, h, key, klen, shard, rev, age < now ? now - age : 0);
      return put_out(out, cap, shard);
    }
    /* Bound to a dead shard, or expired: take it over (note 2). */
    st = kvStore_Update(&nrev, s->kv, ekey, candidate, (int)clen, rev);
    if (st == NATS_OK) {
      cache_put(s, h, key, klen, candidate, nrev, now);
      return put_out(out, cap, candidate);
    }
    if (st != NATS_ERR) break;
  }
  /* The KV cannot be reached (or is contended beyond reason): the caller
   * uses the candidate for this event and caches nothing. */
  cache_drop(s, h, key, klen);
  put_out(out, cap, candidate);
  return LU_EIO;
}

int lu__kvsess_lookup(lu_kvsess_t *s, const char *key, size_t klen, char *out,
                      size_t cap) {
  if (!s || (!key && klen) || !out || !cap) return LU_EINVAL;
  if (!key) key = "";
  uint64_t h = lu__key_hash(key, klen);
  char shard[LU_KV_SHARD_MAX];
  uint64_t rev, written, now = lu__now_ns();
  if (cache_get(s, h, key, klen, shard, &rev, &written) &&
      fresh(s, written, now) && shard[0])
    return put_out(out, cap, shard);
  char ekey[LU_KV_KEY_MAX + 1];
  encode_key(key, klen, ekey);
  uint64_t age = 0;
  int found = kv_read(s, ekey, shard, &rev, &age);
  if (found < 0) return LU_EIO;
  if (!found || !shard[0] || (s->ttl_ns && age >= s->ttl_ns))
    return LU_ENOENT;
  cache_put(s, h, key, klen, shard, rev, age < now ? now - age : 0);
  return put_out(out, cap, shard);
}
