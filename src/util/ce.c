/*
 * ce.c - CloudEvents text rules lucent shares across layers: UTF-8 and
 * attribute-name checks, base64, and the binary content mode of the
 * CloudEvents NATS protocol binding (docs/protocol.md, "Content modes"),
 * without NATS: headers come
 * in as name/value pairs, so the rules are tested on their own
 * (tests/unit/test_ce_binary.c) and bus_nats.c only collects the headers.
 *
 * Binding rules followed (cloudevents/spec, nats-protocol-binding.md,
 * version 1.0.3-wip):
 *   3.1.1    the data byte sequence is the message body;
 *   3.1.3.1  every attribute, extensions included, is a header named
 *            ce-<attribute>; header names are case-insensitive;
 *   3.1.3.2  values are the attribute's canonical string, percent-encoded
 *            (space, '"', '%' and everything outside U+0021..U+007E, as
 *            UTF-8 bytes, upper-case hex); a receiver first unescapes a
 *            double-quoted value (RFC 7230 3.2.6), then percent-decodes
 *            once, accepting needless encoding and lower-case hex, and
 *            rejects bytes that are not UTF-8 (%C0%A0).
 * Where lucent differs, and why (docs/protocol.md says the same):
 *   - the binding calls every message without a Content-Type of
 *     application/cloudevents binary; lucent calls a message binary only
 *     when it has a ce-specversion header, so that a plain JSON payload
 *     (how every lucent client published before) stays structured;
 *   - datacontenttype is read from ce-datacontenttype (the binding) or,
 *     failing that, Content-Type (as the HTTP binding and the Go SDK's
 *     NATS binding do); both are written.
 * The data, by the JSON event format (json-format.md 3.1): an empty
 * payload is no data; a JSON content type (type/json, type/x+json) must
 * carry a JSON payload, stored as data; no content type: data when the
 * payload is JSON (datacontenttype then made explicit, as 3.1.2 says),
 * else data_base64; text/x: a string when the payload is UTF-8 without
 * NUL, else data_base64; anything else: data_base64.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

/* ---- base64 (RFC 4648, standard alphabet, padded) --------------------- */

/* ---- CloudEvents text rules --------------------------------------------- */

int lu__utf8_valid(const char *s, size_t n, size_t *bad_at) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    /* Eight ASCII bytes at a time: most input is ASCII. */
    if (n - i >= 8) {
      uint64_t w;
      memcpy(&w, p + i, 8);
      if (!(w & 0x8080808080808080ull)) {
        i += 8;
        continue;
      }
    }
    unsigned c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t need;
    unsigned lo = 0x80, hi = 0xbf; /* the second byte's range */
    if (c >= 0xc2 && c <= 0xdf) need = 1;
    else if (c == 0xe0) need = 2, lo = 0xa0;        /* no overlong */
    else if (c >= 0xe1 && c <= 0xec) need = 2;
    else if (c == 0xed) need = 2, hi = 0x9f;        /* no surrogates */
    else if (c >= 0xee && c <= 0xef) need = 2;
    else if (c == 0xf0) need = 3, lo = 0x90;        /* no overlong */
    else if (c >= 0xf1 && c <= 0xf3) need = 3;
    else if (c == 0xf4) need = 3, hi = 0x8f;        /* <= U+10FFFF */
    else goto bad;
    if (n - i <= need || p[i + 1] < lo || p[i + 1] > hi) goto bad;
    for (size_t k = 2; k <= need; k++)
      if ((p[i + k] & 0xc0) != 0x80) goto bad;
    i += need + 1;
    continue;
  bad:
    if (bad_at) *bad_at = i;
    return 0;
  }
  return 1;
}

int lu__ce_attr_name_ok(const char *name, size_t len) {
  if (len < 1 || len > 20) return 0;
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return 0;
  }
  return 1;
}

