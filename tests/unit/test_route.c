/*
 * test_route.c - routing strategies: key extraction, rendezvous hashing
 * (spread, movement on join/leave), bounded loads, two choices and the
 * sticky-session table (including concurrent first binds).
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

#define NKEYS 10000

static uint64_t key_hash_i(int i) {
  char k[32];
  int n = snprintf(k, sizeof k, "key-%d", i);
  return lu__key_hash(k, (size_t)n);
}

static void shard_seeds(uint64_t *seeds, unsigned n) {
  for (unsigned i = 0; i < n; i++) {
    char id[32];
    snprintf(id, sizeof id, "shard-%u", i);
    seeds[i] = lu__shard_seed(id);
  }
}

/* ---- json_path -------------------------------------------------------- */

static const char *DOC =
    "{\"customer\":{\"id\":\"c-1\",\"Id\":\"upper\",\"tier\":3},"
    "\"items\":[{\"sku\":\"A\"},{\"sku\":\"B\"}],"
    "\"arr\":[[1,2],[3]],\"flag\":true,\"nothing\":null,"
    "\"0\":\"zero-key\",\"name\":\"n\"}";

static void test_json_path_objects(void **st) {
  (void)st;
  cJSON *root = cJSON_Parse(DOC);
  assert_non_null(root);
  const cJSON *v = lu__json_path(root, "customer.id");
  assert_true(cJSON_IsString(v));
  assert_string_equal(v->valuestring, "c-1");
  /* keys are case-sensitive */
  v = lu__json_path(root, "customer.Id");
  assert_true(cJSON_IsString(v));
  assert_string_equal(v->valuestring, "upper");
  assert_null(lu__json_path(root, "customer.ID"));
  v = lu__json_path(root, "customer.tier");
  assert_true(cJSON_IsNumber(v));
  assert_int_equal(v->valueint, 3);
  /* a whole object is a valid path target */
  v = lu__json_path(root, "customer");
  assert_true(cJSON_IsObject(v));
  /* a numeric segment on an object is a key */
  v = lu__json_path(root, "0");
  assert_true(cJSON_IsString(v));
  assert_string_equal(v->valuestring, "zero-key");
  /* null is found (the key exists); key_text rejects it later */
  v = lu__json_path(root, "nothing");
  assert_non_null(v);
  assert_true(cJSON_IsNull(v));
  /* prefixes of keys are not keys (length-aware comparison) */
  assert_null(lu__json_path(root, "cust"));
  assert_null(lu__json_path(root, "customer.i"));
  assert_null(lu__json_path(root, "customerx"));
  assert_null(lu__json_path(root, "nam"));
  assert_null(lu__json_path(root, "names"));
  cJSON_Delete(root);
}

static void test_json_path_arrays(void **st) {
  (void)st;
  cJSON *root = cJSON_Parse(DOC);
  assert_non_null(root);
  const cJSON *v = lu__json_path(root, "items.0.sku");
  assert_true(cJSON_IsString(v));
  assert_string_equal(v->valuestring, "A");
  v = lu__json_path(root, "items.1.sku");
  assert_string_equal(v->valuestring, "B");
  v = lu__json_path(root, "arr.0.1");
  assert_true(cJSON_IsNumber(v));
  assert_int_equal(v->valueint, 2);
  v = lu__json_path(root, "arr.1.0");
  assert_int_equal(v->valueint, 3);
  assert_null(lu__json_path(root, "items.2.sku")); /* out of range */
  assert_null(lu__json_path(root, "arr.1.1"));
  assert_null(lu__json_path(root, "items.x"));   /* not an index */
  assert_null(lu__json_path(root, "items.-1"));
  assert_null(lu__json_path(root, "items.1x"));
  assert_null(lu__json_path(root, "items.99999999999999999999999"));
  cJSON_Delete(root);

  /* the root itself may be an array */
  root = cJSON_Parse("[\"a\",{\"k\":\"b\"}]");
  v = lu__json_path(root, "1.k");
  assert_true(cJSON_IsString(v));
  assert_string_equal(v->valuestring, "b");
  assert_null(lu__json_path(root, "k"));
  cJSON_Delete(root);
}

