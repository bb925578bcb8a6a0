/*
 * lucent/error.h - error codes shared by every lucent call.
 *
 * Every fallible call returns an int: 0 on success or a negative LU_E* code.
 * Longer, human-readable context lives with the object that failed (see the
 * *_errmsg() calls), never in a global.  The codes come from one X-macro
 * list so that the enum and the name tables cannot drift apart.
 */
#ifndef LUCENT_ERROR_H
#define LUCENT_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define LU_EXTERN __attribute__((visibility("default")))
#else
#define LU_EXTERN
#endif

/* XX(name, value, message) */
#define LU_ERRNO_MAP(XX)                                          \
  XX(EINVAL, -22, "invalid argument")                             \
  XX(ENOMEM, -12, "out of memory")                                \
  XX(ENOENT, -2, "not found")                                     \
  XX(EEXIST, -17, "already exists")                               \
  XX(EBUSY, -16, "resource busy")                                 \
  XX(EIO, -5, "input/output error")                               \
  XX(E2BIG, -7, "too large")                                      \
  XX(ETIMEDOUT, -110, "timed out")                                \
  XX(ECANCELED, -125, "canceled")                                 \
  XX(EPROTO, -71, "protocol error")                               \
  XX(ESTATE, -1000, "operation not valid in this state")          \
  XX(ESTORE, -1001, "event store error")                          \
  XX(EPARSE, -1002, "malformed input")                            \
  XX(EPLUGIN, -1003, "plugin error")                              \
  XX(EMETA, -1004, "bad function metadata")

enum lu_errno_e {
#define LU__ERR_ENUM(name, value, msg) LU_##name = (value),
  LU_ERRNO_MAP(LU__ERR_ENUM)
#undef LU__ERR_ENUM
      LU__ERR_MAX_UNUSED = 0
};

/** Returns the symbolic name of an error code ("LU_EINVAL"), or
 *  "LU_UNKNOWN" for a code lucent does not define.  Static storage; thread
 *  safe. */
LU_EXTERN const char *lu_err_name(int err);

/** Returns a short English description of an error code.  Static storage;
 *  thread safe.  Never NULL. */
LU_EXTERN const char *lu_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif /* LUCENT_ERROR_H */