/* ---- base64 ------------------------------------------------------------ */

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void lu__buf_base64(lu_buf_t *b, const void *p, size_t n) {
  const unsigned char *s = p;
  if (lu__buf_reserve(b, (n + 2) / 3 * 4)) return;
  char q[4];
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
    q[0] = b64chars[v >> 18], q[1] = b64chars[(v >> 12) & 63];
    q[2] = b64chars[(v >> 6) & 63], q[3] = b64chars[v & 63];
    lu__buf_put(b, q, 4);
  }
  if (i < n) {
    uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
    q[0] = b64chars[v >> 18], q[1] = b64chars[(v >> 12) & 63];
    q[2] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
    q[3] = '=';
    lu__buf_put(b, q, 4);
  }
  lu__buf_put(b, "", 0); /* NUL-terminated, also when n is 0 */
}

static int b64val(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int lu__base64_decode(lu_buf_t *b, const char *s, size_t n) {
  if (n % 4) return LU_EINVAL;
  for (size_t i = 0; i < n; i += 4) {
    int last = i + 4 == n;
    int pad = last ? (s[n - 1] == '=') + (s[n - 2] == '=') : 0;
    int v[4];
    for (int k = 0; k < 4; k++) {
      v[k] = k >= 4 - pad ? 0 : b64val(s[i + k]);
      if (v[k] < 0) return LU_EINVAL;
    }
    uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                 (uint32_t)v[2] << 6 | (uint32_t)v[3];
    char o[3] = {(char)(w >> 16), (char)(w >> 8), (char)w};
    lu__buf_put(b, o, (size_t)(3 - pad));
  }
  return b->oom ? LU_ENOMEM : 0;
}

/* ---- header values ---------------------------------------------------- */

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Binding 3.1.3.2, receiving: a double-quoted value is unescaped first
 * (RFC 7230 quoted-string: backslash escapes the next character), then
 * one round of percent-decoding; the result must be UTF-8.  Appends the
 * decoded value and a NUL to *o; 0, or LU_EINVAL with why. */
static int decode_value(lu_buf_t *o, const char *v, const char *hname,
                        char *err, size_t errlen) {
  lu_buf_t q = {0};
  const char *s = v;
  size_t n = strlen(v);
  if (n && v[0] == '"') {
    size_t i = 1;
    for (; i < n && v[i] != '"'; i++) {
      if (v[i] == '\\' && i + 1 < n) i++;
      lu__buf_put(&q, v + i, 1);
    }
    size_t rest = i < n ? i + 1 : n;
    if (i >= n || strspn(v + rest, " \t") != n - rest) {
      lu__buf_free(&q);
      if (err)
        lu__fmt(err, errlen,
                "header %.64s: malformed quoted value (no closing '\"', or "
                "text after it)", hname);
      return LU_EINVAL;
    }
    lu__buf_put(&q, "", 0); /* a NUL even when empty */
    if (q.oom) {
      lu__buf_free(&q);
      return LU_ENOMEM;
    }
    s = q.p ? q.p : "";
    n = q.len;
  }
  size_t start = o->len;
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    if (s[i] != '%') {
      lu__buf_put(o, s + i, 1);
      continue;
    }
    int a = i + 1 < n ? hexval(s[i + 1]) : -1;
    int b = i + 2 < n ? hexval(s[i + 2]) : -1;
    if (a < 0 || b < 0) {
      rc = LU_EINVAL;
      break;
    }
    char c = (char)(a << 4 | b);
    lu__buf_put(o, &c, 1);
    i += 2;
  }
  lu__buf_free(&q);
  if (rc) {
    if (err)
      lu__fmt(err, errlen,
              "header %.64s: malformed percent-encoding (%% must be followed "
              "by two hex digits)", hname);
    return rc;
  }
  size_t bad;
  if (o->len > start && !lu__utf8_valid(o->p + start, o->len - start, &bad)) {
    if (err)
      lu__fmt(err, errlen,
              "header %.64s: the decoded value is not UTF-8 (byte %zu)",
              hname, bad);
    return LU_EINVAL;
  }
  if (memchr(o->p ? o->p + start : "", 0, o->len - start)) {
    if (err)
      lu__fmt(err, errlen, "header %.64s: the decoded value holds a NUL",
              hname);
    return LU_EINVAL;
  }
  lu__buf_put(o, "", 1);
  return o->oom ? LU_ENOMEM : 0;
}

