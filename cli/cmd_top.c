/*
 * cmd_top.c - `lucent top`: a live terminal view of a running lucent.
 *
 * Every interval the view takes a frame from a source, and draws the
 * difference with the previous frame:
 *
 *   per shard     throughput (outcomes decided there per second, input and
 *                 emitted), in-flight, queue depth, outcome counts;
 *   per function  executions per second, latency p50/p99 over the interval
 *                 (over the whole run when nothing ran in the interval),
 *                 failures, retries, timeouts, breaker state.
 *
 * Sources fill the same frame (top_frame_t), so the view does not care
 * where numbers come from.  The one source here reads the observability
 * endpoints of `lucent run --http` (/shards and /functions) with a minimal
 * HTTP/1.0 GET over a plain socket; another (NATS heartbeats, for example)
 * is a new top_source_t with its own fetch and an option that selects it.
 *
 * p50/p99 are interpolated inside the histogram bucket that holds the
 * rank, as PromQL's histogram_quantile() does, so the view agrees with a
 * dashboard fed from /metrics.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "lucent/lucent.h"

#define MAX_BUCKETS 64
#define HTTP_TIMEOUT_MS 3000
#define HTTP_MAX_BODY (64u << 20)

/* ---- frames ----------------------------------------------------------- */

typedef struct top_shard_s {
  char id[64];
  int has_counts;          /* counters known (a shard of the process) */
  uint64_t in_flight, queue_depth;
  uint64_t outcomes[LU_OUTCOME__COUNT]; /* input + emitted */
} top_shard_t;

typedef struct top_fn_s {
  char name[128];
  uint64_t executions, completed, failed, retries, timeouts;
  int nb;                  /* buckets, the last one +Inf */
  double le[MAX_BUCKETS];  /* seconds */
  uint64_t cum[MAX_BUCKETS];
  unsigned breakers, breakers_open;
} top_fn_t;

typedef struct top_frame_s {
  double t;                /* monotonic seconds when taken */
  uint64_t events_in;
  uint64_t outcomes[LU_OUTCOME__COUNT];
  top_shard_t *shards;     /* the intake row last, id "intake" */
  size_t nshards;
  top_fn_t *fns;
  size_t nfns;
} top_frame_t;

static void frame_free(top_frame_t *f) {
  free(f->shards);
  free(f->fns);
  memset(f, 0, sizeof *f);
}

/* Where frames come from.  fetch fills f (zeroed by the caller) and
 * returns 0, or -1 with a message in err. */
typedef struct top_source_s {
  const char *what;        /* shown in the header and in errors */
  int (*fetch)(struct top_source_s *src, top_frame_t *f, char *err,
               size_t cap);
  void (*close)(struct top_source_s *src);
  void *state;
} top_source_t;

static double mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the HTTP source -------------------------------------------------- */

typedef struct http_src_s {
  char host[256], port[8];
} http_src_t;

/* "HOST:PORT", "[V6]:PORT", ":PORT", with an optional http:// prefix. */
static int parse_addr(const char *a, http_src_t *h) {
  if (!strncmp(a, "http://", 7)) a += 7;
  const char *hs = a, *he, *colon;
  if (*a == '[') {
    hs = a + 1;
    he = strchr(hs, ']');
    if (!he || he[1] != ':') return -1;
    colon = he + 1;
  } else {
    colon = strrchr(a, ':');
    if (!colon) return -1;
    he = colon;
  }
  const char *p = colon + 1;
  size_t pl = strcspn(p, "/");
  if (!pl || pl >= sizeof h->port || strspn(p, "0123456789") != pl ||
      (size_t)(he - hs) >= sizeof h->host)
    return -1;
  memcpy(h->port, p, pl);
  h->port[pl] = 0;
  if (he == hs) {
    snprintf(h->host, sizeof h->host, "127.0.0.1");
  } else {
    memcpy(h->host, hs, (size_t)(he - hs));
    h->host[he - hs] = 0;
  }
  return 0;
}