static void test_json_path_missing(void **st) {
  (void)st;
  cJSON *root = cJSON_Parse(DOC);
  assert_non_null(root);
  assert_null(lu__json_path(root, "missing"));
  assert_null(lu__json_path(root, "customer.missing"));
  assert_null(lu__json_path(root, "missing.id"));
  /* scalar intermediates */
  assert_null(lu__json_path(root, "customer.id.x"));
  assert_null(lu__json_path(root, "flag.x"));
  assert_null(lu__json_path(root, "nothing.x"));
  assert_null(lu__json_path(root, "customer.tier.0"));
  /* empty path and empty segments */
  assert_null(lu__json_path(root, ""));
  assert_null(lu__json_path(root, "."));
  assert_null(lu__json_path(root, ".customer"));
  assert_null(lu__json_path(root, "customer."));
  assert_null(lu__json_path(root, "customer..id"));
  assert_null(lu__json_path(root, NULL));
  assert_null(lu__json_path(NULL, "customer"));
  /* a scalar root has no children */
  cJSON *s = cJSON_CreateString("x");
  assert_null(lu__json_path(s, "x"));
  assert_null(lu__json_path(s, "0"));
  cJSON_Delete(s);
  cJSON_Delete(root);
}

/* ---- key_text --------------------------------------------------------- */

static int key_of(const char *json, char *buf, size_t cap, const char **key,
                  size_t *len) {
  cJSON *v = cJSON_Parse(json);
  assert_non_null(v);
  int rc = lu__key_text(v, buf, cap, key, len);
  /* strings point into the tree: copy out before deleting it */
  static char copy[256];
  if (rc == 0 && *key != buf) {
    assert_true(*len < sizeof copy);
    memcpy(copy, *key, *len);
    copy[*len] = 0;
    *key = copy;
  }
  cJSON_Delete(v);
  return rc;
}

static void test_key_text(void **st) {
  (void)st;
  char buf[64];
  const char *k;
  size_t n;

  assert_int_equal(key_of("\"c-1\"", buf, sizeof buf, &k, &n), 0);
  assert_int_equal(n, 3);
  assert_memory_equal(k, "c-1", 3);
  assert_int_equal(key_of("\"\"", buf, sizeof buf, &k, &n), 0);
  assert_int_equal(n, 0);

  /* integers print plainly, whatever their JSON spelling */
  assert_int_equal(key_of("42", buf, sizeof buf, &k, &n), 0);
  assert_int_equal(n, 2);
  assert_memory_equal(k, "42", 2);
  assert_ptr_equal(k, buf);
  assert_int_equal(key_of("42.0", buf, sizeof buf, &k, &n), 0);
  assert_string_equal(k, "42");
  assert_int_equal(key_of("4.2e1", buf, sizeof buf, &k, &n), 0);
  assert_string_equal(k, "42");
  assert_int_equal(key_of("-7", buf, sizeof buf, &k, &n), 0);
  assert_string_equal(k, "-7");
  assert_int_equal(key_of("-0", buf, sizeof buf, &k, &n), 0);
  assert_string_equal(k, "0");
  assert_int_equal(key_of("9007199254740993", buf, sizeof buf, &k, &n), 0);
  assert_string_equal(k, "9007199254740992"); /* beyond 2^53: a double */
  assert_int_equal(key_of("1e18", buf, sizeof buf, &k, &n), 0);
  assert_string_equal(k, "1000000000000000000");
  assert_int_equal(n, 19);

  /* fractions: %.17g, which round-trips */
  assert_int_equal(key_of("1.5", buf, sizeof buf, &k, &n), 0);
  assert_string_equal(k, "1.5");
  assert_int_equal(n, 3);
  assert_int_equal(key_of("0.1", buf, sizeof buf, &k, &n), 0);
  assert_string_equal(k, "0.10000000000000001");
  assert_true(strtod(k, NULL) == 0.1);
  assert_int_equal(key_of("-2.2250738585072014e-308", buf, sizeof buf, &k, &n),
                   0);
  assert_true(strtod(k, NULL) == -2.2250738585072014e-308);
  assert_int_equal(key_of("1e300", buf, sizeof buf, &k, &n), 0);
  assert_true(strtod(k, NULL) == 1e300);

  assert_int_equal(key_of("true", buf, sizeof buf, &k, &n), 0);
  assert_int_equal(n, 4);
  assert_memory_equal(k, "true", 4);
  assert_int_equal(key_of("false", buf, sizeof buf, &k, &n), 0);
  assert_int_equal(n, 5);
  assert_memory_equal(k, "false", 5);

  assert_int_equal(key_of("null", buf, sizeof buf, &k, &n), LU_EINVAL);
  assert_int_equal(key_of("{\"a\":1}", buf, sizeof buf, &k, &n), LU_EINVAL);
  assert_int_equal(key_of("[1]", buf, sizeof buf, &k, &n), LU_EINVAL);
  assert_int_equal(lu__key_text(NULL, buf, sizeof buf, &k, &n), LU_EINVAL);

  /* a buffer too small for the number fails instead of truncating */
  assert_int_not_equal(key_of("123456", buf, 4, &k, &n), 0);
  /* strings and bools need no buffer */
  assert_int_equal(key_of("\"abc\"", NULL, 0, &k, &n), 0);
  assert_int_equal(key_of("true", NULL, 0, &k, &n), 0);
}

