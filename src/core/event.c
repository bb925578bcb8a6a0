/*
 * event.c - the CloudEvents envelope: parse, validate, build, encode.
 *
 * A parsed event owns a NUL-terminated copy of the bytes it came from and
 * the cJSON tree parsed from that copy.  The attribute pointers lucent reads
 * on the hot path (id, type, subject, correlationid, ...) are cached once
 * by lu__event_index() so routing never walks the tree twice.  The raw bytes
 * stay authoritative until the event is changed: lu_event_json() returns
 * them unchanged (docs/architecture.md: never re-serialize on a hop).
 *
 * What lucent accepts is stricter than what cJSON parses, so that every
 * event lucent stores - results carry the input's extension attributes,
 * dead letters carry the input itself - is valid JSON and a valid
 * CloudEvent (docs/protocol.md, "What lucent accepts"; issue 17):
 *   - the text is UTF-8 (the reason names the byte offset), without a
 *     byte order mark;
 *   - no raw control character inside a string, no \u0000 escape (a C
 *     string would silently end there), no number that is not finite as a
 *     double (1e999);
 *   - attribute names are [a-z0-9]{1,20}, each at most once;
 *   - attribute values are strings, booleans, 32-bit integers or null
 *     (the CloudEvents type system); the core string attributes are
 *     strings, and subject is not empty;
 *   - data and data_base64 are not both present.
 * And text with line breaks is kept compacted onto one line
 * (compact_lines).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "internal.h"

/* What an attribute's name is to lucent: a CloudEvents core attribute,
 * one lucent manages, or business context (A_OTHER).  One switch on the
 * length and one compare per name: every attribute of every input is
 * classified once, when it is parsed. */
enum {
  A_OTHER, A_ID, A_TYPE, A_SOURCE, A_SUBJECT, A_TIME, A_SPECVERSION,
  A_CORRELATIONID, A_CAUSATIONID, A_CAUSATIONDEPTH, A_DATA, A_DATA_BASE64,
  A_DATACONTENTTYPE, A_DATASCHEMA, A_FUNCTION, A_SHARDID
};

static int attr_class(const char *k, size_t n) {
#define IS(lit) (memcmp(k, lit, sizeof lit - 1) == 0)
  switch (n) {
    case 2: return IS("id") ? A_ID : A_OTHER;
    case 4:
      return IS("type") ? A_TYPE : IS("time") ? A_TIME
           : IS("data") ? A_DATA : A_OTHER;
    case 6: return IS("source") ? A_SOURCE : A_OTHER;
    case 7:
      return IS("subject") ? A_SUBJECT : IS("shardid") ? A_SHARDID : A_OTHER;
    case 8: return IS("function") ? A_FUNCTION : A_OTHER;
    case 10: return IS("dataschema") ? A_DATASCHEMA : A_OTHER;
    case 11:
      return IS("specversion") ? A_SPECVERSION
           : IS("causationid") ? A_CAUSATIONID
           : IS("data_base64") ? A_DATA_BASE64 : A_OTHER;
    case 13: return IS("correlationid") ? A_CORRELATIONID : A_OTHER;
    case 14: return IS("causationdepth") ? A_CAUSATIONDEPTH : A_OTHER;
    case 15: return IS("datacontenttype") ? A_DATACONTENTTYPE : A_OTHER;
    default: return A_OTHER;
  }
#undef IS
}

/* Must an attribute of this class be a string (CloudEvents core, and the
 * ones lucent manages and reads as strings)? */
static int string_class(int c) {
  return c != A_OTHER && c != A_CAUSATIONDEPTH && c != A_DATA &&
         c != A_DATA_BASE64;
}

/* The CloudEvents core attributes and the ones lucent manages: not
 * business context. */
int lu__event_is_core_attr(const char *n) {
  return attr_class(n, strlen(n)) != A_OTHER;
}

static const char *str_attr(const cJSON *root, const char *name) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, name);
  return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* Indexes one top-level attribute of class c (lu__event_index). */
