/*
 * clock.c - the clocks lucent reads: monotonic time for every duration and
 * timed wait, wall time only for timestamps written into events.
 */
#include <string.h>
#include <time.h>

#include "util.h"

uint64_t lu__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int lu__cond_init_mono(pthread_cond_t *c) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(c, &a);
  pthread_condattr_destroy(&a);
  return rc;
}

struct timespec lu__mono_deadline(uint64_t at_ns) {
  struct timespec ts = {(time_t)(at_ns / 1000000000u),
                        (long)(at_ns % 1000000000u)};
  return ts;
}

int64_t lu__wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void lu__rfc3339(int64_t ms, char buf[32]) {
  /* Every outcome stamps a time: format the date once per second per
   * thread (gmtime + strftime cost ~1 us), then only the milliseconds. */
  static _Thread_local int64_t cached_sec = -1;
  static _Thread_local char prefix[24];
  static _Thread_local size_t plen;
  int64_t sec = ms / 1000;
  if (sec != cached_sec) {
    time_t s = (time_t)sec;
    struct tm tm;
    gmtime_r(&s, &tm);
    plen = strftime(prefix, sizeof prefix, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_sec = sec;
  }
  unsigned m = (unsigned)(ms % 1000);
  memcpy(buf, prefix, plen);
  buf[plen] = '.';
  buf[plen + 1] = (char)('0' + m / 100);
  buf[plen + 2] = (char)('0' + m / 10 % 10);
  buf[plen + 3] = (char)('0' + m % 10);
  buf[plen + 4] = 'Z';
  buf[plen + 5] = 0;
}


uint64_t lu__thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int lu__cond_wait_until(pthread_cond_t *c, pthread_mutex_t *mu,
                        uint64_t at_ns) {
  struct timespec ts = lu__mono_deadline(at_ns);
  return pthread_cond_timedwait(c, mu, &ts);
}