void lu__ce_pct_encode(lu_buf_t *o, const char *v, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)v[i];
    if (c > 0x20 && c < 0x7f && c != '"' && c != '%') {
      lu__buf_put(o, v + i, 1);
    } else {
      char e[3] = {'%', hex[c >> 4], hex[c & 15]};
      lu__buf_put(o, e, 3);
    }
  }
}

static void encode_value(lu_buf_t *o, const char *v, size_t n) {
  lu__ce_pct_encode(o, v, n);
  lu__buf_put(o, "", 1);
}

/* ---- content types ---------------------------------------------------- */

/* The media type without parameters, trimmed: [*t, *t + *tl). */
static void media_type(const char *ct, const char **t, size_t *tl) {
  while (*ct == ' ' || *ct == '\t') ct++;
  size_t l = strcspn(ct, ";");
  while (l && (ct[l - 1] == ' ' || ct[l - 1] == '\t')) l--;
  *t = ct;
  *tl = l;
}

/* json-format.md 3.1.1: subtype json, or ending in +json (parameters
 * stripped). */
static int is_json_type(const char *ct) {
  const char *t;
  size_t l;
  media_type(ct, &t, &l);
  const char *slash = memchr(t, '/', l);
  if (!slash) return 0;
  size_t sub = l - (size_t)(slash + 1 - t);
  const char *s = slash + 1;
  return (sub == 4 && !strncasecmp(s, "json", 4)) ||
         (sub > 5 && !strncasecmp(s + sub - 5, "+json", 5));
}

static int is_text_type(const char *ct) {
  const char *t;
  size_t l;
  media_type(ct, &t, &l);
  return l > 5 && !strncasecmp(t, "text/", 5);
}

static int has_prefix_ci(const char *s, const char *p) {
  return !strncasecmp(s, p, strlen(p));
}

int lu__ce_binary_mode(const lu_hdr_t *h, size_t n) {
  int ce = 0;
  for (size_t i = 0; i < n; i++) {
    if (!h[i].name || !h[i].value) continue;
    if (!strcasecmp(h[i].name, "content-type")) {
      const char *v = h[i].value;
      while (*v == ' ' || *v == '\t') v++;
      if (has_prefix_ci(v, "application/cloudevents")) return 0;
    } else if (!strcasecmp(h[i].name, "ce-specversion")) {
      ce = 1;
    }
  }
  return ce;
}

/* ---- decoding --------------------------------------------------------- */

/* Copies the JSON value text s[0..n) to o without the whitespace between
 * tokens (a pretty-printed payload stays one line: stored events are
 * JSON Lines).  s is valid JSON, so strings are tracked exactly. */
static void put_compact(lu_buf_t *o, const char *s, size_t n) {
  int in_str = 0;
  size_t run = 0; /* start of the bytes not yet copied */
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (in_str) {
      if (c == '\\') i++;
      else if (c == '"') in_str = 0;
    } else if (c == '"') {
      in_str = 1;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      lu__buf_put(o, s + run, i - run);
      run = i + 1;
    }
  }
  lu__buf_put(o, s + run, n - run);
}

/* Is p[0..n) one JSON value (cJSON's view; lu_event_parse checks the
 * rest of what lucent wants of it once it is part of the event)? */
/* Is the payload one JSON value (UTF-8, RFC 8259 section 8.1)?  1 or 0
 * (*at: where it stops being JSON); LU_ENOMEM when cJSON ran out of
 * memory on text that is JSON (it returns NULL for both). */
static int json_payload(const char *p, size_t n, size_t *at) {
  const char *end = NULL;
  if (!lu__utf8_valid(p, n, at)) return 0;
  /* cJSON skips a byte order mark, which would then be copied into the
   * event's text: JSON text has none (RFC 8259 8.1; as lu_event_parse). */
  if (n >= 3 && !memcmp(p, "\xef\xbb\xbf", 3)) {
    *at = 0;
    return 0;
  }
  cJSON *v = cJSON_ParseWithLengthOpts(p, n, &end, 0);
  if (!v) {
    if (lu__json_parses(p, n)) return LU_ENOMEM;
    *at = end && end >= p ? (size_t)(end - p) : 0;
    return 0;
  }
  cJSON_Delete(v);
  size_t used = (size_t)(end - p);
  while (used < n && (p[used] == ' ' || p[used] == '\t' || p[used] == '\r' ||
                      p[used] == '\n'))
    used++;
  *at = used;
  return used == n;
}