/* ---- rendezvous ------------------------------------------------------- */

static void test_rendezvous_spread(void **st) {
  (void)st;
  uint64_t seeds[4];
  shard_seeds(seeds, 4);
  unsigned cnt[4] = {0};
  for (int i = 0; i < NKEYS; i++) cnt[lu__rendezvous(key_hash_i(i), seeds, 4)]++;
  for (int s = 0; s < 4; s++) {
    print_message("  shard-%d: %u keys\n", s, cnt[s]);
    assert_in_range(cnt[s], 2250, 2750);
  }
}

/* The weight mix must be good by itself, not only because the key hash is:
 * raw sequential key hashes (0, 1, 2, ...) must spread evenly too. */
static void test_rendezvous_spread_structured(void **st) {
  (void)st;
  for (unsigned n = 2; n <= 8; n++) {
    uint64_t seeds[8];
    shard_seeds(seeds, n);
    unsigned cnt[8] = {0};
    for (uint64_t k = 0; k < NKEYS; k++) cnt[lu__rendezvous(k, seeds, n)]++;
    unsigned exp = NKEYS / n;
    for (unsigned s = 0; s < n; s++)
      assert_in_range(cnt[s], exp * 85 / 100, exp * 115 / 100);
  }
  /* ... and with sequential seeds too */
  uint64_t seeds[4] = {0, 1, 2, 3};
  unsigned cnt[4] = {0};
  for (uint64_t k = 0; k < NKEYS; k++) cnt[lu__rendezvous(k, seeds, 4)]++;
  for (int s = 0; s < 4; s++) assert_in_range(cnt[s], 2250, 2750);
}

/* Independence across shards: given the owner, the runner-up must be
 * uniform over the others (a weak mix correlates the two). */
static void test_rendezvous_independence(void **st) {
  (void)st;
  enum { N = 4, K = 24000 };
  uint64_t seeds[N];
  shard_seeds(seeds, N);
  unsigned pairs[N][N] = {{0}};
  unsigned order[N];
  for (int i = 0; i < K; i++) {
    lu__rendezvous_order(key_hash_i(i), seeds, N, order);
    pairs[order[0]][order[1]]++;
  }
  /* 12 ordered pairs, 2000 expected each */
  for (int a = 0; a < N; a++)
    for (int b = 0; b < N; b++) {
      if (a == b) {
        assert_int_equal(pairs[a][b], 0);
        continue;
      }
      assert_in_range(pairs[a][b], 1700, 2300);
    }
}

static void test_rendezvous_join(void **st) {
  (void)st;
  uint64_t seeds[8];
  shard_seeds(seeds, 8);
  for (unsigned n = 1; n <= 7; n++) {
    unsigned moved = 0;
    for (int i = 0; i < NKEYS; i++) {
      uint64_t h = key_hash_i(i);
      unsigned before = lu__rendezvous(h, seeds, n);
      unsigned after = lu__rendezvous(h, seeds, n + 1);
      if (before != after) {
        moved++;
        assert_int_equal(after, n); /* moved keys go to the newcomer */
      }
    }
    double frac = (double)moved / NKEYS, ideal = 1.0 / (n + 1);
    print_message("  join %u -> %u shards: %.4f of keys moved (ideal %.4f)\n",
                  n, n + 1, frac, ideal);
    assert_true(frac >= 0.8 * ideal && frac <= 1.2 * ideal);
  }
}

static void test_rendezvous_leave(void **st) {
  (void)st;
  uint64_t seeds[5];
  shard_seeds(seeds, 5);
  /* shard-2 leaves; the survivors keep their ids, not their indexes */
  const unsigned ids[4] = {0, 1, 3, 4};
  uint64_t left[4];
  for (int i = 0; i < 4; i++) left[i] = seeds[ids[i]];
  unsigned moved = 0;
  for (int i = 0; i < NKEYS; i++) {
    uint64_t h = key_hash_i(i);
    unsigned order[5];
    lu__rendezvous_order(h, seeds, 5, order);
    unsigned after = ids[lu__rendezvous(h, left, 4)];
    if (order[0] == 2) {
      moved++;
      assert_int_equal(after, order[1]); /* to its own runner-up */
    } else {
      assert_int_equal(after, order[0]); /* everyone else stays */
    }
  }
  assert_in_range(moved, 1600, 2400); /* ~1/5 */
}

