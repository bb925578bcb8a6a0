/*
 * lucent/event.h - the event envelope: CloudEvents 1.0, structured mode.
 *
 * An event is one JSON object with the CloudEvents attributes `specversion`,
 * `id`, `type`, `source`, optional `subject` (the stream id) and `time`,
 * lucent's extensions `correlationid` and `causationid`, business context
 * extensions (`tenantid`, `userid`, any other top-level string) and `data`.
 *
 * A parsed event keeps the exact bytes it was parsed from: lucent forwards
 * and stores those bytes, it never re-serializes an event it did not change.
 *
 * Thread safety: an lu_event_t is not synchronized; a const event may be
 * read from several threads at once.
 */
#ifndef LUCENT_EVENT_H
#define LUCENT_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lu_event_s lu_event_t;

/** Parses one structured-mode CloudEvent from json[0..len).  The bytes are
 *  copied; json need not be NUL-terminated.  Validation: UTF-8 text, an
 *  object, with non-empty string `id`, `type` and `source`; `data`
 *  optional; attribute names [a-z0-9]{1,20}, each once; attribute values
 *  strings, booleans, 32-bit integers or null (docs/protocol.md, "What
 *  lucent accepts").  On success
 *  stores a new event in *out (caller frees with lu_event_free) and returns
 *  0.  On failure returns LU_EPARSE (bad JSON, with "line L column C: ..."
 *  in err) or LU_EINVAL (valid JSON but not a valid event: err names the
 *  attribute), LU_ENOMEM; *out is NULL.  err may be NULL. */
LU_EXTERN int lu_event_parse(lu_event_t **out, const char *json, size_t len,
                             char *err, size_t errlen);

/** Builds a new event.  type and source are required; subject may be NULL.
 *  Takes ownership of `data` (even on error; NULL = no data).  The id is a
 *  random UUID v4 and time is now, unless set later with lu_event_set().
 *  Returns 0, LU_EINVAL or LU_ENOMEM. */
LU_EXTERN int lu_event_new(lu_event_t **out, const char *type,
                           const char *source, const char *subject,
                           cJSON *data);

/** Sets a top-level string attribute (for example "correlationid",
 *  "tenantid", "id").  value is copied.  Invalidates strings previously
 *  returned by lu_event_json() for this event.  Returns 0, LU_EINVAL
 *  ("specversion", "data", a name that is not [a-z0-9]{1,20}, a value
 *  that is not UTF-8, an empty subject) or LU_ENOMEM. */
LU_EXTERN int lu_event_set(lu_event_t *ev, const char *name,
                           const char *value);

/** A top-level string attribute by name, or NULL.  Borrowed: valid until
 *  the event is changed or freed. */
LU_EXTERN const char *lu_event_attr(const lu_event_t *ev, const char *name);
LU_EXTERN const char *lu_event_id(const lu_event_t *ev);
LU_EXTERN const char *lu_event_type(const lu_event_t *ev);
/** The event's data, or NULL.  Borrowed. */
LU_EXTERN const cJSON *lu_event_data(const lu_event_t *ev);

/** The event as compact JSON text, NUL-terminated: the bytes it was parsed
 *  from (text that spanned lines without the whitespace between tokens:
 *  always one line), or a fresh encoding after a change.  Borrowed: valid until the
 *  event is changed or freed.  Sets *len when len is not NULL.  NULL only
 *  on allocation failure. */
LU_EXTERN const char *lu_event_json(lu_event_t *ev, size_t *len);

/** Frees an event; NULL is a no-op. */
LU_EXTERN void lu_event_free(lu_event_t *ev);

#ifdef __cplusplus
}
#endif
#endif /* LUCENT_EVENT_H */
