/*
 * util.h - the helpers every layer of lucent uses (not installed): clocks,
 * randomness and derived ids, a growable buffer with a JSON writer, a
 * pointer map, and the placement math (key hashing, rendezvous, two
 * choices).
 *
 * None of it keeps global state, so each library (liblucent,
 * liblucent-nats, liblucent-http) links its own hidden copy of these
 * objects and no lu__ symbol crosses a library boundary.
 */
#ifndef LUCENT_UTIL_H
#define LUCENT_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "lucent/error.h"

/* ---- clock.c ---------------------------------------------------------- */

#define NS_PER_MS 1000000LL
/** Monotonic clock, ns: every duration and deadline. */
uint64_t lu__now_ns(void);
/** Wall clock, ms since the epoch: only for timestamps in events. */
int64_t lu__wall_ms(void);
/** CPU time consumed by the calling thread, ns. */
uint64_t lu__thread_cpu_ns(void);
/** RFC 3339 UTC time with milliseconds ("2026-11-27T12:00:00.000Z") for a
 *  wall-clock ms value; buf needs 25 bytes. */
void lu__rfc3339(int64_t ms, char buf[32]);
/** pthread_cond_init for a condition whose timed waits use
 *  CLOCK_MONOTONIC deadlines (so a step of the wall clock never stretches
 *  or cuts a wait).  0 or an errno value. */
int lu__cond_init_mono(pthread_cond_t *c);
/** The deadline for such a timed wait at lu__now_ns() time at_ns. */
struct timespec lu__mono_deadline(uint64_t at_ns);
/** Waits on c (initialised with lu__cond_init_mono) until signalled or
 *  until lu__now_ns() reaches at_ns; returns pthread_cond_timedwait's
 *  result. */
int lu__cond_wait_until(pthread_cond_t *c, pthread_mutex_t *mu,
                        uint64_t at_ns);

/* ---- abi.c: option structs that grow (lucent.h, above lu_config_t) --- */

/** What the library knows of one such struct: its name and its init
 *  macro (for messages), its size here, the smallest size it accepts, and
 *  where each field ends, in order (END(field) in the caller). */
typedef struct lu_abi_s {
  const char *type; /**< "lu_config_t" */
  const char *init; /**< "lu_config_init" */
  size_t size;      /**< sizeof the struct in this library */
  size_t min;       /**< the smallest struct_size accepted */
  const size_t *ends;
  size_t n;
} lu_abi_t;
/** The end of field f of struct type T, for lu_abi_t.ends. */
#define LU_ABI_END(T, f) (offsetof(T, f) + sizeof(((T *)0)->f))

/** The _init_sized() of such a struct: zeroes `size` bytes of s, copies
 *  into them the defaults of the fields they hold, sets struct_size to
 *  size.  0, or LU_EINVAL when a struct of that size will be refused
 *  (it is still filled as far as it can be). */
int lu__abi_init(const lu_abi_t *a, void *s, size_t size,
                 const void *defaults);
/** Reads a caller's struct `in` into dst, which holds the defaults: the
 *  fields within in's struct_size are copied, and dst's struct_size
 *  becomes the library's.  0, or LU_EINVAL with the reason in err (may
 *  be NULL) for a struct_size of 0, too small, or too large. */
int lu__abi_import(const lu_abi_t *a, void *dst, const void *in, char *err,
                   size_t errlen);

/* ---- ids.c ------------------------------------------------------------ */

/** splitmix64 step: a fast, good-enough PRNG for jitter and two choices. */
uint64_t lu__rand_next(uint64_t *state);
/** A uniform double in [0,1). */
double lu__rand_unit(uint64_t *state);
/** A deterministic id from a list of byte strings: XXH3-128 of the
 *  strings (each followed by a 0 byte) printed in the 8-4-4-4-12 UUID
 *  shape (version nibble 8, "custom").  buf gets 36 chars + NUL. */
void lu__derive_id(char buf[37], const char *const *parts, size_t n);

/* ---- buf.c ------------------------------------------------------------ */

