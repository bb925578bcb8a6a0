/*
 * lucent/fn.h - writing a pure function for lucent.
 *
 * A function is a pure C function plus metadata.  It is registered at
 * compile/link time with LU_FUNCTION(), which places a pointer to a const
 * descriptor in the ELF section "lucent_fns"; the registry walks the section
 * (executables) or asks a plugin for it (shared objects built with
 * LU_PLUGIN()).  No hand-kept list exists anywhere.
 *
 *   #include <lucent/fn.h>
 *
 *   LU_FUNCTION(ReserveInventory,
 *               .events = "OrderPlaced",
 *               LU_HASH_BASED("sku"),
 *               .cpu_millis = 50, .memory_mb = 16, .priority = 7,
 *               .timeout_ms = 200, .max_retries = 3, .retry_backoff_ms = 5)
 *   {
 *     const cJSON *qty = cJSON_GetObjectItemCaseSensitive(data, "qty");
 *     if (!cJSON_IsNumber(qty))
 *       return lu_out_fail(out, LU_FAIL, "qty must be a number");
 *     cJSON *r = cJSON_CreateObject();
 *     cJSON_AddNumberToObject(r, "reserved", qty->valuedouble);
 *     lu_out_result(out, r);
 *     return LU_OK;
 *   }
 *
 *   LU_PLUGIN()   // once per shared object, in any one source file
 *
 * The contract (docs/architecture.md, decision 2): a function reads its
 * context and its
 * data, writes only through `out`, and does no I/O.  Because it is pure,
 * lucent may retry or replay it at will.  `data` is a cJSON tree owned by
 * lucent and valid only until the function returns; numbers are doubles, so
 * integers beyond 2^53 lose precision: pass ids as strings.
 */
#ifndef LUCENT_FN_H
#define LUCENT_FN_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Bumped whenever lu_fn_t or the function ABI changes incompatibly; a
 *  plugin built against another version is refused at load.  2: the word
 *  a plugin reports also carries its cJSON major version (LU_PLUGIN_ABI). */
#define LU_ABI_VERSION 2u

/** What LU_PLUGIN() reports to the loader: LU_ABI_VERSION in the low 16
 *  bits, and above them the major version of the cJSON headers the plugin
 *  was compiled with.  A function reads cJSON trees that lucent's cJSON
 *  made and hands back trees that lucent's cJSON frees, so a plugin built
 *  against another cJSON major version (another struct cJSON) is refused
 *  at load, like one built for another plugin ABI. */
#define LU_PLUGIN_ABI \
  (LU_ABI_VERSION | ((unsigned)(CJSON_VERSION_MAJOR) << 16))

/** What a function reports. */
typedef enum lu_status_e {
  LU_OK = 0,    /**< success: the result (if any) becomes <Name>Completed */
  LU_RETRY = 1, /**< transient error: retried with backoff up to max_retries */
  LU_FAIL = 2   /**< permanent error: <Name>Failed at once, no retry */
} lu_status_t;

/** Read-only execution context (event attributes, business context, shard,
 *  attempt, clock, ids).  Owned by lucent; valid during the call only. */
typedef struct lu_ctx_s lu_ctx_t;

/** Where a function writes its result, its errors and its additional
 *  events.  Owned by lucent; valid during the call only. */
typedef struct lu_out_s lu_out_t;

typedef lu_status_t (*lu_fn_impl_t)(const lu_ctx_t *ctx, const cJSON *data,
                                    lu_out_t *out);

/** A function descriptor.  Zero fields take the documented default, so a
 *  designated initializer only names what it changes. */