static void index_attr(lu_event_t *ev, const cJSON *it, int c) {
  if (c == A_OTHER) {
    if (ev->nctx < LU_EVENT_CTX) ev->ctx[ev->nctx] = it;
    ev->nctx++; /* past LU_EVENT_CTX, outcome.c walks root for them */
    return;
  }
  if (c == A_DATA) {
    ev->data = it;
    return;
  }
  if (c == A_CAUSATIONDEPTH) {
    if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < 1e6)
      ev->depth = (unsigned)it->valuedouble;
    return;
  }
  if (!cJSON_IsString(it)) return;
  const char *v = it->valuestring;
  switch (c) {
    case A_ID: ev->id = v; break;
    case A_TYPE: ev->type = v; break;
    case A_TIME: ev->time = v; break;
    case A_SOURCE: ev->source = v; break;
    case A_SUBJECT: ev->subject = v; break;
    case A_CORRELATIONID: ev->correlationid = v; break;
    case A_CAUSATIONID: ev->causationid = v; break;
    default: break;
  }
}

static void index_reset(lu_event_t *ev) {
  ev->id = ev->type = ev->source = ev->subject = ev->time = NULL;
  ev->correlationid = ev->causationid = NULL;
  ev->data = NULL;
  ev->depth = 0;
  ev->nctx = 0;
}

void lu__event_index(lu_event_t *ev) {
  index_reset(ev);
  /* One pass over the top level instead of one lookup per attribute. */
  for (const cJSON *it = ev->root ? ev->root->child : NULL; it;
       it = it->next)
    if (it->string) index_attr(ev, it, attr_class(it->string,
                                                   strlen(it->string)));
}

/* Turns a byte offset into "line L column C" (1-based) for messages. */
static void offset_to_linecol(const char *s, size_t off, size_t *line,
                              size_t *col) {
  *line = 1, *col = 1;
  for (size_t i = 0; i < off; i++) {
    if (s[i] == '\n') (*line)++, *col = 1;
    else (*col)++;
  }
}

static int check_attr(const cJSON *root, const char *name, char *err,
                      size_t errlen) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, name);
  if (!it) {
    if (err) lu__fmt(err, errlen, "missing required attribute '%s'", name);
    return LU_EINVAL;
  }
  if (!cJSON_IsString(it) || !it->valuestring[0]) {
    if (err)
      lu__fmt(err, errlen, "attribute '%s' must be a non-empty string", name);
    return LU_EINVAL;
  }
  return 0;
}

/* SWAR over eight bytes: is any a control byte (< 0x20) or a backslash?
 * Those are all check_text looks at: the text's UTF-8 was checked before
 * it was parsed, and quotes matter only when a control byte turns up. */
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
static inline int notable8(uint64_t w) {
  uint64_t bs = w ^ (ONES * '\\');
  return (((w - ONES * 0x20) & ~w) | ((bs - ONES) & ~bs)) & HIGHS ? 1 : 0;
}

/* Is offset i inside a string?  Advances the string state of s from
 * *at (with *in) to i: each byte is walked once over all calls. */
static int in_string_at(const char *s, size_t i, size_t *at, int *in) {
  for (size_t k = *at; k < i; k++) {
    if (*in && s[k] == '\\') k++;
    else if (s[k] == '"') *in = !*in;
  }
  if (*at < i) *at = i;
  return *in;
}

/* What cJSON lets through and JSON text or lucent cannot carry, in text
 * cJSON has parsed: a raw control character inside a string (RFC 8259
 * wants it escaped: a dead letter that carries the input would not be
 * JSON) and the escape \u0000 (a C string would silently end there).
 * Eight plain bytes at a time; a backslash is always inside a string in
 * text cJSON accepted, and a control byte is one only inside a string
 * (outside, it is white space), which the rare slow path works out.
 * (Numbers that are not finite are found in the tree: finite_numbers.) */
