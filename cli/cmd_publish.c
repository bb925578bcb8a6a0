/*
 * cmd_publish.c - `lucent publish`: sends a JSON Lines file of events into a
 * distributed lucent.
 *
 * At-least-once (default): events go to JetStream stream LUCENT_INTAKE on
 * subject lucent.intake.<p>: p from the event's routing key when its type
 * routes by one (the routes table the serves write), else from its
 * subject, so the events of one key, or of one subject, stay in order
 * (intake_layout.c; docs/protocol.md, section 6).  The partition count
 * is the stream's; --partitions N chooses it when this creates the
 * stream, and is refused when the stream has another.  Consecutive valid events of one partition
 * travel as one message, a pack of up to --pack N (default 64;
 * intake_pack.c), with Nats-Msg-Id = a hash of the pack (publishing a
 * file twice makes the same packs, stored once) and the line numbers in a
 * header; a pack is sent when full, when the input would block (a pipe
 * with nothing more in it yet), and at the end.  A line that is not a
 * valid event, or any line with --pack 1, travels alone with Nats-Msg-Id =
 * the event id (or a hash of the line) and its line number.  An event
 * counts as accepted once JetStream has acknowledged its message.
 * At-most-once: core NATS subject lucent.amo.intake, no acknowledgement,
 * and no headers on a valid event (its line number is not sent: a header
 * block doubled the publisher's CPU per event); a line that is not a
 * valid event still carries its line number, for its lucent.Rejected.
 *
 * Lines that are not valid events are still sent: the shards record them
 * as lucent.Rejected with the reason, exactly as `lucent run` does; the
 * summary says how many there were.
 *
 * --binary sends each valid event in the CloudEvents NATS binding's binary
 * content mode (ce-* headers, the data as payload; src/util/ce.c), one
 * event per message, as a client in another language may
 * (docs/protocol.md).  --dry-run connects to nothing: it prints, per
 * line, the partition and subject the line would be published to (what a
 * client implementing the protocol must compute alike).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "cli.h"
#include "intake_layout.h"
#include "intake_pack.h"
#include "membership.h"
#include "nats_opts.h"
#include "retry.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: lucent publish --nats URLS --input FILE|- [options]\n"
          "  --input FILE|-       JSON Lines CloudEvents; - for stdin\n"
          "  --delivery MODE      at-least-once (default) or at-most-once\n"
          "  --pack N             at-least-once: up to N events of one intake\n"
          "                       partition per message (default %d; 1 =\n"
          "                       one message per event)\n"
          "  --binary             CloudEvents binary content mode: ce-* headers,\n"
          "                       the data as payload; one event per message\n"
          "  --partitions N       intake partitions when this creates the stream\n"
          "                       (default %d); a stream with another count\n"
          "                       is refused.  --dry-run without --nats: the\n"
          "                       count to compute with\n"
          "  --partition-by BY    route (default: the routing key of keyed\n"
          "                       types, else the subject) or subject (v1)\n"
          "  --plugin PATH        --dry-run without --nats: the routes of\n"
          "                       these functions (repeatable)\n"
          "  --dry-run            publish nothing: print each line's partition\n"
          "                       and subject as JSON Lines (with --nats, the\n"
          "                       server's partition count and routes)\n"
          "  --json               print the summary as JSON\n"
          "  --replicas N         copies of LUCENT_INTAKE if this creates it\n"
          "                       (1..5; 3 on a 3-node cluster survives the\n"
          "                       loss of a node); an existing stream with\n"
          "                       another count is changed, with a warning,\n"
          "                       or refused.  Default: 1 when created, an\n"
          "                       existing stream kept as it is\n"
          "  --retry-ms N         how long an event JetStream does not take\n"
          "                       (no stream leader: an election after a\n"
          "                       node died, a reconnect) is sent again\n"
          "                       before it counts as rejected (default\n"
          "                       %u; 0 = never)\n"
          "%s", LU_INTAKE_PACK_EVENTS, LU_INTAKE_PARTITIONS_DEFAULT,
          LU_RETRY_DEFAULT_MS, CLI_NATS_USAGE);
}

/* Riding through a leader election: a message JetStream did not take for
 * a reason an election explains (no responders: no leader yet; a timeout:
 * in flight when the leader died; lu__retryable) is kept on `again`
 * instead of counted as refused, and the main thread sends it again with
 * its Nats-Msg-Id, so one that was stored after all (only its ack was
 * lost) is a duplicate, not a second copy (docs/nats-notes.md a3).  While
 * any wait there, no newer message is sent: what the election held up
 * goes first, so a partition's messages keep their order. */
