/*
 * bench_nats.c - lucent's NATS mode against raw nats.c on the same server,
 * in the same run (issue 3's bench/ deliverable; see bench/README.md,
 * section "NATS mode", and bench/nats.sh, which starts the server).
 *
 * Suite (the default command), R rounds (default 3), every configuration
 * once per round.  Each lucent configuration is paired with its raw
 * baseline: with its serves up, the two alternate in --slices slices
 * (default 5), so that both see the same moments of a shared machine;
 * each one's rate is its messages over its time, its latencies pooled.
 *
 *   raw JetStream   async publish (Nats-Msg-Id, 4096 pending) to a file
 *                   work-queue stream configured like LUCENT_INTAKE, and
 *                   at the same time a durable pull consumer on another
 *                   connection: Fetch(256) + Ack each.  From the first
 *                   publish until the consumer has acked all N.
 *   raw core        publish -> async subscription on another connection,
 *                   from the first publish until the subscriber has all N.
 *   raw req/reply   a responder replying with a ~150-byte body (the size
 *                   of lucent's exec reply); 1 in flight: p50/p99/p999,
 *                   64 in flight: requests/s.
 *   lucent events   K `lucent serve` processes (K in --shards, default
 *                   1,3) with bench/noop_plugin.c, started for the run:
 *                   N "Tick" events (round_robin NoopTick) published the
 *                   way `lucent publish` does (at-least-once: JetStream
 *                   async publish to lucent.intake.<p>, Nats-Msg-Id and
 *                   Lucent-Line headers; at-most-once: core publish to
 *                   lucent.amo.intake, no headers), from the first publish
 *                   until
 *                   N results have been published to LUCENT_EVENTS's
 *                   subjects (a core subscription on lucent.events.>
 *                   counts them, packs by their Lucent-Count: at-most-once
 *                   serves pack results).  Then the store is checked with
 *                   lucent's own reader: exactly N events, all
 *                   NoopTickCompleted (after the last slice: exactly
 *                   the events of every slice).
 *   lucent exec     the req/reply load generator against lucent.exec with
 *                   one CloudEvent per request; every reply must contain
 *                   "success":true.  On serves of each --delivery mode:
 *                   at-most-once serves pack the results they store.
 *   raw store-then-reply, a reference for exec: a responder that stores
 *                   each request in a file stream configured like
 *                   LUCENT_EVENTS (async publish, Nats-Msg-Id) and
 *                   replies once the ack is in - the floor of exec's
 *                   order (store the result, then answer), sliced in
 *                   with raw req/reply and lucent exec.
 *
 * Every message is one of the same ~310-byte CloudEvents (bench_pipeline's
 * events plus a "key" member in data).  Every connection has SendAsap on
 * (docs/nats-notes.md, trap 1), as lucent's own connections do.  CPU time per
 * message is read from /proc for this process, the serve processes and
 * (with --server-pid) nats-server.
 *
 * Subcommands for bench/peer/run.sh (JSON lines on stdout):
 *   rr       --system raw|store|lucent [--shards K] [--n1 N] [--n64 N]
 *            [--cdf F]
 *   events   --type Tick|Keyed --shards K --delivery alo|amo [-n N]
 *   keymove  [--keys N] [--workers a,b,c]  rendezvous key movement
 *
 * BENCH_SLICES=1 in the environment notes each events slice's two rates.
 *
 * Every load loop is bounded by a count and by --max-seconds.  Serve
 * processes are stopped by PID (SIGTERM, then SIGKILL after 20 s), also
 * when the bench dies or is interrupted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "intake_layout.h" /* partitions, routes */
#include "intake_pack.h" /* as `lucent publish` packs */
#include "membership.h" /* LU_SUBJ_*, LU_STREAM_*, lu__intake_partition */
#define BENCH_PROG "bench_nats"
#include "bench_util.h" /* die() exits: atexit kills the serves */

extern char **environ;

/* ---- helpers ---------------------------------------------------------- */

#define MAX_SERVES 16

static pid_t g_serve[MAX_SERVES];
static unsigned g_nserve;

static void kill_serves_now(void) {
  for (unsigned i = 0; i < g_nserve; i++)
    if (g_serve[i] > 0) kill(g_serve[i], SIGKILL);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("bench_nats: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static void on_signal(int sig) {
  kill_serves_now();
  signal(sig, SIG_DFL);
  raise(sig);
}


static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) && errno == EINTR) {
  }
}


/* CPU time (user + system) of a process, ns; 0 if unknown. */
static uint64_t proc_cpu_ns(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *p = strrchr(buf, ')'); /* the name may hold spaces */
  if (!p) return 0;
  unsigned long ut = 0, st = 0;
  /* after ')': state(3) ... utime(14) stime(15) */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
             &ut, &st) != 2)
    return 0;
  return (uint64_t)(ut + st) * (1000000000u / (uint64_t)sysconf(_SC_CLK_TCK));
}

static uint64_t self_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- options ---------------------------------------------------------- */

typedef struct opts_s {
  const char *url, *lucent, *plugin, *logdir, *json_path, *cdf_path;
  const char *system, *type, *workers;
  size_t n, n_base, n1, n64, rounds, keys;
  unsigned shards[8];
  size_t nshards;
  unsigned exec_shards[8];
  size_t nexec;
  int deliveries; /* bit 0: at-least-once, bit 1: at-most-once */
  pid_t server_pid;
  double max_seconds;
  size_t round0; /* label of the first round */
  const char *pack; /* at-most-once serves: --pack N (NULL: their default) */
  const char *forward; /* at-least-once serves: --forward (NULL: default) */
  int executed;        /* rr: serves answer exec once executed (issue 18) */
  size_t intake_pack;  /* at-least-once publisher: events per message */
  size_t slices; /* suite exec: raw and lucent alternate in this many */
  unsigned partitions; /* intake partitions of the serves' stream */
  unsigned plist[8];   /* partitions: the counts compared */
  size_t nplist;
} opts_t;

static opts_t O;
static FILE *g_json; /* per-run JSON lines, or NULL */

/* ---- events ----------------------------------------------------------- */

typedef struct events_s {
  char *text;
  size_t *off, *len;
  char nonce[24];
  size_t n, bytes;
  size_t first; /* a slice: the generator's index of its event 0 */
  unsigned *part; /* each event's intake partition (events_assign), or
                   * NULL: by its bytes */
} events_t;

enum { BY_BYTES, BY_SUBJECT, BY_ROUTE };

/* Each event's intake partition, computed before any clock starts: by
 * its bytes (spread evenly: the default), by its subject (protocol v1),
 * or by its routing key (v2: Keyed events route by data.key). */
static void events_assign(events_t *e, int by) {
  free(e->part);
  e->part = NULL;
  if (by == BY_BYTES) return;
  static const char table[] =
      "{\"version\":1,\"types\":{\"Keyed\":{\"strategy\":\"hash_based\","
      "\"key\":\"key\",\"function\":\"NoopKeyed\"}}}";
  lu_routes_t *routes = NULL;
  char why[160];
  if (by == BY_ROUTE &&
      lu__routes_parse(&routes, table, sizeof table - 1, why, sizeof why))
    die("routes");
  e->part = xmalloc(e->n * sizeof *e->part);
  for (size_t i = 0; i < e->n; i++) {
    lu_event_t *ev = NULL;
    const char *json = e->text + e->off[i];
    if (lu_event_parse(&ev, json, e->len[i], NULL, 0)) die("event %zu", i);
    e->part[i] = lu__intake_partition(routes, O.partitions, ev, json,
                                      e->len[i]);
    lu_event_free(ev);
  }
  lu__routes_free(routes);
}

static unsigned event_partition(const events_t *e, size_t i) {
  if (e->part) return e->part[i];
  return lu__intake_partition(NULL, O.partitions, NULL, e->text + e->off[i],
                              e->len[i]);
}


/* bench_pipeline's ~300-byte CloudEvents, plus data.key (10,000 distinct
 * shard keys), with ids unique to this call (a nonce), so that no run's
 * results are deduplicated against an earlier run's. */
static void gen_events(events_t *e, size_t n, const char *type) {
  static unsigned calls;
  memset(e, 0, sizeof *e);
  snprintf(e->nonce, sizeof e->nonce, "%05lx%03u",
           ((unsigned long)getpid() ^ (unsigned long)time(NULL)) & 0xfffff,
           ++calls % 1000);
  size_t cap = n * 420 + 1;
  e->text = xmalloc(cap);
  e->off = xmalloc(n * sizeof *e->off);
  e->len = xmalloc(n * sizeof *e->len);
  e->n = n;
  uint64_t rng = 42;
  size_t pos = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t r = lu__rand_next(&rng);
    unsigned stream = (unsigned)(r % 1000), tenant = (unsigned)(r >> 10) % 8,
             user = (unsigned)(r >> 20) % 5000,
             sensor = (unsigned)(r >> 33) % 64,
             key = (unsigned)(r >> 13) % 10000;
    double value = (double)((r >> 40) % 100000) / 100.0;
    unsigned ms = (unsigned)(i % 86400000u);
    int k = snprintf(
        e->text + pos, cap - pos,
        "{\"specversion\":\"1.0\",\"id\":\"evt-%s-%010zu\",\"type\":\"%s\","
        "\"source\":\"bench://sensors\",\"subject\":\"stream-%04u\","
        "\"time\":\"2025-01-01T%02u:%02u:%02u.%03uZ\","
        "\"correlationid\":\"corr-%010zu\",\"tenantid\":\"tenant-%u\","
        "\"userid\":\"user-%05u\",\"data\":{\"seq\":%zu,\"key\":\"k-%05u\","
        "\"sensor\":\"s-%02u\",\"value\":%.2f,\"unit\":\"C\",\"ok\":%s}}",
        e->nonce, i, type, stream, ms / 3600000u, ms / 60000u % 60,
        ms / 1000u % 60, ms % 1000u, i, tenant, user, i, key, sensor, value,
        (r & 1) ? "true" : "false");
    if (k < 0 || (size_t)k >= cap - pos) die("event %zu too long", i);
    e->off[i] = pos;
    e->len[i] = (size_t)k;
    pos += (size_t)k + 1;
  }
  e->bytes = pos - n;
}

static void events_free(events_t *e) {
  free(e->part);
  free(e->text);
  free(e->off);
  free(e->len);
  memset(e, 0, sizeof *e);
}

static double avg_bytes(const events_t *e) {
  return e->n ? (double)e->bytes / (double)e->n : 0;
}

/* Events from..from+n-1 of e, as a view: it owns nothing (free e). */
static events_t events_slice(const events_t *e, size_t from, size_t n) {
  events_t v = *e;
  v.off = e->off + from;
  v.len = e->len + from;
  v.part = e->part ? e->part + from : NULL;
  v.n = n;
  v.first = e->first + from;
  v.bytes = 0;
  for (size_t i = 0; i < n; i++) v.bytes += v.len[i];
  return v;
}

/* The event id of event i (what the generator wrote). */
static void event_id(const events_t *e, size_t i, char *buf, size_t cap) {
  snprintf(buf, cap, "evt-%s-%010zu", e->nonce, e->first + i);
}

/* ---- connections ------------------------------------------------------ */