#define MAX_ATTRS 128

int lu__ce_binary_decode(lu_buf_t *out, const lu_hdr_t *h, size_t n,
                         const char *payload, size_t plen, char *err,
                         size_t errlen) {
  if (err && errlen) err[0] = 0;
  /* Attribute names and decoded values, NUL-terminated, in vals. */
  lu_buf_t vals = {0};
  size_t off[MAX_ATTRS], noff = 0;
  char names[MAX_ATTRS][21];
  const char *hnames[MAX_ATTRS];
  const char *ctype = NULL; /* the Content-Type header */
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    const char *hn = h[i].name;
    if (!hn || !h[i].value) continue;
    if (!strcasecmp(hn, "content-type")) {
      if (ctype) {
        if (err) lu__fmt(err, errlen, "header content-type appears twice");
        rc = LU_EINVAL;
      }
      ctype = h[i].value;
      continue;
    }
    if (!has_prefix_ci(hn, "ce-")) continue; /* not ours to read */
    const char *an = hn + 3;
    size_t al = strlen(an);
    char lower[21];
    if (al >= 1 && al <= 20) {
      for (size_t k = 0; k < al; k++)
        lower[k] = (char)(an[k] >= 'A' && an[k] <= 'Z' ? an[k] + 32 : an[k]);
      lower[al] = 0;
    }
    if (al < 1 || al > 20 || !lu__ce_attr_name_ok(lower, al)) {
      if (err)
        lu__fmt(err, errlen,
                "header %.64s: '%.64s' is not a CloudEvents attribute name "
                "(1 to 20 letters a-z or digits 0-9)", hn, an);
      rc = LU_EINVAL;
      break;
    }
    if (!strcmp(lower, "data")) {
      if (err)
        lu__fmt(err, errlen,
                "header %.64s: in binary mode the data is the payload, not "
                "a header", hn);
      rc = LU_EINVAL;
      break;
    }
    for (size_t k = 0; k < noff; k++)
      if (!strcmp(names[k], lower)) {
        if (err)
          lu__fmt(err, errlen,
                  "attribute '%s' appears twice (headers %.64s and %.64s)",
                  lower, hnames[k], hn);
        rc = LU_EINVAL;
      }
    if (rc) break;
    if (noff == MAX_ATTRS) {
      if (err)
        lu__fmt(err, errlen, "more than %d ce- headers", MAX_ATTRS);
      rc = LU_EINVAL;
      break;
    }
    memcpy(names[noff], lower, al + 1);
    hnames[noff] = hn;
    off[noff] = vals.len;
    rc = decode_value(&vals, h[i].value, hn, err, errlen);
    if (!rc) noff++;
  }
  if (!rc && vals.oom) rc = LU_ENOMEM;
  /* Required attributes, the version, the content type. */
  const char *val[MAX_ATTRS];
  const char *spec = NULL, *id = NULL, *source = NULL, *type = NULL,
             *dct = NULL;
  for (size_t k = 0; !rc && k < noff; k++) {
    val[k] = vals.p + off[k];
    if (!strcmp(names[k], "specversion")) spec = val[k];
    else if (!strcmp(names[k], "id")) id = val[k];
    else if (!strcmp(names[k], "source")) source = val[k];
    else if (!strcmp(names[k], "type")) type = val[k];
    else if (!strcmp(names[k], "datacontenttype")) dct = val[k];
  }
  if (!rc && (!spec || strcmp(spec, "1.0"))) {
    if (err)
      lu__fmt(err, errlen,
              "unsupported specversion '%.32s' in header ce-specversion "
              "(want 1.0)", spec ? spec : "");
    rc = LU_EINVAL;
  }
  const char *req[][2] = {{"id", NULL}, {"source", NULL}, {"type", NULL}};
  req[0][1] = id, req[1][1] = source, req[2][1] = type;
  for (int k = 0; !rc && k < 3; k++)
    if (!req[k][1] || !*req[k][1]) {
      if (err)
        lu__fmt(err, errlen,
                "binary mode: %s required attribute '%s' (header ce-%s)",
                req[k][1] ? "empty" : "missing", req[k][0], req[k][0]);
      rc = LU_EINVAL;
    }
  if (!rc && dct && ctype) {
    const char *a, *b;
    size_t al, bl;
    media_type(dct, &a, &al);
    media_type(ctype, &b, &bl);
    if (al != bl || strncasecmp(a, b, al)) {
      if (err)
        lu__fmt(err, errlen,
                "ce-datacontenttype '%.64s' and content-type '%.64s' "
                "disagree", dct, ctype);
      rc = LU_EINVAL;
    }
  }
  if (!dct) dct = ctype;
  /* The data. */
  enum { D_NONE, D_JSON, D_TEXT, D_B64 } dk = D_NONE;
  if (!rc && plen) {
    size_t at = 0;
    int js = !dct || is_json_type(dct) ? json_payload(payload, plen, &at)
                                       : 0;
    if (js < 0) {
      if (err) lu__fmt(err, errlen, "out of memory");
      rc = LU_ENOMEM;
    } else if (!dct) {
      dk = js ? D_JSON : D_B64;
      if (dk == D_JSON) dct = "application/json"; /* json-format 3.1.2 */
    } else if (is_json_type(dct)) {
      if (!js) {
        if (err)
          lu__fmt(err, errlen,
                  "content type '%.64s' but the payload is not JSON (at byte "
                  "%zu of %zu)", dct, at, plen);
        rc = LU_EINVAL;
      }
      dk = D_JSON;
    } else if (is_text_type(dct) && lu__utf8_valid(payload, plen, NULL) &&
               !memchr(payload, 0, plen)) {
      dk = D_TEXT;
    } else {
      dk = D_B64;
    }
  }
  if (rc) {
    lu__buf_free(&vals);
    return rc;
  }
  /* The event: the required attributes first, the others in header
   * order, datacontenttype, then the data. */
  lu__buf_puts(out, "{\"specversion\":\"1.0\",\"id\":");
  lu__buf_json_str(out, id, strlen(id));
  lu__buf_puts(out, ",\"source\":");
  lu__buf_json_str(out, source, strlen(source));
  lu__buf_puts(out, ",\"type\":");
  lu__buf_json_str(out, type, strlen(type));
  for (size_t k = 0; k < noff; k++) {
    const char *nm = names[k];
    if (!strcmp(nm, "specversion") || !strcmp(nm, "id") ||
        !strcmp(nm, "source") || !strcmp(nm, "type") ||
        !strcmp(nm, "datacontenttype"))
      continue;
    lu__buf_puts(out, ",\"");
    lu__buf_puts(out, nm);
    lu__buf_puts(out, "\":");
    lu__buf_json_str(out, val[k], strlen(val[k]));
  }
  if (dct) {
    lu__buf_puts(out, ",\"datacontenttype\":");
    lu__buf_json_str(out, dct, strlen(dct));
  }
  switch (dk) {
    case D_JSON:
      lu__buf_puts(out, ",\"data\":");
      put_compact(out, payload, plen);
      break;
    case D_TEXT:
      lu__buf_puts(out, ",\"data\":");
      lu__buf_json_str(out, payload, plen);
      break;
    case D_B64:
      lu__buf_puts(out, ",\"data_base64\":\"");
      lu__buf_base64(out, payload, plen);
      lu__buf_puts(out, "\"");
      break;
    case D_NONE: break;
  }
  lu__buf_puts(out, "}");
  lu__buf_free(&vals);
  return out->oom ? LU_ENOMEM : 0;
}