typedef struct pubstate_s {
  _Atomic uint64_t acked, refused;
  _Atomic int reported;
  _Atomic int retry;      /* --retry-ms > 0, and the window not over */
  pthread_mutex_t mu;     /* again, last_err */
  natsMsg **again;        /* messages to send again, in failure order */
  size_t nagain, capagain;
  natsStatus last_err;
  int last_jerr;
  char last_why[160];
} pubstate_t;

/* Keeps msg to send again; 0, or -1 (out of memory: refused). */
static int keep_again(pubstate_t *st, natsMsg *msg, const jsPubAckErr *pae) {
  int rc = 0;
  pthread_mutex_lock(&st->mu);
  if (st->nagain == st->capagain) {
    size_t cap = st->capagain ? 2 * st->capagain : 256;
    natsMsg **g = realloc(st->again, cap * sizeof *g);
    if (g) {
      st->again = g;
      st->capagain = cap;
    }
  }
  if (st->nagain < st->capagain) {
    st->again[st->nagain++] = msg;
    st->last_err = pae->Err;
    st->last_jerr = (int)pae->ErrCode;
    lu__fmt(st->last_why, sizeof st->last_why, "%s",
            pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
  } else {
    rc = -1;
  }
  pthread_mutex_unlock(&st->mu);
  return rc;
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae,
                   void *closure) {
  (void)js;
  pubstate_t *st = closure;
  size_t events = lu__nats_msg_events(msg); /* a pack counts its events */
  if (!pa && pae && st->retry && lu__retryable(pae->Err, pae->ErrCode) &&
      keep_again(st, msg, pae) == 0)
    return; /* the main thread owns it now */
  if (pa) {
    atomic_fetch_add(&st->acked, events);
  } else {
    atomic_fetch_add(&st->refused, events);
    if (pae && !atomic_exchange(&st->reported, 1)) /* the first reason */
      cli_error("JetStream refused an event: %s (%d)",
                pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err),
                (int)pae->ErrCode);
  }
  natsMsg_Destroy(msg);
}

/* ---- reading lines, noticing when the input would block --------------- */

typedef struct reader_s {
  int fd;
  char *buf;
  size_t cap, start, end;
  int eof;
} reader_t;

/* The next line (its '\n' replaced by NUL) in *line / *len: 1, 0 at the
 * end, -1 on a read error (errno).  Before a read that would wait (a pipe
 * with nothing in it yet), calls idle(ud): a pack waits for no one. */
static int reader_next(reader_t *r, char **line, size_t *len,
                       void (*idle)(void *), void *ud) {
  for (;;) {
    /* Nothing buffered yet: buf may still be NULL. */
    char *b = r->end > r->start ? r->buf + r->start : NULL;
    char *nl = b ? memchr(b, '\n', r->end - r->start) : NULL;
    if (nl || (b && r->eof)) {
      if (!nl) nl = r->buf + r->end; /* the last line has no newline */
      *nl = 0;
      *line = b;
      *len = (size_t)(nl - b);
      r->start = (size_t)(nl - r->buf) + 1;
      if (r->start > r->end) r->start = r->end;
      return 1;
    }
    if (r->eof) return 0;
    if (r->start) {
      memmove(r->buf, r->buf + r->start, r->end - r->start);
      r->end -= r->start;
      r->start = 0;
    }
    if (r->cap - r->end < 2) { /* room for a read and a final NUL */
      size_t cap = r->cap ? r->cap * 2 : 65536;
      char *nb = realloc(r->buf, cap);
      if (!nb) {
        errno = ENOMEM;
        return -1;
      }
      r->buf = nb;
      r->cap = cap;
    }
    struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
    if (idle && poll(&pfd, 1, 0) == 0) idle(ud);
    ssize_t n = read(r->fd, r->buf + r->end, r->cap - r->end - 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) r->eof = 1;
    r->end += (size_t)n;
  }
}