static natsConnection *connect_to(const char *name) {
  natsOptions *no = NULL;
  natsConnection *nc = NULL;
  natsStatus s = natsOptions_Create(&no);
  if (s == NATS_OK) s = natsOptions_SetURL(no, O.url);
  if (s == NATS_OK) s = natsOptions_SetName(no, name);
  if (s == NATS_OK) s = natsOptions_SetSendAsap(no, true);
  if (s == NATS_OK) s = natsConnection_Connect(&nc, no);
  natsOptions_Destroy(no);
  if (s != NATS_OK)
    die("cannot connect to %s: %s (%s)", O.url, natsStatus_GetText(s),
        nats_GetLastError(NULL));
  return nc;
}

static jsCtx *js_of(natsConnection *nc, jsOptions *jo) {
  jsCtx *js = NULL;
  natsStatus s = natsConnection_JetStream(&js, nc, jo);
  if (s != NATS_OK) die("JetStream: %s", natsStatus_GetText(s));
  return js;
}

/* Deletes a stream if it exists. */
static void drop_stream(jsCtx *js, const char *name) {
  jsErrCode jerr = 0;
  natsStatus s = js_DeleteStream(js, name, NULL, &jerr);
  if (s != NATS_OK && s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
    note("cannot delete stream %s: %s (JetStream error %d)", name,
         natsStatus_GetText(s), (int)jerr);
}

static void drop_lucent_streams(jsCtx *js) {
  drop_stream(js, LU_STREAM_INTAKE);
  drop_stream(js, LU_STREAM_FWD);
  drop_stream(js, LU_STREAM_EVENTS);
}

static int count_row(void *ud, uint64_t seq, const char *json, size_t len) {
  (void)seq, (void)json, (void)len;
  (*(uint64_t *)ud)++;
  return 0;
}

/* ---- results ---------------------------------------------------------- */

typedef struct res_s {
  double rate;                    /* msgs/s, events/s or requests/s */
  double ratio;                   /* over the paired baseline */
  uint64_t p50, p99, p999, max;   /* ns, request/reply only */
  double cpu_client, cpu_serve, cpu_server; /* µs per message */
  size_t n, done, errors;
  char why[320];                  /* first error */
} res_t;

typedef struct cpu_snap_s {
  uint64_t self, serve, server;
} cpu_snap_t;

static cpu_snap_t cpu_snap(void) {
  cpu_snap_t c = {.self = self_cpu_ns()};
  for (unsigned i = 0; i < g_nserve; i++) c.serve += proc_cpu_ns(g_serve[i]);
  if (O.server_pid > 0) c.server = proc_cpu_ns(O.server_pid);
  return c;
}

static void cpu_fill(res_t *r, cpu_snap_t a, cpu_snap_t b, size_t n) {
  if (!n) return;
  r->cpu_client = (double)(b.self - a.self) / 1e3 / (double)n;
  r->cpu_serve = (double)(b.serve - a.serve) / 1e3 / (double)n;
  r->cpu_server = O.server_pid > 0
                      ? (double)(b.server - a.server) / 1e3 / (double)n
                      : -1;
}

static void json_run(const char *scenario, const char *system,
                     const char *config, size_t round, const res_t *r) {
  if (!g_json) return;
  fprintf(g_json,
          "{\"scenario\":\"%s\",\"system\":\"%s\",\"config\":\"%s\","
          "\"round\":%zu,\"n\":%zu,\"done\":%zu,\"errors\":%zu,"
          "\"rate\":%.1f,\"ratio\":%.4f,\"p50_us\":%.2f,\"p99_us\":%.2f,"
          "\"p999_us\":%.2f,\"max_us\":%.2f,\"cpu_client_us\":%.3f,"
          "\"cpu_serve_us\":%.3f,\"cpu_server_us\":%.3f}\n",
          scenario, system, config, round, r->n, r->done, r->errors, r->rate,
          r->ratio, (double)r->p50 / 1e3, (double)r->p99 / 1e3,
          (double)r->p999 / 1e3, (double)r->max / 1e3, r->cpu_client,
          r->cpu_serve, r->cpu_server);
  fflush(g_json);
}

/* ---- raw JetStream: async publish + pull Fetch(256) + Ack --------------- */

typedef struct acks_s {
  _Atomic uint64_t ok, dup, err;
} acks_t;

static void on_pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa,
                       jsPubAckErr *pae, void *closure) {
  (void)js, (void)pae;
  acks_t *a = closure;
  uint64_t n = lu__nats_msg_events(msg); /* an intake pack: its events */
  if (pa && pa->Duplicate) atomic_fetch_add(&a->dup, n);
  else if (pa) atomic_fetch_add(&a->ok, n);
  else atomic_fetch_add(&a->err, n);
  natsMsg_Destroy(msg);
}

/* An async JetStream publish that waits, up to the deadline, while 4096
 * are pending (nats.c gives up after StallWait with NATS_TIMEOUT and
 * leaves the message with us: send it again). */
static natsStatus pub_async(jsCtx *js, natsMsg **m, uint64_t deadline) {
  natsStatus s;
  do
    s = js_PublishMsgAsync(js, m, NULL);
  while (s == NATS_TIMEOUT && now_ns() < deadline);
  return s;
}

typedef struct pull_s {
  natsSubscription *sub;
  size_t want, got;
  uint64_t t_done, deadline;
} pull_t;

static void *pull_main(void *arg) {
  pull_t *p = arg;
  while (p->got < p->want && now_ns() < p->deadline) {
    natsMsgList list = {0};
    jsErrCode jerr = 0;
    natsStatus s = natsSubscription_Fetch(&list, p->sub, 256, 200, &jerr);
    if (s != NATS_OK) continue; /* timeout: nothing yet */
    for (int i = 0; i < list.Count; i++) natsMsg_Ack(list.Msgs[i], NULL);
    p->got += (size_t)list.Count;
    natsMsgList_Destroy(&list);
  }
  p->t_done = now_ns();
  return NULL;
}

#define RAW_STREAM "BENCH_RAW"

static res_t raw_js(const events_t *e, int consume) {
  res_t r = {.n = e->n};
  natsConnection *pc = connect_to("bench-raw-js-pub"),
                 *cc = connect_to("bench-raw-js-sub");
  acks_t acks = {0};
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = 4096;
  jo.PublishAsync.AckHandler = on_pub_ack;
  jo.PublishAsync.AckHandlerClosure = &acks;
  jo.PublishAsync.StallWait = 1000;
  jsCtx *js = js_of(pc, &jo), *jc = js_of(cc, NULL);
  drop_stream(jc, RAW_STREAM);
  char err[256];
  /* lucent's own stream settings: file storage, work queue, 2 min dedup. */
  const char *raw_subj[] = {"bench.raw.>"};
  if (lu__assets_queue(jc, RAW_STREAM, raw_subj, 1, NULL, err, sizeof err))
    die("raw JetStream: %s", err);
  jsConsumerConfig cfg;
  jsConsumerConfig_Init(&cfg);
  cfg.Durable = "raw";
  cfg.AckPolicy = js_AckExplicit;
  cfg.AckWait = (int64_t)10000 * 1000000;
  cfg.FilterSubject = "bench.raw.>";
  cfg.MaxAckPending = 8192;
  cfg.DeliverPolicy = js_DeliverAll;
  jsConsumerInfo *ci = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_AddConsumer(&ci, jc, RAW_STREAM, &cfg, NULL, &jerr);
  if (s != NATS_OK) die("raw consumer: %s (%d)", natsStatus_GetText(s), jerr);
  jsConsumerInfo_Destroy(ci);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = RAW_STREAM;
  so.Consumer = "raw";
  pull_t p = {.want = e->n,
              .deadline = now_ns() + (uint64_t)(O.max_seconds * 1e9)};
  s = js_PullSubscribe(&p.sub, jc, "bench.raw.>", "raw", NULL, &so, &jerr);
  if (s != NATS_OK) die("raw pull: %s (%d)", natsStatus_GetText(s), jerr);
  pthread_t th;
  cpu_snap_t c0 = cpu_snap();
  uint64_t t0 = now_ns();
  if (consume) pthread_create(&th, NULL, pull_main, &p);
  char id[64];
  for (size_t i = 0; i < e->n && now_ns() < p.deadline; i++) {
    natsMsg *m = NULL;
    event_id(e, i, id, sizeof id);
    s = natsMsg_Create(&m, "bench.raw.0", NULL, e->text + e->off[i],
                       (int)e->len[i]);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
    if (s == NATS_OK) s = pub_async(js, &m, p.deadline);
    if (s != NATS_OK) {
      natsMsg_Destroy(m);
      r.errors++;
    }
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = (int64_t)(O.max_seconds * 1000);
  js_PublishAsyncComplete(js, &po);
  if (consume) {
    pthread_join(th, NULL);
  } else { /* publish only: until every ack is in */
    p.t_done = now_ns();
    p.got = (size_t)atomic_load(&acks.ok);
  }
  cpu_snap_t c1 = cpu_snap();
  r.done = p.got;
  r.errors += (size_t)atomic_load(&acks.err) + (size_t)atomic_load(&acks.dup);
  r.rate = (double)p.got * 1e9 / (double)(p.t_done - t0);
  cpu_fill(&r, c0, c1, e->n);
  if (p.got != e->n || r.errors)
    snprintf(r.why, sizeof r.why, "%zu of %zu %s, %zu errors", p.got,
             e->n, consume ? "consumed" : "acked", r.errors);
  natsSubscription_Unsubscribe(p.sub);
  natsSubscription_Destroy(p.sub);
  drop_stream(jc, RAW_STREAM);
  jsCtx_Destroy(js);
  jsCtx_Destroy(jc);
  natsConnection_Destroy(pc);
  natsConnection_Destroy(cc);
  return r;
}

/* ---- raw core publish -> subscribe ------------------------------------ */

typedef struct core_s {
  _Atomic size_t got;
  size_t want;
  _Atomic uint64_t t_done;
} core_t;

static void on_core(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                    void *closure) {
  (void)nc, (void)sub;
  core_t *c = closure;
  if (atomic_fetch_add(&c->got, 1) + 1 == c->want)
    atomic_store(&c->t_done, now_ns());
  natsMsg_Destroy(msg);
}

/* Waits until *count reaches want; gives up after the deadline or after
 * `stall_s` seconds without progress. */
static void wait_count(_Atomic size_t *count, size_t want, uint64_t deadline,
                       double stall_s) {
  size_t last = 0;
  uint64_t since = now_ns();
  while (atomic_load(count) < want && now_ns() < deadline) {
    sleep_ms(1);
    size_t c = atomic_load(count);
    if (c != last) {
      last = c;
      since = now_ns();
    } else if (now_ns() - since > (uint64_t)(stall_s * 1e9)) {
      break;
    }
  }
}

static res_t raw_core(const events_t *e) {
  res_t r = {.n = e->n};
  natsConnection *pc = connect_to("bench-raw-core-pub"),
                 *sc = connect_to("bench-raw-core-sub");
  core_t c = {.want = e->n};
  natsSubscription *sub = NULL;
  natsStatus s = natsConnection_Subscribe(&sub, sc, "bench.core", on_core, &c);
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(sub, -1, -1);
  if (s == NATS_OK) s = natsConnection_Flush(sc);
  if (s != NATS_OK) die("raw core subscribe: %s", natsStatus_GetText(s));
  uint64_t deadline = now_ns() + (uint64_t)(O.max_seconds * 1e9);
  cpu_snap_t c0 = cpu_snap();
  uint64_t t0 = now_ns();
  for (size_t i = 0; i < e->n && now_ns() < deadline; i++)
    if (natsConnection_Publish(pc, "bench.core", e->text + e->off[i],
                               (int)e->len[i]) != NATS_OK)
      r.errors++;
  natsConnection_FlushTimeout(pc, 10000);
  wait_count(&c.got, e->n, deadline, 5);
  cpu_snap_t c1 = cpu_snap();
  r.done = atomic_load(&c.got);
  uint64_t t1 = r.done == e->n ? atomic_load(&c.t_done) : now_ns();
  r.rate = (double)r.done * 1e9 / (double)(t1 - t0);
  cpu_fill(&r, c0, c1, e->n);
  int64_t dropped = 0;
  natsSubscription_GetDropped(sub, &dropped);
  r.errors += (size_t)dropped;
  if (r.done != e->n || r.errors)
    snprintf(r.why, sizeof r.why, "%zu of %zu received, %" PRId64 " dropped",
             r.done, e->n, dropped);
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(pc);
  natsConnection_Destroy(sc);
  return r;
}

/* ---- request/reply load generator ------------------------------------- */

/* A reply of the size of lucent's (success, outcome, result, function,
 * shard, eventId, attempts): ~150 bytes. */
static const char RAW_REPLY[] =
    "{\"success\":true,\"outcome\":\"completed\",\"result\":{\"seq\":12345},"
    "\"function\":\"NoopTick\",\"shard\":\"s1\",\"eventId\":"
    "\"0f8c7d3e-5b1a-4e27-9c6d-2a4b8e1f7c90\",\"attempts\":1}";

static void on_raw_request(natsConnection *nc, natsSubscription *sub,
                           natsMsg *msg, void *closure) {
  (void)sub, (void)closure;
  const char *reply = natsMsg_GetReply(msg);
  if (reply && *reply)
    natsConnection_Publish(nc, reply, RAW_REPLY, (int)sizeof RAW_REPLY - 1);
  natsMsg_Destroy(msg);
}

/* ---- raw request -> JetStream store -> reply ----------------------------- */

/* The floor of "store, then answer", lucent exec's order: a responder
 * that publishes each request, async with a Nats-Msg-Id, to a file
 * stream configured like LUCENT_EVENTS and replies once the store's ack
 * is in (on nats.c's ack thread, as a serve does).  A reference for the
 * exec rows: raw request/reply answers without the second round trip. */
#define RAWST_STREAM "BENCH_STORE"
#define RAWST_SUBJ "bench.rrst"

typedef struct rawst_s {
  natsConnection *nc;
  jsCtx *js;
  natsSubscription *sub;
  _Atomic uint64_t seq;
} rawst_t;

static void on_rawst_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa,
                         jsPubAckErr *pae, void *closure) {
  (void)js, (void)pae;
  rawst_t *x = closure;
  const char *reply = NULL;
  if (pa && natsMsgHeader_Get(msg, "Bench-Reply", &reply) == NATS_OK &&
      reply && *reply) /* a refusal gets no reply: the bench counts it */
    natsConnection_Publish(x->nc, reply, RAW_REPLY,
                           (int)sizeof RAW_REPLY - 1);
  natsMsg_Destroy(msg);
}

