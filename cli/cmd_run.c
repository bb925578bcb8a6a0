/*
 * cmd_run.c - `lucent run`: the embedded pipeline over a JSON Lines file.
 *
 * Reads events line by line (blank lines are skipped), submits each with its
 * line number, drains, and prints the summary: events in and their outcomes,
 * per shard and per function.  The run checks its own books: events in must
 * equal completed + failed + rejected + dead-lettered, else it exits 1.
 *
 * Its own messages (start, finish, errors) are structured log records
 * (lucent/log.h); --explain decisions become debug records when the log
 * level is debug.  --http serves metrics and health while it runs (and,
 * with --http-hold, after the input is drained until SIGINT/SIGTERM, so a
 * finished run can be scraped).  Nothing of that touches the event path:
 * metrics are read from the manager's counters when scraped.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "lucent/http.h"
#include "lucent/log.h"
#include "lucent/lucent.h"

static void usage(FILE *f) {
  fprintf(f,
      "usage: lucent run --plugin PATH --input FILE|- [options]\n"
      "  --plugin PATH        plugin with the functions (repeatable)\n"
      "  --input FILE|-       JSON Lines CloudEvents; - for stdin\n"
      "  --shards N           shards: units of ownership and order\n"
      "                       (default 1)\n"
      "  --threads N          worker threads that run the shards\n"
      "                       (default: one per CPU, at most one per shard)\n"
      "  --store FILE.db      SQLite event store, or :memory: (default)\n"
      "  --json               print the summary as JSON\n"
      "  --explain            print each selection decision to stderr\n"
      "  --weights L,R,P,A    selection weights: load, resources, priority,\n"
      "                       affinity (default 0.3,0.25,0.25,0.2)\n"
      "  --max-event-bytes N  reject larger events (default 1048576)\n"
      "  --queue N            intake queue capacity, shared by the shards\n"
      "                       (at least 16 each; default 1024)\n"
      "  --max-depth N        causation depth limit (default 16)\n"
      "  --shard-cpu M        shard capacity in millicores (default 1000)\n"
      "  --shard-memory MB    shard capacity in MB (default 1024)\n"
      "  --breaker-failures N consecutive failures that open a breaker (5)\n"
      "  --breaker-cooldown-ms N  open -> half-open after (1000)\n"
      "  --batch N            events per store transaction (default 4096)\n"
      "  --seed N             randomness seed (default: clock)\n"
      "  --no-progress        no progress line even on a terminal\n"
      "  --http ADDR:PORT     serve /metrics, /healthz, /readyz, /functions,\n"
      "                       /shards (host defaults to 127.0.0.1; port 0 =\n"
      "                       any free port, logged as \"http listening\")\n"
      "  --http-hold          after the input is drained, keep serving until\n"
      "                       SIGINT/SIGTERM, then print the summary\n"
      "  --log-level L        debug, info (default), warn, error or off\n"
      "  --log-format F       json, text, or auto (default: text on a\n"
      "                       terminal, JSON lines otherwise)\n");
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *v) {
  char *end;
  errno = 0;
  unsigned long long x = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || x < min || x > max)
    return -1;
  *v = x;
  return 0;
}

/* "L,R,P,A": four finite, non-negative decimal numbers, not all 0.  The
 * library refuses non-finite weights too, but only once the manager is
 * made; this names the option.  Each number starts with a digit or '.':
 * strtod alone would also take "nan", "inf" and signs. */
static int parse_weights(const char *s, double w[4]) {
  double sum = 0;
  for (int i = 0; i < 4; i++) {
    char *end;
    if (strspn(s, "0123456789.") == 0) return -1; /* no sign, nan, inf */
    errno = 0;
    w[i] = strtod(s, &end);
    if (errno || end == s || !isfinite(w[i]) || w[i] < 0) return -1;
    if (*end != (i < 3 ? ',' : '\0')) return -1;
    sum += w[i];
    s = end + 1;
  }
  return sum > 0 ? 0 : -1;
}

/* Copies the value of ` name=` in an explain line into buf ("" if none).
 * Values are single tokens (select.c replaces spaces in them). */
static void explain_field(const char *line, const char *name, char *buf,
                          size_t cap) {
  size_t nl = strlen(name);
  buf[0] = 0;
  for (const char *p = strstr(line, name); p; p = strstr(p + 1, name)) {
    if ((p != line && p[-1] != ' ') || p[nl] != '=') continue;
    p += nl + 1;
    size_t n = strcspn(p, " ");
    if (n >= cap) n = cap - 1;
    memcpy(buf, p, n);
    buf[n] = 0;
    return;
  }
}

