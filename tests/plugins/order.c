/* Test plugin: functions that say in which order they ran, for the order
 * tests (tests/integ/test_order.sh).  Every event carries data.seq, its
 * publish sequence within its key (or subject), and data.k, its key.
 *
 *   Keyed   hash_based(k)          result {"k","seq"}; emits KeyedChild
 *                                  {"k","seq"} when data.emit is true
 *   Sticky  sticky_session(u.id)   result {"k","seq"}
 *   Plain   round_robin            result {"seq"} (order per subject)
 *   Spread  load_balanced          result {"seq"} (no order promised)
 *   KeyedChild hash_based(k)       result {"k","seq"}
 *
 * With LUCENT_ORDER_LOG=DIR in the environment, each execution also
 * appends one line to DIR/<pid>.log: "<CLOCK_MONOTONIC ns> <type> <key or
 * subject> <seq> <attempt> <shard>".  That is I/O, which a real function
 * never does: it lets the test see every execution, re-executions
 * included (the store keeps one result per input), in the order they
 * ran across processes of one machine.  The test counts inversions from
 * it: an execution whose seq is below one already executed for its key. */
#include <lucent/fn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_fd_value = -1;

static void log_open(void) {
  const char *dir = getenv("LUCENT_ORDER_LOG");
  if (dir && *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%ld.log", dir, (long)getpid());
    log_fd_value = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  }
}

/* Opened once, whichever shard's worker runs first (pthread_once: shards
 * run on several threads). */
static int log_fd(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, log_open);
  return log_fd_value;
}

static double num(const cJSON *data, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(data, name);
  return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static int record(const lu_ctx_t *ctx, const cJSON *data, lu_out_t *out,
                  int keyed) {
  const char *k = cJSON_GetStringValue(
      cJSON_GetObjectItemCaseSensitive(data, "k"));
  const char *subj = lu_ctx_subject(ctx);
  const char *what = keyed ? (k ? k : "-") : (subj ? subj : "-");
  long long seq = (long long)num(data, "seq");
  int fd = log_fd();
  if (fd >= 0) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char line[512];
    int n = snprintf(line, sizeof line, "%lld %s %s %lld %u %s\n",
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec,
                     lu_ctx_type(ctx), what, seq, lu_ctx_attempt(ctx),
                     lu_ctx_shard(ctx));
    if (n > 0 && n < (int)sizeof line && write(fd, line, (size_t)n) < 0) {
      /* nothing to do: the test sees a missing line */
    }
  }
  cJSON *r = cJSON_CreateObject();
  if (keyed && k) cJSON_AddStringToObject(r, "k", k);
  cJSON_AddNumberToObject(r, "seq", (double)seq);
  lu_out_result(out, r);
  return LU_OK;
}

LU_FUNCTION(Keyed, .events = "Keyed", LU_HASH_BASED("k"),
            .doc = "order test: records data.seq per data.k")
{
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(data, "emit"))) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "k", cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(data, "k")));
    cJSON_AddNumberToObject(c, "seq", num(data, "seq"));
    lu_out_emit(out, "KeyedChild", NULL, c);
  }
  return record(ctx, data, out, 1);
}

LU_FUNCTION(KeyedChild, .events = "KeyedChild", LU_HASH_BASED("k"),
            .doc = "order test: an emitted event, keyed like its cause")
{
  return record(ctx, data, out, 1);
}

LU_FUNCTION(Sticky, .events = "Sticky", LU_STICKY_SESSION("u.id", 600000),
            .doc = "order test: records data.seq per session")
{
  return record(ctx, data, out, 1);
}

LU_FUNCTION(Plain, .events = "Plain", LU_ROUND_ROBIN,
            .doc = "order test: records data.seq per subject")
{
  return record(ctx, data, out, 0);
}

LU_FUNCTION(Spread, .events = "Spread", LU_LOAD_BALANCED,
            .doc = "order test: load_balanced, per subject (measured)")
{
  return record(ctx, data, out, 0);
}

LU_PLUGIN()
