/*
 * gen.c - orders_gen: writes input events for the orders example.
 *
 *   orders_gen [-n COUNT] [--bad N] [--seed S] [--customers C] [--skus K]
 *
 * Writes COUNT lines (default 1000) of JSON Lines to stdout, one
 * structured-mode CloudEvent per line:
 *
 *   {"specversion":"1.0","id":"ord-1-0","type":"OrderPlaced",
 *    "source":"orders-gen","subject":"order-1",
 *    "time":"2025-01-01T00:00:00.042Z","correlationid":"corr-1-0",
 *    "tenantid":"tenant-2","userid":"cust-0042","data":{...}}
 *
 * About 90% are OrderPlaced, 5% CustomerUpdated, 5% CustomerRegistered
 * (see orders.c for what handles them).  Order n has orderId "o-S-n", so
 * one order in ten ends in '7' and takes ReserveInventory's retry path.
 * SKUs are skewed (a few are hot) to give hash_based routing something to
 * balance; about 2% of orders are bulk orders that the fraud scorers flag.
 *
 * --bad N replaces N of the COUNT lines, spread evenly, with bad input,
 * cycling through five kinds (see enum bad_kind).  A one-line summary goes
 * to stderr.  The output depends only on the options: the same seed gives
 * the same bytes.  No lucent and no JSON library: plain C, fast enough for
 * -n 1000000 in well under a second.
 *
 * RUN:
 *   cmake --build build --target orders_gen
 *   build/examples/orders_gen -n 3 --bad 1 --seed 1
 *
 * OUTPUT: (shortened; the second line is the bad one, cut short)
 *   {"specversion":"1.0","id":"ord-1-0","type":"OrderPlaced",...}}
 *   {"specversion":"1.0","id":"ord-1-1",...,"subject":"order-bad-1",...
 *   {"specversion":"1.0","id":"ord-1-2","type":"OrderPlaced",...}}
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- options ------------------------------------------------------------ */

typedef struct options_s {
  uint64_t count;     /* lines written, bad ones included */
  uint64_t bad;       /* bad lines among them */
  uint64_t seed;
  uint64_t customers; /* customer ids cust-0001 .. cust-<C> place orders */
  uint64_t skus;      /* SKU-00001 .. SKU-<K> */
} options_t;

static void usage(FILE *f) {
  fputs("usage: orders_gen [-n COUNT] [--bad N] [--seed S] [--customers C]"
        " [--skus K]\n"
        "  -n COUNT       lines to write, bad ones included (default 1000)\n"
        "  --bad N        bad lines among them, spread evenly (default 0)\n"
        "  --seed S       same seed, same output (default 1)\n"
        "  --customers C  customers placing orders (default 500)\n"
        "  --skus K       distinct SKUs (default 200)\n",
        f);
}

/* Parses an unsigned decimal; 0 on success, -1 if s is not one. */
static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  if (!s || *s < '0' || *s > '9') return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end) return -1;
  *out = v;
  return 0;
}

/* Returns 0, or the exit code (2 usage error, -1 help shown). */
static int parse_options(int argc, char **argv, options_t *o) {
  *o = (options_t){.count = 1000, .seed = 1, .customers = 500, .skus = 200};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = NULL;
    uint64_t *dst = NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return -1;
    }
    static const struct {
      const char *name;
      size_t off;
    } opts[] = {{"-n", offsetof(options_t, count)},
                {"--count", offsetof(options_t, count)},
                {"--bad", offsetof(options_t, bad)},
                {"--seed", offsetof(options_t, seed)},
                {"--customers", offsetof(options_t, customers)},
                {"--skus", offsetof(options_t, skus)}};
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
      size_t len = strlen(opts[k].name);
      if (strncmp(a, opts[k].name, len) != 0) continue;
      if (a[len] == '\0') {
        val = i + 1 < argc ? argv[++i] : NULL;
      } else if (a[len] == '=') {
        val = a + len + 1;
      } else {
        continue;
      }
      dst = (uint64_t *)((char *)o + opts[k].off);
      break;
    }
    if (!dst) {
      fprintf(stderr, "orders_gen: unknown option '%s'\n", a);
      usage(stderr);
      return 2;
    }
    if (parse_u64(val, dst) != 0) {
      fprintf(stderr, "orders_gen: %s needs a non-negative integer\n", a);
      return 2;
    }
  }
  if (o->bad > o->count) {
    fprintf(stderr, "orders_gen: --bad %" PRIu64 " exceeds -n %" PRIu64 "\n",
            o->bad, o->count);
    return 2;
  }
  if (o->customers < 1 || o->customers > 999999 || o->skus < 1 ||
      o->skus > 99999) {
    fprintf(stderr, "orders_gen: need 1 <= customers <= 999999 and "
                    "1 <= skus <= 99999\n");
    return 2;
  }
  return 0;
}