typedef struct lu_fn_s {
  const char *name;     /**< set by LU_FUNCTION from the C identifier */
  lu_fn_impl_t impl;    /**< set by LU_FUNCTION */
  const char *events;   /**< event types handled, separated by spaces or
                             commas; required */
  const char *strategy; /**< "round_robin" (default when NULL),
                             "hash_based", "load_balanced",
                             "sticky_session" */
  const char *key;      /**< dotted field path in the event data
                             ("customer.id", "items.0.sku"); required by
                             hash_based and sticky_session */
  uint32_t session_ttl_ms; /**< sticky_session binding lifetime since its
                                last use; 0 = 5 minutes */
  double load_bound;    /**< hash_based only: 0 = off, else a factor c > 1:
                             a key skips to its next shard in rendezvous
                             order while its shard's load exceeds c x the
                             average load (capacity ceil(c x (total + 1)
                             / n): 1 at low load, so one event in flight
                             moves the key's next event) */
  uint32_t cpu_millis;  /**< cpu needed, millicores (0..shard capacity) */
  uint32_t memory_mb;   /**< memory needed, MB */
  int32_t priority;     /**< 1 (lowest) .. 10 (highest); 0 = default 5 */
  uint32_t timeout_ms;  /**< an execution that uses more CPU time than
                             this counts as failed (retryable), its
                             output discarded; CPU time, not wall time,
                             so outcomes do not depend on machine load.
                             One still running after lu_config_t's
                             hang_factor x this (wall clock, at least
                             1 s) is abandoned and its event
                             dead-lettered.  0 = 1000 ms */
  uint32_t max_retries; /**< retries after the first attempt; 0 = none */
  uint32_t retry_backoff_ms; /**< first retry delay, doubled per attempt,
                                  with +-50% jitter; 0 = 10 ms */
  const char *doc;      /**< one line shown by `lucent functions` */
} lu_fn_t;

/* Strategy helpers for LU_FUNCTION's metadata list. */
#define LU_ROUND_ROBIN .strategy = "round_robin"
#define LU_HASH_BASED(path) .strategy = "hash_based", .key = (path)
#define LU_LOAD_BALANCED .strategy = "load_balanced"
#define LU_STICKY_SESSION(path, ttl_ms) \
  .strategy = "sticky_session", .key = (path), .session_ttl_ms = (ttl_ms)

#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 11)
#define LU__RETAIN retain,
#else
#define LU__RETAIN
#endif

/** Defines and registers a function.  The body follows the macro and sees
 *  the parameters `ctx`, `data` and `out`.  The slot holds a pointer (not
 *  the struct) so every entry has the same size and alignment whatever the
 *  compiler chooses; `used, retain` keep it through --gc-sections and LTO. */
#define LU_FUNCTION(ident, ...)                                            \
  static lu_status_t ident(const lu_ctx_t *, const cJSON *, lu_out_t *);   \
  static const lu_fn_t ident##_lu_desc = {.name = #ident,                  \
                                          .impl = ident, __VA_ARGS__};     \
  __attribute__((used, LU__RETAIN section("lucent_fns"),                   \
                 aligned(sizeof(void *)))) static const lu_fn_t            \
      *const ident##_lu_slot = &ident##_lu_desc;                           \
  static lu_status_t ident(const lu_ctx_t *ctx __attribute__((unused)),    \
                           const cJSON *data __attribute__((unused)),      \
                           lu_out_t *out __attribute__((unused)))

/* The linker makes these for the section of the module being linked (one
 * pair per executable or shared object).  Weak: a module without functions
 * has none.  Hidden: a plugin's pair must not preempt the executable's. */
extern const lu_fn_t *const __start_lucent_fns[]
    __attribute__((weak, visibility("hidden")));
extern const lu_fn_t *const __stop_lucent_fns[]
    __attribute__((weak, visibility("hidden")));

/** The functions registered in the calling module (executable or shared
 *  object): *out points to an array of descriptor pointers, in link order.
 *  static inline on purpose: it must be compiled into the module whose
 *  section it reads. */
static inline size_t lu_fns_here(const lu_fn_t *const **out) {
  *out = __start_lucent_fns;
  if (!__start_lucent_fns || !__stop_lucent_fns) return 0;
  return (size_t)(__stop_lucent_fns - __start_lucent_fns);
}

