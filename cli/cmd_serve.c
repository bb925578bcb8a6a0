/*
 * cmd_serve.c - `lucent serve`: one shard process of a distributed lucent.
 *
 *   nats-server -js &
 *   lucent serve --nats nats://127.0.0.1:4222 --shard a --plugin ./liborders.so
 *
 * Connects, opens the event store on JetStream, joins the shard view by
 * heartbeats (or a static --shards list), pulls its intake partitions and
 * its forward queue, serves `lucent exec` requests, and runs until SIGINT
 * or SIGTERM.  Then it leaves the view, finishes and acknowledges what it
 * took, and prints a one-line summary.
 *
 * `--shard a,b,c` owns several shards in one process: each is what a
 * serve of its own would be (its manager, store writer and bus: heartbeats,
 * partitions, forward queue, exec subject) on one shared NATS connection,
 * so a fleet can be over-partitioned and rebalanced by moving shards.  A
 * shard runs one function at a time, so each manager has one worker.
 * Events between two shards of the process travel over NATS as between
 * processes: the same paths, the same guarantees.
 *
 * It uses lucent's public API only (lucent/nats.h: connect, the store,
 * a serve per shard; CMakeLists.txt compiles it without the internal
 * headers), so a program of your own can do all that it does
 * (examples/serve_nats.c).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "lucent/bus.h"
#include "lucent/http.h"
#include "lucent/log.h"
#include "lucent/lucent.h"
#include "lucent/nats.h"
#include "nats_opts.h"

/* Results per JetStream message at most (store_jetstream.c note 7): all of
 * them with --delivery at-most-once, the results of exec requests in both
 * modes (a pack is deduplicated as a whole, and only what is never
 * redelivered may lose per-event deduplication).  bench/README.md has the
 * measurements. */
#define SERVE_PACK 256
/* Shards one process may own (--shard a,b,c). */
#define SERVE_MAX_SHARDS 64

static void usage(FILE *f) {
  fprintf(f,
      "usage: lucent serve --nats URLS --shard ID --plugin PATH [options]\n"
      "  --shard ID[,ID...]   this process's shard ids (unique in the\n"
      "                       cluster); several: one process owns them\n"
      "                       all, each joining the view and pulling its\n"
      "                       partitions as its own serve would (--http\n"
      "                       then reports the first one's counters)\n"
      "  --plugin PATH        plugin with the functions (repeatable)\n"
      "  --shards A,B,C       static shard view (default: heartbeats)\n"
      "  --delivery MODE      at-least-once (default, JetStream) or\n"
      "                       at-most-once (core NATS: a dying shard loses\n"
      "                       what it holds)\n"
      "  --forward VIA        at-least-once forwards to the owning shard:\n"
      "                       core (default: over core NATS, the intake\n"
      "                       message acked once the owner has stored the\n"
      "                       outcome) or jetstream (through LUCENT_FWD)\n"
      "  --http ADDR:PORT     /metrics, /healthz, /readyz, /functions, /shards\n"
      "  --log-level L        debug, info (default), warn, error, off\n"
      "  --log-format F       json, text or auto\n"
      "  --queue N            each shard's intake queue capacity\n"
      "                       (default 1024)\n"
      "  --max-depth N        causation depth limit (default 16)\n"
      "  --ack-wait-ms N      JetStream redelivery delay (default 10000)\n"
      "  --heartbeat-ms N     heartbeat interval (default 250)\n"
      "  --stop-timeout-ms N  a stop (SIGTERM, SIGINT) that has not\n"
      "                       finished after N ms exits anyway, status 1\n"
      "                       (default 30000): at-least-once, what was\n"
      "                       not acknowledged comes back to the others\n"
      "  --batch N            events per store batch (default 4096)\n"
      "  --max-deliveries N   an input delivered more often than N times\n"
      "                       without an outcome (every shard that took it\n"
      "                       died first) is dead-lettered (default 5);\n"
      "                       from the 2nd delivery on it runs isolated\n"
      "  --store-retry-ms N   how long a batch the event store refuses is\n"
      "                       tried again before its inputs are handed\n"
      "                       back (default 60000: a leader election or a\n"
      "                       server restart is ridden out)\n"
      "  --replicas N         copies of each stream and bucket lucent\n"
      "                       creates (LUCENT_INTAKE, LUCENT_FWD,\n"
      "                       LUCENT_EVENTS, lucent_sessions), 1..5; 3 on\n"
      "                       a 3-node cluster survives the loss of a node.\n"
      "                       Existing ones with another count are changed\n"
      "                       (with a warning) or refused.  Default: 1 when\n"
      "                       created, existing ones kept as they are\n"
      "  --partitions N       intake partitions when this creates stream\n"
      "                       LUCENT_INTAKE (default %d: at most that many\n"
      "                       processes pull intake); a stream with\n"
      "                       another count is refused.  Without it, the\n"
      "                       stream's count is used\n"
      "  --pack N             store up to N results of one type per\n"
      "                       JetStream message (default 256; 1 = one per\n"
      "                       event): every result with at-most-once, the\n"
      "                       results of exec requests with either mode\n"
      "  --exec-reply WHEN    when an exec request is answered: stored\n"
      "                       (default: its outcome is in the store) or\n"
      "                       executed (the function returned; the outcome\n"
      "                       is stored after the reply, and a crash in\n"
      "                       between loses it); a request's\n"
      "                       Lucent-Exec-Reply header overrides it\n"
      "%s",
      LU_NATS_PARTITIONS_DEFAULT, CLI_NATS_USAGE);
}