static void test_rendezvous_stable(void **st) {
  (void)st;
  enum { N = 7 };
  uint64_t seeds[N];
  shard_seeds(seeds, N);
  /* a permuted list of the same shards names the same owner */
  const unsigned perm[N] = {3, 6, 0, 5, 1, 4, 2};
  uint64_t pseeds[N];
  for (int i = 0; i < N; i++) pseeds[i] = seeds[perm[i]];
  for (int i = 0; i < 2000; i++) {
    uint64_t h = key_hash_i(i);
    unsigned o = lu__rendezvous(h, seeds, N);
    /* same key, same shard, every time */
    assert_int_equal(lu__rendezvous(h, seeds, N), o);
    char k[32];
    int len = snprintf(k, sizeof k, "key-%d", i);
    assert_int_equal(lu__rendezvous(lu__key_hash(k, (size_t)len), seeds, N), o);
    assert_int_equal(perm[lu__rendezvous(h, pseeds, N)], o);

    unsigned order[N];
    lu__rendezvous_order(h, seeds, N, order);
    assert_int_equal(order[0], o);
    unsigned seen = 0;
    for (int j = 0; j < N; j++) {
      assert_true(order[j] < N);
      seen |= 1u << order[j];
    }
    assert_int_equal(seen, (1u << N) - 1); /* a permutation */
    /* order[1] is the owner once order[0] is gone */
    uint64_t rest[N - 1];
    unsigned map[N - 1], m = 0;
    for (unsigned j = 0; j < N; j++)
      if (j != o) map[m] = j, rest[m++] = seeds[j];
    assert_int_equal(map[lu__rendezvous(h, rest, N - 1)], order[1]);
  }
  /* one shard */
  unsigned one;
  lu__rendezvous_order(123, seeds, 1, &one);
  assert_int_equal(one, 0);
  assert_int_equal(lu__rendezvous(123, seeds, 1), 0);
  /* identical seeds tie: the lower index wins and comes first */
  uint64_t same[3] = {seeds[0], seeds[0], seeds[0]};
  unsigned ord[3];
  assert_int_equal(lu__rendezvous(99, same, 3), 0);
  lu__rendezvous_order(99, same, 3, ord);
  assert_int_equal(ord[0], 0);
  assert_int_equal(ord[1], 1);
  assert_int_equal(ord[2], 2);
}

/* Pinned values: every process of a cluster (and every version during a
 * rolling upgrade, on either endianness) must compute the same owners.  A
 * change to the key hash or the weight mix reshuffles every key: if this
 * test fails, that change needs a migration plan, not a new golden value. */
static void test_rendezvous_golden(void **st) {
  (void)st;
  assert_true(lu__key_hash("abc", 3) == 0x78af5f94892f3950ull); /* XXH3-64 */
  assert_true(lu__shard_seed("shard-0") == 0xcb6e75a9bf0c0560ull);
  uint64_t seeds[4];
  shard_seeds(seeds, 4);
  char got[17];
  for (int i = 0; i < 16; i++)
    got[i] = (char)('0' + lu__rendezvous(key_hash_i(i), seeds, 4));
  got[16] = 0;
  assert_string_equal(got, "0121003033112132");
}

/* More shards than the order's weight cache (256): still a correct order. */
static void test_rendezvous_order_large(void **st) {
  (void)st;
  enum { N = 300 };
  static uint64_t seeds[N];
  static unsigned order[N];
  shard_seeds(seeds, N);
  for (int i = 0; i < 20; i++) {
    uint64_t h = key_hash_i(i);
    lu__rendezvous_order(h, seeds, N, order);
    assert_int_equal(order[0], lu__rendezvous(h, seeds, N));
    static unsigned char seen[N];
    memset(seen, 0, sizeof seen);
    for (int j = 0; j < N; j++) {
      assert_true(order[j] < N);
      assert_false(seen[order[j]]);
      seen[order[j]] = 1;
    }
  }
}

/* ---- bounded loads ---------------------------------------------------- */

