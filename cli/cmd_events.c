/*
 * cmd_events.c - `lucent events (--store FILE.db | --nats URLS) [filters]`:
 * prints stored events as JSON Lines (each event's stored JSON, one per
 * line, in store order).  Opens the store read-only: the SQLite file next
 * to a `lucent run` that is writing it (WAL: readers never block the
 * writer), or the JetStream stream LUCENT_EVENTS that `lucent serve`
 * shards append to (never created here).
 *
 * Exit codes: 0 ok (also when nothing matches), 1 runtime error (store
 * missing or unreadable, NATS server unreachable, output error), 2 usage
 * error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lucent/lucent.h"
#include "lucent/nats.h"
#include "nats_opts.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: lucent events (--store FILE.db | --nats URLS [NATS opts])\n"
          "                     [--type T] [--subject S] [--correlation ID]\n"
          "                     [--after SEQ] [--limit N]\n"
          "  Prints the stored events that match every given filter as JSON\n"
          "  Lines (the stored event, one per line), in store order.\n"
          "    --store FILE.db     the event store written by `lucent run`\n"
          "    --type T            only events of type T\n"
          "    --subject S         only events whose subject is S\n"
          "    --correlation ID    only events with correlationid ID\n"
          "    --after SEQ         only events stored after sequence SEQ\n"
          "    --limit N           at most N events\n"
          "    --count             print how many events match, not them\n"
          "    --retry-ms MS       with --nats: ride through a JetStream\n"
          "                        leader election or a reconnect for up to\n"
          "                        MS before failing (default 20000; 0 =\n"
          "                        fail at once)\n"
          "  The event store on JetStream (stream LUCENT_EVENTS, written by\n"
          "  `lucent serve`), read-only:\n" CLI_NATS_USAGE);
}

/* A whole non-negative decimal number ("12"; not "", "-1", "1x", "+1"). */
static int parse_u64(const char *s, uint64_t *out) {
  if (!s || *s < '0' || *s > '9') return -1;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end) return -1;
  *out = (uint64_t)v;
  return 0;
}

typedef struct out_s {
  int werr; /* errno of a failed write, or 0 */
} out_t;

static int print_row(void *ud, uint64_t seq, const char *json, size_t len) {
  out_t *o = ud;
  (void)seq;
  /* One event per line: a trailing newline in the stored text would make
   * an empty line. */
  while (len && (json[len - 1] == '\n' || json[len - 1] == '\r')) len--;
  if (fwrite(json, 1, len, stdout) != len || putchar('\n') == EOF) {
    o->werr = errno ? errno : EIO;
    return 1; /* stop */
  }
  return 0;
}

static int count_row(void *ud, uint64_t seq, const char *json, size_t len) {
  (void)seq, (void)json, (void)len;
  (*(int64_t *)ud)++;
  return 0;
}

int cmd_events(int argc, char **argv) {
  static const struct option opts[] = {
      {"store", required_argument, 0, 's'},
      {"type", required_argument, 0, 't'},
      {"subject", required_argument, 0, 'S'},
      {"correlation", required_argument, 0, 'c'},
      {"after", required_argument, 0, 'a'},
      {"limit", required_argument, 0, 'l'},
      {"count", no_argument, 0, 'n'},
      {"retry-ms", required_argument, 0, 'r'},
      {"help", no_argument, 0, 'h'},
      CLI_NATS_LONGOPTS,
      {0, 0, 0, 0}};
  /* Outputs can be millions of lines: write them in large blocks.  Static,
   * so that it outlives the final flush at exit. */
  static char outbuf[1 << 20];
  setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);

  const char *store = NULL;
  lu_nats_opts_t nats;
  lu_nats_opts_init(&nats);
  nats.name = "lucent events";
  int nats_conn_opts = 0; /* a connection option other than --nats */
  lu_query_t q = {0};
  uint64_t v;
  int c, count = 0;
  uint64_t retry_ms = LU_NATS_RETRY_MS;
  optind = 1;
  while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
    if (cli_nats_opt(c, optarg, &nats)) {
      nats_conn_opts |= c != CLI_OPT_NATS;
      continue;
    }
    switch (c) {
      case 's': store = optarg; break;
      case 't': q.type = optarg; break;
      case 'S': q.subject = optarg; break;
      case 'c': q.correlationid = optarg; break;
      case 'a':
        if (parse_u64(optarg, &v)) {
          cli_error("--after must be a sequence number (0 or more), not '%s'",
                    optarg);
          usage(stderr);
          return 2;
        }
        q.after_seq = v;
        break;
      case 'l':
        if (parse_u64(optarg, &v) || v == 0 || v > SIZE_MAX) {
          cli_error("--limit must be a positive integer, not '%s'", optarg);
          usage(stderr);
          return 2;
        }
        q.limit = (size_t)v;
        break;
      case 'n': count = 1; break;
      case 'r':
        if (parse_u64(optarg, &v) || v > 3600000) {
          cli_error("--retry-ms must be milliseconds, 0..3600000, not '%s'",
                    optarg);
          usage(stderr);
          return 2;
        }
        retry_ms = v;
        break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2; /* cli_getopt said why */
    }
  }
  if (optind < argc) {
    cli_error("unexpected argument '%s'", argv[optind]);
    usage(stderr);
    return 2;
  }
  if (store && nats.urls) {
    cli_error("give either --store or --nats, not both");
    usage(stderr);
    return 2;
  }
  if (store && nats_conn_opts) {
    cli_error("NATS connection options need --nats");
    usage(stderr);
    return 2;
  }
  if (!store) {
    cli_nats_env(&nats);
    if (!nats.urls) {
      cli_error("--store or --nats is required");
      usage(stderr);
      return 2;
    }
  }

  lu_store_t *st = NULL;
  lu_nats_t *nc = NULL;
  char err[1024];
  if (store) {
    if (lu_store_open_readonly(&st, store, err, sizeof err) != 0) {
      cli_error("%s", err); /* "cannot open store FILE: reason" */
      return 1;
    }
  } else {
    int rc = lu_nats_connect(&nc, &nats, err, sizeof err);
    if (rc == 0) {
      lu_nats_store_opts_t so;
      lu_nats_store_opts_init(&so);
      so.read_only = 1;
      so.retry_ms = (uint32_t)retry_ms;
      rc = lu_nats_store_open(&st, nc, &so, err, sizeof err);
    }
    if (rc != 0) {
      cli_error("%s", err); /* "cannot connect to URL: reason", ... */
      lu_nats_close(nc);
      return rc == LU_EINVAL ? 2 : 1;
    }
  }
  out_t o = {0};
  errno = 0;
  int rc;
  if (count) {
    /* Without filters the store knows its size; with them, count rows. */
    int64_t n = 0;
    if (!q.type && !q.subject && !q.correlationid && !q.after_seq &&
        !q.limit) {
      n = lu_store_count(st);
      rc = n < 0 ? (int)n : 0;
    } else {
      rc = lu_store_query(st, &q, count_row, &n);
    }
    if (rc == 0) printf("%lld\n", (long long)n);
  } else {
    rc = lu_store_query(st, &q, print_row, &o);
  }
  int ret = 0;
  if (rc < 0) {
    cli_error("%s", lu_store_errmsg(st));
    ret = 1;
  }
  lu_store_close(st);
  lu_nats_close(nc);
  if (fflush(stdout) == EOF && !o.werr) o.werr = errno ? errno : EIO;
  if (o.werr) {
    cli_error("cannot write to stdout: %s", strerror(o.werr));
    ret = 1;
  }
  return ret;
}