/* One selection decision: a debug record when debug logs are on (with the
 * shard, event and choice as fields), else the plain --explain line. */
static void on_explain(void *ud, const char *line) {
  (void)ud;
  if (!lu_log_enabled(LU_LOG_DEBUG)) {
    fprintf(stderr, "%s\n", line);
    return;
  }
  char shard[64], event[160], chosen[160];
  explain_field(line, "shard", shard, sizeof shard);
  explain_field(line, "event", event, sizeof event);
  explain_field(line, "chosen", chosen, sizeof chosen);
  const char *cands = strstr(line, " candidates: ");
  lu_log_write(LU_LOG_DEBUG, shard[0] ? shard : NULL, NULL,
               LU_KVS(LU_KV_STR("event", event), LU_KV_STR("chosen", chosen),
                      LU_KV_STR("candidates", cands ? cands + 13 : line)),
               "selection");
}

/* --http-hold: SIGINT and SIGTERM are blocked in every thread and taken by
 * one thread with sigwait(), which raises `stop`: the input loop stops
 * reading at the next line, and the hold after the drain ends. */
typedef struct hold_s {
  sigset_t set;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int stop;   /* under lock; also read unlocked by the input loop */
  int signo;
} hold_t;

static void *hold_main(void *arg) {
  hold_t *h = arg;
  int sig = 0;
  sigwait(&h->set, &sig);
  pthread_mutex_lock(&h->lock);
  __atomic_store_n(&h->stop, 1, __ATOMIC_RELAXED);
  h->signo = sig;
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->lock);
  return NULL;
}

typedef struct progress_s {
  lu_manager_t *m;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int done;
  struct timespec t0;
} progress_t;

static double since(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)(t.tv_sec - t0->tv_sec) + (t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void *progress_main(void *arg) {
  progress_t *p = arg;
  pthread_mutex_lock(&p->lock);
  while (!p->done) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 250000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&p->cond, &p->lock, &ts);
    if (p->done) break;
    lu_count_t c;
    uint64_t in;
    lu_manager_counts(p->m, &c, &in);
    uint64_t out = 0;
    for (int k = 0; k < LU_OUTCOME__COUNT; k++) out += c.outcomes[k];
    double t = since(&p->t0);
    fprintf(stderr,
            "\r\033[Klucent: %" PRIu64 " in, %" PRIu64 " done (%" PRIu64
            " completed, %" PRIu64 " failed, %" PRIu64 " rejected, %" PRIu64
            " dead-lettered)  %.0f ev/s",
            in, out, c.outcomes[LU_OUTCOME_COMPLETED],
            c.outcomes[LU_OUTCOME_FAILED], c.outcomes[LU_OUTCOME_REJECTED],
            c.outcomes[LU_OUTCOME_DEAD_LETTERED], t > 0 ? out / t : 0.0);
  }
  pthread_mutex_unlock(&p->lock);
  fputs("\r\033[K", stderr);
  return NULL;
}

static void print_counts_json(FILE *f, const uint64_t *c) {
  fprintf(f, "{");
  for (int k = 0; k < LU_OUTCOME__COUNT; k++)
    fprintf(f, "%s\"%s\":%" PRIu64, k ? "," : "",
            lu_outcome_name((lu_outcome_kind_t)k), c[k]);
  fprintf(f, "}");
}

static uint64_t sum(const uint64_t *c) {
  uint64_t s = 0;
  for (int k = 0; k < LU_OUTCOME__COUNT; k++) s += c[k];
  return s;
}