static void test_bounded_equal_loads_keep_owner(void **st) {
  (void)st;
  uint64_t seeds[4];
  shard_seeds(seeds, 4);
  const uint64_t zero[4] = {0, 0, 0, 0}, ten[4] = {10, 10, 10, 10};
  for (int i = 0; i < 2000; i++) {
    uint64_t h = key_hash_i(i);
    unsigned o = lu__rendezvous(h, seeds, 4);
    assert_int_equal(lu__rendezvous_bounded(h, seeds, 4, zero, 1.25), o);
    assert_int_equal(lu__rendezvous_bounded(h, seeds, 4, ten, 1.25), o);
    assert_int_equal(lu__rendezvous_bounded(h, seeds, 4, ten, 1.01), o);
  }
}

static void test_bounded_overloaded_sheds(void **st) {
  (void)st;
  uint64_t seeds[4];
  shard_seeds(seeds, 4);
  const uint64_t loads[4] = {100, 10, 10, 10};
  unsigned shed = 0;
  for (int i = 0; i < 2000; i++) {
    uint64_t h = key_hash_i(i);
    unsigned order[4];
    lu__rendezvous_order(h, seeds, 4, order);
    unsigned r = lu__rendezvous_bounded(h, seeds, 4, loads, 1.25);
    if (order[0] == 0) {
      assert_int_equal(r, order[1]); /* its second choice */
      shed++;
    } else {
      assert_int_equal(r, order[0]);
    }
    /* c <= 1 (or 0, "off") is the plain owner, loaded or not */
    assert_int_equal(lu__rendezvous_bounded(h, seeds, 4, loads, 1.0), order[0]);
    assert_int_equal(lu__rendezvous_bounded(h, seeds, 4, loads, 0.0), order[0]);
    assert_int_equal(lu__rendezvous_bounded(h, seeds, 4, loads, NAN), order[0]);
  }
  assert_true(shed > 300);

  /* two hot shards: keys of both skip to the first cool one in order */
  const uint64_t two[4] = {100, 100, 0, 0};
  for (int i = 0; i < 2000; i++) {
    uint64_t h = key_hash_i(i);
    unsigned order[4], want = 4;
    lu__rendezvous_order(h, seeds, 4, order);
    for (int j = 0; j < 4; j++)
      if (order[j] >= 2) {
        want = order[j];
        break;
      }
    assert_int_equal(lu__rendezvous_bounded(h, seeds, 4, two, 1.5), want);
  }
  assert_int_equal(lu__rendezvous_bounded(7, seeds, 1, loads, 2.0), 0);
}

/* Against the definition, over random loads and factors. */
static void test_bounded_random(void **st) {
  (void)st;
  uint64_t rng = 42;
  uint64_t seeds[16], loads[16];
  shard_seeds(seeds, 16);
  const double cs[] = {1.0001, 1.1, 1.25, 2.0, 10.0};
  for (int t = 0; t < 20000; t++) {
    unsigned n = 1 + (unsigned)(lu__rand_next(&rng) % 16);
    uint64_t total = 0;
    for (unsigned i = 0; i < n; i++) {
      loads[i] = lu__rand_next(&rng) % 64;
      if (lu__rand_next(&rng) % 4 == 0) loads[i] *= 20; /* some hot */
      total += loads[i];
    }
    double c = cs[t % 5];
    uint64_t h = lu__rand_next(&rng);
    unsigned r = lu__rendezvous_bounded(h, seeds, n, loads, c);
    assert_true(r < n);
    double cap = ceil(c * (double)(total + 1) / n);
    unsigned order[16];
    lu__rendezvous_order(h, seeds, n, order);
    unsigned j = 0;
    while (order[j] != r) {
      assert_true((double)(loads[order[j]] + 1) > cap); /* skipped: full */
      j++;
    }
    assert_true((double)(loads[r] + 1) <= cap);
  }
  /* saturated loads still give a valid index */
  const uint64_t huge[3] = {UINT64_MAX, UINT64_MAX, UINT64_MAX - 1};
  assert_true(lu__rendezvous_bounded(5, seeds, 3, huge, 1.5) < 3);
}

/* The point of the bound: placing keys one by one, no shard ever carries
 * more than ceil(c * average). */
static void test_bounded_placement(void **st) {
  (void)st;
  enum { N = 8 };
  uint64_t seeds[N], loads[N] = {0};
  shard_seeds(seeds, N);
  /* a skewed key set: 30% of placements are the same hot key */
  for (int i = 0; i < NKEYS; i++) {
    uint64_t h = (i % 10 < 3) ? key_hash_i(0) : key_hash_i(i);
    loads[lu__rendezvous_bounded(h, seeds, N, loads, 1.25)]++;
  }
  uint64_t max = 0;
  for (int s = 0; s < N; s++) max = loads[s] > max ? loads[s] : max;
  assert_true(max <= (uint64_t)ceil(1.25 * NKEYS / N));
}