static int check_text(const char *s, size_t len, char *err, size_t errlen) {
  size_t i = 0, at = 0;
  int in = 0;
  while (i < len) {
    if (i + 8 <= len) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (!notable8(w)) {
        i += 8;
        continue;
      }
    }
    unsigned char c = (unsigned char)s[i];
    if (c == '\\') {
      if (i + 5 < len && s[i + 1] == 'u' && !memcmp(s + i + 2, "0000", 4)) {
        if (err)
          lu__fmt(err, errlen,
                  "the escape \\u0000 at byte offset %zu: lucent cannot "
                  "carry NUL characters in strings", i);
        return LU_EINVAL;
      }
      i += 2; /* the escaped character */
      continue;
    }
    if (c < 0x20 && in_string_at(s, i, &at, &in)) {
      size_t line, col;
      offset_to_linecol(s, i, &line, &col);
      if (err)
        lu__fmt(err, errlen,
                "malformed JSON at line %zu column %zu: unescaped control "
                "character 0x%02x inside a string (byte offset %zu)",
                line, col, c, i);
      return LU_EPARSE;
    }
    i++;
  }
  return 0;
}

/* A number that is not finite as a double (1e999: cJSON reads it as
 * infinity, printed as null later, or not JSON at all to some readers).
 * Walks the tree: numbers are few, text is long. */
static int finite_numbers(const cJSON *v, char *err, size_t errlen) {
  for (; v; v = v->next) {
    if (cJSON_IsNumber(v) && !isfinite(v->valuedouble)) {
      if (err)
        lu__fmt(err, errlen,
                "number out of range%s%s%s: it is not finite as a 64-bit "
                "float", v->string ? " in '" : "",
                v->string ? v->string : "", v->string ? "'" : "");
      return LU_EINVAL;
    }
    if (v->child && finite_numbers(v->child, err, errlen)) return LU_EINVAL;
  }
  return 0;
}

static void compact_lines(char *s, size_t *len) {
  if (!memchr(s, '\n', *len) && !memchr(s, '\r', *len)) return;
  size_t w = 0;
  int in_str = 0;
  for (size_t i = 0; i < *len; i++) {
    char c = s[i];
    if (in_str) {
      s[w++] = c;
      if (c == '\\' && i + 1 < *len) s[w++] = s[++i];
      else if (c == '"') in_str = 0;
    } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      in_str = c == '"';
      s[w++] = c;
    }
  }
  s[w] = 0;
  *len = w;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The name of an attribute that appears twice, or NULL.  A few: compared
 * pairwise; many: sorted (an input of 100k members must not cost 10^10). */
static const char *duplicate_name(const cJSON *root, size_t n, int *oom) {
  *oom = 0;
  if (n <= 32) {
    /* Pairs are compared by length and first byte before strcmp: with a
     * dozen attributes, that spares ~60 string compares per event. */
    uint32_t sig[32];
    const char *nm[32];
    size_t k = 0;
    for (const cJSON *a = root->child; a; a = a->next, k++) {
      nm[k] = a->string;
      sig[k] = (uint32_t)strlen(a->string) << 8 | (unsigned char)a->string[0];
      for (size_t j = 0; j < k; j++)
        if (sig[j] == sig[k] && !strcmp(nm[j], nm[k])) return nm[k];
    }
    return NULL;
  }
  const char **v = malloc(n * sizeof *v);
  if (!v) {
    *oom = 1;
    return NULL;
  }
  size_t k = 0;
  for (const cJSON *a = root->child; a; a = a->next) v[k++] = a->string;
  qsort(v, k, sizeof *v, cmp_name);
  const char *dup = NULL;
  for (size_t i = 1; i < k && !dup; i++)
    if (!strcmp(v[i - 1], v[i])) dup = v[i];
  free(v);
  return dup;
}

/* What one pass over an input's top-level attributes finds: the event
 * indexed (as lu__event_index does) and what check_attrs reports. */
typedef struct attr_scan_s {
  const cJSON *spec; /* the first specversion */
  const cJSON *bad;  /* the first attribute refused, why says why */
  int why;
  int data, b64;
  size_t n;          /* attributes */
  const char *dup;   /* the first name seen twice (n <= 32) */
} attr_scan_t;

enum { BAD_B64 = 1, BAD_NAME, BAD_NOT_STRING, BAD_EMPTY_SUBJECT,
       BAD_NUMBER, BAD_COMPOUND };

/* Attribute names and values as CloudEvents 1.0 defines them (the JSON
 * format's type system mapping): see the top of this file.  0, or BAD_*
 * for an attribute of class c. */