/* ---- sending ---------------------------------------------------------- */

/* Headers of a binary-mode event as "name\0value\0" pairs, collected
 * before the message exists (its payload comes with them). */
typedef struct hdrs_s {
  lu_buf_t text;
  size_t n;
} hdrs_t;

static int hdr_put(void *ud, const char *name, const char *value) {
  hdrs_t *h = ud;
  lu__buf_put(&h->text, name, strlen(name) + 1);
  lu__buf_put(&h->text, value, strlen(value) + 1);
  h->n++;
  return h->text.oom ? LU_ENOMEM : 0;
}

/* A valid event in binary content mode on subject subj, with Nats-Msg-Id
 * and Lucent-Line when id is not NULL (at-least-once).  *out is NULL on
 * failure; err says why when the event has no binary form. */
static natsStatus binary_msg(natsMsg **out, const char *subj, lu_event_t *ev,
                             const char *id, uint64_t line, char *err,
                             size_t errlen) {
  hdrs_t h = {0};
  lu_buf_t pay = {0};
  *out = NULL;
  err[0] = 0;
  size_t jl = 0;
  const char *j = lu_event_json(ev, &jl);
  cJSON *root = j ? cJSON_ParseWithLength(j, jl) : NULL; /* --binary only */
  int rc = root ? lu__ce_binary_encode(root, hdr_put, &h, &pay, err, errlen)
                : LU_ENOMEM;
  cJSON_Delete(root);
  natsStatus s = rc == LU_ENOMEM ? NATS_NO_MEMORY : rc ? NATS_ERR : NATS_OK;
  if (s == NATS_OK) s = natsMsg_Create(out, subj, NULL, pay.p, (int)pay.len);
  const char *t = h.text.p;
  for (size_t i = 0; s == NATS_OK && i < h.n; i++) {
    const char *v = t + strlen(t) + 1;
    s = natsMsgHeader_Set(*out, t, v);
    t = v + strlen(v) + 1;
  }
  if (s == NATS_OK && id) {
    char lbuf[24];
    lu__fmt(lbuf, sizeof lbuf, "%" PRIu64, line);
    s = natsMsgHeader_Set(*out, "Nats-Msg-Id", id);
    if (s == NATS_OK) s = natsMsgHeader_Set(*out, "Lucent-Line", lbuf);
  }
  if (s != NATS_OK) {
    natsMsg_Destroy(*out);
    *out = NULL;
  }
  lu__buf_free(&h.text);
  lu__buf_free(&pay);
  return s;
}

/* --dry-run: where each line goes, one JSON object per line. */
static int dry_run(int fd, const lu_routes_t *routes, unsigned P) {
  reader_t rd = {.fd = fd};
  char *line;
  size_t len;
  int more;
  uint64_t lineno = 0;
  lu_buf_t o = {0};
  while ((more = reader_next(&rd, &line, &len, NULL, NULL)) > 0) {
    lineno++;
    while (len && line[len - 1] == '\r') len--;
    line[len] = 0;
    if (strspn(line, " \t") >= len) continue;
    lu_event_t *ev = NULL;
    char why[256];
    int valid = lu_event_parse(&ev, line, len, why, sizeof why) == 0;
    lu_pkey_t k;
    lu__intake_key(routes, ev, line, len, &k);
    unsigned p = (unsigned)(lu__fnv1a64(k.text, k.len) % P);
    static const char *const kinds[] = {"route", "subject", "id", "bytes"};
    o.len = 0;
    char head[96];
    lu__fmt(head, sizeof head,
            "{\"line\":%" PRIu64 ",\"partition\":%u,\"subject\":\"%s.%u\"",
            lineno, p, LU_SUBJ_INTAKE, p);
    lu__buf_puts(&o, head);
    lu__buf_puts(&o, valid ? ",\"valid\":true" : ",\"valid\":false");
    if (ev) {
      lu__buf_puts(&o, ",\"key\":\"");
      lu__buf_puts(&o, kinds[k.kind]);
      lu__buf_puts(&o, "\",\"value\":");
      lu__buf_json_str(&o, k.text, k.len);
      if (k.key_missing) lu__buf_puts(&o, ",\"key_missing\":true");
    } else {
      lu__buf_puts(&o, ",\"key\":\"bytes\",\"reason\":");
      lu__buf_json_str(&o, why, strlen(why));
    }
    lu__buf_puts(&o, "}\n");
    if (!o.oom) fwrite(o.p, 1, o.len, stdout);
    lu_event_free(ev);
  }
  int err = more < 0 ? errno : 0;
  lu__buf_free(&o);
  free(rd.buf);
  if (err) {
    cli_error("error reading input: %s", strerror(err));
    return 1;
  }
  return fflush(stdout) == 0 ? 0 : 1;
}

