/*
 * buf.c - a growable byte buffer and the JSON writer built on it: results
 * and stored events are written by hand on the hot path (cheaper than
 * building a cJSON tree to print it).  Also lu__fmt, snprintf that never
 * fails.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

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

/* SWAR over eight bytes: does any need more than a copy inside a JSON
 * string (a control byte, '"', '\\', or a byte >= 0x80, whose UTF-8 must
 * be checked)? */
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
static inline int json_notable8(uint64_t w) {
  uint64_t q = w ^ (ONES * '"'), bs = w ^ (ONES * '\\');
  return (((w - ONES * 0x20) & ~w) | ((q - ONES) & ~q) | ((bs - ONES) & ~bs) |
          w) & HIGHS ? 1 : 0;
}

/* How many leading bytes of p[0..n) are copied as they are. */
static size_t json_plain_prefix(const unsigned char *p, size_t n) {
  size_t i = 0;
  uint64_t w;
  for (; i + 8 <= n; i += 8) {
    memcpy(&w, p + i, 8);
    if (json_notable8(w)) break;
  }
  /* The last few bytes of a string of eight or more: its last eight at
   * once (some looked at twice). */
  if (i < n && i + 8 > n && n >= 8) {
    memcpy(&w, p + n - 8, 8);
    if (!json_notable8(w)) return n;
  }
  while (i < n && p[i] >= 0x20 && p[i] < 0x80 && p[i] != '"' && p[i] != '\\')
    i++;
  return i;
}

void lu__buf_json_str(lu_buf_t *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  if (buf_grow(b, n + 2)) return;
  b->p[b->len++] = '"';
  /* The common case, a string with nothing to escape: one copy. */
  size_t i = json_plain_prefix(p, n);
  memcpy(b->p + b->len, s, i);
  b->len += i;
  if (i == n) {
    b->p[b->len++] = '"';
    b->p[b->len] = 0;
    return;
  }
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

