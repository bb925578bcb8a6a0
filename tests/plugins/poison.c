/* Test plugin: functions that crash or hang on the inputs that ask them to,
 * for the fault tests (a poison input must end as a dead letter, not as a
 * crash loop).  Events:
 *   Poison {"n":N, "crash":"segv"|"abort", "hang":true, "child":"segv"}
 *     crashes (raise: the same death as a bad pointer, without undefined
 *     behaviour for the sanitizers to stop at), hangs in a sleep loop, or
 *     completes with {"n":N} and emits PoisonChild, which crashes when
 *     "child" asks it to: a poison one step down a chain. */
#include <lucent/fn.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void die(const cJSON *how) {
  if (!cJSON_IsString(how)) return;
  if (!strcmp(how->valuestring, "segv")) raise(SIGSEGV);
  if (!strcmp(how->valuestring, "abort")) abort();
}

LU_FUNCTION(Poison, .events = "Poison", .timeout_ms = 200) {
  die(cJSON_GetObjectItemCaseSensitive(data, "crash"));
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(data, "hang")))
    for (;;) {
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  const cJSON *n = cJSON_GetObjectItemCaseSensitive(data, "n");
  lu_out_result(out, cJSON_CreateNumber(cJSON_IsNumber(n) ? n->valuedouble : 0));
  const cJSON *child = cJSON_GetObjectItemCaseSensitive(data, "child");
  cJSON *cd = cJSON_CreateObject();
  if (cJSON_IsString(child))
    cJSON_AddStringToObject(cd, "crash", child->valuestring);
  lu_out_emit(out, "PoisonChild", NULL, cd);
  return LU_OK;
}

LU_FUNCTION(PoisonChild, .events = "PoisonChild") {
  die(cJSON_GetObjectItemCaseSensitive(data, "crash"));
  return LU_OK;
}

LU_PLUGIN()
