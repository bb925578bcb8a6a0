// serve_nats.c - run a shard of a distributed lucent inside your own
// program, as `lucent serve` does (lucent/nats.h).
//
// One function, WordCount, is defined right here; plugins named on the
// command line add theirs (the orders example: build/examples/
// liborders.so).  The program connects to NATS, opens the event store on
// JetStream, makes a manager of one shard and serves it: the shard joins
// the view beside any `lucent serve` of the same deployment, pulls its
// share of the intake and answers `lucent exec`.  On SIGINT or SIGTERM it
// leaves the view, finishes what it holds and prints its counters.
//
// Usage: serve_nats NATS_URLS SHARD_ID [PLUGIN...]
//
// Try it (a nats-server 2.9+ with JetStream; lucent's tree, built):
//   nats-server -js &
//   N=nats://127.0.0.1:4222
//   build/examples/serve_nats $N wc-1 &
//   echo '{"specversion":"1.0","id":"t-1","type":"Text","source":"me",
//          "data":{"text":"to be or not to be"}}' | tr -d '\n' |
//     build/lucent publish --nats $N --input -
//   build/lucent events --nats $N --type WordCountCompleted
//   build/lucent exec --nats $N --type Text --data '{"text":"a b c"}'
//   kill %2
//
// The events command prints the stored outcome, a CloudEvent of type
// WordCountCompleted whose data is {"words":6}; exec prints the reply
// ({"success":true,...,"result":{"words":3},...}).  tests/integ/
// test_serve_nats.sh runs all of it against a real server.
//
// Against an installed lucent:
//   cc -o serve_nats serve_nats.c $(pkg-config --cflags --libs lucent-nats)
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <lucent/nats.h>

// The function: the number of words in data.text (runs of characters
// other than spaces).  Pure: it reads its data and writes its result.
LU_FUNCTION(WordCount,
            .events = "Text",
            LU_ROUND_ROBIN,
            .cpu_millis = 10, .memory_mb = 4,
            .doc = "counts the words of a text")
{
  const char *text = cJSON_GetStringValue(
      cJSON_GetObjectItemCaseSensitive(data, "text"));
  if (!text) return lu_out_fail(out, LU_FAIL, "data.text must be a string");
  double words = 0;
  for (const char *p = text; *p; p++)
    if (*p != ' ' && (p == text || p[-1] == ' ')) words++;
  cJSON *result = cJSON_CreateObject();
  if (!cJSON_AddNumberToObject(result, "words", words) ||
      lu_out_result(out, result) != 0)
    return lu_out_fail(out, LU_RETRY, "out of memory");
  return LU_OK;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: serve_nats NATS_URLS SHARD_ID [PLUGIN...]\n");
    return 2;
  }
  const char *urls = argv[1], *shard = argv[2];
  char err[512] = "";
  int rc, status = 1;
  lu_registry_t *reg = NULL;
  lu_nats_t *nats = NULL;
  lu_store_t *store = NULL;
  lu_manager_t *m = NULL;
  lu_nats_serve_t *srv = NULL;

  // SIGINT and SIGTERM are for sigwait() below: block them before any
  // thread starts, so that every thread inherits the mask.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);

  // 1. The registry: WordCount, and the plugins' functions.
  const lu_fn_t *const *fns;
  size_t nfns = lu_fns_here(&fns);  // first: it sets fns
  if ((rc = lu_registry_new(&reg)) != 0 ||
      (rc = lu_registry_add(reg, fns, nfns, "serve_nats")) != 0) {
    fprintf(stderr, "serve_nats: %s\n",
            reg ? lu_registry_errmsg(reg) : lu_strerror(rc));
    goto done;
  }
  for (int i = 3; i < argc; i++)
    if (lu_registry_load_plugin(reg, argv[i]) != 0) {
      fprintf(stderr, "serve_nats: %s\n", lu_registry_errmsg(reg));
      goto done;
    }

  // 2. The connection: a wrong URL fails here, at once, saying why.
  lu_nats_opts_t no;
  lu_nats_opts_init(&no);
  no.urls = urls;
  no.name = shard;
  if ((rc = lu_nats_connect(&nats, &no, err, sizeof err)) != 0) goto fail;

  // 3. The event store on JetStream; it rides through a leader election
  // as long as the manager retries a batch.
  lu_nats_store_opts_t so;
  lu_nats_store_opts_init(&so);
  so.retry_ms = LU_NATS_STORE_RETRY_MS;
  so.who = shard;
  if ((rc = lu_nats_store_open(&store, nats, &so, err, sizeof err)) != 0)
    goto fail;

  // 4. A manager of one shard, named for the cluster, writing to it.
  const char *ids[] = {shard};
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shards = 1;
  cfg.shard_ids = ids;
  cfg.store_handle = store;  // the manager's now, even on error
  store = NULL;
  cfg.store_retry_ms = LU_NATS_STORE_RETRY_MS;
  cfg.max_record_bytes = lu_nats_max_record_bytes(nats);
  if ((rc = lu_manager_new(&m, &cfg, reg, err, sizeof err)) != 0) goto fail;

  // 5. Serve it: join the view, pull, forward, answer exec requests.
  lu_nats_serve_opts_t vo;
  lu_nats_serve_opts_init(&vo);  // lucent serve's defaults
  if ((rc = lu_nats_serve_start(&srv, nats, m, &vo, err, sizeof err)) != 0)
    goto fail;
  printf("serving shard %s on %s: %zu functions\n", shard, urls,
         lu_registry_count(reg));
  fflush(stdout);

  int sig = 0;
  sigwait(&stop, &sig);

  // 6. Leave the view and finish what the shard holds, then report.
  lu_nats_serve_stop(srv, 5000);
  lu_nats_serve_stats_t st;
  lu_count_t total;
  uint64_t in = 0;
  lu_nats_serve_stats(srv, &st);
  lu_manager_counts(m, &total, &in);
  printf("%s stopped: %llu inputs (%llu pulled, %llu exec requests):",
         shard, (unsigned long long)in, (unsigned long long)st.pulled,
         (unsigned long long)st.exec_requests);
  for (int k = 0; k < LU_OUTCOME__COUNT; k++)
    printf("%s %llu %s", k ? "," : "",
           (unsigned long long)(total.outcomes[k] + total.derived[k]),
           lu_outcome_name((lu_outcome_kind_t)k));
  printf("\n");
  status = lu_manager_store_errors(m) ? 1 : 0;
  goto done;

fail:
  fprintf(stderr, "serve_nats: shard %s: %s (%s)\n", shard, err,
          lu_err_name(rc));
done:
  lu_nats_serve_free(srv);  // each of these accepts NULL
  lu_manager_free(m);
  lu_store_close(store);
  lu_nats_close(nats);
  lu_registry_free(reg);
  return status;
}
