/*
 * placement.c - the pure placement math every layer shares: key hashing,
 * rendezvous hashing (with bounded loads) and power of two choices
 * (docs/architecture.md, decisions 5 and 6).  No state, no allocation.
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
 */
#include <math.h>
#include <string.h>

/* Inlined: the weight hash runs once per shard per event (the library call
 * costs ~1.6x; the output is the same, XXH3's is stable since 0.8). */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "util.h"

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