typedef struct pub_s {
  natsConnection *nc;
  jsCtx *js;
  lu_packer_t *packer; /* at-least-once with --pack > 1 */
  uint64_t sent, failed; /* events */
  pubstate_t *st;
  lu_retry_t retry;      /* the current episode of messages sent again */
} pub_t;

/* A copy of m (subject, headers, data) to publish again: nats.c's
 * asynchronous publish keeps its own state in the message it sent. */
static natsStatus msg_copy(natsMsg **out, natsMsg *m) {
  natsStatus s = natsMsg_Create(out, natsMsg_GetSubject(m), NULL,
                                natsMsg_GetData(m),
                                natsMsg_GetDataLength(m));
  const char **keys = NULL;
  int nk = 0;
  if (s == NATS_OK && natsMsgHeader_Keys(m, &keys, &nk) == NATS_OK) {
    for (int i = 0; s == NATS_OK && i < nk; i++) {
      const char **vals = NULL;
      int nv = 0;
      if (natsMsgHeader_Values(m, keys[i], &vals, &nv) != NATS_OK) continue;
      for (int k = 0; s == NATS_OK && k < nv; k++)
        s = natsMsgHeader_Add(*out, keys[i], vals[k]);
      free((void *)vals);
    }
    free((void *)keys);
  }
  if (s != NATS_OK) {
    natsMsg_Destroy(*out);
    *out = NULL;
  }
  return s;
}

/* Sends again what JetStream did not take for a transient reason, and
 * waits for its answers, until nothing waits or the episode is older than
 * --retry-ms (then the rest counts as refused, with one log line). */
static void send_again(pub_t *p) {
  pubstate_t *st = p->st;
  for (;;) {
    pthread_mutex_lock(&st->mu);
    natsMsg **list = st->again;
    size_t n = st->nagain;
    natsStatus err = st->last_err;
    int jerr = st->last_jerr;
    char why[160];
    lu__fmt(why, sizeof why, "%s", st->last_why);
    st->again = NULL;
    st->nagain = st->capagain = 0;
    pthread_mutex_unlock(&st->mu);
    if (!n) {
      lu__retry_ok(&p->retry);
      return;
    }
    int again = lu__retry_again(&p->retry, err, jerr, why);
    for (size_t i = 0; i < n; i++) {
      size_t events = lu__nats_msg_events(list[i]);
      natsMsg *c = NULL;
      natsStatus s = again ? msg_copy(&c, list[i]) : NATS_ERR;
      if (s == NATS_OK) s = js_PublishMsgAsync(p->js, &c, NULL);
      natsMsg_Destroy(c);
      if (s != NATS_OK) atomic_fetch_add(&st->refused, events);
      natsMsg_Destroy(list[i]);
    }
    free(list);
    if (!again) {
      atomic_store(&st->retry, 0); /* window over: failures are refused */
      return;
    }
    /* Their answers before anything newer (order). */
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    js_PublishAsyncComplete(p->js, &po);
  }
}