/* Waits for fd to be ready for `events` until the deadline. */
static int wait_fd(int fd, short events, double deadline) {
  for (;;) {
    int ms = (int)((deadline - mono_now()) * 1000);
    if (ms <= 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    struct pollfd p = {.fd = fd, .events = events};
    int r = poll(&p, 1, ms);
    if (r > 0) return 0;
    if (r < 0 && errno != EINTR) return -1;
  }
}

static int connect_to(const http_src_t *h, double deadline, char *err,
                      size_t cap) {
  struct addrinfo hints = {0}, *ai = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  int gai = getaddrinfo(h->host, h->port, &hints, &ai);
  if (gai) {
    snprintf(err, cap, "cannot resolve %s: %s", h->host, gai_strerror(gai));
    return -1;
  }
  int fd = -1, e = 0;
  for (struct addrinfo *p = ai; p && fd < 0; p = p->ai_next) {
    fd = socket(p->ai_family, p->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                p->ai_protocol);
    if (fd < 0) {
      e = errno;
      continue;
    }
    if (connect(fd, p->ai_addr, p->ai_addrlen) == 0) break;
    if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) == 0) {
      socklen_t sl = sizeof e;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl);
      if (!e) break;
    } else {
      e = errno;
    }
    close(fd);
    fd = -1;
  }
  freeaddrinfo(ai);
  if (fd < 0)
    snprintf(err, cap, "cannot connect to %s:%s: %s", h->host, h->port,
             strerror(e ? e : ECONNREFUSED));
  return fd;
}

/* GET path over HTTP/1.0: 0 and the body (caller frees), or -1. */
static int http_get(const http_src_t *h, const char *path, char **body,
                    char *err, size_t cap) {
  double deadline = mono_now() + HTTP_TIMEOUT_MS / 1000.0;
  *body = NULL;
  int fd = connect_to(h, deadline, err, cap);
  if (fd < 0) return -1;
  char req[512];
  int v6 = strchr(h->host, ':') != NULL;
  int rl = snprintf(req, sizeof req,
                    "GET %s HTTP/1.0\r\nHost: %s%s%s:%s\r\nUser-Agent: "
                    "lucent-top\r\nAccept: application/json\r\n\r\n",
                    path, v6 ? "[" : "", h->host, v6 ? "]" : "", h->port);
  size_t off = 0;
  while (off < (size_t)rl) {
    ssize_t w = send(fd, req + off, (size_t)rl - off, MSG_NOSIGNAL);
    if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (wait_fd(fd, POLLOUT, deadline) == 0) continue;
    }
    if (w <= 0) {
      snprintf(err, cap, "GET %s: send: %s", path, strerror(errno));
      close(fd);
      return -1;
    }
    off += (size_t)w;
  }
  char *buf = NULL;
  size_t len = 0, bcap = 0;
  for (;;) {
    if (len + 4096 + 1 > bcap) {
      bcap = bcap ? bcap * 2 : 16384;
      char *nb = bcap > HTTP_MAX_BODY ? NULL : realloc(buf, bcap);
      if (!nb) {
        snprintf(err, cap, "GET %s: response too large", path);
        goto fail;
      }
      buf = nb;
    }
    ssize_t r = recv(fd, buf + len, bcap - len - 1, 0);
    if (r > 0) {
      len += (size_t)r;
      continue;
    }
    if (r == 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN && wait_fd(fd, POLLIN, deadline) == 0) continue;
    snprintf(err, cap, "GET %s: %s", path,
             errno == EAGAIN || errno == ETIMEDOUT ? "no answer in time"
                                                   : strerror(errno));
    goto fail;
  }
  close(fd);
  fd = -1;
  buf = buf ? buf : calloc(1, 1);
  if (!buf) return -1;
  buf[len] = 0;
  int status = 0;
  if (sscanf(buf, "HTTP/%*d.%*d %d", &status) != 1) {
    snprintf(err, cap, "GET %s: not an HTTP response", path);
    goto fail;
  }
  char *b = strstr(buf, "\r\n\r\n");
  if (status != 200 || !b) {
    snprintf(err, cap, "GET %s: HTTP status %d", path, status);
    goto fail;
  }
  b += 4;
  memmove(buf, b, len - (size_t)(b - buf) + 1);
  *body = buf;
  return 0;
fail:
  if (fd >= 0) close(fd);
  free(buf);
  return -1;
}

static uint64_t ju(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsNumber(v) && v->valuedouble > 0 ? (uint64_t)v->valuedouble
                                                 : 0;
}

static void outcomes_of(const cJSON *o, uint64_t *c) {
  const char *keys[] = {"outcomes", "emitted"};
  for (int i = 0; i < 2; i++) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, keys[i]);
    for (int k = 0; k < LU_OUTCOME__COUNT; k++)
      c[k] += ju(x, lu_outcome_name((lu_outcome_kind_t)k));
  }
}