static void on_rawst_request(natsConnection *nc, natsSubscription *sub,
                             natsMsg *msg, void *closure) {
  (void)nc, (void)sub;
  rawst_t *x = closure;
  const char *reply = natsMsg_GetReply(msg);
  char id[32];
  snprintf(id, sizeof id, "st-%" PRIu64, atomic_fetch_add(&x->seq, 1));
  natsMsg *m = NULL;
  natsStatus s = natsMsg_Create(&m, "bench.store.Tick", NULL,
                                natsMsg_GetData(msg),
                                natsMsg_GetDataLength(msg));
  if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
  if (s == NATS_OK && reply) s = natsMsgHeader_Set(m, "Bench-Reply", reply);
  if (s == NATS_OK) s = js_PublishMsgAsync(x->js, &m, NULL);
  if (s != NATS_OK) natsMsg_Destroy(m);
  natsMsg_Destroy(msg);
}

static void rawst_start(rawst_t *x) {
  memset(x, 0, sizeof *x);
  x->nc = connect_to("bench-store-responder");
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = 4096;
  jo.PublishAsync.AckHandler = on_rawst_ack;
  jo.PublishAsync.AckHandlerClosure = x;
  jo.PublishAsync.StallWait = 1000;
  x->js = js_of(x->nc, &jo);
  drop_stream(x->js, RAWST_STREAM);
  const char *subjects[] = {"bench.store.>"};
  jsStreamConfig cfg; /* LUCENT_EVENTS's settings (store_jetstream.c) */
  jsStreamConfig_Init(&cfg);
  cfg.Name = RAWST_STREAM;
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Retention = js_LimitsPolicy;
  cfg.Discard = js_DiscardOld;
  cfg.Duplicates = (int64_t)120 * 1000000000; /* ns */
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_AddStream(&si, x->js, &cfg, NULL, &jerr);
  jsStreamInfo_Destroy(si);
  if (s != NATS_OK)
    die("raw store stream: %s (%d)", natsStatus_GetText(s), (int)jerr);
  s = natsConnection_Subscribe(&x->sub, x->nc, RAWST_SUBJ, on_rawst_request,
                               x);
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(x->sub, -1, -1);
  if (s == NATS_OK) s = natsConnection_Flush(x->nc);
  if (s != NATS_OK) die("raw store responder: %s", natsStatus_GetText(s));
}

static void rawst_stop(rawst_t *x) {
  natsSubscription_Unsubscribe(x->sub);
  natsSubscription_Destroy(x->sub);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 5000;
  js_PublishAsyncComplete(x->js, &po);
  drop_stream(x->js, RAWST_STREAM);
  jsCtx_Destroy(x->js);
  natsConnection_Destroy(x->nc);
}

typedef struct rr_s {
  natsConnection *nc;
  const char *subject;
  const events_t *ev;
  size_t total, window;
  int check;
  natsInbox *inbox;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  size_t sent, recv, bad, inflight;
  uint64_t *sent_at; /* by slot */
  uint64_t *lat;     /* by arrival */
  uint64_t t_first, t_last, deadline;
  char first_bad[320];
} rr_t;

static int rr_send(rr_t *r, size_t slot) {
  pthread_mutex_lock(&r->mu);
  uint64_t t = now_ns();
  if (r->sent >= r->total || t > r->deadline) {
    pthread_mutex_unlock(&r->mu);
    return 0;
  }
  size_t i = r->sent++;
  if (!i) r->t_first = t;
  r->inflight++;
  pthread_mutex_unlock(&r->mu);
  char reply[160];
  snprintf(reply, sizeof reply, "%s.%zu", r->inbox, slot);
  size_t k = i % r->ev->n;
  r->sent_at[slot] = now_ns();
  natsStatus s = natsConnection_PublishRequest(
      r->nc, r->subject, reply, r->ev->text + r->ev->off[k],
      (int)r->ev->len[k]);
  if (s != NATS_OK) {
    pthread_mutex_lock(&r->mu);
    r->inflight--;
    if (!r->bad++)
      snprintf(r->first_bad, sizeof r->first_bad, "publish: %s",
               natsStatus_GetText(s));
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return 0;
  }
  return 1;
}