static int attr_verdict(const cJSON *it, const char *k, size_t klen, int c,
                        attr_scan_t *sc) {
  if (c == A_DATA) {
    sc->data = 1;
    return 0;
  }
  if (c == A_DATA_BASE64) {
    sc->b64 = 1;
    return cJSON_IsString(it) || cJSON_IsNull(it) ? 0 : BAD_B64;
  }
  if (!lu__ce_attr_name_ok(k, klen)) return BAD_NAME;
  if (cJSON_IsNull(it)) return 0; /* the JSON format: null = absent */
  if (string_class(c)) {
    if (!cJSON_IsString(it)) return BAD_NOT_STRING;
    return !it->valuestring[0] && c == A_SUBJECT ? BAD_EMPTY_SUBJECT : 0;
  }
  if (cJSON_IsString(it) || cJSON_IsBool(it)) return 0;
  if (cJSON_IsNumber(it)) {
    double d = it->valuedouble;
    return d == floor(d) && d >= -2147483648.0 && d <= 2147483647.0
               ? 0 : BAD_NUMBER;
  }
  return BAD_COMPOUND;
}

/* The pass: each name's length and class found once, for the index, the
 * checks and the duplicate search (pairs compared by length and first
 * byte before the bytes: with a dozen attributes, that spares ~60 string
 * compares per event). */
static void scan_attrs(lu_event_t *ev, attr_scan_t *sc) {
  uint32_t sig[32];
  const char *nm[32];
  memset(sc, 0, sizeof *sc);
  index_reset(ev);
  for (const cJSON *it = ev->root->child; it; it = it->next, sc->n++) {
    const char *k = it->string;
    size_t klen = strlen(k);
    int c = attr_class(k, klen);
    index_attr(ev, it, c);
    if (c == A_SPECVERSION && !sc->spec) sc->spec = it;
    if (!sc->bad && (sc->why = attr_verdict(it, k, klen, c, sc)))
      sc->bad = it;
    size_t i = sc->n;
    if (i < 32) {
      nm[i] = k;
      sig[i] = (uint32_t)klen << 8 | (unsigned char)k[0];
      for (size_t j = 0; j < i && !sc->dup; j++)
        if (sig[j] == sig[i] && !strcmp(nm[j], k)) sc->dup = k;
    }
  }
}

/* What check_attrs says of a scanned event: the first attribute refused,
 * else data with data_base64, else a name seen twice. */
static int check_attrs(const lu_event_t *ev, const attr_scan_t *sc,
                       char *err, size_t errlen) {
  if (sc->bad) {
    const char *k = sc->bad->string;
    if (err) switch (sc->why) {
      case BAD_B64:
        lu__fmt(err, errlen, "data_base64 must be a string");
        break;
      case BAD_NAME:
        lu__fmt(err, errlen,
                "invalid attribute name '%.64s': CloudEvents attribute "
                "names are 1 to 20 lowercase letters (a-z) or digits (0-9)",
                k);
        break;
      case BAD_NOT_STRING:
        lu__fmt(err, errlen, "attribute '%s' must be a string", k);
        break;
      case BAD_EMPTY_SUBJECT:
        lu__fmt(err, errlen, "attribute 'subject' must not be empty");
        break;
      case BAD_NUMBER:
        lu__fmt(err, errlen,
                "attribute '%s' is the number %.17g: a CloudEvents integer "
                "is a whole number within 32 bits (send other numbers as "
                "strings)", k, sc->bad->valuedouble);
        break;
      default:
        lu__fmt(err, errlen,
                "attribute '%s' is %s: attribute values are strings, "
                "booleans or integers (an object or array belongs in data)",
                k, cJSON_IsArray(sc->bad) ? "an array" : "an object");
        break;
    }
    return LU_EINVAL;
  }
  if (sc->data && sc->b64) {
    if (err)
      lu__fmt(err, errlen, "an event has data or data_base64, not both");
    return LU_EINVAL;
  }
  const char *dup = sc->dup;
  if (sc->n > 32) {
    int oom;
    dup = duplicate_name(ev->root, sc->n, &oom);
    if (oom) return LU_ENOMEM;
  }
  if (dup) {
    if (err)
      lu__fmt(err, errlen, "attribute '%.64s' appears more than once", dup);
    return LU_EINVAL;
  }
  return 0;
}