static int parse_shards(const char *body, top_frame_t *f) {
  cJSON *root = cJSON_Parse(body);
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "shards");
  if (!cJSON_IsArray(arr)) {
    cJSON_Delete(root);
    return -1;
  }
  f->events_in = ju(root, "events_in");
  const cJSON *tot = cJSON_GetObjectItemCaseSensitive(root, "outcomes");
  for (int k = 0; k < LU_OUTCOME__COUNT; k++)
    f->outcomes[k] = ju(tot, lu_outcome_name((lu_outcome_kind_t)k));
  size_t n = (size_t)cJSON_GetArraySize(arr);
  f->shards = calloc(n + 1, sizeof *f->shards);
  if (!f->shards) {
    cJSON_Delete(root);
    return -1;
  }
  const cJSON *s;
  cJSON_ArrayForEach(s, arr) {
    top_shard_t *t = &f->shards[f->nshards++];
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(s, "id");
    snprintf(t->id, sizeof t->id, "%s",
             cJSON_IsString(id) ? id->valuestring : "?");
    t->in_flight = ju(s, "in_flight");
    t->queue_depth = ju(s, "queue_depth");
    t->has_counts = cJSON_GetObjectItemCaseSensitive(s, "outcomes") != NULL;
    outcomes_of(s, t->outcomes);
  }
  top_shard_t *in = &f->shards[f->nshards++];
  snprintf(in->id, sizeof in->id, "intake");
  in->has_counts = 1;
  outcomes_of(cJSON_GetObjectItemCaseSensitive(root, "intake"), in->outcomes);
  cJSON_Delete(root);
  return 0;
}

static int parse_functions(const char *body, top_frame_t *f) {
  cJSON *root = cJSON_Parse(body);
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "functions");
  if (!cJSON_IsArray(arr)) {
    cJSON_Delete(root);
    return -1;
  }
  size_t n = (size_t)cJSON_GetArraySize(arr);
  f->fns = calloc(n + 1, sizeof *f->fns);
  if (!f->fns) {
    cJSON_Delete(root);
    return -1;
  }
  const cJSON *it;
  cJSON_ArrayForEach(it, arr) {
    top_fn_t *t = &f->fns[f->nfns++];
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
    snprintf(t->name, sizeof t->name, "%s",
             cJSON_IsString(nm) ? nm->valuestring : "?");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "stats");
    t->executions = ju(st, "executions");
    t->completed = ju(st, "completed");
    t->failed = ju(st, "failed");
    t->retries = ju(st, "retries");
    t->timeouts = ju(st, "timeouts");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(st, "duration_seconds");
    const cJSON *bk = cJSON_GetObjectItemCaseSensitive(d, "buckets"), *p;
    cJSON_ArrayForEach(p, bk) {
      if (t->nb == MAX_BUCKETS) break;
      const cJSON *le = cJSON_GetArrayItem(p, 0), *c = cJSON_GetArrayItem(p, 1);
      t->le[t->nb] = cJSON_IsNumber(le) ? le->valuedouble : -1; /* +Inf */
      t->cum[t->nb] = cJSON_IsNumber(c) ? (uint64_t)c->valuedouble : 0;
      t->nb++;
    }
    const cJSON *br = cJSON_GetObjectItemCaseSensitive(st, "breaker_open"), *b;
    cJSON_ArrayForEach(b, br) {
      t->breakers++;
      t->breakers_open += cJSON_IsTrue(b);
    }
  }
  cJSON_Delete(root);
  return 0;
}

static int http_fetch(top_source_t *src, top_frame_t *f, char *err,
                      size_t cap) {
  http_src_t *h = src->state;
  char *body;
  if (http_get(h, "/shards", &body, err, cap)) return -1;
  f->t = mono_now();
  int rc = parse_shards(body, f);
  free(body);
  if (rc) {
    snprintf(err, cap, "GET /shards: not the JSON lucent serves");
    return -1;
  }
  if (http_get(h, "/functions", &body, err, cap)) return -1;
  rc = parse_functions(body, f);
  free(body);
  if (rc) {
    snprintf(err, cap, "GET /functions: not the JSON lucent serves");
    return -1;
  }
  return 0;
}

static void http_close(top_source_t *src) { free(src->state); }

static int http_source(top_source_t *src, const char *addr) {
  http_src_t *h = calloc(1, sizeof *h);
  if (!h) return -1;
  if (parse_addr(addr, h)) {
    free(h);
    return -1;
  }
  *src = (top_source_t){.what = addr, .fetch = http_fetch,
                        .close = http_close, .state = h};
  return 0;
}

/* ---- drawing ---------------------------------------------------------- */

/* PromQL-style quantile over cumulative buckets (le < 0 = +Inf): linear
 * inside the bucket holding rank q*count.  *above is set when the rank
 * falls in +Inf (the value is then the largest finite bound).  Returns
 * -1 for an empty histogram. */
