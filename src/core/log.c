/*
 * log.c - structured logs (include/lucent/log.h): one record per line,
 * JSON or human text, written with one write(2).
 *
 * State is three atomics (threshold, format, fd) and nothing else, so any
 * thread may log at any time without a lock: a record is formatted into its
 * own buffer and handed to the kernel in one call, which is what keeps
 * concurrent records from interleaving.  The threshold is a plain int read
 * with __atomic builtins so that lu_log_enabled() can be inlined into
 * callers (the public header cannot rely on <stdatomic.h> being usable from
 * C++).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "obs_internal.h"

int lu__log_threshold = LU_LOG_INFO;
static int log_format = -1; /* -1: AUTO not resolved yet */
static int log_auto = 1;    /* the format asked for was AUTO */
static int log_fd = 2;

/* ---- settings --------------------------------------------------------- */

void lu_log_set_level(lu_log_level_t level) {
  __atomic_store_n(&lu__log_threshold, (int)level, __ATOMIC_RELAXED);
}

lu_log_level_t lu_log_level(void) {
  return (lu_log_level_t)__atomic_load_n(&lu__log_threshold,
                                         __ATOMIC_RELAXED);
}

static int resolve_auto(int fd) {
  return isatty(fd) ? LU_LOG_FORMAT_TEXT : LU_LOG_FORMAT_JSON;
}

void lu_log_set_format(lu_log_format_t f) {
  int fd = __atomic_load_n(&log_fd, __ATOMIC_RELAXED);
  int automatic = f != LU_LOG_FORMAT_JSON && f != LU_LOG_FORMAT_TEXT;
  __atomic_store_n(&log_auto, automatic, __ATOMIC_RELAXED);
  __atomic_store_n(&log_format, automatic ? resolve_auto(fd) : (int)f,
                   __ATOMIC_RELAXED);
}

lu_log_format_t lu_log_format(void) {
  int f = __atomic_load_n(&log_format, __ATOMIC_RELAXED);
  if (f < 0) {
    /* First use with AUTO: resolve once (racing threads agree). */
    f = resolve_auto(__atomic_load_n(&log_fd, __ATOMIC_RELAXED));
    __atomic_store_n(&log_format, f, __ATOMIC_RELAXED);
  }
  return (lu_log_format_t)f;
}

void lu_log_set_fd(int fd) {
  __atomic_store_n(&log_fd, fd, __ATOMIC_RELAXED);
  if (__atomic_load_n(&log_auto, __ATOMIC_RELAXED))
    __atomic_store_n(&log_format, resolve_auto(fd), __ATOMIC_RELAXED);
}

static const struct {
  const char *name;
  lu_log_level_t level;
} level_names[] = {
#define XX(n, v, json, text) {json, LU_LOG_##n},
    LU_LOG_LEVEL_MAP(XX)
#undef XX
    {"warning", LU_LOG_WARN},
    {"off", LU_LOG_OFF},
};

int lu_log_parse_level(const char *s, lu_log_level_t *out) {
  for (size_t i = 0; s && i < sizeof level_names / sizeof *level_names; i++)
    if (!strcmp(s, level_names[i].name)) {
      *out = level_names[i].level;
      return 0;
    }
  return LU_EINVAL;
}

int lu_log_parse_format(const char *s, lu_log_format_t *out) {
  if (!s) return LU_EINVAL;
  if (!strcmp(s, "auto")) *out = LU_LOG_FORMAT_AUTO;
  else if (!strcmp(s, "json")) *out = LU_LOG_FORMAT_JSON;
  else if (!strcmp(s, "text")) *out = LU_LOG_FORMAT_TEXT;
  else return LU_EINVAL;
  return 0;
}

const char *lu_log_level_name(lu_log_level_t level) {
  switch (level) {
#define XX(n, v, json, text) \
    case LU_LOG_##n: return json;
    LU_LOG_LEVEL_MAP(XX)
#undef XX
    case LU_LOG_OFF: return "off";
  }
  return "?";
}

static const char *level_text(lu_log_level_t level) {
  switch (level) {
#define XX(n, v, json, text) \
    case LU_LOG_##n: return text;
    LU_LOG_LEVEL_MAP(XX)
#undef XX
    default: return "?";
  }
}

/* ---- formatting ------------------------------------------------------- */

/* Text format: a value is written bare when it is non-empty and has no
 * byte that would make the line ambiguous (space, '=', quote, backslash,
 * control); otherwise quoted, with \" \\ \n \r \t and \xHH escapes. */
static void text_value(lu_buf_t *b, const char *s) {
  int bare = *s != 0;
  for (const unsigned char *p = (const unsigned char *)s; *p && bare; p++)
    if (*p <= ' ' || *p == '=' || *p == '"' || *p == '\\' || *p == 0x7f)
      bare = 0;
  if (bare) {
    lu__buf_puts(b, s);
    return;
  }
  lu__buf_put(b, "\"", 1);
  lu__obs_text_escape(b, s, strlen(s), 1);
  lu__buf_put(b, "\"", 1);
}

/* Escapes control bytes (and, if quoted, '"' and '\\') so text stays on
 * one line.  Other bytes, UTF-8 included, pass through. */
void lu__obs_text_escape(lu_buf_t *b, const char *s, size_t n, int quoted) {
  static const char hex[] = "0123456789abcdef";
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *esc = NULL;
    char x[4];
    if (c == '\n') esc = "\\n";
    else if (c == '\r') esc = "\\r";
    else if (c == '\t') esc = "\\t";
    else if (quoted && c == '"') esc = "\\\"";
    else if (quoted && c == '\\') esc = "\\\\";
    else if (c < 0x20 || c == 0x7f) {
      x[0] = '\\', x[1] = 'x', x[2] = hex[c >> 4], x[3] = hex[c & 15];
      lu__buf_put(b, s + i - run, run);
      lu__buf_put(b, x, 4);
      run = 0;
      continue;
    }
    if (esc) {
      lu__buf_put(b, s + i - run, run);
      lu__buf_puts(b, esc);
      run = 0;
    } else {
      run++;
    }
  }
  lu__buf_put(b, s + n - run, run);
}