/** Name of the one symbol a plugin exports. */
#define LU_PLUGIN_SYMBOL "lu_plugin_functions"

/** Exposes this shared object's functions to lu_registry_load_plugin().
 *  Write it once per plugin. */
#define LU_PLUGIN()                                                        \
  __attribute__((visibility("default"))) size_t lu_plugin_functions(       \
      const lu_fn_t *const **out, unsigned *abi);                          \
  __attribute__((visibility("default"))) size_t lu_plugin_functions(       \
      const lu_fn_t *const **out, unsigned *abi) {                         \
    *abi = LU_PLUGIN_ABI;                                                  \
    return lu_fns_here(out);                                               \
  }

/* ---- the context: all getters are thread safe and return borrowed
 * strings valid until the function returns. ------------------------------ */

/** Input event attributes; NULL when absent. */
LU_EXTERN const char *lu_ctx_id(const lu_ctx_t *ctx);
LU_EXTERN const char *lu_ctx_type(const lu_ctx_t *ctx);
LU_EXTERN const char *lu_ctx_subject(const lu_ctx_t *ctx);
/** The correlation id: the input's `correlationid`, or its `id` when it
 *  has none.  Never NULL. */
LU_EXTERN const char *lu_ctx_correlation_id(const lu_ctx_t *ctx);
/** Any top-level attribute of the input event by name ("tenantid",
 *  "userid", "source", ...), if it is a string; NULL otherwise. */
LU_EXTERN const char *lu_ctx_attr(const lu_ctx_t *ctx, const char *name);
/** The shard executing this call. */
LU_EXTERN const char *lu_ctx_shard(const lu_ctx_t *ctx);
/** 1 for the first attempt, 2 for the first retry, ... */
LU_EXTERN unsigned lu_ctx_attempt(const lu_ctx_t *ctx);
/** The clock lucent supplies: wall time in ms since the epoch, fixed at the
 *  start of this attempt (a function never reads the system clock). */
LU_EXTERN int64_t lu_ctx_now_ms(const lu_ctx_t *ctx);
/** The id source lucent supplies: writes the n-th id of this execution as
 *  36 characters + NUL into buf (at least 37 bytes).  Deterministic: the
 *  same (input, function, n) always gives the same id, so replays agree. */
LU_EXTERN void lu_ctx_new_id(const lu_ctx_t *ctx, unsigned n, char buf[37]);

/* ---- the output: not thread safe (one call, one thread). --------------- */

/** Sets the result value, which becomes the `data` of <Name>Completed.
 *  Takes ownership of `value` (even on error); a second call replaces the
 *  first.  Returns 0, or LU_EINVAL if value is NULL: what a cJSON
 *  constructor returns when memory is short, so the attempt then counts as
 *  a retryable failure ("out of memory"), whatever the function returns. */
LU_EXTERN int lu_out_result(lu_out_t *out, cJSON *value);

/** Emits an additional event of `type` with `subject` (may be NULL: the
 *  input's subject) and `data` (takes ownership, even on error; NULL =
 *  JSON null).  It is stored and re-enters the pipeline once this execution
 *  succeeds.  Returns 0, LU_EINVAL (empty type), LU_E2BIG (more than 64
 *  events) or LU_ENOMEM (the event is lost, so the attempt counts as a
 *  retryable failure, whatever the function returns). */
LU_EXTERN int lu_out_emit(lu_out_t *out, const char *type,
                          const char *subject, cJSON *data);

/** Records why the call failed (printf format, truncated to 256 bytes) and
 *  returns `status`, so a function can write
 *  `return lu_out_fail(out, LU_RETRY, "stock service busy");`. */
LU_EXTERN lu_status_t lu_out_fail(lu_out_t *out, lu_status_t status,
                                  const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif /* LUCENT_FN_H */