int lu_event_parse(lu_event_t **out, const char *json, size_t len, char *err,
                   size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = 0;
  if (!json) return LU_EINVAL;
  lu_event_t *ev = calloc(1, sizeof *ev);
  char *raw = malloc(len + 1);
  if (!ev || !raw) {
    free(ev);
    free(raw);
    return LU_ENOMEM;
  }
  memcpy(raw, json, len);
  raw[len] = 0;
  size_t bad;
  if (!lu__utf8_valid(raw, len, &bad)) {
    if (err)
      lu__fmt(err, errlen,
              "invalid UTF-8 at byte offset %zu (byte 0x%02x): JSON text "
              "must be UTF-8", bad, (unsigned char)raw[bad]);
    free(raw);
    free(ev);
    return LU_EPARSE;
  }
  /* cJSON skips a byte order mark, but the raw text is what a dead
   * letter carries, and U+FEFF inside JSON text is not JSON. */
  if (len >= 3 && !memcmp(raw, "\xef\xbb\xbf", 3)) {
    if (err)
      lu__fmt(err, errlen,
              "malformed JSON at line 1 column 1: a byte order mark "
              "(U+FEFF) starts the text (RFC 8259 section 8.1)");
    free(raw);
    free(ev);
    return LU_EPARSE;
  }
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(raw, len, &end, 0);
  if (!root && lu__json_parses(raw, len)) {
    /* Well-formed: cJSON ran out of memory.  Never a rejection. */
    free(raw);
    free(ev);
    return LU_ENOMEM;
  }
  if (!root) {
    size_t off = end && end >= raw ? (size_t)(end - raw) : 0, line, col;
    if (off > len) off = len;
    offset_to_linecol(raw, off, &line, &col);
    if (err) {
      if (len == 0 || strspn(raw, " \t\r\n") == len)
        lu__fmt(err, errlen, "malformed JSON: empty input");
      else if (off + 1 >= len) /* cJSON stops on the last byte */
        lu__fmt(err, errlen,
                "malformed JSON at line %zu column %zu: incomplete input "
                "(unexpected end)", line, col);
      else
        lu__fmt(err, errlen,
                "malformed JSON at line %zu column %zu near '%.16s'", line,
                col, raw + off);
    }
    free(raw);
    free(ev);
    return LU_EPARSE;
  }
  /* Only whitespace may follow the value. */
  size_t used = (size_t)(end - raw);
  if (used < len && strspn(end, " \t\r\n") != len - used) {
    size_t line, col;
    offset_to_linecol(raw, used, &line, &col);
    if (err)
      lu__fmt(err, errlen,
              "malformed JSON at line %zu column %zu: trailing characters "
              "after the event", line, col);
    cJSON_Delete(root);
    free(raw);
    free(ev);
    return LU_EPARSE;
  }
  ev->raw = raw;
  ev->raw_len = len;
  ev->root = root;
  int rc = check_text(raw, len, err, errlen);
  if (!rc) rc = finite_numbers(root, err, errlen);
  if (!rc && !cJSON_IsObject(root)) {
    if (err) lu__fmt(err, errlen, "an event must be a JSON object");
    rc = LU_EINVAL;
  }
  /* One pass finds the attributes and what is wrong with them, reported
   * in this order; the slow lookups only say what is wrong with one that
   * is missing or not a string. */
  attr_scan_t sc;
  if (!rc) scan_attrs(ev, &sc);
  if (!rc && !(ev->id && *ev->id)) rc = check_attr(root, "id", err, errlen);
  if (!rc && !(ev->type && *ev->type))
    rc = check_attr(root, "type", err, errlen);
  if (!rc && !(ev->source && *ev->source))
    rc = check_attr(root, "source", err, errlen);
  if (!rc) {
    const cJSON *sv = sc.spec;
    if (sv && !(cJSON_IsString(sv) && strcmp(sv->valuestring, "1.0") == 0)) {
      if (err) lu__fmt(err, errlen, "unsupported specversion (want \"1.0\")");
      rc = LU_EINVAL;
    }
  }
  if (!rc) rc = check_attrs(ev, &sc, err, errlen);
  if (!rc) compact_lines(ev->raw, &ev->raw_len);
  if (rc) {
    lu_event_free(ev);
    return rc;
  }
  *out = ev; /* indexed above */
  return 0;
}

