/*
 * retry.c - riding through a JetStream leader election (retry.h).
 */
#include "retry.h"

#include <time.h>

#include "lucent/log.h"
#include "util.h"

int lu__retryable(natsStatus s, int jerr) {
  switch (s) {
    case NATS_TIMEOUT:
    case NATS_NO_RESPONDERS:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NOT_YET_CONNECTED:
      return 1;
    default:
      break;
  }
  switch (jerr) {
    case 10008: /* JSClusterNotAvailErr: 503, temporarily unavailable */
    case 10009: /* JSClusterNotLeaderErr */
    case 10118: /* JSStreamOfflineErr */
    case 10119: /* JSConsumerOfflineErr */
      return 1;
    default:
      return 0;
  }
}

uint64_t lu__retry_elapsed_ms(const lu_retry_t *r) {
  return r->t0 ? (lu__now_ns() - r->t0) / NS_PER_MS : 0;
}

int lu__retry_again(lu_retry_t *r, natsStatus s, int jerr, const char *why) {
  const char *what = r->what ? r->what : "a JetStream call";
  if (!why) why = natsStatus_GetText(s);
  int first = r->t0 == 0;
  if (first) r->t0 = lu__now_ns();
  uint64_t el = lu__retry_elapsed_ms(r);
  if (!r->window_ms || !lu__retryable(s, jerr) || el >= r->window_ms) {
    if (!first && !r->quiet)
      LU_LOG(LU_LOG_ERROR, r->who, NULL,
             LU_KVS(LU_KV_STR("what", what), LU_KV_UINT("tries", r->tries + 1),
                    LU_KV_UINT("ms", el)),
             "%s still fails after %.1f s (%s): giving up", what,
             (double)el / 1000, why);
    r->t0 = 0;
    r->tries = 0;
    return 0;
  }
  if (first && !r->quiet)
    LU_LOG(LU_LOG_WARN, r->who, NULL,
           LU_KVS(LU_KV_STR("what", what),
                  LU_KV_UINT("retry_ms", r->window_ms)),
           "%s failed (%s): JetStream leader election or reconnect? trying "
           "again for up to %.0f s", what, why, (double)r->window_ms / 1000);
  r->tries++;
  uint64_t ms = r->tries < 5 ? 50u << (r->tries - 1) : 1000;
  if (el + ms > r->window_ms) ms = r->window_ms - el + 1;
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
  return 1;
}

void lu__retry_ok(lu_retry_t *r) {
  if (!r->t0) return;
  uint64_t el = lu__retry_elapsed_ms(r);
  if (!r->quiet)
    LU_LOG(LU_LOG_INFO, r->who, NULL,
           LU_KVS(LU_KV_STR("what", r->what ? r->what : "a JetStream call"),
                  LU_KV_UINT("tries", r->tries), LU_KV_UINT("ms", el)),
           "%s works again after %.1f s", r->what ? r->what : "a JetStream call",
           (double)el / 1000);
  r->t0 = 0;
  r->tries = 0;
}