/* ---- two choices ------------------------------------------------------ */

static void test_two_choices(void **st) {
  (void)st;
  uint64_t rng = 7;
  const uint64_t loads[4] = {100, 0, 0, 0};
  unsigned cnt[4] = {0};
  for (int i = 0; i < NKEYS; i++) {
    unsigned r = lu__two_choices(loads, 4, &rng);
    assert_true(r < 4);
    cnt[r]++;
  }
  /* the two draws are distinct, so the loaded shard always loses */
  assert_int_equal(cnt[0], 0);
  for (int s = 1; s < 4; s++) assert_true(cnt[s] > 0);
  /* ties go to the first draw, so the three equal shards share evenly */
  for (int s = 1; s < 4; s++) assert_in_range(cnt[s], 2900, 3800);

  /* all idle: every shard gets its share (none is starved) */
  const uint64_t idle[4] = {0, 0, 0, 0};
  unsigned ci[4] = {0};
  for (int i = 0; i < 8000; i++) ci[lu__two_choices(idle, 4, &rng)]++;
  for (int s = 0; s < 4; s++) assert_in_range(ci[s], 1600, 2400);

  /* n == 2: both shards are always drawn, the lighter always wins */
  const uint64_t a[2] = {3, 1}, b[2] = {1, 3};
  for (int i = 0; i < 1000; i++) {
    assert_int_equal(lu__two_choices(a, 2, &rng), 1);
    assert_int_equal(lu__two_choices(b, 2, &rng), 0);
  }
  assert_int_equal(lu__two_choices(loads, 1, &rng), 0);

  /* draws are uniform: with all loads distinct, shard s wins exactly the
   * pairs with a heavier partner, so counts follow (n-1-s) */
  const uint64_t dist[5] = {0, 1, 2, 3, 4};
  unsigned c5[5] = {0};
  for (int i = 0; i < 20000; i++) c5[lu__two_choices(dist, 5, &rng)]++;
  /* pairs: 10; shard 0 wins 4, 1 wins 3, 2 wins 2, 3 wins 1, 4 none */
  assert_in_range(c5[0], 7400, 8600);
  assert_in_range(c5[1], 5400, 6600);
  assert_in_range(c5[2], 3500, 4500);
  assert_in_range(c5[3], 1700, 2300);
  assert_int_equal(c5[4], 0);
}

/* ---- sticky sessions -------------------------------------------------- */

static void test_sessions_bind(void **st) {
  (void)st;
  lu_sessions_t *s = lu__sessions_new();
  assert_non_null(s);
  int created = -1;
  uint64_t sh;
  assert_int_equal(lu__sessions_lookup(s, "u1", 2, 0, &sh), LU_ENOENT);
  assert_int_equal(lu__sessions_bind(s, "u1", 2, 3, 100, 1000, NULL, 0, &created),
                   3);
  assert_int_equal(created, 1);
  assert_int_equal(lu__sessions_count(s), 1);
  /* later events follow the binding, whatever the candidate */
  assert_int_equal(lu__sessions_bind(s, "u1", 2, 1, 100, 1050, NULL, 0, &created),
                   3);
  assert_int_equal(created, 0);
  assert_int_equal(lu__sessions_lookup(s, "u1", 2, 1100, &sh), 0);
  assert_int_equal(sh, 3);
  /* the bind at 1050 refreshed the last use: alive until 1149 */
  assert_int_equal(lu__sessions_lookup(s, "u1", 2, 1149, &sh), 0);
  assert_int_equal(lu__sessions_lookup(s, "u1", 2, 1150, &sh), LU_ENOENT);
  /* lookups do not refresh; an expired binding rebinds to the candidate */
  assert_int_equal(lu__sessions_bind(s, "u1", 2, 1, 100, 1150, NULL, 0, &created),
                   1);
  assert_int_equal(created, 1);
  assert_int_equal(lu__sessions_count(s), 1);
  assert_int_equal(lu__sessions_lookup(s, "u1", 2, 1200, &sh), 0);
  assert_int_equal(sh, 1);
  /* created may be NULL */
  assert_int_equal(lu__sessions_bind(s, "u1", 2, 2, 100, 1200, NULL, 0, NULL), 1);
  /* a clock that steps back (threads racing) never shortens a binding */
  assert_int_equal(lu__sessions_bind(s, "u1", 2, 2, 100, 1190, NULL, 0, NULL), 1);
  assert_int_equal(lu__sessions_lookup(s, "u1", 2, 1299, &sh), 0);

  /* keys are (pointer, length): a slice, copied */
  char buf[16] = "abcdef";
  assert_int_equal(lu__sessions_bind(s, buf, 3, 5, 100, 1000, NULL, 0, &created),
                   5);
  assert_int_equal(created, 1);
  memcpy(buf, "xxxxxx", 6);
  assert_int_equal(lu__sessions_lookup(s, "abc", 3, 1000, &sh), 0);
  assert_int_equal(sh, 5);
  assert_int_equal(lu__sessions_lookup(s, "abcd", 4, 1000, &sh), LU_ENOENT);
  assert_int_equal(lu__sessions_lookup(s, "ab", 2, 1000, &sh), LU_ENOENT);
  assert_int_equal(lu__sessions_lookup(s, "unknown", 7, 1000, &sh), LU_ENOENT);
  /* the empty key is a key */
  assert_int_equal(lu__sessions_bind(s, "", 0, 4, 100, 1000, NULL, 0, &created), 4);
  assert_int_equal(lu__sessions_bind(s, "", 0, 2, 100, 1000, NULL, 0, &created), 4);
  assert_int_equal(created, 0);
  lu__sessions_free(s);
  lu__sessions_free(NULL);
}