void lu__ce_binary_raw(lu_buf_t *out, const lu_hdr_t *h, size_t n,
                       const char *payload, size_t plen) {
  lu__buf_puts(out, "NATS/1.0\r\n");
  for (size_t i = 0; i < n; i++) {
    if (!h[i].name || !h[i].value) continue;
    lu__buf_puts(out, h[i].name);
    lu__buf_puts(out, ": ");
    lu__buf_puts(out, h[i].value);
    lu__buf_puts(out, "\r\n");
  }
  lu__buf_puts(out, "\r\n");
  lu__buf_put(out, payload ? payload : "", payload ? plen : 0);
}

/* ---- encoding --------------------------------------------------------- */

int lu__ce_binary_encode(const cJSON *root,
                         int (*put)(void *ud, const char *name,
                                    const char *value),
                         void *ud, lu_buf_t *payload, char *err,
                         size_t errlen) {
  if (err && errlen) err[0] = 0;
  if (!cJSON_IsObject(root)) return LU_EINVAL;
  const cJSON *data = NULL, *b64 = NULL;
  const char *dct = NULL;
  lu_buf_t name = {0}, value = {0};
  /* Always first, also for an event that left it out (lucent reads those
   * as 1.0): it is what makes a message binary. */
  int rc = put(ud, "ce-specversion", "1.0");
  for (const cJSON *it = root->child; it && !rc; it = it->next) {
    const char *k = it->string;
    if (!strcmp(k, "specversion")) continue;
    if (!strcmp(k, "data")) {
      data = it;
      continue;
    }
    if (!strcmp(k, "data_base64")) {
      b64 = cJSON_IsString(it) ? it : NULL;
      continue;
    }
    if (cJSON_IsNull(it)) continue; /* null = absent */
    if (!strcmp(k, "datacontenttype") && cJSON_IsString(it)) {
      dct = it->valuestring;
      continue; /* written below, with content-type */
    }
    value.len = 0;
    if (cJSON_IsString(it)) {
      encode_value(&value, it->valuestring, strlen(it->valuestring));
    } else if (cJSON_IsBool(it)) {
      lu__buf_puts(&value, cJSON_IsTrue(it) ? "true" : "false");
    } else if (cJSON_IsNumber(it) && it->valuedouble >= -9e18 &&
               it->valuedouble <= 9e18 &&
               it->valuedouble == (double)(int64_t)it->valuedouble) {
      char nb[32];
      lu__fmt(nb, sizeof nb, "%" PRId64, (int64_t)it->valuedouble);
      lu__buf_puts(&value, nb);
    } else {
      if (err)
        lu__fmt(err, errlen,
                "attribute '%.64s' has no string form (binary mode carries "
                "strings, booleans and integers)", k);
      rc = LU_EINVAL;
      break;
    }
    name.len = 0;
    lu__buf_puts(&name, "ce-");
    lu__buf_puts(&name, k);
    if (name.oom || value.oom) rc = LU_ENOMEM;
    else rc = put(ud, name.p, value.p);
  }
  /* The data, by what json-format.md 3.1 says it is. */
  if (!rc && b64) {
    if (lu__base64_decode(payload, b64->valuestring,
                          strlen(b64->valuestring))) {
      if (err) lu__fmt(err, errlen, "data_base64 is not base64");
      rc = LU_EINVAL;
    }
  } else if (!rc && data) {
    if (!dct) dct = "application/json"; /* json-format 3.1.2 */
    if (cJSON_IsString(data) && !is_json_type(dct))
      lu__buf_puts(payload, data->valuestring);
    else
      lu__buf_json_value(payload, data);
  }
  if (!rc && dct) {
    value.len = 0;
    encode_value(&value, dct, strlen(dct));
    rc = value.oom ? LU_ENOMEM : put(ud, "ce-datacontenttype", value.p);
    /* The raw value for receivers that read content-type as HTTP does
     * (a media type is printable ASCII; anything else is left out). */
    int printable = 1;
    for (const char *c = dct; *c; c++)
      printable &= *c >= 0x20 && *c < 0x7f;
    if (!rc && printable) rc = put(ud, "content-type", dct);
  }
  if (!rc && payload->oom) rc = LU_ENOMEM;
  lu__buf_free(&name);
  lu__buf_free(&value);
  return rc;
}
