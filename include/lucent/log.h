/*
 * lucent/log.h - structured logs: one record per line on stderr.
 *
 * A record has a time, a level, a message, optionally the shard and the
 * correlation id it concerns, and typed key/value fields.  Two formats:
 *
 *   json  {"time":"2026-11-27T12:00:00.123Z","level":"info",
 *          "msg":"http listening","addr":"127.0.0.1:9464"}
 *   text  12:00:00.123 INFO  http listening addr=127.0.0.1:9464
 *
 * LU_LOG_FORMAT_AUTO (the default) picks text when the output is a
 * terminal and JSON otherwise.  In JSON, "shard" and "correlationid"
 * follow "msg" when given, then the fields in order; the time is UTC (RFC
 * 3339, milliseconds).  The text format shows local time.  Text in either
 * format is escaped, so a record is always exactly one line (invalid UTF-8
 * bytes become U+FFFD in JSON).
 *
 * Use:
 *
 *   LU_LOG(LU_LOG_INFO, NULL, NULL,
 *          LU_KVS(LU_KV_STR("addr", addr), LU_KV_UINT("port", port)),
 *          "http listening");
 *   LU_LOG(LU_LOG_DEBUG, shard_id, corr_id, NULL, "retry %u", attempt);
 *
 * LU_LOG checks the level before evaluating anything else, so a disabled
 * call costs one relaxed atomic load and a compare: per-event records at
 * debug level are free while debug is off.  lu_log_enabled() gives the
 * same check for work done only to build a record.
 *
 * Thread safety: every call may be made from any thread.  A record is
 * written with one write(2) call, so records from concurrent threads never
 * interleave within a line (for lines up to PIPE_BUF on pipes, and on
 * regular files and terminals in practice).
 */
#ifndef LUCENT_LOG_H
#define LUCENT_LOG_H

#include <stdarg.h>
#include <stddef.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* XX(NAME, value, json name, text name) */
#define LU_LOG_LEVEL_MAP(XX)         \
  XX(DEBUG, 10, "debug", "DEBUG")    \
  XX(INFO, 20, "info", "INFO")       \
  XX(WARN, 30, "warn", "WARN")       \
  XX(ERROR, 40, "error", "ERROR")

typedef enum lu_log_level_e {
#define LU__LOG_ENUM(name, value, json, text) LU_LOG_##name = (value),
  LU_LOG_LEVEL_MAP(LU__LOG_ENUM)
#undef LU__LOG_ENUM
      LU_LOG_OFF = 100 /**< as a threshold: log nothing */
} lu_log_level_t;

typedef enum lu_log_format_e {
  LU_LOG_FORMAT_AUTO, /**< text on a terminal, JSON otherwise */
  LU_LOG_FORMAT_JSON,
  LU_LOG_FORMAT_TEXT
} lu_log_format_t;

/** The type of a field's value (see the LU_KV_* constructors). */
typedef enum lu_kv_type_e {
  LU_KV_T_STR,  /**< text; NULL is written as JSON null / "-" */
  LU_KV_T_INT,  /**< long long */
  LU_KV_T_UINT, /**< unsigned long long */
  LU_KV_T_DBL,  /**< double; NaN and infinities are JSON null */
  LU_KV_T_BOOL
} lu_kv_type_t;

/** One key/value field.  A list of them ends with a NULL key.  The key
 *  should be a plain identifier and none of time, level, msg, shard,
 *  correlationid (the record's own keys): it is written as given. */
typedef struct lu_kv_s {
  const char *key;
  lu_kv_type_t type;
  union {
    const char *s;
    long long i;
    unsigned long long u;
    double d;
  } v;
} lu_kv_t;

/* Field constructors, for use inside LU_KVS(...). */
#define LU_KV_STR(k, val) { (k), LU_KV_T_STR, { .s = (val) } }
#define LU_KV_INT(k, val) { (k), LU_KV_T_INT, { .i = (long long)(val) } }
#define LU_KV_UINT(k, val) \
  { (k), LU_KV_T_UINT, { .u = (unsigned long long)(val) } }
#define LU_KV_DBL(k, val) { (k), LU_KV_T_DBL, { .d = (double)(val) } }
#define LU_KV_BOOL(k, val) { (k), LU_KV_T_BOOL, { .i = !!(val) } }
/** A NULL-key-terminated field list (a compound literal that lives until
 *  the end of the enclosing block). */
#define LU_KVS(...) ((const lu_kv_t[]){__VA_ARGS__, {NULL}})

/** Not for direct use: the threshold lu_log_enabled() compares with. */
LU_EXTERN extern int lu__log_threshold;

/** Would a record of this level be written?  One relaxed atomic load. */
static inline int lu_log_enabled(lu_log_level_t level) {
  return (int)level >= __atomic_load_n(&lu__log_threshold, __ATOMIC_RELAXED);
}

/** Logs a record if its level is enabled; arguments are not evaluated
 *  otherwise.  shard, corr (may be NULL) and fields (NULL, or LU_KVS(...))
 *  are borrowed for the call; the rest is a printf format and its
 *  arguments for the message. */
#define LU_LOG(level, shard, corr, fields, ...)                      \
  do {                                                               \
    if (lu_log_enabled(level))                                       \
      lu_log_write((level), (shard), (corr), (fields), __VA_ARGS__); \
  } while (0)

/** Writes one record (no level check: see LU_LOG).  Never fails visibly:
 *  a record that cannot be built or written is dropped. */
LU_EXTERN void lu_log_write(lu_log_level_t level, const char *shard,
                            const char *corr, const lu_kv_t *fields,
                            const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
LU_EXTERN void lu_log_vwrite(lu_log_level_t level, const char *shard,
                             const char *corr, const lu_kv_t *fields,
                             const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

/** Sets the threshold: records below it are not written (default
 *  LU_LOG_INFO; LU_LOG_OFF silences everything). */
LU_EXTERN void lu_log_set_level(lu_log_level_t level);
LU_EXTERN lu_log_level_t lu_log_level(void);

/** Sets the format.  AUTO is resolved now, against the current output
 *  (isatty), and again by lu_log_set_fd().  Default AUTO. */
LU_EXTERN void lu_log_set_format(lu_log_format_t format);
/** The format in force: LU_LOG_FORMAT_JSON or LU_LOG_FORMAT_TEXT. */
LU_EXTERN lu_log_format_t lu_log_format(void);

/** Writes records to fd instead of 2 (stderr).  The fd is borrowed. */
LU_EXTERN void lu_log_set_fd(int fd);

/** Parses "debug", "info", "warn" (or "warning"), "error", "off".
 *  Returns 0 or LU_EINVAL. */
LU_EXTERN int lu_log_parse_level(const char *s, lu_log_level_t *out);
/** Parses "auto", "json", "text".  Returns 0 or LU_EINVAL. */
LU_EXTERN int lu_log_parse_format(const char *s, lu_log_format_t *out);
/** "debug", "info", "warn", "error", "off"; "?" for other values. */
LU_EXTERN const char *lu_log_level_name(lu_log_level_t level);

#ifdef __cplusplus
}
#endif
#endif /* LUCENT_LOG_H */
