// embed.c - run lucent inside your own program.
//
// One function, Greet, is defined right here with LU_FUNCTION; the
// registry finds it through lu_fns_here() (no plugin, no list).  A manager
// with two shards and an in-memory store runs three events through it and
// reports each outcome as it is recorded.
//
// RUN: (in lucent's tree; examples/cmake/ and the README build it from an
//      installed lucent)
//   cmake --build build --target embed
//   build/examples/embed
//
// OUTPUT: (any order: outcomes come as they are stored, from two shards)
//   completed      Greet  shard-...  {"greeting":"Hello, Ada!"}
//   dead_lettered  -      intake   no function handles event type 'Goodbye'
//   failed         Greet  shard-...  name must be a non-empty string
//   3 events in: 1 completed, 1 failed, 0 rejected, 1 dead_lettered
#include <stdio.h>
#include <string.h>

#include <lucent/lucent.h>

// The function: pure, it only reads its data and writes its result.
LU_FUNCTION(Greet,
            .events = "Hello",
            LU_ROUND_ROBIN,
            .cpu_millis = 10, .memory_mb = 4,
            .doc = "greets whoever says hello")
{
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(data, "name");
  if (!cJSON_IsString(name) || name->valuestring[0] == '\0')
    return lu_out_fail(out, LU_FAIL, "name must be a non-empty string");

  char greeting[128];
  snprintf(greeting, sizeof greeting, "Hello, %s!", name->valuestring);
  cJSON *result = cJSON_CreateObject();
  cJSON_AddStringToObject(result, "greeting", greeting);
  if (lu_out_result(out, result) != 0)
    return lu_out_fail(out, LU_RETRY, "out of memory");
  return LU_OK;
}

// Called from the store thread, one outcome at a time, once the event that
// records it (o->stored_json: GreetCompleted, GreetFailed, ...) is stored.
// It prints and returns: it must not call back into the manager, nor
// block (lucent.h, on_outcome).
static void print_outcome(void *userdata, const lu_outcome_t *o) {
  (void)userdata;
  printf("%-14s %-6s %-8s %s\n", lu_outcome_name(o->kind),
         o->function ? o->function : "-", o->shard ? o->shard : "-",
         o->kind == LU_OUTCOME_COMPLETED ? o->result_json : o->reason);
}

int main(void) {
  int rc;
  lu_registry_t *reg = NULL;
  lu_manager_t *m = NULL;
  char err[256] = "";

  // 1. The registry: every LU_FUNCTION linked into this executable.
  // lu_fns_here() sets fns: call it first (C does not order the
  // evaluation of a call's arguments, so passing both to one call may read
  // fns before it is set).
  const lu_fn_t *const *fns;
  size_t nfns = lu_fns_here(&fns);
  if ((rc = lu_registry_new(&reg)) != 0 ||
      (rc = lu_registry_add(reg, fns, nfns, "embed")) != 0) {
    fprintf(stderr, "embed: registry: %s: %s\n", lu_strerror(rc),
            reg ? lu_registry_errmsg(reg) : "");
    lu_registry_free(reg);
    return 1;
  }

  // 2. The manager: two shard threads, an in-memory SQLite store.
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shards = 2;
  cfg.store = ":memory:";
  cfg.on_outcome = print_outcome;
  if ((rc = lu_manager_new(&m, &cfg, reg, err, sizeof err)) != 0) {
    fprintf(stderr, "embed: manager: %s: %s\n", lu_strerror(rc), err);
    lu_registry_free(reg);
    return 1;
  }

  // 3. Three events: two as JSON text (as read from a file or socket)...
  static const char *const lines[] = {
      "{\"specversion\":\"1.0\",\"id\":\"hello-1\",\"type\":\"Hello\","
      "\"source\":\"embed\",\"data\":{\"name\":\"Ada\"}}",
      "{\"specversion\":\"1.0\",\"id\":\"bye-2\",\"type\":\"Goodbye\","
      "\"source\":\"embed\",\"data\":{\"name\":\"Ada\"}}",
  };
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
    lu_manager_submit_json(m, lines[i], strlen(lines[i]), i + 1);

  // ...and one built in code: its data lacks "name", so Greet fails it.
  lu_event_t *ev = NULL;
  cJSON *data = cJSON_CreateObject();
  cJSON_AddStringToObject(data, "nickname", "Grace");
  if (lu_event_new(&ev, "Hello", "embed", "greeting-3", data) == 0 &&
      lu_event_set(ev, "id", "hello-3") == 0) {
    lu_manager_submit(m, ev);  // takes ownership
  } else {
    lu_event_free(ev);
  }

  // 4. Wait for every outcome, then count them: they add up to the input.
  lu_manager_drain(m);
  lu_count_t total;
  uint64_t in = 0;
  lu_manager_counts(m, &total, &in);
  printf("%llu events in:", (unsigned long long)in);
  for (int k = 0; k < LU_OUTCOME__COUNT; k++)
    printf("%s %llu %s", k ? "," : "", (unsigned long long)total.outcomes[k],
           lu_outcome_name((lu_outcome_kind_t)k));
  printf("\n");

  lu_manager_free(m);
  lu_registry_free(reg);
  return 0;
}
