/*
 * util.c - small shared helpers: clocks, randomness, derived ids, and a
 * growable buffer for writing JSON text by hand on the hot path (cheaper
 * than building a cJSON tree to print it).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "internal.h"

uint64_t lu__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int lu__cond_init_mono(pthread_cond_t *c) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(c, &a);
  pthread_condattr_destroy(&a);
  return rc;
}

struct timespec lu__mono_deadline(uint64_t at_ns) {
  struct timespec ts = {(time_t)(at_ns / 1000000000u),
                        (long)(at_ns % 1000000000u)};
  return ts;
}

int64_t lu__wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void lu__rfc3339(int64_t ms, char buf[32]) {
  /* Every outcome stamps a time: format the date once per second per
   * thread (gmtime + strftime cost ~1 us), then only the milliseconds. */
  static _Thread_local int64_t cached_sec = -1;
  static _Thread_local char prefix[24];
  static _Thread_local size_t plen;
  int64_t sec = ms / 1000;
  if (sec != cached_sec) {
    time_t s = (time_t)sec;
    struct tm tm;
    gmtime_r(&s, &tm);
    plen = strftime(prefix, sizeof prefix, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_sec = sec;
  }
  unsigned m = (unsigned)(ms % 1000);
  memcpy(buf, prefix, plen);
  buf[plen] = '.';
  buf[plen + 1] = (char)('0' + m / 100);
  buf[plen + 2] = (char)('0' + m / 10 % 10);
  buf[plen + 3] = (char)('0' + m % 10);
  buf[plen + 4] = 'Z';
  buf[plen + 5] = 0;
}

uint64_t lu__rand_next(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double lu__rand_unit(uint64_t *state) {
  return (double)(lu__rand_next(state) >> 11) * 0x1.0p-53;
}

void lu__derive_id(char buf[37], const char *const *parts, size_t n) {
  XXH3_state_t st;
  static const char zero = 0;
  XXH3_128bits_reset(&st);
  for (size_t i = 0; i < n; i++) {
    const char *p = parts[i] ? parts[i] : "";
    XXH3_128bits_update(&st, p, strlen(p));
    XXH3_128bits_update(&st, &zero, 1);
  }
  XXH128_hash_t h = XXH3_128bits_digest(&st);
  unsigned char b[16];
  for (int i = 0; i < 8; i++) {
    b[i] = (unsigned char)(h.high64 >> (56 - 8 * i));
    b[8 + i] = (unsigned char)(h.low64 >> (56 - 8 * i));
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x80); /* version 8: custom */
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  static const char hex[] = "0123456789abcdef";
  char *o = buf;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
    *o++ = hex[b[i] >> 4];
    *o++ = hex[b[i] & 15];
  }
  *o = 0;
}

void lu__fmt(char *buf, size_t cap, const char *fmt, ...) {
  if (!cap) return;
  va_list ap;
  va_start(ap, fmt);
  int r = vsnprintf(buf, cap, fmt, ap);
  va_end(ap);
  if (r < 0) buf[0] = 0;
}

static int buf_grow(lu_buf_t *b, size_t extra) {
  if (b->oom) return -1;
  if (b->len + extra + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) {
    b->oom = 1;
    return -1;
  }
  b->p = p;
  b->cap = cap;
  return 0;
}

int lu__buf_reserve(lu_buf_t *b, size_t n) { return buf_grow(b, n); }

/* Length of a valid UTF-8 sequence starting at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  unsigned min;
  if (c < 0x80) return 1;
  if ((c & 0xe0) == 0xc0) len = 2, min = 0x80;
  else if ((c & 0xf0) == 0xe0) len = 3, min = 0x800;
  else if ((c & 0xf8) == 0xf0) len = 4, min = 0x10000;
  else return 0;
  if (len > n) return 0;
  unsigned cp = c & (0x7f >> len);
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

void lu__buf_json_str(lu_buf_t *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  if (buf_grow(b, n + 2)) return;
  b->p[b->len++] = '"';
  size_t i = 0;
  while (i < n) {
    size_t run = i;
    /* Copy the longest run that needs no escaping in one go. */
    while (run < n && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' &&
           p[run] != '\\')
      run++;
    if (run > i) {
      lu__buf_put(b, s + i, run - i);
      i = run;
      continue;
    }
    unsigned c = p[i];
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c;
      lu__buf_put(b, esc, 2);
      i++;
    } else if (c < 0x20) {
      const char *short_esc = c == '\n' ? "\\n" : c == '\r' ? "\\r"
                            : c == '\t' ? "\\t" : NULL;
      if (short_esc) {
        lu__buf_put(b, short_esc, 2);
      } else {
        memcpy(esc, "\\u00", 4);
        esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
        lu__buf_put(b, esc, 6);
      }
      i++;
    } else {
      size_t len = utf8_len(p + i, n - i);
      if (len) {
        lu__buf_put(b, s + i, len);
        i += len;
      } else {
        lu__buf_put(b, "\xef\xbf\xbd", 3); /* U+FFFD */
        i++;
      }
    }
  }
  lu__buf_put(b, "\"", 1);
}

/* A double as JSON: integers by hand (the common case: counters, ids,
 * amounts in cents), others as cJSON prints them (the shortest of %.15g
 * and %.17g that reads back the same); NaN and infinities as null. */
