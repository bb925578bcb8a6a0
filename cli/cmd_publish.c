/*
 * cmd_publish.c - `lucent publish`: sends a JSON Lines file of events into a
 * distributed lucent.
 *
 * At-least-once (default): each line goes to JetStream stream LUCENT_INTAKE
 * on subject lucent.intake.<p> (p from the event's subject, so one stream
 * of events stays in order), with Nats-Msg-Id = the event id (publishing a
 * file twice stores each event once) and its line number in a header.  A
 * line counts as accepted once JetStream has acknowledged it.
 * At-most-once: core NATS subject lucent.amo.intake, no acknowledgement,
 * and no headers on a valid event (its line number is not sent: a header
 * block doubled the publisher's CPU per event); a line that is not a
 * valid event still carries its line number, for its lucent.Rejected.
 *
 * Lines that are not valid events are still sent: the shards record them
 * as lucent.Rejected with the reason, exactly as `lucent run` does; the
 * summary says how many there were.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "cli.h"
#include "membership.h"
#include "nats_opts.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: lucent publish --nats URLS --input FILE|- [options]\n"
          "  --input FILE|-       JSON Lines CloudEvents; - for stdin\n"
          "  --delivery MODE      at-least-once (default) or at-most-once\n"
          "  --json               print the summary as JSON\n"
          "%s", CLI_NATS_USAGE);
}

typedef struct pubstate_s {
  _Atomic uint64_t acked, refused;
  _Atomic int reported;
} pubstate_t;

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae,
                   void *closure) {
  (void)js, (void)pae;
  pubstate_t *st = closure;
  if (pa) {
    atomic_fetch_add(&st->acked, 1);
  } else {
    atomic_fetch_add(&st->refused, 1);
    if (pae && !atomic_exchange(&st->reported, 1)) /* the first reason */
      cli_error("JetStream refused an event: %s (%d)",
                pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err),
                (int)pae->ErrCode);
  }
  natsMsg_Destroy(msg);
}

int cmd_publish(int argc, char **argv) {
  enum { O_DELIVERY = 300 };
  static const struct option opts[] = {
      {"input", required_argument, 0, 'i'},
      {"delivery", required_argument, 0, O_DELIVERY},
      {"json", no_argument, 0, 'j'},
      {"help", no_argument, 0, 'h'},
      CLI_NATS_LONGOPTS,
      {0, 0, 0, 0}};
  lu_nats_opts_t no = {0};
  const char *input = NULL;
  int amo = 0, json = 0, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "i:jh", opts, NULL)) != -1) {
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
      case 'h': usage(stdout); return 0;
      default: goto usage_err;
    }
  }
  cli_nats_env(&no);
  if (!no.urls || !input || optind < argc) {
    if (!no.urls) cli_error("--nats is required (or LUCENT_NATS_URL)");
    else if (!input) cli_error("--input is required (a file, or - for stdin)");
    else cli_error("unexpected argument '%s'", argv[optind]);
    goto usage_err;
  }
  FILE *in = strcmp(input, "-") ? fopen(input, "r") : stdin;
  if (!in) {
    cli_error("cannot open input %s: %s", input, strerror(errno));
    return 1;
  }
  char err[512];
  no.name = "lucent-publish";
  natsConnection *nc = NULL;
  if (lu__nats_connect(&nc, &no, err, sizeof err)) {
    cli_error("%s", err);
    if (in != stdin) fclose(in);
    return 1;
  }
  pubstate_t st = {0};
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
  natsStatus s = amo ? NATS_OK : natsConnection_JetStream(&js, nc, &jo);
  if (s != NATS_OK || (!amo && lu__nats_ensure_stream(js, LU_STREAM_INTAKE,
                                               LU_SUBJ_INTAKE ".>", err,
                                               sizeof err))) {
    if (s != NATS_OK) lu__nats_reason(s, err, sizeof err);
    cli_error("%s", err);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    if (in != stdin) fclose(in);
    return 1;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  uint64_t lineno = 0, sent = 0, invalid = 0, failed = 0;
  while ((len = getline(&line, &cap, in)) >= 0) {
    lineno++;
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
    size_t skip = strspn(line, " \t");
    if ((ssize_t)skip >= len) continue;
    /* Is it a valid event?  Only to report it: it is sent either way. */
    lu_event_t *ev = NULL;
    const char *id = NULL;
    if (lu_event_parse(&ev, line, (size_t)len, NULL, 0) == 0)
      id = lu_event_id(ev);
    else
      invalid++;
    char subj[64], lbuf[24], idbuf[64];
    if (amo)
      lu__fmt(subj, sizeof subj, "%s", LU_SUBJ_AMO_INTAKE);
    else
      lu__fmt(subj, sizeof subj, "%s.%u", LU_SUBJ_INTAKE,
              lu__intake_partition(ev, line, (size_t)len));
    lu__fmt(lbuf, sizeof lbuf, "%" PRIu64, lineno);
    if (!id) { /* dedup id for a bad line: its bytes and its line */
      XXH64_hash_t h = XXH3_64bits_withSeed(line, (size_t)len, lineno);
      lu__fmt(idbuf, sizeof idbuf, "line-%" PRIu64 "-%016llx", lineno,
              (unsigned long long)h);
      id = idbuf;
    }
    natsMsg *msg = NULL;
    if (amo && ev) {
      /* At-most-once, a valid event: bare, no headers.  A header block
       * cost half of the publisher's CPU and a fifth of nats-server's per
       * event (bench/README.md); the line number only matters for a line
       * that is not an event, which still carries it. */
      s = natsConnection_Publish(nc, subj, line, (int)len);
    } else {
      s = natsMsg_Create(&msg, subj, NULL, line, (int)len);
      if (s == NATS_OK) s = natsMsgHeader_Set(msg, "Lucent-Line", lbuf);
      if (s == NATS_OK && !amo)
        s = natsMsgHeader_Set(msg, "Nats-Msg-Id", id);
      if (s == NATS_OK && amo) {
        s = natsConnection_PublishMsg(nc, msg);
      } else if (s == NATS_OK) {
        s = js_PublishMsgAsync(js, &msg, NULL); /* takes msg on success */
      }
      natsMsg_Destroy(msg); /* NULL once JetStream took it */
    }
    lu_event_free(ev);
    if (s == NATS_OK) sent++;
    else failed++;
  }
  free(line);
  int read_err = ferror(in);
  if (in != stdin) fclose(in);
  if (amo) {
    s = natsConnection_FlushTimeout(nc, 10000);
    if (s == NATS_OK) atomic_store(&st.acked, sent);
    else atomic_store(&st.refused, sent);
  } else {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    s = js_PublishAsyncComplete(js, &po);
    /* Complete returns once nothing is pending, which can be just before
     * the last ack handlers have run: wait (bounded) for them. */
    for (int i = 0; s == NATS_OK && i < 500; i++) {
      if (atomic_load(&st.acked) + atomic_load(&st.refused) >= sent) break;
      struct timespec ts = {0, 10 * 1000000L};
      nanosleep(&ts, NULL);
    }
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
  if (read_err) {
    cli_error("error reading %s", input);
    return 1;
  }
  return refused ? 1 : 0;
usage_err:
  usage(stderr);
  return 2;
}