static double quantile(const double *le, const uint64_t *cum, int nb,
                       double q, int *above) {
  *above = 0;
  if (nb < 1 || !cum[nb - 1]) return -1;
  double rank = q * (double)cum[nb - 1];
  for (int i = 0; i < nb; i++) {
    if ((double)cum[i] < rank) continue;
    if (le[i] < 0) {
      *above = 1;
      return i ? le[i - 1] : 0;
    }
    double lo = i ? le[i - 1] : 0, prev = i ? (double)cum[i - 1] : 0;
    double in = (double)cum[i] - prev;
    return in > 0 ? lo + (le[i] - lo) * (rank - prev) / in : le[i];
  }
  return -1;
}

static void fmt_dur(char *buf, size_t cap, double s, int above) {
  const char *gt = above ? ">" : "";
  if (s < 0) snprintf(buf, cap, "-");
  else if (s < 1e-6) snprintf(buf, cap, "%s%.0fns", gt, s * 1e9);
  else if (s < 1e-3) snprintf(buf, cap, "%s%.1fus", gt, s * 1e6);
  else if (s < 1) snprintf(buf, cap, "%s%.1fms", gt, s * 1e3);
  else snprintf(buf, cap, "%s%.2fs", gt, s);
}

static void fmt_rate(char *buf, size_t cap, uint64_t now, uint64_t before,
                     double dt, int known) {
  if (!known || dt <= 0) snprintf(buf, cap, "-");
  else snprintf(buf, cap, "%.0f", now >= before ? (now - before) / dt : 0.0);
}

static const top_shard_t *prev_shard(const top_frame_t *p, const char *id) {
  for (size_t i = 0; p && i < p->nshards; i++)
    if (!strcmp(p->shards[i].id, id)) return &p->shards[i];
  return NULL;
}

static const top_fn_t *prev_fn(const top_frame_t *p, const char *name) {
  for (size_t i = 0; p && i < p->nfns; i++)
    if (!strcmp(p->fns[i].name, name)) return &p->fns[i];
  return NULL;
}

static uint64_t sum4(const uint64_t *c) {
  uint64_t s = 0;
  for (int k = 0; k < LU_OUTCOME__COUNT; k++) s += c[k];
  return s;
}

static void draw(FILE *o, const top_source_t *src, const top_frame_t *f,
                 const top_frame_t *p, double interval_s) {
  double dt = p ? f->t - p->t : 0;
  char clock[16];
  time_t now = time(NULL);
  struct tm tm;
  localtime_r(&now, &tm);
  strftime(clock, sizeof clock, "%H:%M:%S", &tm);
  fprintf(o, "lucent top - %s - %s - every %.1fs - events in %" PRIu64
             ", decided %" PRIu64 "\n\n",
          src->what, clock, interval_s, f->events_in, sum4(f->outcomes));
  fprintf(o, "%-16s %10s %9s %7s %11s %9s %9s %9s\n", "SHARD", "EV/S",
          "IN-FLIGHT", "QUEUE", "COMPLETED", "FAILED", "REJECTED", "DEAD");
  for (size_t i = 0; i < f->nshards; i++) {
    const top_shard_t *s = &f->shards[i];
    const top_shard_t *q = prev_shard(p, s->id);
    char rate[24], infl[24], queue[24];
    fmt_rate(rate, sizeof rate, sum4(s->outcomes), q ? sum4(q->outcomes) : 0,
             dt, q && s->has_counts);
    int intake = !strcmp(s->id, "intake") && i == f->nshards - 1;
    snprintf(infl, sizeof infl, intake ? "-" : "%" PRIu64, s->in_flight);
    snprintf(queue, sizeof queue, intake ? "-" : "%" PRIu64, s->queue_depth);
    fprintf(o, "%-16s %10s %9s %7s", s->id, rate, infl, queue);
    if (s->has_counts)
      fprintf(o, " %11" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 "\n",
              s->outcomes[0], s->outcomes[1], s->outcomes[2],
              s->outcomes[3]);
    else
      fprintf(o, " %11s %9s %9s %9s\n", "-", "-", "-", "-");
  }
  fprintf(o, "\n%-24s %9s %9s %9s %11s %9s %8s %8s %8s\n", "FUNCTION",
          "EXEC/S", "P50", "P99", "EXECUTIONS", "FAILED", "RETRIES",
          "TIMEOUTS", "BREAKER");
  for (size_t i = 0; i < f->nfns; i++) {
    const top_fn_t *fn = &f->fns[i];
    const top_fn_t *q = prev_fn(p, fn->name);
    char rate[24], p50[24], p99[24], brk[24];
    fmt_rate(rate, sizeof rate, fn->executions, q ? q->executions : 0, dt,
             q != NULL);
    /* The interval's latencies when anything ran in it, else the run's. */
    uint64_t cum[MAX_BUCKETS];
    int use_delta = q && q->nb == fn->nb && fn->nb &&
                    fn->cum[fn->nb - 1] > q->cum[q->nb - 1];
    for (int k = 0; k < fn->nb; k++)
      cum[k] = use_delta ? fn->cum[k] - (q->cum[k] < fn->cum[k] ? q->cum[k]
                                                                : fn->cum[k])
                         : fn->cum[k];
    int above = 0;
    fmt_dur(p50, sizeof p50, quantile(fn->le, cum, fn->nb, 0.5, &above),
            above);
    fmt_dur(p99, sizeof p99, quantile(fn->le, cum, fn->nb, 0.99, &above),
            above);
    if (!fn->breakers_open) snprintf(brk, sizeof brk, "closed");
    else snprintf(brk, sizeof brk, "open %u/%u", fn->breakers_open,
                  fn->breakers);
    fprintf(o, "%-24s %9s %9s %9s %11" PRIu64 " %9" PRIu64 " %8" PRIu64
               " %8" PRIu64 " %8s\n",
            fn->name, rate, p50, p99, fn->executions, fn->failed,
            fn->retries, fn->timeouts, brk);
  }
  fflush(o);
}