/* Something to send again?  Checked before each new message. */
static int again_waiting(pubstate_t *st) {
  pthread_mutex_lock(&st->mu);
  size_t n = st->nagain;
  pthread_mutex_unlock(&st->mu);
  return n != 0;
}

/* Publishes one intake message of `events` events (takes msg). */
static void send_js(pub_t *p, natsMsg *msg, size_t events) {
  if (p->st->retry && again_waiting(p->st)) send_again(p);
  natsStatus s = js_PublishMsgAsync(p->js, &msg, NULL);
  natsMsg_Destroy(msg); /* NULL once JetStream took it */
  if (s == NATS_OK) p->sent += events;
  else p->failed += events;
}

static void flush_packs(void *ud) {
  pub_t *p = ud;
  if (!p->packer) return;
  for (;;) {
    natsMsg *m = NULL;
    size_t dropped = 0;
    lu__packer_flush(p->packer, &m, &dropped);
    p->failed += dropped;
    if (!m) break;
    send_js(p, m, lu__nats_msg_events(m));
  }
}

/* The routes a publisher partitions by: the server's table; without one,
 * none (every event by its subject) and a warning, once. */
static lu_routes_t *server_routes(natsConnection *nc) {
  lu_routes_t *r = NULL;
  char err[512];
  if (lu__routes_fetch(&r, nc, err, sizeof err)) {
    cli_error("warning: %s; partitioning every event by its subject, so "
              "events of one hash_based or sticky_session key published "
              "now are not kept in order (docs/protocol.md, 6.4)", err);
    return NULL;
  }
  return r;
}