static void summary_json(lu_manager_t *m, const lu_registry_t *reg,
                         uint64_t in, double secs, int balanced) {
  lu_count_t c;
  lu_manager_counts(m, &c, NULL);
  printf("{\"events_in\":%" PRIu64 ",\"seconds\":%.6f,\"balanced\":%s,"
         "\"threads\":%u,\"outcomes\":", in, secs,
         balanced ? "true" : "false", lu_manager_threads(m));
  print_counts_json(stdout, c.outcomes);
  printf(",\"emitted\":");
  print_counts_json(stdout, c.derived);
  printf(",\"shards\":[");
  lu_count_t rest = c;
  for (unsigned i = 0; i < lu_manager_shard_count(m); i++) {
    lu_shard_stats_t s;
    lu_manager_shard_stats(m, i, &s);
    printf("%s{\"id\":\"%s\",\"routed\":%" PRIu64 ",\"forwarded\":%" PRIu64
           ",\"received\":%" PRIu64 ",\"retries\":%" PRIu64 ",\"outcomes\":",
           i ? "," : "", s.id, s.routed, s.forwarded, s.received, s.retries);
    print_counts_json(stdout, s.count.outcomes);
    printf(",\"emitted\":");
    print_counts_json(stdout, s.count.derived);
    printf("}");
    for (int k = 0; k < LU_OUTCOME__COUNT; k++) {
      rest.outcomes[k] -= s.count.outcomes[k];
      rest.derived[k] -= s.count.derived[k];
    }
  }
  printf("],\"intake\":{\"outcomes\":");
  print_counts_json(stdout, rest.outcomes);
  printf(",\"emitted\":");
  print_counts_json(stdout, rest.derived);
  printf("},\"functions\":[");
  for (size_t i = 0; i < lu_registry_count(reg); i++) {
    lu_fn_stats_t f;
    lu_manager_fn_stats(m, i, &f);
    printf("%s{\"name\":\"%s\",\"executions\":%" PRIu64 ",\"completed\":%" PRIu64
           ",\"failed\":%" PRIu64 ",\"retries\":%" PRIu64 ",\"timeouts\":%" PRIu64
           ",\"p50_us\":%.3f,\"p99_us\":%.3f,\"e2e_p50_us\":%.3f,"
           "\"e2e_p99_us\":%.3f,\"breaker_open\":%s}",
           i ? "," : "", f.name, f.executions, f.completed, f.failed,
           f.retries, f.timeouts, f.p50_ns / 1e3, f.p99_ns / 1e3,
           f.e2e_p50_ns / 1e3, f.e2e_p99_ns / 1e3,
           f.breaker_open ? "true" : "false");
  }
  printf("]}\n");
}

static void row(const char *name, const uint64_t *c, const uint64_t *d,
                const lu_shard_stats_t *s) {
  printf("  %-10s", name);
  if (s)
    printf(" %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %8" PRIu64, s->routed,
           s->forwarded, s->received, s->retries);
  else
    printf(" %9s %9s %9s %8s", "-", "-", "-", "-");
  for (int k = 0; k < LU_OUTCOME__COUNT; k++) printf(" %10" PRIu64, c[k]);
  printf(" %10" PRIu64 "\n", sum(d));
}

static void summary_text(lu_manager_t *m, const lu_registry_t *reg,
                         uint64_t in, double secs, const char *store,
                         int balanced) {
  lu_count_t c;
  lu_manager_counts(m, &c, NULL);
  unsigned n = lu_manager_shard_count(m);
  printf("lucent run: %" PRIu64 " events in %.3f s (%.0f events/s) on %u "
         "shard%s, store %s\n", in, secs, secs > 0 ? in / secs : 0.0, n,
         n == 1 ? "" : "s", store);
  printf("outcomes:  %" PRIu64 " completed, %" PRIu64 " failed, %" PRIu64
         " rejected, %" PRIu64 " dead-lettered = %" PRIu64 " %s\n",
         c.outcomes[0], c.outcomes[1], c.outcomes[2], c.outcomes[3],
         sum(c.outcomes), balanced ? "(all accounted for)" : "(MISMATCH)");
  printf("emitted:   %" PRIu64 " events by functions: %" PRIu64
         " completed, %" PRIu64 " failed, %" PRIu64 " rejected, %" PRIu64
         " dead-lettered\n", sum(c.derived), c.derived[0], c.derived[1],
         c.derived[2], c.derived[3]);
  printf("\nper shard (outcomes of input events; emitted = outcomes of "
         "emitted events):\n");
  printf("  %-10s %9s %9s %9s %8s %10s %10s %10s %10s %10s\n", "shard",
         "routed", "forwarded", "received", "retries", "completed", "failed",
         "rejected", "dead", "emitted");
  lu_count_t rest = c;
  for (unsigned i = 0; i < n; i++) {
    lu_shard_stats_t s;
    lu_manager_shard_stats(m, i, &s);
    row(s.id, s.count.outcomes, s.count.derived, &s);
    for (int k = 0; k < LU_OUTCOME__COUNT; k++) {
      rest.outcomes[k] -= s.count.outcomes[k];
      rest.derived[k] -= s.count.derived[k];
    }
  }
  row("intake", rest.outcomes, rest.derived, NULL);
  printf("\nper function (latency: inside the function; e2e: submit to "
         "stored):\n");
  printf("  %-22s %10s %10s %8s %8s %8s %10s %10s %10s %10s %7s\n",
         "function", "executions", "completed", "failed", "retries",
         "timeouts", "p50", "p99", "e2e p50", "e2e p99", "breaker");
  for (size_t i = 0; i < lu_registry_count(reg); i++) {
    lu_fn_stats_t f;
    lu_manager_fn_stats(m, i, &f);
    printf("  %-22s %10" PRIu64 " %10" PRIu64 " %8" PRIu64 " %8" PRIu64
           " %8" PRIu64 " %8.1fus %8.1fus %8.1fus %8.1fus %7s\n",
           f.name, f.executions, f.completed, f.failed, f.retries,
           f.timeouts, f.p50_ns / 1e3, f.p99_ns / 1e3, f.e2e_p50_ns / 1e3,
           f.e2e_p99_ns / 1e3, f.breaker_open ? "open" : "closed");
  }
}