/* ---- the command ------------------------------------------------------ */

static volatile sig_atomic_t stop_sig;
static void on_signal(int sig) { stop_sig = sig; }

static void usage(FILE *f) {
  fprintf(f,
      "usage: lucent top --http ADDR:PORT [--once] [--interval MS]\n"
      "  --http ADDR:PORT   a `lucent run --http` to watch (host defaults\n"
      "                     to 127.0.0.1)\n"
      "  --interval MS      refresh period (default 1000)\n"
      "  --once             print one frame (rates over one interval) and\n"
      "                     exit\n");
}

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (!stop_sig && nanosleep(&ts, &ts) && errno == EINTR) {
  }
}

int cmd_top(int argc, char **argv) {
  enum { O_HTTP = 256, O_ONCE, O_INTERVAL };
  static const struct option opts[] = {
      {"http", required_argument, 0, O_HTTP},
      {"once", no_argument, 0, O_ONCE},
      {"interval", required_argument, 0, O_INTERVAL},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  const char *http = NULL;
  int once = 0, c;
  long interval_ms = 1000;
  optind = 1;
  while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
    switch (c) {
      case O_HTTP: http = optarg; break;
      case O_ONCE: once = 1; break;
      case O_INTERVAL: {
        char *end;
        errno = 0;
        interval_ms = strtol(optarg, &end, 10);
        if (errno || *end || interval_ms < 50 || interval_ms > 3600000) {
          cli_error("--interval must be an integer in 50..3600000 (got '%s')",
                    optarg);
          usage(stderr);
          return 2;
        }
        break;
      }
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    cli_error("unexpected argument '%s'", argv[optind]);
    usage(stderr);
    return 2;
  }
  top_source_t src;
  if (!http) {
    cli_error("--http is required");
    usage(stderr);
    return 2;
  }
  if (http_source(&src, http)) {
    cli_error("bad address '%s': want HOST:PORT, [IPV6]:PORT or :PORT",
              http);
    return 2;
  }
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  double interval = interval_ms / 1000.0;
  int live = !once, tty = isatty(1), rc = 0;
  top_frame_t prev = {0}, cur = {0};
  int have_prev = 0;
  char err[512];
  for (int n = 0; !stop_sig; n++) {
    memset(&cur, 0, sizeof cur);
    if (src.fetch(&src, &cur, err, sizeof err)) {
      frame_free(&cur);
      if (stop_sig) break;
      cli_error("%s%s: %s", n ? "lost " : "cannot reach lucent at ",
                src.what, err);
      rc = 1;
      break;
    }
    if (once && !have_prev) {
      /* --once: a first sample for the rates, then the frame. */
      prev = cur;
      have_prev = 1;
      sleep_s(interval);
      continue;
    }
    if (live && tty) fputs("\033[H\033[2J", stdout);
    else if (n > 1) fputs("\n", stdout);
    draw(stdout, &src, &cur, have_prev ? &prev : NULL, interval);
    frame_free(&prev);
    prev = cur;
    have_prev = 1;
    if (once) break;
    sleep_s(interval);
  }
  frame_free(&prev);
  src.close(&src);
  return rc;
}