static void test_sessions_dead_shard(void **st) {
  (void)st;
  lu_sessions_t *s = lu__sessions_new();
  uint64_t live[4] = {0, 1, 2, 3}; /* seeds of the live shards */
  unsigned nlive = 4;
  int created;
  assert_int_equal(lu__sessions_bind(s, "k", 1, 2, 1000, 0, live, nlive, &created), 2);
  assert_int_equal(lu__sessions_bind(s, "k", 1, 0, 1000, 1, live, nlive, &created), 2);
  assert_int_equal(created, 0);
  live[2] = 3, nlive = 3; /* shard 2 died: rebind to the candidate */
  assert_int_equal(lu__sessions_bind(s, "k", 1, 1, 1000, 2, live, nlive, &created), 1);
  assert_int_equal(created, 1);
  /* and stay there, even once shard 2 is back */
  live[2] = 2, live[3] = 3, nlive = 4;
  assert_int_equal(lu__sessions_bind(s, "k", 1, 2, 1000, 3, live, nlive, &created), 1);
  assert_int_equal(created, 0);
  assert_int_equal(lu__sessions_count(s), 1);
  lu__sessions_free(s);
}

static void test_sessions_grow_and_expire(void **st) {
  (void)st;
  enum { K = 20000 };
  lu_sessions_t *s = lu__sessions_new();
  char k[32];
  /* even keys live 100 ms, odd keys 10 s */
  for (int i = 0; i < K; i++) {
    int n = snprintf(k, sizeof k, "s-%d", i);
    int created;
    uint64_t r = lu__sessions_bind(s, k, (size_t)n, (uint64_t)(i % 13),
                                   i % 2 ? 10000 : 100, 0, NULL, 0, &created);
    assert_int_equal(r, (uint64_t)(i % 13));
    assert_int_equal(created, 1);
  }
  assert_int_equal(lu__sessions_count(s), K);
  for (int i = 0; i < K; i++) {
    int n = snprintf(k, sizeof k, "s-%d", i);
    uint64_t sh;
    assert_int_equal(lu__sessions_lookup(s, k, (size_t)n, 50, &sh), 0);
    assert_int_equal(sh, (uint64_t)(i % 13));
  }
  /* nothing expired yet */
  assert_int_equal(lu__sessions_expire(s, 50), 0);
  /* at 100 the even half expired: lookups say so before any sweep */
  assert_int_equal(lu__sessions_lookup(s, "s-0", 3, 100, NULL), LU_ENOENT);
  assert_int_equal(lu__sessions_lookup(s, "s-1", 3, 100, NULL), 0);
  assert_int_equal(lu__sessions_count(s), K);
  /* sweeping is bounded: one call does not drop all 10000 expired entries
   * of a table this size, but a bounded number of calls does */
  size_t first = lu__sessions_expire(s, 100);
  assert_true(first > 0 && first < K / 2);
  size_t total = first;
  int calls = 1;
  while (total < K / 2 && calls < 1000) {
    total += lu__sessions_expire(s, 100);
    calls++;
  }
  print_message("  expire: %d calls, first dropped %zu\n", calls, first);
  assert_int_equal(total, K / 2);
  assert_true(calls <= 64);
  assert_int_equal(lu__sessions_count(s), K / 2);
  /* the survivors are intact */
  for (int i = 1; i < K; i += 2) {
    int n = snprintf(k, sizeof k, "s-%d", i);
    uint64_t sh;
    assert_int_equal(lu__sessions_lookup(s, k, (size_t)n, 100, &sh), 0);
    assert_int_equal(sh, (uint64_t)(i % 13));
  }
  /* and go too, later */
  total = 0;
  for (int c = 0; c < 64; c++) total += lu__sessions_expire(s, 10000);
  assert_int_equal(total, K / 2);
  assert_int_equal(lu__sessions_count(s), 0);
  lu__sessions_free(s);
}