/* ---- randomness: splitmix64, so output never depends on the libc ------- */

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static uint64_t rng_state;

static uint64_t rnd(void) { return mix64(rng_state += 0x9e3779b97f4a7c15ULL); }

/* Uniform in [0, n). */
static uint64_t below(uint64_t n) { return rnd() % n; }

/* Uniform in [0, 1). */
static double unit(void) { return (double)(rnd() >> 11) * 0x1.0p-53; }

/* ---- line building: append to a fixed buffer, no snprintf per field ---- */

typedef struct line_s {
  char buf[4096]; /* the longest line is ~700 bytes */
  size_t len;
} line_t;

static void put(line_t *l, const char *s) {
  size_t n = strlen(s);
  memcpy(l->buf + l->len, s, n);
  l->len += n;
}

static void put_u(line_t *l, uint64_t v) {
  char tmp[24];
  int n = 0;
  do tmp[n++] = (char)('0' + v % 10); while ((v /= 10) != 0);
  while (n > 0) l->buf[l->len++] = tmp[--n];
}

/* v zero-padded to `width` digits. */
static void put_u_pad(line_t *l, uint64_t v, int width) {
  char tmp[24];
  int n = 0;
  do tmp[n++] = (char)('0' + v % 10); while ((v /= 10) != 0);
  while (n < width) tmp[n++] = '0';
  while (n > 0) l->buf[l->len++] = tmp[--n];
}

/* An amount in cents as a JSON number: 1999 -> 19.99. */
static void put_money(line_t *l, uint64_t cents) {
  put_u(l, cents / 100);
  l->buf[l->len++] = '.';
  put_u_pad(l, cents % 100, 2);
}

static void put_customer_id(line_t *l, uint64_t c) {
  put(l, "cust-");
  put_u_pad(l, c, 4);
}

/* RFC 3339 UTC with milliseconds; the date part is cached per second. */
static void put_time(line_t *l, int64_t ms) {
  static int64_t cached_sec = -1;
  static char cached[32];
  int64_t sec = ms / 1000;
  if (sec != cached_sec) {
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_sec = sec;
  }
  put(l, cached);
  l->buf[l->len++] = '.';
  put_u_pad(l, (uint64_t)(ms % 1000), 3);
  l->buf[l->len++] = 'Z';
}

/* ---- the events -------------------------------------------------------- */

static const options_t *opt;
static const int64_t kEpochMs = 1735689600000LL; /* 2025-01-01T00:00:00Z */

/* A customer's fixed traits, derived from its number. */
static uint64_t tenant_of(uint64_t c) { return mix64(c) % 3 + 1; }
static const char *tier_of(uint64_t c) {
  static const char *const tiers[] = {"basic", "basic", "silver", "gold"};
  return tiers[mix64(c ^ 0x7165) % 4];
}

/* A SKU's fixed price, 0.99 .. 250.98. */
static uint64_t price_cents(uint64_t sku) { return 99 + mix64(sku) % 25000; }

/* A skewed SKU number: 1 is the hottest (about 1/sqrt(K) of all picks). */
static uint64_t pick_sku(void) {
  double u = unit();
  return 1 + (uint64_t)(u * u * (double)opt->skus);
}

/* The envelope up to and including "data":, without "type" if type is
 * NULL.  The subject is subject_prefix + subject_n, zero-padded to
 * subject_width digits; userid and tenantid are the customer's. */