static void on_reply(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                     void *closure) {
  (void)nc, (void)sub;
  rr_t *r = closure;
  uint64_t t = now_ns();
  const char *subj = natsMsg_GetSubject(msg);
  const char *dot = strrchr(subj, '.');
  size_t slot = dot ? strtoul(dot + 1, NULL, 10) : SIZE_MAX;
  const char *data = natsMsg_GetData(msg);
  int len = natsMsg_GetDataLength(msg);
  int good = slot < r->window;
  if (good && r->check)
    good = data && len > 0 &&
           memmem(data, (size_t)len, "\"success\":true", 14) != NULL;
  pthread_mutex_lock(&r->mu);
  if (slot < r->window) {
    if (r->recv < r->total) r->lat[r->recv++] = t - r->sent_at[slot];
    r->inflight--;
    r->t_last = t;
  }
  if (!good && !r->bad++)
    snprintf(r->first_bad, sizeof r->first_bad, "reply: %.*s",
             len > 280 ? 280 : len, data ? data : "");
  pthread_mutex_unlock(&r->mu);
  natsMsg_Destroy(msg);
  if (slot < r->window) rr_send(r, slot);
  pthread_mutex_lock(&r->mu);
  if (!r->inflight) pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

/* `total` requests to `subject`, `window` in flight, each the next event of
 * ev; latencies from the publish of a request to the arrival of its reply.
 * Replies must contain "success":true when check is set. */
static res_t rr_run(natsConnection *nc, const char *subject,
                    const events_t *ev, size_t total, size_t window,
                    int check, uint64_t **samples) {
  res_t res = {.n = total};
  rr_t *r = calloc(1, sizeof *r);
  if (!r) die("out of memory");
  r->nc = nc;
  r->subject = subject;
  r->ev = ev;
  r->total = total;
  r->window = window;
  r->check = check;
  r->sent_at = calloc(window, sizeof *r->sent_at);
  r->lat = xmalloc(total * sizeof *r->lat);
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  natsSubscription *sub = NULL;
  char wild[160];
  natsStatus s = natsInbox_Create(&r->inbox);
  if (s == NATS_OK) {
    snprintf(wild, sizeof wild, "%s.*", r->inbox);
    s = natsConnection_Subscribe(&sub, nc, wild, on_reply, r);
  }
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(sub, -1, -1);
  if (s == NATS_OK) s = natsConnection_Flush(nc);
  if (s != NATS_OK) die("reply subscription: %s", natsStatus_GetText(s));
  r->deadline = now_ns() + (uint64_t)(O.max_seconds * 1e9);
  cpu_snap_t c0 = cpu_snap();
  for (size_t slot = 0; slot < window; slot++)
    if (!rr_send(r, slot)) break;
  pthread_mutex_lock(&r->mu);
  for (;;) {
    uint64_t t = now_ns();
    if (!r->inflight && (r->sent >= r->total || t > r->deadline)) break;
    if (t > r->deadline + 2000000000ull) break; /* replies lost */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100000000;
    if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
    pthread_cond_timedwait(&r->cv, &r->mu, &ts);
  }
  size_t lost = r->inflight;
  pthread_mutex_unlock(&r->mu);
  cpu_snap_t c1 = cpu_snap();
  natsSubscription_Unsubscribe(sub);
  if (lost) sleep_ms(500); /* let a late callback finish before freeing */
  natsSubscription_Destroy(sub);
  res.done = r->recv;
  res.errors = r->bad + lost + (r->sent < total ? total - r->sent : 0);
  if (r->bad) snprintf(res.why, sizeof res.why, "%s", r->first_bad);
  else if (lost || r->sent < total)
    snprintf(res.why, sizeof res.why,
             "%zu of %zu requests sent, %zu replies missing at the deadline",
             r->sent, total, lost);
  if (r->recv && r->t_last > r->t_first)
    res.rate = (double)r->recv * 1e9 / (double)(r->t_last - r->t_first);
  cpu_fill(&res, c0, c1, r->recv ? r->recv : 1);
  qsort(r->lat, r->recv, sizeof *r->lat, cmp_u64);
  res.p50 = pct(r->lat, r->recv, 0.50);
  res.p99 = pct(r->lat, r->recv, 0.99);
  res.p999 = pct(r->lat, r->recv, 0.999);
  res.max = r->recv ? r->lat[r->recv - 1] : 0;
  if (samples) {
    *samples = r->lat; /* sorted; the caller frees */
    res.done = r->recv;
  } else {
    free(r->lat);
  }
  natsInbox_Destroy(r->inbox);
  free(r->sent_at);
  if (!lost) {
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
  } /* else leaked on purpose: a late callback may still touch it */
  return res;
}

/* ---- lucent serve processes ------------------------------------------- */

static void on_hb(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                  void *closure) {
  (void)nc, (void)sub;
  char (*seen)[64] = closure;
  const char *subj = natsMsg_GetSubject(msg);
  const char *id = subj + strlen(LU_SUBJ_HB) + 1;
  for (unsigned i = 0; i < MAX_SERVES; i++) {
    if (!strcmp(seen[i], id)) break;
    if (!seen[i][0]) {
      snprintf(seen[i], 64, "%s", id);
      break;
    }
  }
  natsMsg_Destroy(msg);
}

/* Starts k serve processes s1..sk (or the given names) and waits until
 * every one is heard on the heartbeat subject and, at-least-once, every
 * intake partition and forward queue is being pulled. */
static void serves_start(natsConnection *ctl, jsCtx *jsm, unsigned k,
                         int amo, const char *const *names) {
  if (!O.lucent || !O.plugin) die("--lucent and --plugin are required");
  if (k > MAX_SERVES) die("at most %d serve processes", MAX_SERVES);
  char seen[MAX_SERVES][64];
  memset(seen, 0, sizeof seen);
  natsSubscription *hb = NULL;
  if (natsConnection_Subscribe(&hb, ctl, LU_SUBJ_HB ".*", on_hb, seen) !=
          NATS_OK ||
      natsConnection_Flush(ctl) != NATS_OK)
    die("cannot subscribe to heartbeats");
  char ids[MAX_SERVES][64];
  for (unsigned i = 0; i < k; i++) {
    if (names) snprintf(ids[i], sizeof ids[i], "%s", names[i]);
    else snprintf(ids[i], sizeof ids[i], "s%u", i + 1);
    char log[4200];
    snprintf(log, sizeof log, "%s/serve-%s.log", O.logdir, ids[i]);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log,
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char parts[16];
    snprintf(parts, sizeof parts, "%u", O.partitions);
    char *argv[24] = {(char *)O.lucent, "serve", "--nats", (char *)O.url,
                      "--shard", ids[i], "--plugin", (char *)O.plugin,
                      "--delivery", amo ? "at-most-once" : "at-least-once",
                      "--log-level", "info", "--log-format", "text"};
    int na = 14;
    if (amo && O.pack) argv[na++] = "--pack", argv[na++] = (char *)O.pack;
    if (!amo && O.forward)
      argv[na++] = "--forward", argv[na++] = (char *)O.forward;
    if (!amo) argv[na++] = "--partitions", argv[na++] = parts;
    if (O.executed) argv[na++] = "--exec-reply", argv[na++] = "executed";
    pid_t pid;
    int rc = posix_spawn(&pid, O.lucent, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) die("cannot start %s serve: %s", O.lucent, strerror(rc));
    g_serve[g_nserve++] = pid;
  }
  uint64_t until = now_ns() + 20000000000ull;
  unsigned heard = 0;
  while (now_ns() < until) {
    heard = 0;
    for (unsigned i = 0; i < k; i++)
      for (unsigned j = 0; j < MAX_SERVES; j++)
        if (!strcmp(seen[j], ids[i])) heard++;
    if (heard == k) break;
    for (unsigned i = 0; i < g_nserve; i++) {
      int st;
      if (waitpid(g_serve[i], &st, WNOHANG) == g_serve[i]) {
        g_serve[i] = -1;
        die("a serve process exited at start (see %s/serve-*.log)",
            O.logdir);
      }
    }
    sleep_ms(20);
  }
  natsSubscription_Unsubscribe(hb);
  natsSubscription_Destroy(hb);
  if (heard != k) die("only %u of %u serve processes joined within 20 s", heard,
                      k);
  /* Every shard sees every other after one more heartbeat round. */
  sleep_ms(600);
  if (!amo) {
    until = now_ns() + 15000000000ull;
    unsigned P = O.partitions, pulled = 0, want = P + k;
    while (now_ns() < until) {
      pulled = 0;
      for (unsigned p = 0; p < want; p++) {
        char name[96];
        const char *stream = LU_STREAM_INTAKE;
        if (p < P) {
          snprintf(name, sizeof name, "intake-%u", p);
        } else {
          snprintf(name, sizeof name, "fwd-%s", ids[p - P]);
          stream = LU_STREAM_FWD;
        }
        jsConsumerInfo *ci = NULL;
        if (js_GetConsumerInfo(&ci, jsm, stream, name, NULL, NULL) ==
            NATS_OK) {
          if (ci->NumWaiting > 0) pulled++;
          jsConsumerInfo_Destroy(ci);
        }
      }
      if (pulled == want) break;
      sleep_ms(50);
    }
    if (pulled != want)
      note("only %u of %u consumers are being pulled after 15 s", pulled,
           want);
  }
  sleep_ms(500);
}

static void serves_stop(void) {
  for (unsigned i = 0; i < g_nserve; i++)
    if (g_serve[i] > 0) kill(g_serve[i], SIGTERM);
  uint64_t until = now_ns() + 20000000000ull;
  for (unsigned i = 0; i < g_nserve; i++) {
    if (g_serve[i] <= 0) continue;
    int st = 0;
    pid_t w = 0;
    while ((w = waitpid(g_serve[i], &st, WNOHANG)) == 0 && now_ns() < until)
      sleep_ms(10);
    if (w == 0) {
      note("serve pid %ld did not stop within 20 s: SIGKILL",
           (long)g_serve[i]);
      kill(g_serve[i], SIGKILL);
      waitpid(g_serve[i], &st, 0);
    } else if (w == g_serve[i] && (!WIFEXITED(st) || WEXITSTATUS(st))) {
      note("serve pid %ld ended with status 0x%x (see %s/serve-*.log)",
           (long)g_serve[i], st, O.logdir);
    }
    g_serve[i] = -1;
  }
  g_nserve = 0;
}

static void cleanup_at_exit(void) {
  for (unsigned i = 0; i < g_nserve; i++)
    if (g_serve[i] > 0) {
      kill(g_serve[i], SIGKILL);
      waitpid(g_serve[i], NULL, 0);
    }
  g_nserve = 0;
}

/* ---- lucent: events through publish -> route -> execute -> stored ------ */

/* Publishes e in intake packs, as `lucent publish` does: a pack goes when
 * it is full, the rest at the end.  Returns the events that failed. */
static size_t publish_packed(jsCtx *js, lu_packer_t *packer,
                             const events_t *e, uint64_t deadline) {
  size_t failed = 0;
  char id[64];
  for (size_t i = 0; i <= e->n && now_ns() < deadline;) {
    natsMsg *m = NULL;
    if (i < e->n) {
      event_id(e, i, id, sizeof id);
      const char *json = e->text + e->off[i];
      lu__packer_add(packer, event_partition(e, i),
                     id, json, e->len[i], e->first + i + 1, &m, &failed);
      i++;
    } else {
      lu__packer_flush(packer, &m, &failed);
      if (!m) break;
    }
    if (m && pub_async(js, &m, deadline) != NATS_OK) {
      failed += lu__nats_msg_events(m);
      natsMsg_Destroy(m);
    }
  }
  return failed + lu__packer_pending(packer); /* past the deadline */
}

/* The results, as they reach the store's subjects: counted on a
 * connection of its own, so that the publisher's does not also carry
 * them.  One watch spans every slice run against the same serves. */
typedef struct watch_s {
  natsConnection *obs;
  natsSubscription *sub;
  _Atomic uint64_t stored; /* results seen (a pack: its Lucent-Count) */
  _Atomic uint64_t want;   /* the count a slice waits for, */
  _Atomic uint64_t t_want; /* and when it was reached */
} watch_t;

static void on_stored(natsConnection *nc, natsSubscription *sub, natsMsg *m,
                      void *closure) {
  (void)nc, (void)sub;
  watch_t *w = closure;
  uint64_t k = lu__nats_msg_events(m);
  uint64_t was = atomic_fetch_add(&w->stored, k), want = atomic_load(&w->want);
  if (was < want && was + k >= want) atomic_store(&w->t_want, now_ns());
  natsMsg_Destroy(m);
}

static void watch_open(watch_t *w) {
  w->obs = connect_to("bench-stored");
  w->sub = NULL;
  atomic_store(&w->stored, 0);
  atomic_store(&w->want, UINT64_MAX);
  if (natsConnection_Subscribe(&w->sub, w->obs, LU_SUBJ_EVENTS ".>",
                               on_stored, w) != NATS_OK ||
      natsSubscription_SetPendingLimits(w->sub, -1, -1) != NATS_OK ||
      natsConnection_Flush(w->obs) != NATS_OK)
    die("cannot subscribe to %s.>", LU_SUBJ_EVENTS);
}

static void watch_close(watch_t *w) {
  natsSubscription_Destroy(w->sub);
  natsConnection_Destroy(w->obs);
  memset(w, 0, sizeof *w);
}

/* One lucent run (or slice of one): e published the way `lucent publish`
 * does, from the first publish until w has counted e->n more results. */
static res_t lucent_slice(natsConnection *nc, const events_t *e, int amo,
                          watch_t *w) {
  res_t r = {.n = e->n};
  acks_t acks = {0};
  jsCtx *js = NULL;
  if (!amo) {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 4096; /* as `lucent publish` */
    jo.PublishAsync.AckHandler = on_pub_ack;
    jo.PublishAsync.AckHandlerClosure = &acks;
    jo.PublishAsync.StallWait = 1000;
    js = js_of(nc, &jo);
  }
  uint64_t deadline = now_ns() + (uint64_t)(O.max_seconds * 1e9);
  lu_packer_t *packer = NULL;
  if (!amo && O.intake_pack > 1 &&
      lu__packer_new(&packer, O.intake_pack, O.partitions))
    die("out of memory");
  uint64_t before = atomic_load(&w->stored);
  atomic_store(&w->t_want, 0);
  atomic_store(&w->want, before + e->n);
  cpu_snap_t c0 = cpu_snap();
  uint64_t t0 = now_ns();
  char id[64];
  if (packer) {
    r.errors += publish_packed(js, packer, e, deadline);
    lu__packer_free(packer);
  }
  for (size_t i = 0; !packer && i < e->n && now_ns() < deadline; i++) {
    const char *json = e->text + e->off[i];
    size_t len = e->len[i];
    if (amo) { /* as `lucent publish`: valid events travel bare */
      if (natsConnection_Publish(nc, LU_SUBJ_AMO_INTAKE, json, (int)len) !=
          NATS_OK)
        r.errors++;
      continue;
    }
    natsMsg *m = NULL;
    event_id(e, i, id, sizeof id);
    natsStatus s = lu__intake_msg(&m, event_partition(e, i), id, json, len,
                                  e->first + i + 1);
    if (s == NATS_OK) s = pub_async(js, &m, deadline);
    if (s != NATS_OK) {
      natsMsg_Destroy(m);
      r.errors++;
    }
  }
  if (amo) {
    natsConnection_FlushTimeout(nc, 10000);
  } else {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = (int64_t)(O.max_seconds * 1000);
    js_PublishAsyncComplete(js, &po);
  }
  /* Until a result per input has gone to the store. */
  uint64_t have = 0, last = 0, since = now_ns(), t1 = 0;
  while (now_ns() < deadline) {
    have = atomic_load(&w->stored) - before;
    if (have >= e->n) {
      t1 = atomic_load(&w->t_want);
      if (!t1) t1 = now_ns();
      break;
    }
    if (have != last) {
      last = have;
      since = now_ns();
    } else if (now_ns() - since > 20000000000ull) {
      break; /* no progress for 20 s */
    }
    sleep_ms(1);
  }
  cpu_snap_t c1 = cpu_snap();
  atomic_store(&w->want, UINT64_MAX);
  if (!t1) t1 = now_ns();
  r.done = (size_t)(have > e->n ? e->n : have);
  r.rate = (double)r.done * 1e9 / (double)(t1 - t0);
  cpu_fill(&r, c0, c1, e->n);
  size_t perr = (size_t)atomic_load(&acks.err);
  r.errors += perr + (size_t)atomic_load(&acks.dup);
  if (r.done != e->n || r.errors)
    snprintf(r.why, sizeof r.why, "%zu of %zu results seen; %zu publish "
             "errors", r.done, e->n, perr);
  jsCtx_Destroy(js);
  return r;
}

/* After the runs against the same serves: the store holds exactly `total`
 * events, all fn's results, read the way `lucent events --nats` reads it
 * (packs included).  What is missing or extra counts as errors of r. */
static void store_check(watch_t *w, size_t total, const char *fn, res_t *r) {
  sleep_ms(200);
  char want[128], err[160] = "";
  snprintf(want, sizeof want, "%sCompleted", fn);
  uint64_t good = 0;
  int64_t all = -1;
  lu_store_t *st = NULL;
  if (lu__store_jetstream_open(&st, w->obs, 0, 0, err, sizeof err) == 0) {
    lu_query_t q = {.type = want};
    if (lu_store_query(st, &q, count_row, &good) != 0)
      snprintf(err, sizeof err, "%s", lu_store_errmsg(st));
    all = lu_store_count(st);
    lu_store_close(st);
  }
  if (good == total && all == (int64_t)total) return;
  r->errors += (size_t)(good > total ? good - total : total - good) +
               (all < 0 ? total : 0);
  snprintf(r->why, sizeof r->why,
           "store holds %" PRIu64 " %.60s (want %zu) of %" PRId64
           " events%s%.150s",
           good, want, total, all, err[0] ? "; " : "", err);
}

/* One unsliced run: e through the serves, then the store checked. */
static res_t lucent_events(natsConnection *nc, const events_t *e, int amo,
                           const char *fn) {
  watch_t w;
  watch_open(&w);
  res_t r = lucent_slice(nc, e, amo, &w);
  store_check(&w, e->n, fn, &r);
  watch_close(&w);
  return r;
}

/* ---- summaries -------------------------------------------------------- */

typedef struct sum_s {
  double med, min, max;
} sum_t;

static sum_t sum_of(const double *v, size_t n) {
  double t[256];
  if (n > 256) n = 256;
  memcpy(t, v, n * sizeof *t);
  qsort(t, n, sizeof *t, cmp_dbl);
  sum_t s = {n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2, t[0],
             t[n - 1]};
  return s;
}

#define FIELD(runs, n, expr, out)                          \
  do {                                                     \
    double v_[256];                                        \
    for (size_t i_ = 0; i_ < (n) && i_ < 256; i_++) {      \
      const res_t *x = &(runs)[i_];                        \
      v_[i_] = (double)(expr);                             \
    }                                                      \
    out = sum_of(v_, (n));                                 \
  } while (0)

static const char *fmt_rate(char *b, size_t cap, double v) {
  if (v >= 1e6) snprintf(b, cap, "%.2fM", v / 1e6);
  else if (v >= 1e4) snprintf(b, cap, "%.0fk", v / 1e3);
  else if (v >= 1e3) snprintf(b, cap, "%.1fk", v / 1e3);
  else snprintf(b, cap, "%.0f", v);
  return b;
}

static const char *fmt_us(char *b, size_t cap, double ns) {
  if (ns >= 1e6) snprintf(b, cap, "%.2f ms", ns / 1e6);
  else snprintf(b, cap, "%.0f µs", ns / 1e3);
  return b;
}

static const char *fmt_cpu(char *b, size_t cap, sum_t c, sum_t s, sum_t v) {
  char x[32], y[32];
  snprintf(x, sizeof x, "%.1f", s.med);
  snprintf(y, sizeof y, "%.1f", v.med);
  snprintf(b, cap, "%.1f / %s / %s", c.med, s.med > 0 ? x : "-",
           v.med >= 0 ? y : "-");
  return b;
}

/* ---- the suite -------------------------------------------------------- */

/* Pools slices of one system's request/reply runs: requests and time
 * summed (rate = requests / time), latencies merged, CPU per request
 * weighted by requests. */
typedef struct pool_s {
  res_t r;
  double secs, cpu[3];
  uint64_t *lat;
  size_t nlat;
} pool_t;

static void pool_add(pool_t *p, const res_t *x, uint64_t *lat) {
  p->r.n += x->n;
  p->r.done += x->done;
  if (x->errors && !p->r.errors)
    snprintf(p->r.why, sizeof p->r.why, "%s", x->why);
  p->r.errors += x->errors;
  if (x->rate > 0) p->secs += (double)x->done / x->rate;
  p->cpu[0] += x->cpu_client * (double)x->done;
  p->cpu[1] += x->cpu_serve * (double)x->done;
  p->cpu[2] += x->cpu_server * (double)x->done;
  if (!lat) return; /* a throughput run: no latencies */
  uint64_t *l = realloc(p->lat, (p->nlat + x->done + 1) * sizeof *l);
  if (!l) die("out of memory");
  memcpy(l + p->nlat, lat, x->done * sizeof *l);
  p->lat = l;
  p->nlat += x->done;
  free(lat);
}

static res_t pool_end(pool_t *p) {
  res_t r = p->r;
  double n = r.done ? (double)r.done : 1;
  r.rate = p->secs > 0 ? (double)r.done / p->secs : 0;
  r.cpu_client = p->cpu[0] / n;
  r.cpu_serve = p->cpu[1] / n;
  r.cpu_server = p->cpu[2] / n;
  if (p->nlat) qsort(p->lat, p->nlat, sizeof *p->lat, cmp_u64);
  r.p50 = pct(p->lat, p->nlat, 0.50);
  r.p99 = pct(p->lat, p->nlat, 0.99);
  r.p999 = pct(p->lat, p->nlat, 0.999);
  r.max = p->nlat ? p->lat[p->nlat - 1] : 0;
  free(p->lat);
  return r;
}

/* `total` requests, `window` in flight, to the raw responder, to the raw
 * store-then-reply responder and to lucent.exec in turn, O.slices slices
 * each: the three results. */
static void rr_paired(natsConnection *cli, const events_t *req,
                      const events_t *tick, size_t total, size_t window,
                      res_t *raw, res_t *store, res_t *luc) {
  size_t k = O.slices ? O.slices : 1, per = total / k ? total / k : 1;
  pool_t pr = {0}, ps = {0}, pl = {0};
  for (size_t i = 0; i < k; i++) {
    uint64_t *lat = NULL;
    res_t x = rr_run(cli, "bench.rr", req, per, window, 1, &lat);
    x.cpu_serve = 0; /* the serves idle meanwhile: not the raw's */
    pool_add(&pr, &x, lat);
    x = rr_run(cli, RAWST_SUBJ, req, per, window, 1, &lat);
    x.cpu_serve = 0;
    pool_add(&ps, &x, lat);
    x = rr_run(cli, LU_SUBJ_EXEC, tick, per, window, 1, &lat);
    pool_add(&pl, &x, lat);
  }
  *raw = pool_end(&pr);
  *store = pool_end(&ps);
  *luc = pool_end(&pl);
}

/* The events pairing, with k serves up: the raw baseline (core pub/sub
 * at-most-once, JetStream publish + consume at-least-once) on base and
 * lucent on ev, in turn, O.slices slices each; then the store holds
 * exactly the slices' events.  The pair of results. */
static void events_paired(natsConnection *cli, const events_t *base,
                          const events_t *ev, int amo, res_t *raw,
                          res_t *luc) {
  size_t k = O.slices ? O.slices : 1;
  size_t pb = base->n / k ? base->n / k : 1, pe = ev->n / k ? ev->n / k : 1;
  pool_t pr = {0}, pl = {0};
  watch_t w;
  watch_open(&w);
  for (size_t i = 0; i < k && (i + 1) * pe <= ev->n; i++) {
    events_t b = events_slice(base, (i * pb) % (base->n - pb + 1), pb);
    res_t x = amo ? raw_core(&b) : raw_js(&b, 1);
    x.cpu_serve = 0; /* the serves idle meanwhile: not the raw's */
    pool_add(&pr, &x, NULL);
    events_t t = events_slice(ev, i * pe, pe);
    res_t y = lucent_slice(cli, &t, amo, &w);
    if (getenv("BENCH_SLICES"))
      note("slice %zu: raw %.0f/s, lucent %.0f/s", i + 1, x.rate, y.rate);
    pool_add(&pl, &y, NULL);
  }
  *raw = pool_end(&pr);
  *luc = pool_end(&pl);
  store_check(&w, luc->n, "NoopTick", luc);
  watch_close(&w);
}

enum {
  K_JS, K_CORE, K_RR1, K_RR64, K_JSPUB, K_ST1, K_ST64, /* raw */
  K_ALO, K_AMO, K_EX1, K_EX64                          /* lucent */
};

typedef struct cfg_s {
  int kind;
  unsigned shards;
  int amo;      /* exec: serves with --delivery at-most-once (packs) */
  char name[128];
  res_t *runs;  /* R; raw configs: every baseline run */
  size_t nruns;
  int base;     /* index of the raw config it is paired with, -1 = raw */
} cfg_t;

static void check_run(const char *what, const res_t *r) {
  if (r->errors || r->done != r->n)
    note("%s: %zu of %zu done, %zu errors: %s", what, r->done, r->n,
         r->errors, r->why[0] ? r->why : "-");
}

/* A suite run of configuration c: checked, kept for the tables, written
 * as a JSON line. */
static void keep_run(cfg_t *c, const res_t *r, const char *scenario,
                     const char *system, size_t round) {
  check_run(c->name, r);
  c->runs[c->nruns++] = *r;
  json_run(scenario, system, c->name, round, r);
}

static int suite(void) {
  size_t R = O.rounds;
  natsConnection *ctl = connect_to("bench-ctl"), *resp = connect_to(
                                                     "bench-responder");
  jsCtx *jsm = js_of(ctl, NULL);
  natsSubscription *rsub = NULL;
  natsStatus st = natsConnection_Subscribe(&rsub, resp, "bench.rr",
                                          on_raw_request, NULL);
  if (st == NATS_OK) st = natsSubscription_SetPendingLimits(rsub, -1, -1);
  if (st == NATS_OK) st = natsConnection_Flush(resp);
  if (st != NATS_OK)
    die("raw responder: %s (%s)", natsStatus_GetText(st),
        nats_GetLastError(NULL));
  natsConnection *cli = connect_to("bench-client");

  /* Configurations. */
  cfg_t cs[64];
  size_t nc = 0;
  const char *raw_names[] = {
      "raw JetStream: async publish + pull Fetch(256) + Ack",
      "raw core: publish -> subscribe",
      "raw request/reply, 1 in flight",
      "raw request/reply, 64 in flight",
      "raw JetStream: async publish only (a result's write), reference",
      "raw request -> JetStream store -> reply, 1 in flight, reference",
      "raw request -> JetStream store -> reply, 64 in flight, reference"};
  for (int k = K_JS; k <= K_ST64; k++) {
    cs[nc] = (cfg_t){.kind = k, .base = -1};
    snprintf(cs[nc].name, sizeof cs[nc].name, "%s", raw_names[k]);
    nc++;
  }
  for (int d = 0; d < 2; d++) {
    if (!(O.deliveries & (1 << d))) continue;
    for (size_t s = 0; s < O.nshards; s++) {
      cs[nc] = (cfg_t){.kind = d ? K_AMO : K_ALO, .shards = O.shards[s],
                       .base = d ? K_CORE : K_JS};
      snprintf(cs[nc].name, sizeof cs[nc].name, "lucent %s, %u serve%s",
               d ? "at-most-once" : "at-least-once", O.shards[s],
               O.shards[s] == 1 ? "" : "s");
      nc++;
    }
  }
  /* exec on serves of each delivery mode asked for: request/reply is the
   * same in both, but at-most-once serves pack the results they store. */
  for (int d = 0; d < 2; d++) {
    if (!(O.deliveries & (1 << d))) continue;
    for (size_t s = 0; s < O.nexec; s++)
      for (int w = 0; w < 2; w++) {
        cs[nc] = (cfg_t){.kind = w ? K_EX64 : K_EX1,
                         .shards = O.exec_shards[s], .amo = d,
                         .base = w ? K_RR64 : K_RR1};
        snprintf(cs[nc].name, sizeof cs[nc].name,
                 "lucent exec, %s in flight, %u serve%s%s", w ? "64" : "1",
                 O.exec_shards[s], O.exec_shards[s] == 1 ? "" : "s",
                 d ? ", at-most-once serve (packed results)" : "");
        nc++;
      }
  }
  for (size_t i = 0; i < nc; i++) {
    cs[i].runs = calloc(R * nc, sizeof *cs[i].runs);
    if (!cs[i].runs) die("out of memory");
  }

  events_t tick, base_ev, req;
  memset(&tick, 0, sizeof tick);
  memset(&base_ev, 0, sizeof base_ev);
  memset(&req, 0, sizeof req);
  size_t nreq = O.n1 > O.n64 ? O.n1 : O.n64;
  gen_events(&base_ev, O.n_base, "Tick");
  gen_events(&req, nreq, "Tick");
  note("events: %.0f bytes on average; %zu per lucent run, %zu per "
       "throughput baseline, %zu (1 in flight) and %zu (64 in flight) "
       "requests; %zu rounds",
       avg_bytes(&base_ev), O.n, O.n_base, O.n1, O.n64, R);

  /* Warm-up: the server's and the client's paths. */
  {
    events_t w = base_ev;
    w.n = w.n < 20000 ? w.n : 20000;
    (void)raw_core(&w);
    (void)raw_js(&w, 1);
    (void)rr_run(cli, "bench.rr", &req, 2000, 1, 1, NULL);
  }
  drop_lucent_streams(jsm);

  for (size_t r = 0; r < R; r++) {
    for (size_t i = 0; i < nc; i++) {
      cfg_t *c = &cs[i];
      if (c->base < 0 || c->kind == K_EX64) continue; /* EX64 with EX1 */
      if (c->kind == K_ALO || c->kind == K_AMO) {
        int amo = c->kind == K_AMO;
        cfg_t *b = &cs[c->base];
        if (amo) { /* the JetStream write every stored result costs */
          cfg_t *jp = &cs[K_JSPUB];
          res_t pr = raw_js(&base_ev, 0);
          keep_run(jp, &pr, "jetstream-publish", "raw", r + 1);
        }
        gen_events(&tick, O.n, "Tick");
        serves_start(ctl, jsm, c->shards, amo, NULL);
        res_t br, lr;
        events_paired(cli, &base_ev, &tick, amo, &br, &lr);
        serves_stop();
        drop_lucent_streams(jsm);
        events_free(&tick);
        lr.ratio = br.rate > 0 ? lr.rate / br.rate : 0;
        keep_run(b, &br, amo ? "core" : "jetstream", "raw", r + 1);
        keep_run(c, &lr, amo ? "events-amo" : "events-alo", "lucent", r + 1);
        note("round %zu  %-40s %8.0f ev/s  (%s %8.0f/s: %5.1f%%)  CPU "
             "µs/ev: serves %.1f, nats-server %.1f, publisher %.1f",
             r + 1, c->name, lr.rate, amo ? "core" : "JetStream", br.rate,
             100 * lr.ratio, lr.cpu_serve, lr.cpu_server, lr.cpu_client);
      } else { /* exec, 1 and 64 in flight */
        cfg_t *c64 = &cs[i + 1], *b1 = &cs[K_RR1], *b64 = &cs[K_RR64];
        serves_start(ctl, jsm, c->shards, c->amo, NULL);
        rawst_t rst;
        rawst_start(&rst);
        (void)rr_run(cli, LU_SUBJ_EXEC, &req, 1000, 1, 1, NULL); /* warm */
        (void)rr_run(cli, RAWST_SUBJ, &req, 1000, 1, 1, NULL);
        gen_events(&tick, nreq, "Tick"); /* fresh ids */
        res_t r1, r64, s1, s64, e1, e64;
        rr_paired(cli, &req, &tick, O.n1, 1, &r1, &s1, &e1);
        rr_paired(cli, &req, &tick, O.n64, 64, &r64, &s64, &e64);
        rawst_stop(&rst);
        serves_stop();
        drop_lucent_streams(jsm);
        events_free(&tick);
        e1.ratio = r1.p99 ? (double)e1.p99 / (double)r1.p99 : 0;
        e64.ratio = r64.rate > 0 ? e64.rate / r64.rate : 0;
        keep_run(b1, &r1, "rr1", "raw", r + 1);
        keep_run(b64, &r64, "rr64", "raw", r + 1);
        keep_run(&cs[K_ST1], &s1, "store1", "raw", r + 1);
        keep_run(&cs[K_ST64], &s64, "store64", "raw", r + 1);
        keep_run(c, &e1, "exec1", "lucent", r + 1);
        keep_run(c64, &e64, "exec64", "lucent", r + 1);
        note("round %zu  exec %u serve%s%s: 1 in flight p50 %.0f p99 %.0f "
             "p999 %.0f µs (raw p99 %.0f µs: %.2fx; store-then-reply "
             "%.0f µs); 64 in flight %.0f req/s (raw %.0f: %.1f%%; "
             "store-then-reply %.0f)",
             r + 1, c->shards, c->shards == 1 ? "" : "s",
             c->amo ? " (at-most-once)" : "", e1.p50 / 1e3,
             e1.p99 / 1e3, e1.p999 / 1e3, r1.p99 / 1e3, e1.ratio,
             s1.p99 / 1e3, e64.rate, r64.rate, 100 * e64.ratio, s64.rate);
      }
    }
  }

  /* Report. */
  char host[256] = "";
  gethostname(host, sizeof host);
  printf("%zu rounds; %zu events per lucent run, %zu messages per "
         "throughput baseline, %zu requests with 1 in flight and %zu with "
         "64; events of %.0f bytes on average; %ld cpus; nats.c %s\n\n",
         R, O.n, O.n_base, O.n1, O.n64, avg_bytes(&base_ev),
         sysconf(_SC_NPROCESSORS_ONLN), nats_GetVersion());
  printf("| measurement | rate: median (min..max) | ratio: paired median "
         "(min..max) | target | CPU µs/msg: client / serves / nats-server "
         "|\n|---|---:|---:|---|---:|\n");
  for (size_t i = 0; i < nc; i++) {
    cfg_t *c = &cs[i];
    if (c->kind == K_RR1 || c->kind == K_ST1 || c->kind == K_EX1 ||
        !c->nruns)
      continue;
    sum_t rate, ratio, cc, cs_, cv;
    FIELD(c->runs, c->nruns, x->rate, rate);
    FIELD(c->runs, c->nruns, x->ratio, ratio);
    FIELD(c->runs, c->nruns, x->cpu_client, cc);
    FIELD(c->runs, c->nruns, x->cpu_serve, cs_);
    FIELD(c->runs, c->nruns, x->cpu_server, cv);
    char a[32], b[32], d[32], cpu[128];
    const char *unit = c->kind == K_RR64 || c->kind == K_ST64 ||
                               c->kind == K_EX64
                           ? "req/s"
                       : c->kind == K_ALO || c->kind == K_AMO ? "events/s"
                                                              : "msgs/s";
    printf("| %s | %s %s (%s..%s) |", c->name, fmt_rate(a, sizeof a, rate.med),
           unit, fmt_rate(b, sizeof b, rate.min),
           fmt_rate(d, sizeof d, rate.max));
    fmt_cpu(cpu, sizeof cpu, cc, cs_, cv);
    if (c->base < 0) {
      printf(" - | - | %s |\n", cpu);
      continue;
    }
    double t = c->kind == K_ALO ? 0.30 : c->kind == K_AMO ? 0.40 : 0.60;
    printf(" **%.1f%%** (%.1f..%.1f) | >= %.0f%% of %s: %s | %s |\n",
           100 * ratio.med, 100 * ratio.min, 100 * ratio.max, 100 * t,
           cs[c->base].kind == K_JS     ? "raw JetStream"
           : cs[c->base].kind == K_CORE ? "raw core"
                                        : "raw req/reply",
           ratio.med >= t ? "met" : "**missed**", cpu);
  }
  printf("\n| 1 request in flight | p50 | p99 | p999 | max | req/s | p99 "
         "ratio: paired median (min..max) | target | CPU µs/req: client / "
         "serves / nats-server |\n|---|---:|---:|---:|---:|---:|---:|---|---:|"
         "\n");
  for (size_t i = 0; i < nc; i++) {
    cfg_t *c = &cs[i];
    if ((c->kind != K_RR1 && c->kind != K_ST1 && c->kind != K_EX1) ||
        !c->nruns)
      continue;
    sum_t p50, p99, p999, mx, rate, ratio, cc, cs_, cv;
    FIELD(c->runs, c->nruns, x->p50, p50);
    FIELD(c->runs, c->nruns, x->p99, p99);
    FIELD(c->runs, c->nruns, x->p999, p999);
    FIELD(c->runs, c->nruns, x->max, mx);
    FIELD(c->runs, c->nruns, x->rate, rate);
    FIELD(c->runs, c->nruns, x->ratio, ratio);
    FIELD(c->runs, c->nruns, x->cpu_client, cc);
    FIELD(c->runs, c->nruns, x->cpu_serve, cs_);
    FIELD(c->runs, c->nruns, x->cpu_server, cv);
    char a[32], b[32], d[32], e[32], f[32], g[32], h[32], k[32], l[32],
        cpu[128];
    printf("| %s | %s (%s..%s) | %s (%s..%s) | %s | %s | %s |", c->name,
           fmt_us(a, sizeof a, p50.med), fmt_us(b, sizeof b, p50.min),
           fmt_us(d, sizeof d, p50.max), fmt_us(e, sizeof e, p99.med),
           fmt_us(f, sizeof f, p99.min), fmt_us(g, sizeof g, p99.max),
           fmt_us(h, sizeof h, p999.med), fmt_us(k, sizeof k, mx.med),
           fmt_rate(l, sizeof l, rate.med));
    fmt_cpu(cpu, sizeof cpu, cc, cs_, cv);
    if (c->base < 0) printf(" - | - | %s |\n", cpu);
    else
      printf(" **%.2fx** (%.2f..%.2f) | <= 2x raw p99: %s | %s |\n",
             ratio.med, ratio.min, ratio.max,
             ratio.med <= 2.0 ? "met" : "**missed**", cpu);
  }
  for (size_t i = 0; i < nc; i++) free(cs[i].runs);
  events_free(&base_ev);
  events_free(&req);
  natsSubscription_Unsubscribe(rsub);
  natsSubscription_Destroy(rsub);
  jsCtx_Destroy(jsm);
  natsConnection_Destroy(cli);
  natsConnection_Destroy(resp);
  natsConnection_Destroy(ctl);
  return 0;
}

/* ---- subcommands for the peer comparison ------------------------------- */

static void print_line(const char *scenario, const char *system,
                       const char *config, size_t round, const res_t *r) {
  FILE *keep = g_json;
  g_json = stdout;
  json_run(scenario, system, config, round, r);
  g_json = keep;
}

/* Percentile curve of one run's sorted latencies: quantile,latency_us. */
static void write_cdf(const char *system, size_t inflight, size_t round,
                      const uint64_t *lat, size_t n) {
  if (!O.cdf_path || !n) return;
  FILE *f = fopen(O.cdf_path, "a");
  if (!f) die("cannot open %s: %s", O.cdf_path, strerror(errno));
  static const double qs[] = {0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5,
                              0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99,
                              0.995, 0.999, 0.9995, 0.9999, 1.0};
  for (size_t i = 0; i < sizeof qs / sizeof *qs; i++)
    fprintf(f, "%s,%zu,%zu,%.4f,%.2f\n", system, inflight, round, qs[i],
            (double)pct(lat, n, qs[i]) / 1e3);
  fclose(f);
}

static int cmd_rr(void) {
  int lucent = !strcmp(O.system, "lucent"), store = !strcmp(O.system, "store");
  if (!lucent && !store && strcmp(O.system, "raw"))
    die("--system: raw, store or lucent");
  natsConnection *ctl = connect_to("bench-ctl"), *cli = connect_to(
                                                     "bench-client");
  jsCtx *jsm = js_of(ctl, NULL);
  natsConnection *resp = NULL;
  natsSubscription *rsub = NULL;
  rawst_t st;
  if (store) {
    rawst_start(&st);
  } else if (!lucent) {
    resp = connect_to("bench-responder");
    if (natsConnection_Subscribe(&rsub, resp, "bench.rr", on_raw_request,
                                 NULL) != NATS_OK ||
        natsConnection_Flush(resp) != NATS_OK)
      die("raw responder");
  } else {
    drop_lucent_streams(jsm);
    serves_start(ctl, jsm, O.shards[0], O.deliveries == 2, NULL);
  }
  const char *subject = lucent ? LU_SUBJ_EXEC
                        : store ? RAWST_SUBJ
                                : "bench.rr";
  size_t nreq = O.n1 > O.n64 ? O.n1 : O.n64;
  char cfg[64];
  snprintf(cfg, sizeof cfg, "%u serve%s", lucent ? O.shards[0] : 0,
           lucent && O.executed ? ", --exec-reply executed" : "");
  /* Executed replies are their own rows and curves. */
  const char *sys = lucent && O.executed ? "lucent-executed" : O.system;
  const char *sc1 = lucent && O.executed ? "rr1-executed" : "rr1";
  const char *sc64 = lucent && O.executed ? "rr64-executed" : "rr64";
  for (size_t r = 0; r < O.rounds; r++) {
    events_t ev;
    gen_events(&ev, nreq, "Tick");
    (void)rr_run(cli, subject, &ev, 1000, 1, 1, NULL); /* warm-up */
    uint64_t *lat = NULL;
    res_t r1 = rr_run(cli, subject, &ev, O.n1, 1, 1, &lat);
    write_cdf(sys, 1, O.round0 + r, lat, r1.done);
    free(lat);
    lat = NULL;
    res_t r64 = rr_run(cli, subject, &ev, O.n64, 64, 1, &lat);
    write_cdf(sys, 64, O.round0 + r, lat, r64.done);
    free(lat);
    check_run("1 in flight", &r1);
    check_run("64 in flight", &r64);
    print_line(sc1, O.system, cfg, O.round0 + r, &r1);
    print_line(sc64, O.system, cfg, O.round0 + r, &r64);
    events_free(&ev);
  }
  if (lucent) {
    serves_stop();
    drop_lucent_streams(jsm);
  }
  if (rsub) {
    natsSubscription_Unsubscribe(rsub);
    natsSubscription_Destroy(rsub);
  }
  if (store) rawst_stop(&st);
  jsCtx_Destroy(jsm);
  natsConnection_Destroy(cli);
  natsConnection_Destroy(ctl);
  if (resp) natsConnection_Destroy(resp);
  return 0;
}

static int cmd_events(void) {
  int amo = O.deliveries == 2;
  if (O.deliveries != 1 && O.deliveries != 2)
    die("events: --delivery alo or amo (one)");
  const char *fn = !strcmp(O.type, "Keyed") ? "NoopKeyed"
                   : !strcmp(O.type, "Tick") ? "NoopTick"
                                             : NULL;
  if (!fn) die("--type: Tick or Keyed");
  natsConnection *ctl = connect_to("bench-ctl"), *cli = connect_to(
                                                     "bench-client");
  jsCtx *jsm = js_of(ctl, NULL);
  const char *names[MAX_SERVES];
  char buf[512];
  unsigned k = O.shards[0];
  if (O.workers) { /* fixed shard ids */
    snprintf(buf, sizeof buf, "%s", O.workers);
    k = 0;
    for (char *save, *t = strtok_r(buf, ",", &save); t && k < MAX_SERVES;
         t = strtok_r(NULL, ",", &save))
      names[k++] = t;
  }
  char cfg[96];
  snprintf(cfg, sizeof cfg, "%u serves, %s, %s", k,
           amo ? "at-most-once" : "at-least-once", O.type);
  for (size_t r = 0; r < O.rounds; r++) {
    events_t ev;
    gen_events(&ev, O.n, O.type);
    drop_lucent_streams(jsm);
    serves_start(ctl, jsm, k, amo, O.workers ? names : NULL);
    res_t lr = lucent_events(cli, &ev, amo, fn);
    serves_stop();
    drop_lucent_streams(jsm);
    check_run(cfg, &lr);
    print_line(amo ? "events-amo" : "events-alo", "lucent", cfg, O.round0 + r,
               &lr);
    events_free(&ev);
  }
  jsCtx_Destroy(jsm);
  natsConnection_Destroy(cli);
  natsConnection_Destroy(ctl);
  return 0;
}

/* Issue 19's cost of per-key order.  K serves (--shards, first value)
 * with the Keyed type (hash_based by data.key, 10,000 keys, subjects
 * unrelated to keys); per round, two event sets published in turn, in
 * --slices slices against the same serves: intake partitioned by subject
 * (protocol v1: a key's events reach its owner from many partitions) and
 * by routing key (v2: from one).  Each one's rate is its results over its
 * time; the ratio key/subject is paired within the round. */
static int cmd_order(void) {
  natsConnection *ctl = connect_to("bench-ctl"), *cli = connect_to(
                                                     "bench-client");
  jsCtx *jsm = js_of(ctl, NULL);
  unsigned k = O.shards[0];
  double ratios[64];
  size_t nr = 0;
  printf("| round | serves | partitions | by subject (v1) events/s | by key "
         "(v2) events/s | v2 / v1 | serve CPU µs/event v1 / v2 |\n"
         "|---:|---:|---:|---:|---:|---:|---:|\n");
  for (size_t r = 0; r < O.rounds && r < 64; r++) {
    events_t subj, key;
    gen_events(&subj, O.n, "Keyed");
    events_assign(&subj, BY_SUBJECT);
    gen_events(&key, O.n, "Keyed");
    events_assign(&key, BY_ROUTE);
    drop_lucent_streams(jsm);
    serves_start(ctl, jsm, k, 0, NULL);
    size_t sl = O.slices ? O.slices : 1, per = O.n / sl ? O.n / sl : 1;
    pool_t ps = {0}, pk = {0};
    watch_t w;
    watch_open(&w);
    for (size_t i = 0; i < sl && (i + 1) * per <= O.n; i++) {
      events_t a = events_slice(&subj, i * per, per);
      events_t b = events_slice(&key, i * per, per);
      res_t x, y;
      if (i % 2) { /* alternate which goes first */
        y = lucent_slice(cli, &b, 0, &w);
        x = lucent_slice(cli, &a, 0, &w);
      } else {
        x = lucent_slice(cli, &a, 0, &w);
        y = lucent_slice(cli, &b, 0, &w);
      }
      pool_add(&ps, &x, NULL);
      pool_add(&pk, &y, NULL);
    }
    res_t rs = pool_end(&ps), rk = pool_end(&pk);
    store_check(&w, rs.n + rk.n, "NoopKeyed", &rk);
    watch_close(&w);
    serves_stop();
    drop_lucent_streams(jsm);
    check_run("by subject", &rs);
    check_run("by key", &rk);
    double ratio = rs.rate > 0 ? rk.rate / rs.rate : 0;
    ratios[nr++] = ratio;
    printf("| %zu | %u | %u | %.0f | %.0f | %.3f | %.1f / %.1f |\n",
           O.round0 + r, k, O.partitions, rs.rate, rk.rate, ratio,
           rs.cpu_serve, rk.cpu_serve);
    fflush(stdout);
    events_free(&subj);
    events_free(&key);
  }
  sum_t s = sum_of(ratios, nr);
  printf("\npaired ratio v2 / v1: median %.3f (min %.3f, max %.3f) over %zu "
         "rounds\n", s.med, s.min, s.max, nr);
  jsCtx_Destroy(jsm);
  natsConnection_Destroy(cli);
  natsConnection_Destroy(ctl);
  return 0;
}

/* What the partition count costs: for each count of --plist, K serves
 * created with it, then (1) their CPU and nats-server's while idle for 5 s
 * (each partition's owner keeps a pull request open, renewed every
 * second), (2) the time from the serves' start until every consumer is
 * pulled, (3) keyed events/s partitioned by key.  The counts alternate
 * within each round. */
static int cmd_partitions(void) {
  natsConnection *ctl = connect_to("bench-ctl"), *cli = connect_to(
                                                     "bench-client");
  jsCtx *jsm = js_of(ctl, NULL);
  unsigned k = O.shards[0];
  printf("| round | partitions | serves | start until pulled, s | idle CPU: "
         "serves, nats-server (%% of a core) | keyed events/s | serve CPU "
         "µs/event |\n|---:|---:|---:|---:|---:|---:|---:|\n");
  for (size_t r = 0; r < O.rounds; r++) {
    for (size_t j = 0; j < O.nplist; j++) {
      size_t at = (j + r) % O.nplist; /* rotate the order per round */
      O.partitions = O.plist[at];
      events_t key;
      gen_events(&key, O.n, "Keyed");
      events_assign(&key, BY_ROUTE);
      drop_lucent_streams(jsm);
      uint64_t t0 = now_ns();
      serves_start(ctl, jsm, k, 0, NULL);
      double start_s = (double)(now_ns() - t0) / 1e9;
      cpu_snap_t c0 = cpu_snap();
      uint64_t i0 = now_ns();
      sleep_ms(5000);
      cpu_snap_t c1 = cpu_snap();
      double idle_ns = (double)(now_ns() - i0);
      res_t rk = lucent_events(cli, &key, 0, "NoopKeyed");
      serves_stop();
      drop_lucent_streams(jsm);
      check_run("partitions", &rk);
      char srv[32] = "-";
      if (O.server_pid > 0)
        snprintf(srv, sizeof srv, "%.1f%%",
                 100.0 * (double)(c1.server - c0.server) / idle_ns);
      printf("| %zu | %u | %u | %.1f | %.1f%%, %s | %.0f | %.1f |\n",
             O.round0 + r, O.partitions, k, start_s,
             100.0 * (double)(c1.serve - c0.serve) / idle_ns, srv,
             rk.rate, rk.cpu_serve);
      fflush(stdout);
      events_free(&key);
    }
  }
  jsCtx_Destroy(jsm);
  natsConnection_Destroy(cli);
  natsConnection_Destroy(ctl);
  return 0;
}

/* Key movement under lucent's own routing (route.c): the owner of a
 * hash_based key is lu__rendezvous(lu__key_hash(key), shard seeds).  The
 * share of --keys keys that change owner when the last of --workers joins
 * the others; the ideal is 1/n.  One line per round, each round on its own
 * key set ("r<round>-k-<i>"). */
static int cmd_keymove(void) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s",
           O.workers ? O.workers : "worker-1,worker-2,worker-3");
  uint64_t seeds[64];
  unsigned n = 0;
  for (char *save, *t = strtok_r(buf, ",", &save); t && n < 64;
       t = strtok_r(NULL, ",", &save))
    seeds[n++] = lu__shard_seed(t);
  if (n < 2) die("keymove: at least 2 workers");
  for (size_t r = 0; r < O.rounds; r++) {
    size_t moved = 0, to_new = 0;
    for (size_t i = 0; i < O.keys; i++) {
      char key[64];
      int kl = snprintf(key, sizeof key, "r%zu-k-%zu", r + 1, i);
      uint64_t h = lu__key_hash(key, (size_t)kl);
      unsigned a = lu__rendezvous(h, seeds, n - 1), b =
                                                        lu__rendezvous(h, seeds,
                                                                       n);
      if (a != b) {
        moved++;
        to_new += b == n - 1;
      }
    }
    printf("{\"scenario\":\"keymove\",\"system\":\"lucent\",\"round\":%zu,"
           "\"keys\":%zu,\"workers_before\":%u,\"workers_after\":%u,"
           "\"moved\":%zu,\"share\":%.5f,\"ideal\":%.5f,\"to_new\":%zu}\n",
           r + 1, O.keys, n - 1, n, moved, (double)moved / (double)O.keys,
           1.0 / n, to_new);
  }
  return 0;
}