/* ---- the view for /shards and /readyz --------------------------------- */

/* One shard this process owns. */
typedef struct serve_shard_s {
  const char *id;
  lu_store_t *store;
  lu_manager_t *m;
  lu_nats_serve_t *serve;
  pthread_t stopper;
} serve_shard_t;

typedef struct serve_obs_s {
  lu_manager_t *m;
  lu_nats_serve_t *serve;
  const char *self;
  lu_nats_t *nats;
  serve_shard_t *sh; /* every shard owned, for the view and /readyz */
  size_t nsh;
} serve_obs_t;

static size_t obs_view(void *ud, lu_shard_report_t *out, size_t cap) {
  serve_obs_t *o = ud;
  char (*v)[LU_SHARD_ID_MAX] = calloc(cap ? cap : 1, sizeof *v);
  if (!v) return 0;
  size_t n = lu_manager_view(o->m, v, cap);
  for (size_t i = 0; i < n && i < cap; i++) {
    memset(&out[i], 0, sizeof out[i]);
    snprintf(out[i].id, sizeof out[i].id, "%s", v[i]);
    for (size_t k = 0; k < o->nsh; k++)
      if (!strcmp(v[i], o->sh[k].id)) {
        out[i].local = 1;
        out[i].in_flight = lu_manager_load(o->sh[k].m);
      }
  }
  free(v);
  return n;
}

static int obs_bus(void *ud, char *detail, size_t cap) {
  serve_obs_t *o = ud;
  int ok = lu_nats_connected(o->nats);
  snprintf(detail, cap, "nats %s", ok ? "connected" : "not connected");
  return ok;
}

static int obs_shard(void *ud, char *detail, size_t cap) {
  serve_obs_t *o = ud;
  for (size_t k = 0; k < o->nsh; k++)
    if (!lu_manager_in_view(o->m, o->sh[k].id)) {
      snprintf(detail, cap, "shard %s not in the view", o->sh[k].id);
      return 0;
    }
  snprintf(detail, cap, o->nsh > 1 ? "shards %s.. in the view"
                                    : "shard %s in the view", o->self);
  return 1;
}

static uint64_t obs_bus_errors(void *ud) {
  serve_obs_t *o = ud;
  lu_nats_serve_stats_t st;
  if (lu_nats_serve_stats(o->serve, &st)) return 0;
  return st.forward_errors + st.dropped;
}

static size_t obs_metrics(void *ud, lu_metric_t *out, size_t cap) {
  serve_obs_t *o = ud;
  return lu_nats_serve_metrics(o->serve, out, cap);
}

static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *v) {
  char *end;
  errno = 0;
  unsigned long x = strtoul(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || x < min || x > max)
    return -1;
  *v = (uint32_t)x;
  return 0;
}

