/*
 * cmd_exec.c - `lucent exec`: run a function and wait for its answer (the
 * pattern's handleExecuteFunction).
 *
 *   lucent exec --nats URL --type OrderPlaced --data '{"orderId":"o-1",...}'
 *
 * Sends a CloudEvent as a NATS request to lucent.exec; whichever shard gets
 * it runs it, or passes it to the shard that owns it, and that shard replies
 * once the outcome is stored (or, with --reply executed, once the function
 * has returned: the outcome is stored after).  Prints the reply (success, result, function,
 * shard) and exits 0 on success; exits 1 with a clear message on a failed
 * or rejected execution, no function for the type, no shard serving, or no
 * reply in time; 2 on a usage error.
 *
 * Riding through a JetStream leader election or a reconnect (--retry-ms,
 * default 20 s; retry.h): "no responders" (no shard subscribed right now:
 * the shards' connections move to another node) means nobody took the
 * request; no reply within --timeout may mean it was lost on the way (a
 * route to the dead node), or that the shard holding it is storing its
 * outcome through the election.  Either way it is sent again, every
 * --timeout, with the same event id and a Lucent-Attempt header, until
 * the window is over; a reply to any attempt ends it.  A shard runs an
 * attempt after the first as an ordinary event, so its records are stored
 * one per message and deduplicated by id however late (store_jetstream.c
 * note 8); the first attempt's are packed with other requests' results
 * of the same burst (note 7).  So a result is stored twice only if the
 * first attempt ran, was stored in a pack of several requests, and its
 * reply was lost past --timeout: a burst of requests during an election.
 * A single request alone is never packed.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "membership.h"
#include "nats_opts.h"
#include "retry.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: lucent exec --nats URLS --type T [--data JSON] [options]\n"
          "  --type T             the event type to execute\n"
          "  --data JSON          the event's data (default {})\n"
          "  --subject S          the event's subject\n"
          "  --correlation ID     correlation id (default: the event id)\n"
          "  --id ID              event id (default: a new UUID)\n"
          "  --timeout MS         wait this long for the reply (default 5000)\n"
          "  --retry-ms MS        ride through a JetStream leader election\n"
          "                       or a reconnect: with no shard serving or\n"
          "                       no reply within --timeout, send it again\n"
          "                       (same id) for up to MS (default %u; 0 =\n"
          "                       send once)\n"
          "  --reply WHEN         stored (the reply means the outcome is\n"
          "                       stored) or executed (the function has\n"
          "                       returned; its outcome is stored after, and\n"
          "                       a crash in between loses it); default: the\n"
          "                       serve's --exec-reply\n"
          "%s", LU_RETRY_DEFAULT_MS, CLI_NATS_USAGE);
}

/* The request, riding through an election (see the top).  NATS_OK with
 * *reply, NATS_NO_RESPONDERS (no shard took it, even after retry_ms),
 * NATS_TIMEOUT (no reply, even after retry_ms), or another failure. */
static natsStatus request(natsConnection *nc, const char *json, size_t len,
                          long timeout, uint32_t retry_ms, const char *when,
                          natsMsg **reply) {
  *reply = NULL;
  natsInbox *inbox = NULL;
  natsSubscription *sub = NULL;
  natsStatus s = natsInbox_Create(&inbox);
  if (s == NATS_OK) s = natsConnection_SubscribeSync(&sub, nc, inbox);
  lu_retry_t r = {.window_ms = retry_ms,
                  .what = "the request to " LU_SUBJ_EXEC};
  for (unsigned attempt = 1; s == NATS_OK; attempt++) {
    natsMsg *req = NULL;
    char abuf[16];
    lu__fmt(abuf, sizeof abuf, "%u", attempt);
    s = natsMsg_Create(&req, LU_SUBJ_EXEC, inbox, json, (int)len);
    if (s == NATS_OK && attempt > 1)
      s = natsMsgHeader_Set(req, LU_HDR_ATTEMPT, abuf);
    if (s == NATS_OK && when) s = natsMsgHeader_Set(req, LU_HDR_EXEC_REPLY, when);
    if (s == NATS_OK) s = natsConnection_PublishMsg(nc, req);
    natsMsg_Destroy(req);
    /* A reply to this attempt or an earlier one; a 503 status (no
     * responders) is about one of them: sent again below. */
    if (s == NATS_OK) s = natsSubscription_NextMsg(reply, sub, timeout);
    const char *why = "no reply";
    if (s == NATS_OK) {
      const char *st = lu__nats_pull_status(*reply); /* no body */
      if (!st || strcmp(st, "503") != 0) {
        lu__retry_ok(&r);
        break;
      }
      natsMsg_Destroy(*reply); /* nobody took it */
      *reply = NULL;
      s = NATS_NO_RESPONDERS;
      why = "no shard is serving " LU_SUBJ_EXEC;
    } else if (s != NATS_TIMEOUT) {
      break;
    }
    if (!lu__retry_again(&r, s, 0, why)) break;
    s = NATS_OK;
  }
  natsSubscription_Destroy(sub);
  natsInbox_Destroy(inbox);
  return s;
}