static void envelope(line_t *l, uint64_t i, const char *type,
                     const char *subject_prefix, uint64_t subject_n,
                     int subject_width, uint64_t customer) {
  put(l, "{\"specversion\":\"1.0\",\"id\":\"ord-");
  put_u(l, opt->seed);
  put(l, "-");
  put_u(l, i);
  if (type) {
    put(l, "\",\"type\":\"");
    put(l, type);
  }
  put(l, "\",\"source\":\"orders-gen\",\"subject\":\"");
  put(l, subject_prefix);
  put_u_pad(l, subject_n, subject_width);
  put(l, "\",\"time\":\"");
  /* about 7 events a second, each at a jittered instant */
  put_time(l, kEpochMs + (int64_t)(i * 137 + below(100)));
  put(l, "\",\"correlationid\":\"corr-");
  put_u(l, opt->seed);
  put(l, "-");
  put_u(l, i);
  put(l, "\",\"tenantid\":\"tenant-");
  put_u(l, tenant_of(customer));
  put(l, "\",\"userid\":\"");
  put_customer_id(l, customer);
  put(l, "\",\"data\":");
}

static void order_placed(line_t *l, uint64_t i, uint64_t n) {
  uint64_t c = 1 + below(opt->customers);
  int bulk = below(100) < 2;
  uint64_t lines = 1 + below(3) + (below(4) == 0 ? below(3) : 0); /* 1..5 */
  uint64_t skus[5];

  envelope(l, i, "OrderPlaced", "order-", n, 0, c);
  put(l, "{\"orderId\":\"o-");
  put_u(l, opt->seed);
  put(l, "-");
  put_u(l, n);
  put(l, "\",\"customer\":{\"id\":\"");
  put_customer_id(l, c);
  put(l, "\",\"tier\":\"");
  put(l, tier_of(c));
  put(l, "\"},\"items\":[");
  for (uint64_t k = 0; k < lines; k++) {
    uint64_t sku;
    int tries = 0, dup;
    do { /* distinct SKUs per order, unless there are too few */
      sku = pick_sku();
      dup = 0;
      for (uint64_t j = 0; j < k; j++) dup |= skus[j] == sku;
    } while (dup && ++tries < 8);
    skus[k] = sku;
    uint64_t qty = bulk ? 10 + below(21) : 1 + below(3);
    put(l, k ? ",{\"sku\":\"SKU-" : "{\"sku\":\"SKU-");
    put_u_pad(l, sku, 5);
    put(l, "\",\"qty\":");
    put_u(l, qty);
    put(l, ",\"price\":");
    put_money(l, price_cents(sku));
    put(l, "}");
  }
  put(l, "],\"currency\":\"EUR\"}}\n");
}

static void customer_updated(line_t *l, uint64_t i) {
  uint64_t c = 1 + below(opt->customers);
  uint64_t what = 1 + below(7); /* a non-empty subset of three fields */

  envelope(l, i, "CustomerUpdated", "cust-", c, 4, c);
  put(l, "{\"customer\":{\"id\":\"");
  put_customer_id(l, c);
  put(l, "\"");
  if (what & 1) {
    put(l, ",\"email\":\"");
    put_customer_id(l, c);
    put(l, below(2) ? "@example.com\"" : "@example.org\"");
  }
  if (what & 2) {
    put(l, ",\"tier\":\"");
    put(l, tier_of(c + 1 + below(3))); /* some other tier, maybe */
    put(l, "\"");
  }
  if (what & 4)
    put(l, below(2) ? ",\"marketing\":true" : ",\"marketing\":false");
  put(l, "}}}\n");
}

static void customer_registered(line_t *l, uint64_t i, uint64_t c) {
  envelope(l, i, "CustomerRegistered", "cust-", c, 4, c);
  put(l, "{\"customer\":{\"id\":\"");
  put_customer_id(l, c);
  put(l, "\",\"email\":\"");
  put_customer_id(l, c);
  put(l, "@example.com\",\"name\":\"Customer ");
  put_u(l, c);
  put(l, "\"}}}\n");
}

/* ---- bad input: what each kind is and what lucent should do with it --- */

