/*
 * jsoncheck.c - would cJSON parse this text?  Answered without allocating.
 *
 * cJSON returns NULL both for text that is not JSON and when an
 * allocation fails, and an input must never be rejected as malformed
 * because memory was short: lucent would record a valid event as
 * lucent.Rejected and acknowledge it.  When cJSON_ParseWithLengthOpts
 * fails, lu_event_parse asks this checker, which follows the grammar of
 * the cJSON lucent is built with (1.7.15: parse_value and its helpers)
 * step by step but builds nothing: if it says the text parses, the
 * failure was memory (LU_ENOMEM, the input is given back), else the text
 * is malformed.  It must never say "parses" for a text cJSON refuses,
 * or that input would be given back for ever; fuzz/fuzz_event.c checks
 * the two agree on every input it finds.
 *
 * cJSON's own quirks are followed on purpose: any byte <= 32 is
 * whitespace; a number is the longest prefix strtod reads of the run of
 * bytes in [0-9+-.eE]; \u with non-hex digits reads as U+0000; a lone
 * low surrogate or a high surrogate without its pair fails; nesting
 * deeper than CJSON_NESTING_LIMIT fails; a UTF-8 byte order mark is
 * skipped when 5 bytes or more follow from it.
 */
#include <string.h>

#include "util.h"

typedef struct jc_s {
  const unsigned char *s;
  size_t n, at;
  unsigned depth;
} jc_t;

static int can(const jc_t *j, size_t i) { return j->at + i < j->n; }

static void skip_ws(jc_t *j) {
  if (!can(j, 0)) return;
  while (can(j, 0) && j->s[j->at] <= 32) j->at++;
  if (j->at == j->n) j->at--;
}

/* cJSON's parse_hex4: 0 for any non-hex digit. */
static unsigned hex4(const unsigned char *p) {
  unsigned h = 0;
  for (int i = 0; i < 4; i++) {
    unsigned char c = p[i];
    h <<= 4;
    if (c >= '0' && c <= '9') h += c - '0';
    else if (c >= 'A' && c <= 'F') h += 10u + c - 'A';
    else if (c >= 'a' && c <= 'f') h += 10u + c - 'a';
    else return 0;
  }
  return h;
}

static int string(jc_t *j) {
  if (!can(j, 0) || j->s[j->at] != '"') return 0;
  const unsigned char *p = j->s + j->at + 1, *end = p, *lim = j->s + j->n;
  while (end < lim && *end != '"') {
    if (*end == '\\') {
      if (end + 1 >= lim) return 0;
      end++;
    }
    end++;
  }
  if (end >= lim || *end != '"') return 0;
  while (p < end) {
    if (*p != '\\') {
      p++;
      continue;
    }
    size_t len = 2;
    if (end - p < 1) return 0;
    switch (p[1]) {
      case 'b': case 'f': case 'n': case 'r': case 't':
      case '"': case '\\': case '/':
        break;
      case 'u': {
        if (end - p < 6) return 0;
        unsigned c = hex4(p + 2);
        if (c >= 0xDC00 && c <= 0xDFFF) return 0;
        len = 6;
        if (c >= 0xD800 && c <= 0xDBFF) {
          const unsigned char *q = p + 6;
          if (end - q < 6 || q[0] != '\\' || q[1] != 'u') return 0;
          unsigned c2 = hex4(q + 2);
          if (c2 < 0xDC00 || c2 > 0xDFFF) return 0;
          len = 12;
        }
        break;
      }
      default:
        return 0;
    }
    p += len;
  }
  j->at = (size_t)(end - j->s) + 1;
  return 1;
}

/* cJSON hands the run of [0-9+-.eE] to strtod and goes on where strtod
 * stopped (Debian's 1.7.15 reads the whole run; upstream's first 63
 * bytes: the longer read is the one built here).  What strtod reads of
 * such a run is a decimal float: [sign] digits [. digits] with one digit
 * at least, then e [sign] digits if a digit follows.  Its length, or 0. */
static size_t strtod_prefix(const unsigned char *s, size_t n) {
  size_t i = 0, digits = 0;
  if (i < n && (s[i] == '+' || s[i] == '-')) i++;
  while (i < n && s[i] >= '0' && s[i] <= '9') i++, digits++;
  if (i < n && s[i] == '.') {
    i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++, digits++;
  }
  if (!digits) return 0;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    size_t k = i + 1;
    if (k < n && (s[k] == '+' || s[k] == '-')) k++;
    if (k < n && s[k] >= '0' && s[k] <= '9') {
      while (k < n && s[k] >= '0' && s[k] <= '9') k++;
      i = k;
    }
  }
  return i;
}

static int number(jc_t *j) {
  size_t run = 0;
  while (can(j, run)) {
    unsigned char c = j->s[j->at + run];
    if (!((c >= '0' && c <= '9') || c == '+' || c == '-' || c == 'e' ||
          c == 'E' || c == '.'))
      break;
    run++;
  }
  size_t used = strtod_prefix(j->s + j->at, run);
  if (!used) return 0;
  j->at += used;
  return 1;
}

static int value(jc_t *j);

/* Arrays and objects: cJSON's parse_array / parse_object. */
static int container(jc_t *j, unsigned char open, unsigned char close) {
  if (j->depth >= CJSON_NESTING_LIMIT) return 0;
  j->depth++;
  if (!can(j, 0) || j->s[j->at] != open) return 0;
  j->at++;
  skip_ws(j);
  if (can(j, 0) && j->s[j->at] == close) goto done;
  if (!can(j, 0)) return 0;
  j->at--;
  do {
    j->at++;
    skip_ws(j);
    if (open == '{') {
      if (!string(j)) return 0;
      skip_ws(j);
      if (!can(j, 0) || j->s[j->at] != ':') return 0;
      j->at++;
      skip_ws(j);
    }
    if (!value(j)) return 0;
    skip_ws(j);
  } while (can(j, 0) && j->s[j->at] == ',');
  if (!can(j, 0) || j->s[j->at] != close) return 0;
done:
  j->depth--;
  j->at++;
  return 1;
}

static int word(jc_t *j, const char *w, size_t n) {
  if (j->at + n > j->n || memcmp(j->s + j->at, w, n)) return 0;
  j->at += n;
  return 1;
}

static int value(jc_t *j) {
  if (!j->s) return 0;
  if (word(j, "null", 4) || word(j, "false", 5) || word(j, "true", 4))
    return 1;
  if (!can(j, 0)) return 0;
  unsigned char c = j->s[j->at];
  if (c == '"') return string(j);
  if (c == '-' || (c >= '0' && c <= '9')) return number(j);
  if (c == '[') return container(j, '[', ']');
  if (c == '{') return container(j, '{', '}');
  return 0;
}

int lu__json_parses(const char *s, size_t n) {
  if (!s || !n) return 0;
  jc_t j = {(const unsigned char *)s, n, 0, 0};
  if (can(&j, 4) && !memcmp(s, "\xEF\xBB\xBF", 3)) j.at = 3;
  skip_ws(&j);
  return value(&j);
}