/* ---- main ------------------------------------------------------------- */

static void usage(FILE *f) {
  fputs(
      "usage: bench_nats [suite|rr|events|order|partitions|keymove] --nats URL\n"
      "       [options]\n"
      "  --lucent PATH       the lucent command (for serve processes)\n"
      "  --plugin PATH       libbench_noop.so\n"
      "  --server-pid PID    nats-server's pid, for its CPU time\n"
      "  --logdir DIR        serve logs (default $TMPDIR or /tmp)\n"
      "  -r R                rounds (default 3)\n"
      "  -n N                events per lucent events run (default 50000)\n"
      "  --base-n N          messages per throughput baseline (100000)\n"
      "  --n1 N, --n64 N     requests with 1 / 64 in flight (10000, "
      "50000)\n"
      "  --shards LIST       serve processes for events (default 1,3)\n"
      "  --exec-shards LIST  serve processes for exec (default 1,3)\n"
      "  --delivery LIST     alo,amo (default both): for events runs, and\n"
      "                      the serves of exec runs (and rr --system lucent)\n"
      "  --pack N            at-most-once serves: results per message\n"
      "  --forward VIA       at-least-once serves: core or jetstream\n"
      "  --exec-reply WHEN   rr: the serves answer exec once stored (default)\n"
      "                      or once executed (rows rr1-executed, rr64-executed)\n"
      "  --intake-pack N     at-least-once publisher: events per message\n"
      "                      (default 64, as lucent publish; 1 = none)\n"
      "  --slices S          suite: each raw baseline and its lucent\n"
      "                      run alternate in S slices a round (5)\n"
      "  --max-seconds S     bound of every load loop (default 60)\n"
      "  --json FILE         suite: one JSON line per run\n"
      "  --round N           rr, events: label of the first round (1)\n"
      "  rr:      --system raw|store|lucent [--cdf FILE]\n"
      "  events:  --type Tick|Keyed [--workers a,b]\n"
      "  keymove: --keys N --workers a,b,c\n"
      "  --partitions N      intake partitions of the serves (default 64)\n"
      "  order:   keyed events/s, intake by subject (v1) and by key (v2)\n"
      "           paired in slices on the same serves (--shards K)\n"
      "  partitions: --plist 16,64,256  idle CPU, start, keyed events/s\n",
      f);
}