#define BAD_KIND_MAP(XX)                                                    \
  /* truncated object: lucent.Rejected, a parse error with line/column */   \
  XX(MALFORMED, "malformed")                                                \
  /* valid JSON without "type": lucent.Rejected, naming the attribute */    \
  XX(MISSING_TYPE, "missing-type")                                          \
  /* OrderValidated without items: ReserveInventory routes on              \
   * items.0.sku, so lucent.Rejected ("missing hash key") */                \
  XX(MISSING_KEY, "missing-hash-key")                                       \
  /* InvoiceRequested: no function handles it, lucent.DeadLettered */       \
  XX(UNKNOWN_TYPE, "unknown-type")                                          \
  /* [1,2]: valid JSON, not an object, lucent.Rejected */                   \
  XX(NOT_OBJECT, "non-object")

enum bad_kind {
#define XX(e, s) BAD_##e,
  BAD_KIND_MAP(XX)
#undef XX
      BAD__COUNT
};

static const char *const bad_names[] = {
#define XX(e, s) s,
    BAD_KIND_MAP(XX)
#undef XX
};

static void bad_line(line_t *l, uint64_t i, enum bad_kind kind) {
  uint64_t c = 1 + below(opt->customers);
  switch (kind) {
    case BAD_MALFORMED:
      envelope(l, i, "OrderPlaced", "order-bad-", i, 0, c);
      put(l, "{\"orderId\":\"bad-");
      put_u(l, i);
      put(l, "\",\"items\":[{\"sku\":\"SKU-00001\",\"qty\":\n");
      break;
    case BAD_MISSING_TYPE:
      envelope(l, i, NULL, "order-bad-", i, 0, c);
      put(l, "{\"orderId\":\"bad-");
      put_u(l, i);
      put(l, "\"}}\n");
      break;
    case BAD_MISSING_KEY:
      envelope(l, i, "OrderValidated", "order-bad-", i, 0, c);
      put(l, "{\"orderId\":\"bad-");
      put_u(l, i);
      put(l, "\",\"customer\":{\"id\":\"");
      put_customer_id(l, c);
      put(l, "\"},\"total\":0,\"itemCount\":0}}\n");
      break;
    case BAD_UNKNOWN_TYPE:
      envelope(l, i, "InvoiceRequested", "order-bad-", i, 0, c);
      put(l, "{\"orderId\":\"bad-");
      put_u(l, i);
      put(l, "\",\"customer\":{\"id\":\"");
      put_customer_id(l, c);
      put(l, "\"}}}\n");
      break;
    case BAD_NOT_OBJECT:
    default:
      put(l, "[1,2]\n");
      break;
  }
}

/* ---- main -------------------------------------------------------------- */

int main(int argc, char **argv) {
  options_t o;
  int rc = parse_options(argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  opt = &o;
  rng_state = mix64(o.seed);

  static char outbuf[1 << 20];
  setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);

  uint64_t orders = 0, updated = 0, registered = 0, bad[BAD__COUNT] = {0};
  uint64_t next_bad = 0; /* index into the N bad lines */
  line_t l;
  for (uint64_t i = 0; i < o.count; i++) {
    l.len = 0;
    /* bad line k sits at (2k+1) * COUNT / 2N: evenly spread, distinct */
    if (next_bad < o.bad && i == (2 * next_bad + 1) * o.count / (2 * o.bad)) {
      enum bad_kind kind = (enum bad_kind)(next_bad % BAD__COUNT);
      bad_line(&l, i, kind);
      bad[kind]++;
      next_bad++;
    } else {
      uint64_t r = below(100);
      if (r < 90)
        order_placed(&l, i, ++orders);
      else if (r < 95) {
        customer_updated(&l, i);
        updated++;
      } else {
        customer_registered(&l, i, o.customers + ++registered);
      }
    }
    fwrite(l.buf, 1, l.len, stdout);
  }
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "orders_gen: write error: %s\n", strerror(errno));
    return 1;
  }

  fprintf(stderr,
          "orders_gen: %" PRIu64 " lines (seed %" PRIu64 "): %" PRIu64
          " OrderPlaced, %" PRIu64 " CustomerUpdated, %" PRIu64
          " CustomerRegistered, %" PRIu64 " bad (",
          o.count, o.seed, orders, updated, registered, o.bad);
  for (int k = 0; k < BAD__COUNT; k++)
    fprintf(stderr, "%s%s %" PRIu64, k ? ", " : "", bad_names[k], bad[k]);
  fputs(")\n", stderr);
  return 0;
}
