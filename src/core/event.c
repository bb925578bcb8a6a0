/*
 * event.c - the CloudEvents envelope: parse, validate, build, encode.
 *
 * A parsed event owns a NUL-terminated copy of the bytes it came from and
 * the cJSON tree parsed from that copy.  The attribute pointers lucent reads
 * on the hot path (id, type, subject, correlationid, ...) are cached once
 * by lu__event_index() so routing never walks the tree twice.  The raw bytes
 * stay authoritative until the event is changed: lu_event_json() returns
 * them unchanged (docs/architecture.md: never re-serialize on a hop).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "internal.h"

/* The CloudEvents core attributes and the ones lucent manages: not
 * business context.  Called for every attribute of every input when its
 * result is written, so it dispatches on the first byte instead of
 * comparing against all fifteen names. */
int lu__event_is_core_attr(const char *n) {
  switch (n[0]) {
    case 'c':
      return !strcmp(n, "correlationid") || !strcmp(n, "causationid") ||
             !strcmp(n, "causationdepth");
    case 'd':
      return !strcmp(n, "data") || !strcmp(n, "datacontenttype") ||
             !strcmp(n, "dataschema") || !strcmp(n, "data_base64");
    case 'f': return !strcmp(n, "function");
    case 'i': return !strcmp(n, "id");
    case 's':
      return !strcmp(n, "specversion") || !strcmp(n, "source") ||
             !strcmp(n, "subject") || !strcmp(n, "shardid");
    case 't': return !strcmp(n, "type") || !strcmp(n, "time");
    default: return 0;
  }
}

static const char *str_attr(const cJSON *root, const char *name) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, name);
  return cJSON_IsString(it) ? it->valuestring : NULL;
}

void lu__event_index(lu_event_t *ev) {
  const cJSON *r = ev->root;
  ev->id = ev->type = ev->source = ev->subject = ev->time = NULL;
  ev->correlationid = ev->causationid = NULL;
  ev->data = NULL;
  ev->depth = 0;
  /* One pass over the top level instead of one lookup per attribute. */
  for (const cJSON *it = r ? r->child : NULL; it; it = it->next) {
    const char *k = it->string;
    if (!k) continue;
    if (strcmp(k, "data") == 0) {
      ev->data = it;
      continue;
    }
    if (strcmp(k, "causationdepth") == 0) {
      if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < 1e6)
        ev->depth = (unsigned)it->valuedouble;
      continue;
    }
    if (!cJSON_IsString(it)) continue;
    const char *v = it->valuestring;
    switch (k[0]) {
      case 'i': if (strcmp(k, "id") == 0) ev->id = v; break;
      case 't':
        if (strcmp(k, "type") == 0) ev->type = v;
        else if (strcmp(k, "time") == 0) ev->time = v;
        break;
      case 's':
        if (strcmp(k, "source") == 0) ev->source = v;
        else if (strcmp(k, "subject") == 0) ev->subject = v;
        break;
      case 'c':
        if (strcmp(k, "correlationid") == 0) ev->correlationid = v;
        else if (strcmp(k, "causationid") == 0) ev->causationid = v;
        break;
      default: break;
    }
  }
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
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(raw, len, &end, 0);
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
  int rc = 0;
  if (!cJSON_IsObject(root)) {
    if (err) lu__fmt(err, errlen, "an event must be a JSON object");
    rc = LU_EINVAL;
  }
  if (!rc) rc = check_attr(root, "id", err, errlen);
  if (!rc) rc = check_attr(root, "type", err, errlen);
  if (!rc) rc = check_attr(root, "source", err, errlen);
  if (!rc) {
    const cJSON *sv = cJSON_GetObjectItemCaseSensitive(root, "specversion");
    if (sv && !(cJSON_IsString(sv) && strcmp(sv->valuestring, "1.0") == 0)) {
      if (err) lu__fmt(err, errlen, "unsupported specversion (want \"1.0\")");
      rc = LU_EINVAL;
    }
  }
  if (rc) {
    lu_event_free(ev);
    return rc;
  }
  lu__event_index(ev);
  *out = ev;
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
  if (!ev || !name || !*name || !value || strcmp(name, "data") == 0 ||
      strcmp(name, "specversion") == 0)
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
