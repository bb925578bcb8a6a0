/*
 * test_intake_pack.c - intake packs (src/nats/intake_pack.c): what a pack
 * message carries (subject, count, lines, a content id), packs per
 * partition, the flush, the size cap, a pack of one sent as a plain event,
 * and walking a message's line numbers.  No server needed: only messages
 * are built.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "intake_pack.h"
#include "nats_internal.h"

static const char *hdr(natsMsg *m, const char *name) {
  const char *v = NULL;
  return natsMsgHeader_Get(m, name, &v) == NATS_OK ? v : NULL;
}

static void add(lu_packer_t *p, unsigned part, const char *id,
                const char *json, uint64_t line, natsMsg **ready) {
  size_t dropped = 0;
  assert_int_equal(lu__packer_add(p, part, id, json, strlen(json), line,
                                  ready, &dropped), 0);
  assert_int_equal(dropped, 0);
}

static void test_full_pack(void **state) {
  (void)state;
  lu_packer_t *p = NULL;
  assert_int_equal(lu__packer_new(&p, 3, 16), 0);
  natsMsg *m = NULL;
  add(p, 5, "a", "{\"id\":\"a\"}", 3, &m);
  assert_null(m);
  add(p, 5, "b", "{\"id\":\"b\"}", 7, &m);
  assert_null(m);
  assert_int_equal(lu__packer_pending(p), 2);
  add(p, 5, "c", "{\"id\":\"c\"}", 12, &m);
  assert_non_null(m); /* the third fills it */
  assert_int_equal(lu__packer_pending(p), 0);
  assert_string_equal(natsMsg_GetSubject(m), "lucent.intake.5");
  assert_int_equal(lu__nats_msg_events(m), 3);
  assert_string_equal(hdr(m, "Lucent-Lines"), "3,7,12");
  assert_null(hdr(m, "Lucent-Line"));
  assert_memory_equal(hdr(m, "Nats-Msg-Id"), "pack-", 5);
  const char *want = "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}";
  assert_int_equal(natsMsg_GetDataLength(m), (int)strlen(want));
  assert_memory_equal(natsMsg_GetData(m), want, strlen(want));
  /* Its line numbers, in order, then 0. */
  const char *cur = NULL;
  assert_int_equal(lu__pack_line(m, 0, &cur), 3);
  assert_int_equal(lu__pack_line(m, 1, &cur), 7);
  assert_int_equal(lu__pack_line(m, 2, &cur), 12);
  assert_int_equal(lu__pack_line(m, 3, &cur), 0);
  natsMsg_Destroy(m);
  lu__packer_free(p);
}

/* The same events make the same pack id (a republished file is deduped);
 * other events another. */
static void test_pack_id_is_its_content(void **state) {
  (void)state;
  char ids[3][64];
  const char *second[] = {"{\"id\":\"y\"}", "{\"id\":\"y\"}", "{\"id\":\"z\"}"};
  for (int r = 0; r < 3; r++) {
    lu_packer_t *p = NULL;
    assert_int_equal(lu__packer_new(&p, 2, 16), 0);
    natsMsg *m = NULL;
    add(p, 1, "x", "{\"id\":\"x\"}", 1, &m);
    add(p, 1, "y", second[r], 2, &m);
    assert_non_null(m);
    snprintf(ids[r], sizeof ids[r], "%s", hdr(m, "Nats-Msg-Id"));
    natsMsg_Destroy(m);
    lu__packer_free(p);
  }
  assert_string_equal(ids[0], ids[1]);
  assert_string_not_equal(ids[0], ids[2]);
}