/* A stop is bounded.  With the server gone it may never finish: a puller
 * waits for queue space that only stored outcomes free, and nothing can
 * be stored.  Past --stop-timeout-ms the process exits anyway: with
 * at-least-once delivery nothing it had not acknowledged is lost (it comes
 * back to the other shards after AckWait); at-most-once loses what it
 * held, as documented. */
static uint32_t g_stop_ms = 30000;
static char g_stop_shard[64]; /* a copy: the watchdog may outlive ids */

static void *stop_watchdog(void *arg) {
  (void)arg;
  struct timespec ts = {g_stop_ms / 1000, (long)(g_stop_ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  LU_LOG(LU_LOG_ERROR, g_stop_shard, NULL,
         LU_KVS(LU_KV_UINT("stop_timeout_ms", g_stop_ms)),
         "stop did not finish in time (NATS server unreachable?): exiting; "
         "what was not acknowledged will be redelivered");
  fflush(NULL);
  _exit(1);
  return NULL;
}

/* Stops one shard's serve (a thread per shard at the stop). */
static void *serve_stop_one(void *arg) {
  serve_shard_t *x = arg;
  lu_nats_serve_stop(x->serve, 5000);
  return NULL;
}

int cmd_serve(int argc, char **argv) {
  enum { O_SHARD = 300, O_SHARDS, O_DELIVERY, O_HTTP, O_LOGL, O_LOGF,
         O_QUEUE, O_DEPTH, O_ACKW, O_HB, O_BATCH, O_PACK, O_FORWARD,
         O_STOPT, O_MAXDEL, O_STRETRY, O_REPLICAS, O_PARTS, O_EXECREPLY };
  static const struct option opts[] = {
      {"shard", required_argument, 0, O_SHARD},
      {"plugin", required_argument, 0, 'p'},
      {"shards", required_argument, 0, O_SHARDS},
      {"delivery", required_argument, 0, O_DELIVERY},
      {"http", required_argument, 0, O_HTTP},
      {"log-level", required_argument, 0, O_LOGL},
      {"log-format", required_argument, 0, O_LOGF},
      {"queue", required_argument, 0, O_QUEUE},
      {"max-depth", required_argument, 0, O_DEPTH},
      {"ack-wait-ms", required_argument, 0, O_ACKW},
      {"heartbeat-ms", required_argument, 0, O_HB},
      {"batch", required_argument, 0, O_BATCH},
      {"pack", required_argument, 0, O_PACK},
      {"forward", required_argument, 0, O_FORWARD},
      {"stop-timeout-ms", required_argument, 0, O_STOPT},
      {"max-deliveries", required_argument, 0, O_MAXDEL},
      {"store-retry-ms", required_argument, 0, O_STRETRY},
      {"replicas", required_argument, 0, O_REPLICAS},
      {"partitions", required_argument, 0, O_PARTS},
      {"exec-reply", required_argument, 0, O_EXECREPLY},
      {"help", no_argument, 0, 'h'},
      CLI_NATS_LONGOPTS,
      {0, 0, 0, 0}};
  lu_nats_opts_t no;
  lu_nats_opts_init(&no);
  lu_nats_serve_opts_t bc;
  lu_nats_serve_opts_init(&bc);
  lu_config_t cfg;
  lu_config_init(&cfg);
  /* What is not stored is handed back and comes round again: ride out a
   * store outage (a JetStream leader election takes ~5 s, docs/nats-notes.md
   * a2) rather than send everything held round the cluster. */
  cfg.store_retry_ms = LU_NATS_STORE_RETRY_MS;
  lu_registry_t *reg = NULL;
  const char *http_addr = NULL, *shard = NULL;
  lu_log_level_t log_level = LU_LOG_INFO;
  lu_log_format_t log_format = LU_LOG_FORMAT_AUTO;
  int nplug = 0, c;
  uint32_t v32, pack = SERVE_PACK;
  if (lu_registry_new(&reg)) return 1;
  optind = 1;
  while ((c = cli_getopt(argc, argv, "p:h", opts)) != -1) {
    if (cli_nats_opt(c, optarg, &no)) continue;
    switch (c) {
      case 'p':
        nplug++;
        if (lu_registry_load_plugin(reg, optarg)) {
          cli_error("%s", lu_registry_errmsg(reg));
          lu_registry_free(reg);
          return 1;
        }
        break;
      case O_SHARD: shard = optarg; break;
      case O_SHARDS: bc.static_view = optarg; break;
      case O_DELIVERY:
        if (!strcmp(optarg, "at-least-once")) {
          bc.delivery = LU_NATS_AT_LEAST_ONCE;
        } else if (!strcmp(optarg, "at-most-once")) {
          bc.delivery = LU_NATS_AT_MOST_ONCE;
        } else {
          cli_error("--delivery wants at-least-once or at-most-once");
          goto usage_err;
        }
        break;
      case O_FORWARD:
        bc.durable_forward = !strcmp(optarg, "jetstream");
        if (!bc.durable_forward && strcmp(optarg, "core")) {
          cli_error("--forward wants core or jetstream");
          goto usage_err;
        }
        break;
      case O_EXECREPLY: /* issue 18: exec's two modes */
        bc.exec_reply_executed = !strcmp(optarg, "executed");
        if (!bc.exec_reply_executed && strcmp(optarg, "stored")) {
          cli_error("--exec-reply wants stored or executed");
          goto usage_err;
        }
        break;
      case O_HTTP: http_addr = optarg; break;
      case O_LOGL:
        if (lu_log_parse_level(optarg, &log_level)) {
          cli_error("--log-level wants debug, info, warn, error or off");
          goto usage_err;
        }
        break;
      case O_LOGF:
        if (lu_log_parse_format(optarg, &log_format)) {
          cli_error("--log-format wants json, text or auto");
          goto usage_err;
        }
        break;
#define U32(field, min, max, name)                                     \
  if (parse_u32(optarg, min, max, &v32)) {                             \
    cli_error("%s must be an integer in %u..%u", name, (unsigned)min,  \
              (unsigned)max);                                          \
    goto usage_err;                                                    \
  }                                                                    \
  field = v32;                                                         \
  break;
      case O_QUEUE: U32(cfg.queue_capacity, 1, 1u << 24, "--queue")
      case O_DEPTH: U32(cfg.max_depth, 1, 1000, "--max-depth")
      case O_ACKW: U32(bc.ack_wait_ms, 100, 3600000, "--ack-wait-ms")
      case O_HB: U32(bc.heartbeat_ms, 10, 60000, "--heartbeat-ms")
      case O_BATCH: U32(cfg.store_batch, 1, 1u << 20, "--batch")
      case O_PACK: U32(pack, 1, 4096, "--pack")
      case O_STOPT: U32(g_stop_ms, 100, 3600000, "--stop-timeout-ms")
      case O_MAXDEL: U32(cfg.max_deliveries, 2, 1000, "--max-deliveries")
      case O_STRETRY: U32(cfg.store_retry_ms, 0, 3600000, "--store-retry-ms")
      case O_PARTS: U32(bc.partitions, 1, LU_NATS_PARTITIONS_MAX,
                        "--partitions")
      case O_REPLICAS: U32(bc.replicas, 1, LU_NATS_MAX_REPLICAS, "--replicas")
#undef U32
      case 'h': usage(stdout); lu_registry_free(reg); return 0;
      default: goto usage_err;
    }
  }
  cli_nats_env(&no);
  if (!nplug || !shard || !no.urls || optind < argc) {
    if (!no.urls) cli_error("--nats is required (or LUCENT_NATS_URL)");
    else if (!shard) cli_error("--shard is required");
    else if (!nplug) cli_error("--plugin is required");
    else cli_error("unexpected argument '%s'", argv[optind]);
    goto usage_err;
  }
  /* --shard a,b,c: the ids, checked; each once. */
  char *idbuf = strdup(shard);
  serve_shard_t *sh = calloc(SERVE_MAX_SHARDS, sizeof *sh);
  size_t nsh = 0;
  if (!idbuf || !sh) {
    free(idbuf);
    free(sh);
    lu_registry_free(reg);
    return 1;
  }
  for (char *save = NULL, *id = strtok_r(idbuf, ",", &save); id;
       id = strtok_r(NULL, ",", &save)) {
    int dup = 0;
    for (size_t k = 0; k < nsh; k++) dup |= !strcmp(sh[k].id, id);
    if (!lu_shard_id_valid(id) || dup || nsh == SERVE_MAX_SHARDS) {
      cli_error(dup ? "--shard '%s': named twice"
                : nsh == SERVE_MAX_SHARDS ? "--shard: at most 64 shards"
                : "--shard '%s': use letters, digits, - and _ (at most 63)",
                id);
      nsh = 0;
      break;
    }
    sh[nsh++].id = id;
  }
  if (!nsh || shard[0] == ',' || shard[strlen(shard) - 1] == ',' ||
      strstr(shard, ",,")) {
    if (nsh) cli_error("--shard '%s': an empty id", shard);
    free(idbuf);
    free(sh);
    goto usage_err;
  }
  shard = sh[0].id;
  lu_log_set_format(log_format);
  lu_log_set_level(log_level);
  /* A crash names its function and event on stderr.  No marker: the
   * input that did it comes again from JetStream after AckWait with a
   * delivery count above 1, which is what runs it isolated. */
  lu_crash_report_install(NULL);

  /* SIGINT/SIGTERM are taken by sigwait below, in this thread only: block
   * them before any thread starts so every thread inherits the mask. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  char err[512];
  char name[96];
  snprintf(name, sizeof name, "lucent-%s", shard);
  no.name = name;
  lu_nats_t *nats = NULL;
  int rc = lu_nats_connect(&nats, &no, err, sizeof err);
  if (rc) {
    cli_error("shard %s: %s", shard, err);
    free(idbuf);
    free(sh);
    lu_registry_free(reg);
    return 1;
  }
  /* A record the server cannot take ends as <Fn>Failed, not as a batch
   * refused for ever. */
  cfg.max_record_bytes = lu_nats_max_record_bytes(nats);
  /* One manager per shard: a shard runs one function at a time, so one
   * worker each (the default for one shard). */
  size_t up = 0;
  for (; up < nsh; up++) {
    serve_shard_t *x = &sh[up];
    /* The store rides through an election for as long as the writer
     * retries a batch (--store-retry-ms): one setting for both. */
    lu_nats_store_opts_t so_;
    lu_nats_store_opts_init(&so_);
    so_.replicas = bc.replicas;
    so_.retry_ms = cfg.store_retry_ms;
    so_.who = x->id;
    so_.pack = pack;
    so_.pack_every = bc.delivery == LU_NATS_AT_MOST_ONCE;
    rc = lu_nats_store_open(&x->store, nats, &so_, err, sizeof err);
    if (rc) {
      cli_error("shard %s: %s", x->id, err);
      break;
    }
    const char *ids[] = {x->id};
    cfg.shards = 1;
    cfg.shard_ids = ids;
    cfg.store_handle = x->store;
    cfg.store = "jetstream";
    rc = lu_manager_new(&x->m, &cfg, reg, err, sizeof err);
    x->store = NULL; /* the manager's now, even on error */
    if (rc) {
      cli_error("shard %s: cannot start: %s", x->id, err);
      x->m = NULL;
      break;
    }
    rc = lu_nats_serve_start(&x->serve, nats, x->m, &bc, err, sizeof err);
    if (rc) {
      cli_error("shard %s: %s", x->id, err);
      break;
    }
  }
  if (up < nsh) { /* a shard did not start: stop those that did */
    for (size_t k = 0; k <= up && k < nsh; k++) {
      lu_nats_serve_free(sh[k].serve);
      lu_manager_free(sh[k].m);
      if (sh[k].store) lu_store_close(sh[k].store);
    }
    lu_nats_close(nats);
    free(idbuf);
    free(sh);
    lu_registry_free(reg);
    return 1;
  }
  lu_manager_t *m = sh[0].m;
  serve_obs_t so = {.m = m, .serve = sh[0].serve, .self = shard,
                    .nats = nats, .sh = sh, .nsh = nsh};
  lu_http_t *http = NULL;
  if (http_addr) {
    lu_obs_source_t src = {.manager = m, .bus = "nats", .ud = &so,
                           .view = obs_view, .check_bus = obs_bus,
                           .check_shard = obs_shard,
                           .bus_errors = obs_bus_errors,
                           .metrics = obs_metrics};
    if (lu_http_start(&http, http_addr, &src, err, sizeof err)) {
      cli_error("shard %s: %s", shard, err);
    } else {
      LU_LOG(LU_LOG_INFO, shard, NULL,
             LU_KVS(LU_KV_STR("addr", lu_http_addr(http))), "http listening");
    }
  }
  for (size_t k = 0; k < nsh; k++)
    LU_LOG(LU_LOG_INFO, sh[k].id, NULL,
           LU_KVS(LU_KV_STR("nats", no.urls),
                  LU_KV_STR("delivery",
                            bc.delivery == LU_NATS_AT_MOST_ONCE
                                ? "at-most-once" : "at-least-once"),
                  LU_KV_UINT("functions", lu_registry_count(reg)),
                  LU_KV_UINT("shards_in_process", nsh)),
           "serving");
  int sig = 0;
  sigwait(&set, &sig);
  LU_LOG(LU_LOG_INFO, shard, NULL, LU_KVS(LU_KV_STR("signal",
         sig == SIGINT ? "SIGINT" : "SIGTERM")), "stopping");
  snprintf(g_stop_shard, sizeof g_stop_shard, "%s", shard);
  pthread_t watchdog;
  if (pthread_create(&watchdog, NULL, stop_watchdog, NULL) == 0)
    pthread_detach(watchdog);
  lu_http_stop(http);
  /* The shards stop together: one leaving first would hand its
   * partitions to its neighbours, which are about to leave too. */
  for (size_t k = 1; k < nsh; k++)
    if (pthread_create(&sh[k].stopper, NULL, serve_stop_one, &sh[k]))
      sh[k].stopper = 0, serve_stop_one(&sh[k]);
  serve_stop_one(&sh[0]);
  for (size_t k = 1; k < nsh; k++)
    if (sh[k].stopper) pthread_join(sh[k].stopper, NULL);
  uint64_t store_errors = 0;
  for (size_t k = 0; k < nsh; k++) {
    lu_count_t cnt;
    uint64_t in;
    lu_nats_serve_stats_t st = {0}, *bs = &st;
    lu_nats_serve_stats(sh[k].serve, bs); /* the final counters */
    lu_manager_counts(sh[k].m, &cnt, &in);
    LU_LOG(LU_LOG_INFO, sh[k].id, NULL,
           LU_KVS(LU_KV_UINT("events_in", in),
                  LU_KV_UINT("completed",
                             cnt.outcomes[LU_OUTCOME_COMPLETED] +
                                 cnt.derived[LU_OUTCOME_COMPLETED]),
                  LU_KV_UINT("failed", cnt.outcomes[LU_OUTCOME_FAILED] +
                                           cnt.derived[LU_OUTCOME_FAILED]),
                  LU_KV_UINT("rejected",
                             cnt.outcomes[LU_OUTCOME_REJECTED] +
                                 cnt.derived[LU_OUTCOME_REJECTED]),
                  LU_KV_UINT("dead_lettered",
                             cnt.outcomes[LU_OUTCOME_DEAD_LETTERED] +
                                 cnt.derived[LU_OUTCOME_DEAD_LETTERED]),
                  LU_KV_UINT("forwarded", bs->forwarded),
                  LU_KV_UINT("forwards_confirmed", bs->forwards_confirmed),
                  LU_KV_UINT("forwards_durable_fallback",
                             bs->forward_fallbacks)),
           "stopped");
    store_errors += lu_manager_store_errors(sh[k].m);
    lu_nats_serve_free(sh[k].serve);
    lu_manager_free(sh[k].m);
  }
  lu_nats_close(nats);
  free(idbuf);
  free(sh);
  lu_registry_free(reg);
  return store_errors ? 1 : 0;
usage_err:
  usage(stderr);
  lu_registry_free(reg);
  return 2;
}