#define TH 4
#define TKEYS 1000
#define TBINDS 10000

typedef struct {
  lu_sessions_t *s;
  unsigned t;
  uint64_t got[TKEYS];   /* shard seen for each key (last bind) */
  unsigned mismatch;     /* binds that disagreed with an earlier one */
  unsigned created;
} th_arg_t;

static void *binder(void *p) {
  th_arg_t *a = p;
  char k[32];
  for (unsigned i = 0; i < TKEYS; i++) a->got[i] = UINT64_MAX;
  for (unsigned i = 0; i < TBINDS; i++) {
    unsigned key = (i * 7 + a->t * 251) % TKEYS;
    int n = snprintf(k, sizeof k, "sess-%u", key);
    int created;
    uint64_t r = lu__sessions_bind(a->s, k, (size_t)n, a->t, 60000, 1000,
                                   NULL, 0, &created);
    if (a->got[key] != UINT64_MAX && a->got[key] != r) a->mismatch++;
    a->got[key] = r;
    a->created += (unsigned)created;
  }
  return NULL;
}

static void test_sessions_threads(void **st) {
  (void)st;
  lu_sessions_t *s = lu__sessions_new();
  static th_arg_t args[TH];
  pthread_t th[TH];
  for (unsigned t = 0; t < TH; t++) {
    args[t].s = s;
    args[t].t = t;
    args[t].mismatch = args[t].created = 0;
    assert_int_equal(pthread_create(&th[t], NULL, binder, &args[t]), 0);
  }
  for (unsigned t = 0; t < TH; t++) pthread_join(th[t], NULL);
  unsigned created = 0;
  for (unsigned t = 0; t < TH; t++) {
    assert_int_equal(args[t].mismatch, 0);
    created += args[t].created;
  }
  assert_int_equal(created, TKEYS); /* exactly one first binder per key */
  assert_int_equal(lu__sessions_count(s), TKEYS);
  for (unsigned key = 0; key < TKEYS; key++) {
    char k[32];
    int n = snprintf(k, sizeof k, "sess-%u", key);
    uint64_t sh;
    assert_int_equal(lu__sessions_lookup(s, k, (size_t)n, 1000, &sh), 0);
    for (unsigned t = 0; t < TH; t++)
      if (args[t].got[key] != UINT64_MAX)
        assert_int_equal(args[t].got[key], sh);
  }
  lu__sessions_free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_json_path_objects),
      cmocka_unit_test(test_json_path_arrays),
      cmocka_unit_test(test_json_path_missing),
      cmocka_unit_test(test_key_text),
      cmocka_unit_test(test_rendezvous_spread),
      cmocka_unit_test(test_rendezvous_spread_structured),
      cmocka_unit_test(test_rendezvous_independence),
      cmocka_unit_test(test_rendezvous_join),
      cmocka_unit_test(test_rendezvous_leave),
      cmocka_unit_test(test_rendezvous_stable),
      cmocka_unit_test(test_rendezvous_golden),
      cmocka_unit_test(test_rendezvous_order_large),
      cmocka_unit_test(test_bounded_equal_loads_keep_owner),
      cmocka_unit_test(test_bounded_overloaded_sheds),
      cmocka_unit_test(test_bounded_random),
      cmocka_unit_test(test_bounded_placement),
      cmocka_unit_test(test_two_choices),
      cmocka_unit_test(test_sessions_bind),
      cmocka_unit_test(test_sessions_dead_shard),
      cmocka_unit_test(test_sessions_grow_and_expire),
      cmocka_unit_test(test_sessions_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