static size_t parse_list(const char *v, unsigned *out, size_t cap,
                         const char *what) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", v);
  size_t n = 0;
  for (char *save, *t = strtok_r(buf, ",", &save); t;
       t = strtok_r(NULL, ",", &save)) {
    if (n == cap) die("%s: too many values", what);
    size_t x = parse_size(t, what);
    if (x > MAX_SERVES) die("%s: at most %d", what, MAX_SERVES);
    out[n++] = (unsigned)x;
  }
  if (!n) die("%s: empty list", what);
  return n;
}

int main(int argc, char **argv) {
  const char *cmd = "suite";
  int i = 1;
  if (argc > 1 && argv[1][0] != '-') cmd = argv[i++];
  O = (opts_t){.n = 50000, .n_base = 100000, .n1 = 10000, .n64 = 50000,
               .rounds = 3, .keys = 10000, .shards = {1, 3}, .nshards = 2,
               .exec_shards = {1, 3}, .nexec = 2, .deliveries = 3,
               .max_seconds = 60, .system = "lucent", .type = "Keyed",
               .round0 = 1, .intake_pack = LU_INTAKE_PACK_EVENTS,
               .slices = 5, .partitions = LU_INTAKE_PARTITIONS_DEFAULT,
               .plist = {16, 64, 256}, .nplist = 3};
  O.logdir = getenv("TMPDIR");
  if (!O.logdir || !*O.logdir) O.logdir = "/tmp";
  for (; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    }
    if (!v) {
      usage(stderr);
      die("%s: missing value (or unknown option)", a);
    }
    i++;
    if (!strcmp(a, "--nats")) O.url = v;
    else if (!strcmp(a, "--lucent")) O.lucent = v;
    else if (!strcmp(a, "--plugin")) O.plugin = v;
    else if (!strcmp(a, "--logdir")) O.logdir = v;
    else if (!strcmp(a, "--json")) O.json_path = v;
    else if (!strcmp(a, "--cdf")) O.cdf_path = v;
    else if (!strcmp(a, "--system")) O.system = v;
    else if (!strcmp(a, "--type")) O.type = v;
    else if (!strcmp(a, "--workers")) O.workers = v;
    else if (!strcmp(a, "--server-pid")) O.server_pid = (pid_t)parse_size(v, a);
    else if (!strcmp(a, "-r")) O.rounds = parse_size(v, a);
    else if (!strcmp(a, "--round")) O.round0 = parse_size(v, a);
    else if (!strcmp(a, "-n")) O.n = parse_size(v, a);
    else if (!strcmp(a, "--base-n")) O.n_base = parse_size(v, a);
    else if (!strcmp(a, "--n1")) O.n1 = parse_size(v, a);
    else if (!strcmp(a, "--n64")) O.n64 = parse_size(v, a);
    else if (!strcmp(a, "--keys")) O.keys = parse_size(v, a);
    else if (!strcmp(a, "--pack")) {
      parse_size(v, a); /* validated here, passed on as text */
      O.pack = v;
    }
    else if (!strcmp(a, "--exec-reply")) {
      if (strcmp(v, "stored") && strcmp(v, "executed"))
        die("--exec-reply: stored or executed");
      O.executed = !strcmp(v, "executed");
    }
    else if (!strcmp(a, "--forward")) {
      if (strcmp(v, "core") && strcmp(v, "jetstream"))
        die("--forward: core or jetstream");
      O.forward = v;
    }
    else if (!strcmp(a, "--intake-pack")) O.intake_pack = parse_size(v, a);
    else if (!strcmp(a, "--slices")) O.slices = parse_size(v, a);
    else if (!strcmp(a, "--partitions")) {
      O.partitions = (unsigned)parse_size(v, a);
      if (!O.partitions || O.partitions > LU_INTAKE_PARTITIONS_MAX)
        die("--partitions: 1..%d", LU_INTAKE_PARTITIONS_MAX);
    } else if (!strcmp(a, "--plist")) {
      O.nplist = 0;
      char buf[256];
      snprintf(buf, sizeof buf, "%s", v);
      for (char *sv, *t = strtok_r(buf, ",", &sv); t && O.nplist < 8;
           t = strtok_r(NULL, ",", &sv)) {
        size_t x = parse_size(t, a);
        if (!x || x > LU_INTAKE_PARTITIONS_MAX) die("--plist: 1..1024 each");
        O.plist[O.nplist++] = (unsigned)x;
      }
    }
    else if (!strcmp(a, "--max-seconds")) O.max_seconds = (double)parse_size(v, a);
    else if (!strcmp(a, "--shards")) O.nshards = parse_list(v, O.shards, 8, a);
    else if (!strcmp(a, "--exec-shards"))
      O.nexec = parse_list(v, O.exec_shards, 8, a);
    else if (!strcmp(a, "--delivery")) {
      O.deliveries = (strstr(v, "alo") || strstr(v, "at-least-once") ? 1 : 0) |
                     (strstr(v, "amo") || strstr(v, "at-most-once") ? 2 : 0);
      if (!O.deliveries) die("--delivery: alo, amo or alo,amo");
    } else {
      usage(stderr);
      die("unknown option %s", a);
    }
  }
  if (O.rounds > 50) die("-r: at most 50 rounds");
  if (!strcmp(cmd, "keymove")) return cmd_keymove();
  if (!O.url) die("--nats URL is required");
  atexit(cleanup_at_exit);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  if (O.json_path) {
    g_json = fopen(O.json_path, "w");
    if (!g_json) die("cannot open %s: %s", O.json_path, strerror(errno));
  }
  int rc;
  if (!strcmp(cmd, "suite")) rc = suite();
  else if (!strcmp(cmd, "rr")) rc = cmd_rr();
  else if (!strcmp(cmd, "events")) rc = cmd_events();
  else if (!strcmp(cmd, "order")) rc = cmd_order();
  else if (!strcmp(cmd, "partitions")) rc = cmd_partitions();
  else {
    usage(stderr);
    die("unknown command %s", cmd);
  }
  if (g_json) fclose(g_json);
  nats_Close();
  return rc;
}