static void put_num(lu_buf_t *b, const lu_kv_t *kv, int json) {
  char num[40];
  switch (kv->type) {
    case LU_KV_T_INT: lu__fmt(num, sizeof num, "%lld", kv->v.i); break;
    case LU_KV_T_UINT: lu__fmt(num, sizeof num, "%llu", kv->v.u); break;
    case LU_KV_T_BOOL: lu__fmt(num, sizeof num, "%s", kv->v.i ? "true" : "false"); break;
    case LU_KV_T_DBL:
      if (isfinite(kv->v.d)) lu__fmt(num, sizeof num, "%.15g", kv->v.d);
      else lu__fmt(num, sizeof num, "%s", json ? "null"
                                        : isnan(kv->v.d) ? "NaN"
                                        : kv->v.d > 0 ? "+Inf" : "-Inf");
      break;
    default: lu__fmt(num, sizeof num, "?"); break;
  }
  lu__buf_puts(b, num);
}

static void json_kv_str(lu_buf_t *b, const char *key, const char *v) {
  lu__buf_put(b, ",", 1);
  lu__buf_json_str(b, key, strlen(key));
  lu__buf_put(b, ":", 1);
  if (v) lu__buf_json_str(b, v, strlen(v));
  else lu__buf_puts(b, "null");
}

static void text_kv_str(lu_buf_t *b, const char *key, const char *v) {
  lu__buf_put(b, " ", 1);
  lu__obs_text_escape(b, key, strlen(key), 0);
  lu__buf_put(b, "=", 1);
  text_value(b, v ? v : "-");
}

void lu__log_format(lu_buf_t *b, int json, int64_t wall_ms,
                    lu_log_level_t level, const char *shard,
                    const char *corr, const lu_kv_t *kv, const char *msg) {
  if (!msg) msg = "";
  if (json) {
    char t[32];
    lu__rfc3339(wall_ms, t);
    lu__buf_puts(b, "{\"time\":\"");
    lu__buf_puts(b, t);
    lu__buf_puts(b, "\",\"level\":\"");
    lu__buf_puts(b, lu_log_level_name(level));
    lu__buf_puts(b, "\",\"msg\":");
    lu__buf_json_str(b, msg, strlen(msg));
    if (shard) json_kv_str(b, "shard", shard);
    if (corr) json_kv_str(b, "correlationid", corr);
    for (; kv && kv->key; kv++) {
      if (kv->type == LU_KV_T_STR) {
        json_kv_str(b, kv->key, kv->v.s);
        continue;
      }
      lu__buf_put(b, ",", 1);
      lu__buf_json_str(b, kv->key, strlen(kv->key));
      lu__buf_put(b, ":", 1);
      put_num(b, kv, 1);
    }
    lu__buf_puts(b, "}\n");
    return;
  }
  time_t s = (time_t)(wall_ms / 1000);
  struct tm tm;
  localtime_r(&s, &tm);
  char t[48];
  lu__fmt(t, sizeof t, "%02d:%02d:%02d.%03d %-5s ", tm.tm_hour, tm.tm_min,
          tm.tm_sec, (int)(wall_ms % 1000), level_text(level));
  lu__buf_puts(b, t);
  lu__obs_text_escape(b, msg, strlen(msg), 0);
  if (shard) text_kv_str(b, "shard", shard);
  if (corr) text_kv_str(b, "correlationid", corr);
  for (; kv && kv->key; kv++) {
    if (kv->type == LU_KV_T_STR) {
      text_kv_str(b, kv->key, kv->v.s);
      continue;
    }
    lu__buf_put(b, " ", 1);
    lu__obs_text_escape(b, kv->key, strlen(kv->key), 0);
    lu__buf_put(b, "=", 1);
    put_num(b, kv, 0);
  }
  lu__buf_puts(b, "\n");
}

/* ---- writing ---------------------------------------------------------- */

void lu_log_vwrite(lu_log_level_t level, const char *shard, const char *corr,
                   const lu_kv_t *fields, const char *fmt, va_list ap) {
  char small[512];
  char *msg = small;
  va_list ap2;
  va_copy(ap2, ap);
  int n = fmt ? vsnprintf(small, sizeof small, fmt, ap) : -1;
  if (n < 0) {
    small[0] = 0;
  } else if ((size_t)n >= sizeof small) {
    char *big = malloc((size_t)n + 1);
    if (big) {
      vsnprintf(big, (size_t)n + 1, fmt, ap2);
      msg = big;
    }
  }
  va_end(ap2);
  lu_buf_t b = {0};
  lu__log_format(&b, lu_log_format() == LU_LOG_FORMAT_JSON, lu__wall_ms(),
                 level, shard, corr, fields, msg);
  if (msg != small) free(msg);
  if (!b.oom) {
    int fd = __atomic_load_n(&log_fd, __ATOMIC_RELAXED);
    const char *p = b.p;
    size_t left = b.len;
    while (left) {
      ssize_t w = write(fd, p, left);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      p += w;
      left -= (size_t)w;
    }
  }
  lu__buf_free(&b);
}

void lu_log_write(lu_log_level_t level, const char *shard, const char *corr,
                  const lu_kv_t *fields, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lu_log_vwrite(level, shard, corr, fields, fmt, ap);
  va_end(ap);
}