int cmd_exec(int argc, char **argv) {
  enum { O_SUBJECT = 300, O_CORR, O_ID, O_TIMEOUT, O_RETRY, O_REPLY };
  static const struct option opts[] = {
      {"type", required_argument, 0, 't'},
      {"data", required_argument, 0, 'd'},
      {"subject", required_argument, 0, O_SUBJECT},
      {"correlation", required_argument, 0, O_CORR},
      {"id", required_argument, 0, O_ID},
      {"timeout", required_argument, 0, O_TIMEOUT},
      {"retry-ms", required_argument, 0, O_RETRY},
      {"reply", required_argument, 0, O_REPLY},
      {"help", no_argument, 0, 'h'},
      CLI_NATS_LONGOPTS,
      {0, 0, 0, 0}};
  lu_nats_opts_t no = {0};
  const char *type = NULL, *data = "{}", *subject = NULL, *corr = NULL,
             *id = NULL, *when = NULL;
  long timeout = 5000, retry_ms = LU_RETRY_DEFAULT_MS;
  int c;
  optind = 1;
  while ((c = cli_getopt(argc, argv, "t:d:h", opts)) != -1) {
    if (cli_nats_opt(c, optarg, &no)) continue;
    switch (c) {
      case 't': type = optarg; break;
      case 'd': data = optarg; break;
      case O_SUBJECT: subject = optarg; break;
      case O_CORR: corr = optarg; break;
      case O_ID: id = optarg; break;
      case O_REPLY:
        when = optarg;
        if (strcmp(when, "stored") && strcmp(when, "executed")) {
          cli_error("--reply wants stored or executed");
          goto usage_err;
        }
        break;
      case O_TIMEOUT: {
        char *end;
        errno = 0;
        timeout = strtol(optarg, &end, 10);
        if (errno || *end || timeout < 1 || timeout > 3600000) {
          cli_error("--timeout wants milliseconds, 1..3600000");
          goto usage_err;
        }
        break;
      }
      case O_RETRY: {
        char *end;
        errno = 0;
        retry_ms = strtol(optarg, &end, 10);
        if (errno || end == optarg || *end || retry_ms < 0 ||
            retry_ms > 3600000) {
          cli_error("--retry-ms wants milliseconds, 0..3600000");
          goto usage_err;
        }
        break;
      }
      case 'h': usage(stdout); return 0;
      default: goto usage_err;
    }
  }
  cli_nats_env(&no);
  if (!no.urls || !type || optind < argc) {
    if (!no.urls) cli_error("--nats is required (or LUCENT_NATS_URL)");
    else if (!type) cli_error("--type is required");
    else cli_error("unexpected argument '%s'", argv[optind]);
    goto usage_err;
  }
  cJSON *d = cJSON_Parse(data);
  if (!d) {
    cli_error("--data is not valid JSON: %s", data);
    goto usage_err;
  }
  lu_event_t *ev = NULL;
  if (lu_event_new(&ev, type, "lucent-exec", subject, d) ||
      (id && lu_event_set(ev, "id", id)) ||
      (corr && lu_event_set(ev, "correlationid", corr))) {
    cli_error("cannot build the event (type '%s')", type);
    lu_event_free(ev);
    return 2;
  }
  size_t len;
  const char *json = lu_event_json(ev, &len);
  char err[512];
  no.name = "lucent-exec";
  natsConnection *nc = NULL;
  if (lu__nats_connect(&nc, &no, err, sizeof err)) {
    cli_error("%s", err);
    lu_event_free(ev);
    return 1;
  }
  natsMsg *reply = NULL;
  natsStatus s =
      request(nc, json, len, timeout, (uint32_t)retry_ms, when, &reply);
  int rc = 1;
  if (s == NATS_NO_RESPONDERS) {
    cli_error("no shard is serving %s on %s (is `lucent serve` running?)",
              LU_SUBJ_EXEC, no.urls);
  } else if (s == NATS_TIMEOUT) {
    cli_error("no reply within %ld ms%s (type '%s')", timeout,
              retry_ms ? ", sent again until the --retry-ms window ended"
                       : "", type);
  } else if (s != NATS_OK) {
    lu__nats_reason(s, err, sizeof err);
    cli_error("request failed: %s", err);
  } else {
    const char *body = natsMsg_GetData(reply);
    cJSON *r = cJSON_ParseWithLength(body, (size_t)natsMsg_GetDataLength(reply));
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(r, "success");
    char *pretty = r ? cJSON_Print(r) : NULL;
    printf("%s\n", pretty ? pretty : body);
    free(pretty);
    if (cJSON_IsTrue(ok)) {
      rc = 0;
    } else {
      const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
      cli_error("%s", cJSON_IsString(e) ? e->valuestring
                                        : "the execution did not succeed");
    }
    cJSON_Delete(r);
  }
  natsMsg_Destroy(reply);
  natsConnection_Destroy(nc);
  lu_event_free(ev);
  return rc;
usage_err:
  usage(stderr);
  return 2;
}
