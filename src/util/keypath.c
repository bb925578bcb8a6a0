/*
 * keypath.c - routing keys (docs/architecture.md, decision 5): the value a
 * hash_based or sticky_session function routes by, read from an event's
 * data by a dotted path, and its text.  route.c routes by it; the NATS
 * layer and `lucent publish` partition intake by it (docs/protocol.md,
 * section 6), so every process turns a value into the same text.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

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