int cmd_run(int argc, char **argv) {
  enum { O_MAXB = 256, O_QUEUE, O_DEPTH, O_CPU, O_MEM, O_BRK, O_BRKC, O_BATCH,
         O_SEED, O_NOPROG, O_WEIGHTS, O_HTTP, O_HOLD, O_LOGL, O_LOGF,
         O_THREADS };
  static const struct option opts[] = {
      {"plugin", required_argument, 0, 'p'},
      {"input", required_argument, 0, 'i'},
      {"shards", required_argument, 0, 'n'},
      {"store", required_argument, 0, 's'},
      {"threads", required_argument, 0, O_THREADS},
      {"json", no_argument, 0, 'j'},
      {"explain", no_argument, 0, 'x'},
      {"weights", required_argument, 0, O_WEIGHTS},
      {"max-event-bytes", required_argument, 0, O_MAXB},
      {"queue", required_argument, 0, O_QUEUE},
      {"max-depth", required_argument, 0, O_DEPTH},
      {"shard-cpu", required_argument, 0, O_CPU},
      {"shard-memory", required_argument, 0, O_MEM},
      {"breaker-failures", required_argument, 0, O_BRK},
      {"breaker-cooldown-ms", required_argument, 0, O_BRKC},
      {"batch", required_argument, 0, O_BATCH},
      {"seed", required_argument, 0, O_SEED},
      {"no-progress", no_argument, 0, O_NOPROG},
      {"http", required_argument, 0, O_HTTP},
      {"http-hold", no_argument, 0, O_HOLD},
      {"log-level", required_argument, 0, O_LOGL},
      {"log-format", required_argument, 0, O_LOGF},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  lu_config_t cfg;
  lu_config_init(&cfg);
  lu_registry_t *reg = NULL;
  const char *input = NULL, *http_addr = NULL;
  const char **plugins = calloc((size_t)argc + 1, sizeof *plugins);
  int json = 0, explain = 0, progress = 1, nplug = 0, hold = 0, c;
  lu_log_level_t log_level = LU_LOG_INFO;
  lu_log_format_t log_format = LU_LOG_FORMAT_AUTO;
  uint64_t v;
  if (!plugins || lu_registry_new(&reg)) {
    free(plugins);
    return 1;
  }
  optind = 1;
#define NUM(min, max, field, what)                                  \
  do {                                                              \
    if (parse_u64(optarg, min, max, &v)) {                          \
      cli_error("%s must be an integer in %llu..%llu (got '%s')",   \
                what, (unsigned long long)(min),                    \
                (unsigned long long)(max), optarg);                 \
      goto usage_err;                                               \
    }                                                               \
    field = v;                                                      \
  } while (0)
  while ((c = cli_getopt(argc, argv, "p:i:n:s:jxh", opts)) != -1) {
    switch (c) {
      case 'p': plugins[nplug++] = optarg; break;
      case 'i': input = optarg; break;
      case 'n': NUM(1, 256, cfg.shards, "--shards"); break;
      case O_THREADS: NUM(1, 1024, cfg.threads, "--threads"); break;
      case 's': cfg.store = optarg; break;
      case 'j': json = 1; break;
      case 'x': explain = 1; break;
      case O_WEIGHTS: {
        double w[4];
        if (parse_weights(optarg, w)) {
          cli_error("--weights wants four finite, non-negative numbers "
                    "load,resources,priority,affinity, not all 0 "
                    "(got '%s')", optarg);
          goto usage_err;
        }
        cfg.w_load = w[0], cfg.w_resources = w[1], cfg.w_priority = w[2],
        cfg.w_affinity = w[3];
        break;
      }
      case O_MAXB: NUM(64, 1u << 30, cfg.max_event_bytes, "--max-event-bytes"); break;
      case O_QUEUE: NUM(1, 1u << 24, cfg.queue_capacity, "--queue"); break;
      case O_DEPTH: NUM(1, 1000, cfg.max_depth, "--max-depth"); break;
      case O_CPU: NUM(0, 1u << 30, cfg.shard_cpu_millis, "--shard-cpu"); break;
      case O_MEM: NUM(0, 1u << 30, cfg.shard_memory_mb, "--shard-memory"); break;
      case O_BRK: NUM(0, 1u << 30, cfg.breaker_failures, "--breaker-failures"); break;
      case O_BRKC: NUM(0, 1u << 30, cfg.breaker_cooldown_ms, "--breaker-cooldown-ms"); break;
      case O_BATCH: NUM(1, 1u << 20, cfg.store_batch, "--batch"); break;
      case O_SEED: NUM(0, UINT64_MAX, cfg.seed, "--seed"); break;
      case O_NOPROG: progress = 0; break;
      case O_HTTP: http_addr = optarg; break;
      case O_HOLD: hold = 1; break;
      case O_LOGL:
        if (lu_log_parse_level(optarg, &log_level)) {
          cli_error("--log-level wants debug, info, warn, error or off "
                    "(got '%s')", optarg);
          goto usage_err;
        }
        break;
      case O_LOGF:
        if (lu_log_parse_format(optarg, &log_format)) {
          cli_error("--log-format wants json, text or auto (got '%s')",
                    optarg);
          goto usage_err;
        }
        break;
      case 'h':
        usage(stdout);
        lu_registry_free(reg);
        free(plugins);
        return 0;
      default: goto usage_err;
    }
  }
#undef NUM
  if (!nplug || !input || optind < argc || (hold && !http_addr)) {
    if (!nplug) cli_error("--plugin is required");
    else if (!input) cli_error("--input is required (a file, or - for stdin)");
    else if (optind < argc) cli_error("unexpected argument '%s'", argv[optind]);
    else cli_error("--http-hold needs --http");
    goto usage_err;
  }
  lu_log_set_format(log_format);
  lu_log_set_level(log_level);
  for (int i = 0; i < nplug; i++)
    if (lu_registry_load_plugin(reg, plugins[i])) {
      LU_LOG(LU_LOG_ERROR, NULL, NULL, LU_KVS(LU_KV_STR("plugin", plugins[i])),
             "cannot load plugin: %s", lu_registry_errmsg(reg));
      lu_registry_free(reg);
      free(plugins);
      return 1;
    }
  free(plugins);
  FILE *in = strcmp(input, "-") ? fopen(input, "r") : stdin;
  if (!in) {
    LU_LOG(LU_LOG_ERROR, NULL, NULL, LU_KVS(LU_KV_STR("input", input)),
           "cannot open input %s: %s", input, strerror(errno));
    lu_registry_free(reg);
    return 1;
  }
  /* A function that crashes takes the process with it.  The handler says
   * which function and event did it, and with a file store leaves a
   * marker beside it: the next run over the same input runs that line
   * isolated (a child process) and dead-letters it if it crashes again,
   * so one poison line cannot stop a rerun.  Reruns are idempotent: the
   * store ignores records it already has (same ids). */
  char marker[4096] = "";
  uint64_t suspect = 0;
  if (cfg.store && strcmp(cfg.store, ":memory:") &&
      (size_t)snprintf(marker, sizeof marker, "%s.crash", cfg.store) >=
          sizeof marker)
    marker[0] = 0;
  lu_crash_report_install(marker[0] ? marker : NULL);
  lu_crash_t crash;
  int mrc = marker[0] ? lu_crash_marker_read(marker, &crash) : LU_ENOENT;
  if (mrc && mrc != LU_ENOENT)
    LU_LOG(LU_LOG_WARN, NULL, NULL, LU_KVS(LU_KV_STR("marker", marker)),
           "crash marker %s cannot be read (%s): ignored", marker,
           lu_strerror(mrc));
  if (mrc == 0) {
    suspect = crash.line;
    LU_LOG(LU_LOG_WARN, NULL, NULL,
           LU_KVS(LU_KV_STR("function", crash.function),
                  LU_KV_STR("event", crash.event_id),
                  LU_KV_UINT("line", crash.line),
                  LU_KV_INT("signal", crash.signal),
                  LU_KV_STR("marker", marker)),
           "the last run over this store died of signal %d in %s on event "
           "%s (line %llu): that line runs isolated this time",
           crash.signal, crash.function, crash.event_id,
           (unsigned long long)crash.line);
  }
  /* Selection decisions: plain lines for --explain, debug records when
   * debug logs are on.  Off otherwise: explaining costs a scoring pass. */
  if (explain || lu_log_enabled(LU_LOG_DEBUG)) cfg.on_explain = on_explain;
  /* --http-hold: block the signals before any thread starts, so every
   * thread inherits the mask and only hold_main takes them. */
  hold_t hd = {.stop = 0};
  if (hold) {
    sigemptyset(&hd.set);
    sigaddset(&hd.set, SIGINT);
    sigaddset(&hd.set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &hd.set, NULL);
    pthread_mutex_init(&hd.lock, NULL);
    pthread_cond_init(&hd.cond, NULL);
    pthread_create(&hd.thread, NULL, hold_main, &hd);
  }
  lu_manager_t *m;
  char err[512];
  int rc = lu_manager_new(&m, &cfg, reg, err, sizeof err);
  if (rc) {
    LU_LOG(LU_LOG_ERROR, NULL, NULL, LU_KVS(LU_KV_STR("store", cfg.store)),
           "cannot start: %s", err[0] ? err : lu_strerror(rc));
    if (in != stdin) fclose(in);
    lu_registry_free(reg);
    if (hold) {
      pthread_cancel(hd.thread); /* sigwait is a cancellation point */
      pthread_join(hd.thread, NULL);
    }
    return 1;
  }
  lu_http_t *http = NULL;
  if (http_addr) {
    lu_obs_source_t src = {.manager = m, .store_path = cfg.store,
                           .bus = "inproc"};
    rc = lu_http_start(&http, http_addr, &src, err, sizeof err);
    if (rc) {
      LU_LOG(LU_LOG_ERROR, NULL, NULL, LU_KVS(LU_KV_STR("addr", http_addr)),
             "%s", err);
      lu_manager_free(m);
      if (in != stdin) fclose(in);
      lu_registry_free(reg);
      if (hold) {
        pthread_cancel(hd.thread);
        pthread_join(hd.thread, NULL);
      }
      return 1;
    }
    LU_LOG(LU_LOG_INFO, NULL, NULL, LU_KVS(LU_KV_STR("addr", lu_http_addr(http))),
           "http listening");
  }
  LU_LOG(LU_LOG_INFO, NULL, NULL,
         LU_KVS(LU_KV_STR("input", input), LU_KV_UINT("shards", cfg.shards),
                LU_KV_UINT("threads", lu_manager_threads(m)),
                LU_KV_STR("store", cfg.store),
                LU_KV_UINT("functions", lu_registry_count(reg)),
                LU_KV_STR("version", LU_VERSION)),
         "run started");
  progress_t prog = {.m = m};
  pthread_t pt;
  int show = progress && !json && isatty(2) && !cfg.on_explain;
  clock_gettime(CLOCK_MONOTONIC, &prog.t0);
  if (show) {
    pthread_mutex_init(&prog.lock, NULL);
    pthread_cond_init(&prog.cond, NULL);
    pthread_create(&pt, NULL, progress_main, &prog);
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  uint64_t lineno = 0;
  int interrupted = 0;
  while ((len = getline(&line, &cap, in)) >= 0) {
    if (hold && __atomic_load_n(&hd.stop, __ATOMIC_RELAXED)) {
      LU_LOG(LU_LOG_WARN, NULL, NULL, LU_KVS(LU_KV_UINT("line", lineno)),
             "interrupted: input not read past line %llu",
             (unsigned long long)lineno);
      interrupted = 1;
      break;
    }
    lineno++;
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
    size_t skip = 0;
    while ((ssize_t)skip < len && (line[skip] == ' ' || line[skip] == '\t'))
      skip++;
    if ((ssize_t)skip == len) continue; /* blank line: not an event */
    lu_input_t inp = {.json = line, .len = (size_t)len, .line = lineno,
                      .origin = input,
                      .delivery = suspect && lineno == suspect ? 2 : 1};
    lu_manager_submit_input(m, &inp);
  }
  int read_err = ferror(in);
  free(line);
  if (in != stdin) fclose(in);
  lu_manager_drain(m);
  double secs = since(&prog.t0);
  if (show) {
    pthread_mutex_lock(&prog.lock);
    prog.done = 1;
    pthread_cond_signal(&prog.cond);
    pthread_mutex_unlock(&prog.lock);
    pthread_join(pt, NULL);
  }
  lu_count_t counts;
  uint64_t events_in;
  lu_manager_counts(m, &counts, &events_in);
  int balanced = sum(counts.outcomes) == events_in;
  uint64_t store_errors = lu_manager_store_errors(m);
  LU_LOG(LU_LOG_INFO, NULL, NULL,
         LU_KVS(LU_KV_UINT("events_in", events_in),
                LU_KV_DBL("seconds", secs),
                LU_KV_UINT("events_per_second",
                           secs > 0 ? (uint64_t)(events_in / secs + 0.5) : 0),
                LU_KV_UINT("completed", counts.outcomes[LU_OUTCOME_COMPLETED]),
                LU_KV_UINT("failed", counts.outcomes[LU_OUTCOME_FAILED]),
                LU_KV_UINT("rejected", counts.outcomes[LU_OUTCOME_REJECTED]),
                LU_KV_UINT("dead_lettered",
                           counts.outcomes[LU_OUTCOME_DEAD_LETTERED]),
                LU_KV_UINT("emitted", sum(counts.derived)),
                LU_KV_BOOL("balanced", balanced),
                LU_KV_UINT("store_errors", store_errors)),
         "run finished");
  if (hold) {
    LU_LOG(LU_LOG_INFO, NULL, NULL,
           LU_KVS(LU_KV_STR("addr", lu_http_addr(http))),
           "input drained; serving until SIGINT or SIGTERM");
    pthread_mutex_lock(&hd.lock);
    while (!hd.stop) pthread_cond_wait(&hd.cond, &hd.lock);
    pthread_mutex_unlock(&hd.lock);
    pthread_join(hd.thread, NULL);
    LU_LOG(LU_LOG_INFO, NULL, NULL, LU_KVS(LU_KV_INT("signal", hd.signo)),
           "stopping on %s", hd.signo == SIGINT ? "SIGINT" : "SIGTERM");
    pthread_mutex_destroy(&hd.lock);
    pthread_cond_destroy(&hd.cond);
  }
  /* The marker has done its work once the suspect line has its outcome
   * (stored: a run with store errors keeps it for the next). */
  if (marker[0] && balanced && !store_errors && !read_err &&
      (!suspect || lineno >= suspect) && !interrupted)
    unlink(marker);
  if (json) summary_json(m, reg, events_in, secs, balanced);
  else summary_text(m, reg, events_in, secs, cfg.store, balanced);
  fflush(stdout);
  lu_http_stop(http);
  lu_manager_free(m);
  lu_registry_free(reg);
  if (read_err) {
    LU_LOG(LU_LOG_ERROR, NULL, NULL, LU_KVS(LU_KV_STR("input", input)),
           "error reading %s", input);
    return 1;
  }
  if (store_errors) {
    LU_LOG(LU_LOG_ERROR, NULL, NULL,
           LU_KVS(LU_KV_UINT("store_errors", store_errors),
                  LU_KV_STR("store", cfg.store)),
           "%llu store batches could not be written: see the messages "
           "above", (unsigned long long)store_errors);
    return 1;
  }
  if (!balanced) {
    LU_LOG(LU_LOG_ERROR, NULL, NULL,
           LU_KVS(LU_KV_UINT("events_in", events_in),
                  LU_KV_UINT("outcomes", sum(counts.outcomes))),
           "outcome counts do not add up to events in");
    return 1;
  }
  return 0;
usage_err:
  usage(stderr);
  lu_registry_free(reg);
  free(plugins);
  return 2;
}