static void uuid_v4(char buf[37]) {
  unsigned char b[16];
  if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
    /* No entropy source: fall back to the clock; ids stay unique enough
     * within a process and lu_event_set(ev, "id", ...) can override. */
    static _Atomic uint64_t ctr;
    uint64_t s = lu__now_ns() ^ atomic_fetch_add(&ctr, 1);
    for (int i = 0; i < 16; i += 8) {
      uint64_t r = lu__rand_next(&s);
      memcpy(b + i, &r, 8);
    }
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  static const char hex[] = "0123456789abcdef";
  char *o = buf;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
    *o++ = hex[b[i] >> 4];
    *o++ = hex[b[i] & 15];
  }
  *o = 0;
}

int lu_event_new(lu_event_t **out, const char *type, const char *source,
                 const char *subject, cJSON *data) {
  *out = NULL;
  if (!type || !*type || !source || !*source) {
    cJSON_Delete(data);
    return LU_EINVAL;
  }
  lu_event_t *ev = calloc(1, sizeof *ev);
  cJSON *root = cJSON_CreateObject();
  char id[37], tbuf[32];
  uuid_v4(id);
  lu__rfc3339(lu__wall_ms(), tbuf);
  if (!ev || !root || !cJSON_AddStringToObject(root, "specversion", "1.0") ||
      !cJSON_AddStringToObject(root, "id", id) ||
      !cJSON_AddStringToObject(root, "source", source) ||
      !cJSON_AddStringToObject(root, "type", type) ||
      (subject && !cJSON_AddStringToObject(root, "subject", subject)) ||
      !cJSON_AddStringToObject(root, "time", tbuf)) {
    free(ev);
    cJSON_Delete(root);
    cJSON_Delete(data);
    return LU_ENOMEM;
  }
  if (data) cJSON_AddItemToObject(root, "data", data);
  ev->root = root;
  lu__event_index(ev);
  *out = ev;
  return 0;
}

int lu_event_set(lu_event_t *ev, const char *name, const char *value) {
  /* Only names an input may carry (a built event is not parsed again). */
  if (!ev || !name || !lu__ce_attr_name_ok(name, strlen(name)) || !value ||
      strcmp(name, "specversion") == 0 || strcmp(name, "data") == 0 ||
      (!*value && strcmp(name, "subject") == 0) ||
      !lu__utf8_valid(value, strlen(value), NULL))
    return LU_EINVAL;
  cJSON *v = cJSON_CreateString(value);
  if (!v) return LU_ENOMEM;
  if (cJSON_GetObjectItemCaseSensitive(ev->root, name)) {
    if (!cJSON_ReplaceItemInObjectCaseSensitive(ev->root, name, v)) {
      cJSON_Delete(v);
      return LU_ENOMEM;
    }
  } else if (!cJSON_AddItemToObject(ev->root, name, v)) {
    cJSON_Delete(v);
    return LU_ENOMEM;
  }
  free(ev->raw);
  ev->raw = NULL;
  ev->raw_len = 0;
  lu__event_index(ev);
  return 0;
}

const char *lu_event_attr(const lu_event_t *ev, const char *name) {
  return ev && name ? str_attr(ev->root, name) : NULL;
}
const char *lu_event_id(const lu_event_t *ev) { return ev ? ev->id : NULL; }
const char *lu_event_type(const lu_event_t *ev) {
  return ev ? ev->type : NULL;
}
const cJSON *lu_event_data(const lu_event_t *ev) {
  return ev ? ev->data : NULL;
}

const char *lu_event_json(lu_event_t *ev, size_t *len) {
  if (!ev) return NULL;
  if (!ev->raw) {
    ev->raw = cJSON_PrintUnformatted(ev->root);
    if (!ev->raw) return NULL;
    ev->raw_len = strlen(ev->raw);
  }
  if (len) *len = ev->raw_len;
  return ev->raw;
}

void lu_event_free(lu_event_t *ev) {
  if (!ev) return;
  cJSON_Delete(ev->root);
  free(ev->raw);
  free(ev);
}
