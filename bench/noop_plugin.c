/*
 * noop_plugin.c - the trivial functions the NATS benchmarks run
 * (bench/nats.sh, bench/peer/run.sh), built as a plugin: libbench_noop.so.
 *
 *   NoopTick   events "Tick",  round_robin:       returns {"seq": data.seq}
 *   NoopKeyed  events "Keyed", hash_based("key"): returns {"seq": data.seq}
 *
 * Each does as little as a function can and still return something, so
 * that what is measured is lucent's own work around it (bench_pipeline's
 * Noop does the same in embedded mode).
 */
#include <lucent/fn.h>

LU_PLUGIN()

static lu_status_t copy_seq(const cJSON *data, lu_out_t *out) {
  const cJSON *seq = cJSON_GetObjectItemCaseSensitive(data, "seq");
  cJSON *r = cJSON_CreateObject();
  if (!r) return lu_out_fail(out, LU_RETRY, "out of memory");
  if (!cJSON_AddNumberToObject(r, "seq",
                               cJSON_IsNumber(seq) ? seq->valuedouble : -1)) {
    cJSON_Delete(r);
    return lu_out_fail(out, LU_RETRY, "out of memory");
  }
  lu_out_result(out, r);
  return LU_OK;
}

LU_FUNCTION(NoopTick, .events = "Tick", LU_ROUND_ROBIN, .cpu_millis = 1,
            .memory_mb = 1, .doc = "bench: returns {\"seq\": data.seq}")
{
  return copy_seq(data, out);
}

LU_FUNCTION(NoopKeyed, .events = "Keyed", LU_HASH_BASED("key"),
            .cpu_millis = 1, .memory_mb = 1,
            .doc = "bench: returns {\"seq\": data.seq}, sharded by data.key")
{
  return copy_seq(data, out);
}