static void test_partitions_and_flush(void **state) {
  (void)state;
  lu_packer_t *p = NULL;
  assert_int_equal(lu__packer_new(&p, 64, 16), 0);
  natsMsg *m = NULL;
  add(p, 2, "a", "A", 1, &m);
  add(p, 9, "b", "B", 2, &m);
  add(p, 2, "c", "C", 3, &m);
  assert_null(m);
  size_t dropped = 0;
  int seen2 = 0, seen9 = 0;
  for (int k = 0; k < 2; k++) {
    assert_int_equal(lu__packer_flush(p, &m, &dropped), 0);
    assert_non_null(m);
    if (!strcmp(natsMsg_GetSubject(m), "lucent.intake.2")) {
      seen2++;
      assert_int_equal(lu__nats_msg_events(m), 2);
      assert_memory_equal(natsMsg_GetData(m), "A\nC", 3);
    } else {
      seen9++;
      /* A pack of one is a plain event: its own id and line. */
      assert_string_equal(natsMsg_GetSubject(m), "lucent.intake.9");
      assert_null(hdr(m, LU_HDR_COUNT));
      assert_string_equal(hdr(m, "Nats-Msg-Id"), "b");
      assert_string_equal(hdr(m, "Lucent-Line"), "2");
      const char *cur = NULL;
      assert_int_equal(lu__pack_line(m, 0, &cur), 2);
      assert_int_equal(lu__pack_line(m, 1, &cur), 0);
    }
    natsMsg_Destroy(m);
  }
  assert_int_equal(seen2, 1);
  assert_int_equal(seen9, 1);
  assert_int_equal(lu__packer_flush(p, &m, &dropped), 0);
  assert_null(m); /* nothing left */
  assert_int_equal(lu__packer_pending(p), 0);
  lu__packer_free(p);
}

static void test_size_cap(void **state) {
  (void)state;
  lu_packer_t *p = NULL;
  assert_int_equal(lu__packer_new(&p, 64, 16), 0);
  size_t big = LU_INTAKE_PACK_BYTES / 2 - 10;
  char *ev = malloc(big + 1);
  memset(ev, 'x', big);
  ev[big] = 0;
  natsMsg *m = NULL;
  add(p, 0, "a", ev, 1, &m);
  add(p, 0, "b", ev, 2, &m);
  assert_null(m); /* two halves fit */
  add(p, 0, "c", ev, 3, &m);
  assert_non_null(m); /* the third does not: the first two go */
  assert_int_equal(lu__nats_msg_events(m), 2);
  assert_true((size_t)natsMsg_GetDataLength(m) <= LU_INTAKE_PACK_BYTES);
  natsMsg_Destroy(m);
  assert_int_equal(lu__packer_pending(p), 1);
  size_t dropped = 0;
  assert_int_equal(lu__packer_flush(p, &m, &dropped), 0);
  assert_string_equal(hdr(m, "Nats-Msg-Id"), "c");
  natsMsg_Destroy(m);
  /* An event larger than the cap still travels, alone. */
  char *huge = malloc(LU_INTAKE_PACK_BYTES + 2);
  memset(huge, 'y', LU_INTAKE_PACK_BYTES + 1);
  huge[LU_INTAKE_PACK_BYTES + 1] = 0;
  add(p, 0, "d", huge, 4, &m);
  assert_null(m);
  assert_int_equal(lu__packer_flush(p, &m, &dropped), 0);
  assert_int_equal(natsMsg_GetDataLength(m), LU_INTAKE_PACK_BYTES + 1);
  natsMsg_Destroy(m);
  free(huge);
  free(ev);
  lu__packer_free(p);
}

static void test_bad_arguments(void **state) {
  (void)state;
  lu_packer_t *p = (lu_packer_t *)1;
  assert_int_equal(lu__packer_new(&p, 1, 16), LU_EINVAL);
  assert_null(p);
  lu__packer_free(NULL);
  /* A message without line headers has no lines. */
  natsMsg *m = NULL;
  assert_int_equal(natsMsg_Create(&m, "lucent.intake.0", NULL, "x", 1),
                   NATS_OK);
  const char *cur = NULL;
  assert_int_equal(lu__pack_line(m, 0, &cur), 0);
  natsMsg_Destroy(m);
}

int main(void) {
  if (nats_Open(-1) != NATS_OK) return 1; /* natsMsg_Create needs it */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_pack),
      cmocka_unit_test(test_pack_id_is_its_content),
      cmocka_unit_test(test_partitions_and_flush),
      cmocka_unit_test(test_size_cap),
      cmocka_unit_test(test_bad_arguments),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nats_Close();
  return rc;
}