int cmd_publish(int argc, char **argv) {
  enum { O_DELIVERY = 300, O_PACK, O_BINARY, O_DRY_RUN, O_REPLICAS,
         O_RETRY, O_PARTS, O_BY };
  static const struct option opts[] = {
      {"input", required_argument, 0, 'i'},
      {"delivery", required_argument, 0, O_DELIVERY},
      {"pack", required_argument, 0, O_PACK},
      {"binary", no_argument, 0, O_BINARY},
      {"dry-run", no_argument, 0, O_DRY_RUN},
      {"replicas", required_argument, 0, O_REPLICAS},
      {"retry-ms", required_argument, 0, O_RETRY},
      {"partitions", required_argument, 0, O_PARTS},
      {"partition-by", required_argument, 0, O_BY},
      {"plugin", required_argument, 0, 'p'},
      {"json", no_argument, 0, 'j'},
      {"help", no_argument, 0, 'h'},
      CLI_NATS_LONGOPTS,
      {0, 0, 0, 0}};
  lu_nats_opts_t no = {0};
  const char *input = NULL;
  int amo = 0, json = 0, binary = 0, dry = 0, pack_set = 0, by_subject = 0, c;
  unsigned long pack = LU_INTAKE_PACK_EVENTS, retry_ms = LU_RETRY_DEFAULT_MS;
  unsigned long parts = 0;
  unsigned replicas = 0;
  lu_registry_t *reg = NULL; /* --plugin: routes for a dry run */
  lu_routes_t *routes = NULL;
  char *end;
  optind = 1;
  while ((c = cli_getopt(argc, argv, "i:jhp:", opts)) != -1) {
    if (cli_nats_opt(c, optarg, &no)) continue;
    switch (c) {
      case 'i': input = optarg; break;
      case 'j': json = 1; break;
      case O_DELIVERY:
        if (!strcmp(optarg, "at-most-once")) amo = 1;
        else if (strcmp(optarg, "at-least-once")) {
          cli_error("--delivery wants at-least-once or at-most-once");
          goto usage_err;
        }
        break;
      case O_PACK:
        errno = 0;
        pack = strtoul(optarg, &end, 10);
        if (errno || end == optarg || *end || optarg[0] == '-' || !pack ||
            pack > 4096) {
          cli_error("--pack must be an integer in 1..4096");
          goto usage_err;
        }
        pack_set = 1;
        break;
      case O_REPLICAS:
        if (lu__assets_parse_replicas(optarg, &replicas) || !replicas) {
          cli_error("--replicas must be an integer in 1..%d",
                    LU_ASSETS_MAX_REPLICAS);
          goto usage_err;
        }
        break;
      case O_RETRY:
        errno = 0;
        retry_ms = strtoul(optarg, &end, 10);
        if (errno || end == optarg || *end || optarg[0] == '-' ||
            retry_ms > 3600000) {
          cli_error("--retry-ms must be an integer in 0..3600000");
          goto usage_err;
        }
        break;
      case O_PARTS:
        errno = 0;
        parts = strtoul(optarg, &end, 10);
        if (errno || end == optarg || *end || optarg[0] == '-' || !parts ||
            parts > LU_INTAKE_PARTITIONS_MAX) {
          cli_error("--partitions must be an integer in 1..%u",
                    (unsigned)LU_INTAKE_PARTITIONS_MAX);
          goto usage_err;
        }
        break;
      case O_BY:
        by_subject = !strcmp(optarg, "subject");
        if (!by_subject && strcmp(optarg, "route")) {
          cli_error("--partition-by wants route or subject");
          goto usage_err;
        }
        break;
      case 'p':
        if ((!reg && lu_registry_new(&reg)) ||
            lu_registry_load_plugin(reg, optarg)) {
          cli_error("%s", reg ? lu_registry_errmsg(reg) : "out of memory");
          lu_registry_free(reg);
          return 1;
        }
        break;
      case O_BINARY: binary = 1; break;
      case O_DRY_RUN: dry = 1; break;
      case 'h': usage(stdout); lu_registry_free(reg); return 0;
      default: goto usage_err;
    }
  }
  cli_nats_env(&no);
  if (binary && pack_set && pack > 1) {
    cli_error("--binary sends one event per message: no --pack");
    goto usage_err;
  }
  if (reg && (!dry || no.urls)) {
    cli_error("--plugin gives the routes of a --dry-run without --nats "
              "(otherwise they are the server's)");
    goto usage_err;
  }
  if (binary) pack = 1;
  if ((!no.urls && !dry) || !input || optind < argc) {
    if (!no.urls && !dry) cli_error("--nats is required (or LUCENT_NATS_URL)");
    else if (!input) cli_error("--input is required (a file, or - for stdin)");
    else cli_error("unexpected argument '%s'", argv[optind]);
    goto usage_err;
  }
  int fd = strcmp(input, "-") ? open(input, O_RDONLY | O_CLOEXEC) : 0;
  if (fd < 0) {
    cli_error("cannot open input %s: %s", input, strerror(errno));
    lu_registry_free(reg);
    return 1;
  }
  if (dry && !no.urls) { /* no server: the count and routes given */
    int rc = 0;
    if (reg && !by_subject &&
        (lu__routes_new(&routes) ||
         lu__routes_add_registry(routes, reg, NULL))) {
      cli_error("out of memory");
      rc = 1;
    }
    if (!rc)
      rc = dry_run(fd, routes,
                   parts ? (unsigned)parts : LU_INTAKE_PARTITIONS_DEFAULT);
    lu__routes_free(routes);
    lu_registry_free(reg);
    if (fd) close(fd);
    return rc;
  }
  char err[512];
  no.name = "lucent-publish";
  natsConnection *nc = NULL;
  if (lu__nats_connect(&nc, &no, err, sizeof err)) {
    cli_error("%s", err);
    if (fd) close(fd);
    return 1;
  }
  pubstate_t st = {.retry = retry_ms > 0};
  pthread_mutex_init(&st.mu, NULL);
  jsCtx *js = NULL;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = 4096;
  /* With 4096 unacknowledged publishes a new one waits for room; nats.c's
   * default wait of 200 ms fails it under load (the shards busy the
   * server): wait as long as the final completion would. */
  jo.PublishAsync.StallWait = 30000;
  jo.PublishAsync.AckHandler = on_ack;
  jo.PublishAsync.AckHandlerClosure = &st;
  unsigned P = 0;
  natsStatus s = amo ? NATS_OK : natsConnection_JetStream(&js, nc, &jo);
  lu_assets_opts_t ao = {.replicas = replicas, .retry_ms = (uint32_t)retry_ms};
  if (s != NATS_OK ||
      (!amo && lu__intake_stream_ensure(js, (unsigned)parts, !dry, &ao, &P,
                                        err, sizeof err))) {
    if (s != NATS_OK) lu__nats_reason(s, err, sizeof err);
    cli_error("%s", err);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    pthread_mutex_destroy(&st.mu);
    if (fd) close(fd);
    return 1;
  }
  if (!amo && !by_subject) routes = server_routes(nc);
  if (dry) { /* (at-most-once has no partitions: the default's) */
    int rc = dry_run(fd, routes, P ? P : LU_INTAKE_PARTITIONS_DEFAULT);
    lu__routes_free(routes);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    pthread_mutex_destroy(&st.mu);
    if (fd) close(fd);
    return rc;
  }
  pub_t pub = {.nc = nc, .js = js, .st = &st,
               .retry = {.window_ms = (uint32_t)retry_ms,
                         .what = "publishing to " LU_STREAM_INTAKE}};
  if (!amo && pack > 1 && lu__packer_new(&pub.packer, pack, P)) {
    cli_error("out of memory");
    lu__routes_free(routes);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    if (fd) close(fd);
    return 1;
  }
  reader_t rd = {.fd = fd};
  char *line;
  size_t len;
  int more;
  uint64_t lineno = 0, invalid = 0;
  lu_buf_t dedup = {0};
  while ((more = reader_next(&rd, &line, &len, flush_packs, &pub)) > 0) {
    lineno++;
    while (len && line[len - 1] == '\r') len--;
    line[len] = 0;
    size_t skip = strspn(line, " \t");
    if (skip >= len) continue;
    /* Is it a valid event?  Only to report it: it is sent either way. */
    lu_event_t *ev = NULL;
    const char *id = NULL;
    if (lu_event_parse(&ev, line, len, NULL, 0) == 0) {
      /* Deduplicated by its identity, (source, id). */
      const char *src = lu_event_attr(ev, "source");
      id = lu__intake_dedup_id(&dedup, src ? src : "", lu_event_id(ev)) == 0
               ? dedup.p
               : lu_event_id(ev);
    } else {
      invalid++;
    }
    if (amo) {
      if (ev && binary) {
        natsMsg *msg = NULL;
        s = binary_msg(&msg, LU_SUBJ_AMO_INTAKE, ev, NULL, lineno, err,
                       sizeof err);
        if (s == NATS_OK) s = natsConnection_PublishMsg(nc, msg);
        else if (err[0]) cli_error("line %" PRIu64 ": %s", lineno, err);
        natsMsg_Destroy(msg);
      } else if (ev) {
        /* A valid event travels bare: a header block cost half of the
         * publisher's CPU and a fifth of nats-server's per event
         * (bench/README.md); the line number only matters for a line that
         * is not an event, which still carries it. */
        s = natsConnection_Publish(nc, LU_SUBJ_AMO_INTAKE, line, (int)len);
      } else {
        char lbuf[24];
        lu__fmt(lbuf, sizeof lbuf, "%" PRIu64, lineno);
        natsMsg *msg = NULL;
        s = natsMsg_Create(&msg, LU_SUBJ_AMO_INTAKE, NULL, line, (int)len);
        if (s == NATS_OK) s = natsMsgHeader_Set(msg, "Lucent-Line", lbuf);
        if (s == NATS_OK) s = natsConnection_PublishMsg(nc, msg);
        natsMsg_Destroy(msg);
      }
      if (s == NATS_OK) pub.sent++;
      else pub.failed++;
      lu_event_free(ev);
      continue;
    }
    unsigned part = lu__intake_partition(routes, P, ev, line, len);
    natsMsg *msg = NULL;
    if (binary && ev) {
      char subj[64];
      lu__fmt(subj, sizeof subj, "%s.%u", LU_SUBJ_INTAKE, part);
      if (binary_msg(&msg, subj, ev, id, lineno, err, sizeof err) !=
          NATS_OK) {
        if (err[0]) cli_error("line %" PRIu64 ": %s", lineno, err);
        pub.failed++;
      }
    } else if (pub.packer && ev) { /* into its partition's pack */
      size_t dropped = 0;
      lu__packer_add(pub.packer, part, id, line, len, lineno, &msg,
                     &dropped);
      pub.failed += dropped;
    } else {
      char idbuf[64];
      if (!id) { /* dedup id for a bad line: its bytes and its line */
        XXH64_hash_t h = XXH3_64bits_withSeed(line, len, lineno);
        lu__fmt(idbuf, sizeof idbuf, "line-%" PRIu64 "-%016llx", lineno,
                (unsigned long long)h);
        id = idbuf;
      }
      if (lu__intake_msg(&msg, part, id, line, len, lineno) != NATS_OK)
        pub.failed++;
    }
    if (msg) send_js(&pub, msg, lu__nats_msg_events(msg));
    lu_event_free(ev);
  }
  int read_err = more < 0 ? errno : 0;
  flush_packs(&pub);
  lu__packer_free(pub.packer);
  lu__routes_free(routes);
  lu__buf_free(&dedup);
  free(rd.buf);
  if (fd) close(fd);
  uint64_t sent = pub.sent, failed = pub.failed;
  if (amo) {
    s = natsConnection_FlushTimeout(nc, 10000);
    if (s == NATS_OK) atomic_store(&st.acked, sent);
    else atomic_store(&st.refused, sent);
  } else {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    /* Until everything is answered: what waits to be sent again is
     * neither acked nor refused yet. */
    for (int round = 0;; round++) {
      s = js_PublishAsyncComplete(js, &po);
      /* Complete returns once nothing is pending, which can be just
       * before the last ack handlers have run: wait (bounded) for them. */
      for (int i = 0; s == NATS_OK && i < 500; i++) {
        if (atomic_load(&st.acked) + atomic_load(&st.refused) >= sent ||
            again_waiting(&st))
          break;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
      }
      if (s != NATS_OK || !again_waiting(&st) || round > 100000) break;
      send_again(&pub);
    }
    send_again(&pub); /* nothing, normally; else counted as refused */
    /* Failures that came after the last round: refused. */
    atomic_store(&st.retry, 0);
    pthread_mutex_lock(&st.mu);
    for (size_t i = 0; i < st.nagain; i++) {
      atomic_fetch_add(&st.refused, lu__nats_msg_events(st.again[i]));
      natsMsg_Destroy(st.again[i]);
    }
    free(st.again);
    st.again = NULL;
    st.nagain = 0;
    pthread_mutex_unlock(&st.mu);
    if (s != NATS_OK) {
      /* Whatever was not acknowledged by now counts as refused. */
      uint64_t a = atomic_load(&st.acked), r = atomic_load(&st.refused);
      if (a + r < sent) atomic_store(&st.refused, sent - a);
    }
  }
  uint64_t acked = atomic_load(&st.acked), refused =
                                               atomic_load(&st.refused) +
                                               failed;
  if (json)
    printf("{\"lines\":%" PRIu64 ",\"accepted\":%" PRIu64 ",\"rejected\":%"
           PRIu64 ",\"invalid\":%" PRIu64 ",\"delivery\":\"%s\"}\n",
           sent + failed, acked, refused, invalid,
           amo ? "at-most-once" : "at-least-once");
  else
    printf("lucent publish: %" PRIu64 " events: %" PRIu64 " accepted, %" PRIu64
           " rejected%s; %" PRIu64 " of them are not valid events (the "
           "shards will record them as lucent.Rejected)\n",
           sent + failed, acked, refused,
           amo ? " (at-most-once: accepted = sent)" : "", invalid);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  pthread_mutex_destroy(&st.mu);
  if (read_err) {
    cli_error("error reading %s: %s", input, strerror(read_err));
    return 1;
  }
  return refused ? 1 : 0;
usage_err:
  usage(stderr);
  lu_registry_free(reg);
  return 2;
}