static void buf_json_number(lu_buf_t *b, double d) {
  char t[32];
  if (isnan(d) || isinf(d)) {
    lu__buf_put(b, "null", 4);
    return;
  }
  if (d > -1e15 && d < 1e15 && d == (double)(int64_t)d) {
    int64_t v = (int64_t)d;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char *e = t + sizeof t, *q = e;
    do *--q = (char)('0' + u % 10); while ((u /= 10));
    if (v < 0 || signbit(d)) *--q = '-'; /* -0 stays -0, as in cJSON */
    lu__buf_put(b, q, (size_t)(e - q));
    return;
  }
  int n = snprintf(t, sizeof t, "%1.15g", d);
  if (strtod(t, NULL) != d) n = snprintf(t, sizeof t, "%1.17g", d);
  lu__buf_put(b, t, (size_t)n);
}

void lu__buf_json_value(lu_buf_t *b, const cJSON *v) {
  if (!v || cJSON_IsNull(v)) {
    lu__buf_put(b, "null", 4);
  } else if (cJSON_IsFalse(v)) {
    lu__buf_put(b, "false", 5);
  } else if (cJSON_IsTrue(v)) {
    lu__buf_put(b, "true", 4);
  } else if (cJSON_IsNumber(v)) {
    buf_json_number(b, v->valuedouble);
  } else if (cJSON_IsString(v)) {
    const char *str = v->valuestring ? v->valuestring : "";
    lu__buf_json_str(b, str, strlen(str));
  } else if (cJSON_IsRaw(v)) {
    lu__buf_puts(b, v->valuestring ? v->valuestring : "null");
  } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
    int obj = cJSON_IsObject(v);
    lu__buf_put(b, obj ? "{" : "[", 1);
    for (const cJSON *c = v->child; c; c = c->next) {
      if (c != v->child) lu__buf_put(b, ",", 1);
      if (obj) {
        const char *k = c->string ? c->string : "";
        lu__buf_json_str(b, k, strlen(k));
        lu__buf_put(b, ":", 1);
      }
      lu__buf_json_value(b, c);
    }
    lu__buf_put(b, obj ? "}" : "]", 1);
  } else {
    lu__buf_put(b, "null", 4); /* cJSON_Invalid: an empty item */
  }
}

void lu__buf_free(lu_buf_t *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
  b->oom = 0;
}

/* ---- pointer map ------------------------------------------------------ */

static size_t ptr_slot(const lu_ptrmap_t *pm, const void *key) {
  uintptr_t x = (uintptr_t)key;
  return (size_t)((x >> 4) * 0x9e3779b97f4a7c15ull) & pm->mask;
}

int lu__ptrmap_init(lu_ptrmap_t *pm, size_t cap) {
  size_t c = 16;
  while (c < cap) c <<= 1;
  pm->keys = calloc(c, sizeof *pm->keys);
  pm->vals = calloc(c, sizeof *pm->vals);
  pm->mask = c - 1;
  pm->n = 0;
  if (pm->keys && pm->vals) return 0;
  lu__ptrmap_free(pm);
  return LU_ENOMEM;
}

void lu__ptrmap_free(lu_ptrmap_t *pm) {
  free(pm->keys);
  free(pm->vals);
  pm->keys = NULL;
  pm->vals = NULL;
  pm->mask = pm->n = 0;
}

int lu__ptrmap_put(lu_ptrmap_t *pm, const void *key, void *val) {
  if (!pm->keys || pm->n >= pm->mask) return -1; /* one slot stays empty */
  size_t i = ptr_slot(pm, key);
  while (pm->keys[i]) i = (i + 1) & pm->mask;
  pm->keys[i] = key;
  pm->vals[i] = val;
  pm->n++;
  return 0;
}

/* Empties slot i: later entries of the cluster move back into the hole
 * unless their home slot lies in (i, j] (deletion by backward shift). */
static void ptr_remove_at(lu_ptrmap_t *pm, size_t i) {
  size_t j = (i + 1) & pm->mask;
  while (pm->keys[j]) {
    size_t k = ptr_slot(pm, pm->keys[j]);
    int stays = i <= j ? (k > i && k <= j) : (k > i || k <= j);
    if (!stays) {
      pm->keys[i] = pm->keys[j];
      pm->vals[i] = pm->vals[j];
      i = j;
    }
    j = (j + 1) & pm->mask;
  }
  pm->keys[i] = NULL;
  pm->vals[i] = NULL;
  pm->n--;
}

void *lu__ptrmap_take(lu_ptrmap_t *pm, const void *key) {
  if (!pm->keys || !key) return NULL;
  size_t i = ptr_slot(pm, key);
  while (pm->keys[i] && pm->keys[i] != key) i = (i + 1) & pm->mask;
  if (!pm->keys[i]) return NULL;
  void *v = pm->vals[i];
  ptr_remove_at(pm, i);
  return v;
}

size_t lu__ptrmap_drop_value(lu_ptrmap_t *pm, const void *val) {
  size_t dropped = 0;
  /* A removal can shift an entry into slot i: look at it again.  Entries
   * only move back into the hole chain that starts at i, so nothing
   * unvisited lands behind the scan. */
  for (size_t i = 0; pm->keys && i <= pm->mask;) {
    if (pm->keys[i] && pm->vals[i] == val) {
      ptr_remove_at(pm, i);
      dropped++;
    } else {
      i++;
    }
  }
  return dropped;
}
