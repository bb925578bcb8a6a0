/*
 * peer_plugin.c - the function lucent runs in bench/peer's kill -9 scenario
 * (kill_bench.js), built by bench/peer/run.sh as a plugin:
 *
 *   gcc -O2 -shared -fPIC -I include $(pkg-config --cflags libcjson) \
 *       bench/peer/peer_plugin.c -o libpeer_probe.so
 *
 *   PeerKeyed  events "PeerKeyed", hash_based("key"):
 *              returns {"seq": data.seq, "key": data.key, "kseq": data.kseq}
 *
 * Each execution also appends one line to the file named by
 * $LUCENT_PEER_EXEC_LOG (if set):
 *
 *   <key> <kseq> <CLOCK_MONOTONIC ns at the start> <pid> <attempt>\n
 *
 * with one write(2) on an O_APPEND descriptor, so that a line is either
 * wholly there or not at all when the process is killed with -9, and the
 * times of two serve processes compare (one clock for the machine).  That
 * write breaks the "no I/O" contract of lucent/fn.h on purpose: it is an
 * observer that counts executions (a re-execution after a crash included),
 * and changes neither the result nor the routing.  BullMQ's worker in
 * bullmq_bench.js writes the same lines.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <lucent/fn.h>

LU_PLUGIN()

static int g_fd = -1;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void open_log(void) {
  const char *path = getenv("LUCENT_PEER_EXEC_LOG");
  if (path && *path)
    g_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

LU_FUNCTION(PeerKeyed, .events = "PeerKeyed", LU_HASH_BASED("key"),
            .cpu_millis = 1, .memory_mb = 1,
            .doc = "bench/peer: returns {seq, key, kseq}; logs each "
                   "execution to $LUCENT_PEER_EXEC_LOG")
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const cJSON *seq = cJSON_GetObjectItemCaseSensitive(data, "seq");
  const cJSON *key = cJSON_GetObjectItemCaseSensitive(data, "key");
  const cJSON *kseq = cJSON_GetObjectItemCaseSensitive(data, "kseq");
  if (!cJSON_IsString(key) || !cJSON_IsNumber(kseq))
    return lu_out_fail(out, LU_FAIL, "data.key (string) and data.kseq "
                                     "(number) are required");
  pthread_once(&g_once, open_log);
  if (g_fd >= 0) {
    char line[256];
    int n = snprintf(line, sizeof line, "%s %.0f %lld %ld %u\n",
                     key->valuestring, kseq->valuedouble,
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec,
                     (long)getpid(), lu_ctx_attempt(ctx));
    if (n > 0 && n < (int)sizeof line && write(g_fd, line, (size_t)n) != n)
      return lu_out_fail(out, LU_RETRY, "exec log: short write");
  }
  cJSON *r = cJSON_CreateObject();
  if (!r || !cJSON_AddNumberToObject(r, "seq", cJSON_IsNumber(seq)
                                                   ? seq->valuedouble
                                                   : -1) ||
      !cJSON_AddStringToObject(r, "key", key->valuestring) ||
      !cJSON_AddNumberToObject(r, "kseq", kseq->valuedouble)) {
    cJSON_Delete(r);
    return lu_out_fail(out, LU_RETRY, "out of memory");
  }
  lu_out_result(out, r);
  return LU_OK;
}
