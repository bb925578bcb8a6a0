/*
 * fuzz_event.c - the event envelope parser (lu_event_parse) on any bytes.
 *
 * Checks, besides the sanitizers: an input never fails with LU_ENOMEM
 * (no allocation fails here); an event that parses re-serialises to text
 * that parses again with the same id and type; and src/util/jsoncheck.c
 * agrees with cJSON on every input (it decides whether a failed parse was
 * malformed text or memory, so a disagreement would reject a valid event
 * or give a malformed one back for ever).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lucent/event.h"
#include "lucent/log.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  lu_event_t *ev = NULL;
  char err[256];
  int rc = lu_event_parse(&ev, s, size, err, sizeof err);
  if (rc == LU_ENOMEM) abort();
  if (rc == 0) {
    size_t len = 0;
    const char *json = lu_event_json(ev, &len);
    if (!json || !lu_event_id(ev) || !lu_event_type(ev)) abort();
    (void)lu_event_attr(ev, "subject");
    (void)lu_event_attr(ev, "correlationid");
    lu_event_t *again = NULL;
    if (lu_event_parse(&again, json, len, err, sizeof err) != 0) {
      fprintf(stderr, "re-parse failed: %s\n", err);
      abort();
    }
    if (strcmp(lu_event_id(ev), lu_event_id(again)) ||
        strcmp(lu_event_type(ev), lu_event_type(again)))
      abort();
    lu_event_free(again);
    /* Changing an attribute keeps it an event. */
    if (lu_event_set(ev, "tenantid", "t-1") == 0) {
      json = lu_event_json(ev, &len);
      if (!json || lu_event_parse(&again, json, len, err, sizeof err) != 0) {
        fprintf(stderr, "after set: %s\n", err);
        abort();
      }
      lu_event_free(again);
    }
  }
  lu_event_free(ev);
  const char *end = NULL;
  cJSON *j = size ? cJSON_ParseWithLengthOpts(s, size, &end, 0) : NULL;
  int says = lu__json_parses(s, size);
  if ((j != NULL) != says) {
    fprintf(stderr, "jsoncheck says %d, cJSON %s\n", says,
            j ? "parsed" : "failed");
    abort();
  }
  cJSON_Delete(j);
  return 0;
}