/** snprintf into a fixed buffer, always NUL-terminated, never fails. */
void lu__fmt(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** A growable byte buffer (for building JSON text). */
typedef struct lu_buf_s {
  char *p;
  size_t len, cap;
  int oom; /* sticky allocation failure */
} lu_buf_t;
/** Makes room for n more bytes (and the NUL) at once; 0, or -1 (b->oom). */
int lu__buf_reserve(lu_buf_t *b, size_t n);
/* Inline: results and stored events are built from dozens of short puts,
 * most of string literals whose strlen the compiler then folds. */
static inline void lu__buf_put(lu_buf_t *b, const char *s, size_t n) {
  if ((b->oom || b->len + n + 1 > b->cap) && lu__buf_reserve(b, n)) return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}
static inline void lu__buf_puts(lu_buf_t *b, const char *s) {
  lu__buf_put(b, s, strlen(s));
}
/** Appends s as a JSON string literal (quotes and escapes; invalid UTF-8
 *  bytes become U+FFFD so the output is always valid JSON). */
void lu__buf_json_str(lu_buf_t *b, const char *s, size_t n);
/** Appends a cJSON value as compact JSON: what cJSON_PrintUnformatted
 *  gives, without its sprintf per integer, except that a double cJSON
 *  would round to 15 digits keeps the 17 that read back exactly.  NaN/Inf
 *  print null; strings are escaped as lu__buf_json_str does.  NULL prints
 *  null.  On allocation failure b->oom is set. */
void lu__buf_json_value(lu_buf_t *b, const cJSON *v);
void lu__buf_free(lu_buf_t *b);

/* ---- jsoncheck.c ----------------------------------------------------- */

/** Would cJSON_ParseWithLengthOpts(s, n, &end, 0) return a value, memory
 *  permitting?  1 or 0; allocates nothing.  Tells a text cJSON refused
 *  from an allocation that failed (both give NULL). */
int lu__json_parses(const char *s, size_t n);

/* ---- ptrmap.c --------------------------------------------------------- */

/** A map from pointers to pointers: open addressing with linear probing,
 *  a fixed number of slots.  No lock of its own: its owner locks. */
typedef struct lu_ptrmap_s {
  const void **keys; /* NULL = empty slot */
  void **vals;
  size_t mask, n;
} lu_ptrmap_t;
/** Room for cap - 1 entries (cap rounded up to a power of two, at least
 *  16).  0 or LU_ENOMEM. */
int lu__ptrmap_init(lu_ptrmap_t *pm, size_t cap);
void lu__ptrmap_free(lu_ptrmap_t *pm);
/** Adds key (not NULL, not already in) -> val: 0, or -1 when full. */
int lu__ptrmap_put(lu_ptrmap_t *pm, const void *key, void *val);
/** Removes key and returns its value; NULL when absent. */
void *lu__ptrmap_take(lu_ptrmap_t *pm, const void *key);
/** Removes every entry whose value is val; returns how many. */
size_t lu__ptrmap_drop_value(lu_ptrmap_t *pm, const void *val);

/* ---- keypath.c: routing keys ------------------------------------------ */

/** Follows a dotted path ("customer.id", "items.0.sku": numeric segments
 *  index arrays) from root.  NULL when any segment is missing. */
const cJSON *lu__json_path(const cJSON *root, const char *path);

/** The routing key text of a JSON value: strings as-is; numbers that are
 *  integral and within int64 as plain decimal integers ("42", "-0" as
 *  "0"), other numbers as C's %.17g; true/false.  Writes to buf (cap
 *  bytes, >= 32) when it must format.  Returns 0 and sets *key and *len,
 *  LU_EINVAL for null, objects and arrays, LU_E2BIG when buf is too
 *  small.  The same rule is the partition key of protocol v2
 *  (docs/protocol.md, section 6). */
int lu__key_text(const cJSON *v, char *buf, size_t cap, const char **key,
                 size_t *len);

/* ---- placement.c (docs/architecture.md, decisions 5-6) ---------------- */

/** XXH3-64 of a key. */
uint64_t lu__key_hash(const char *key, size_t len);
/** The per-shard seed for rendezvous hashing: XXH3-64 of the shard id. */
uint64_t lu__shard_seed(const char *shard_id);
/** Rendezvous (highest random weight): the index in [0,n) of the shard with
 *  the highest weight mix(keyhash, seeds[i]); ties to the lower index. */
unsigned lu__rendezvous(uint64_t keyhash, const uint64_t *seeds, unsigned n);
/** All n shard indexes in descending weight order (order[0] = owner). */
void lu__rendezvous_order(uint64_t keyhash, const uint64_t *seeds,
                          unsigned n, unsigned *order);
/** Consistent hashing with bounded loads: the first shard in rendezvous
 *  order whose load + 1 <= ceil(c * (total + 1) / n); c <= 1 means unbounded
 *  (plain owner).  loads[i] is shard i's current load. */
unsigned lu__rendezvous_bounded(uint64_t keyhash, const uint64_t *seeds,
                                unsigned n, const uint64_t *loads, double c);
/** Power of two choices: two distinct random shards, the less loaded wins
 *  (ties to the first draw, so equal loads spread uniformly).  n == 1
 *  gives 0. */
unsigned lu__two_choices(const uint64_t *loads, unsigned n, uint64_t *rng);

/* ---- ce.c: CloudEvents text rules and the binary content mode -------- */

/** Is s[0..n) UTF-8 as RFC 3629 defines it (no overlong forms, no
 *  surrogates, nothing above U+10FFFF)?  1, or 0 with the offset of the
 *  first byte that is not in *bad_at (may be NULL). */
int lu__utf8_valid(const char *s, size_t n, size_t *bad_at);

/** Is name a CloudEvents attribute name as lucent accepts it: 1 to 20
 *  characters, each a lowercase ASCII letter or a digit
 *  (docs/protocol.md, "What lucent accepts")? */
int lu__ce_attr_name_ok(const char *name, size_t len);

/** FNV-1a, 64 bits (offset basis 0xcbf29ce484222325, prime
 *  0x100000001b3): the intake partition hash of protocol v1, chosen
 *  because a client in any language writes it in a few lines. */
static inline uint64_t lu__fnv1a64(const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

/** Appends the standard base64 (RFC 4648, padded) of p[0..n) to b. */
void lu__buf_base64(lu_buf_t *b, const void *p, size_t n);
/** Appends the bytes that standard base64 text s[0..n) encodes to b:
 *  0, or LU_EINVAL when it is not base64 (b may then hold a part). */
int lu__base64_decode(lu_buf_t *b, const char *s, size_t n);

/** One message header: name and value, borrowed. */
typedef struct lu_hdr_s {
  const char *name, *value;
} lu_hdr_t;

/** Is a message with these headers a binary-mode CloudEvent?  1 when it
 *  has a header ce-specversion (names match case-insensitively) and no
 *  Content-Type of application/cloudevents (structured mode). */
int lu__ce_binary_mode(const lu_hdr_t *h, size_t n);

/** Decodes a binary-mode event (its headers and payload) into the
 *  structured JSON text lucent stores and processes, appended to *out:
 *  attributes from the ce-* headers (percent-decoded, names lowercased),
 *  datacontenttype from ce-datacontenttype or Content-Type, and the
 *  payload as data (JSON), a string (text/x), or data_base64.  Returns 0;
 *  LU_EINVAL with the reason in err when it is not a valid event (a
 *  missing ce-id, a bad header name or value, a JSON content type whose
 *  payload is not JSON, ...); LU_ENOMEM.  *out may hold a partial text
 *  on failure. */
int lu__ce_binary_decode(lu_buf_t *out, const lu_hdr_t *h, size_t n,
                         const char *payload, size_t plen, char *err,
                         size_t errlen);

/** The text kept as a rejected binary-mode message's raw bytes: its
 *  headers as a NATS header block ("NATS/1.0\r\nname: value\r\n...\r\n")
 *  followed by the payload.  Appended to *out. */
void lu__ce_binary_raw(lu_buf_t *out, const lu_hdr_t *h, size_t n,
                       const char *payload, size_t plen);

/** Appends v[0..n) percent-encoded as the NATS binding 3.1.3.2 sends a
 *  header value: each byte outside U+0021..U+007E, and space, '"' and
 *  '%', as %XY (upper case).  No NUL. */
void lu__ce_pct_encode(lu_buf_t *o, const char *v, size_t n);

/** Encodes an event (its parsed JSON object) in binary mode: put(ud,
 *  name, value) once per header (ce-<attribute> for every attribute but
 *  data and data_base64, values percent-encoded; content-type and
 *  ce-datacontenttype from datacontenttype, application/json when it is
 *  absent and the event has data), and the payload appended to *payload.
 *  Returns 0, LU_EINVAL (an attribute that is an object or an array, bad
 *  data_base64: err says which), LU_ENOMEM, or put's first non-zero
 *  return. */
int lu__ce_binary_encode(const cJSON *root,
                         int (*put)(void *ud, const char *name,
                                    const char *value),
                         void *ud, lu_buf_t *payload, char *err,
                         size_t errlen);

#endif /* LUCENT_UTIL_H */
