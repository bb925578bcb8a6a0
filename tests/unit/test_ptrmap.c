/*
 * test_ptrmap.c - lu__ptrmap (src/core/util.c), the map from in-flight NATS
 * messages to who to tell: puts and takes through collisions, a full map,
 * and drop_value (a batch taken back) against a reference, on maps small
 * enough that clusters wrap around the end of the table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

/* Distinct keys whose slots differ (the hash ignores the low 4 bits). */
static char arena[4096 * 16];
#define KEY(i) ((const void *)&arena[(size_t)(i) * 16])

static void test_put_take(void **state) {
  (void)state;
  lu_ptrmap_t pm;
  assert_int_equal(lu__ptrmap_init(&pm, 1000), 0);
  assert_int_equal(pm.mask + 1, 1024);
  for (int i = 0; i < 1000; i++)
    assert_int_equal(lu__ptrmap_put(&pm, KEY(i), (void *)KEY(i + 1)), 0);
  assert_int_equal(pm.n, 1000);
  assert_null(lu__ptrmap_take(&pm, KEY(4000))); /* never put */
  assert_null(lu__ptrmap_take(&pm, NULL));
  for (int i = 0; i < 1000; i += 2) /* take half, then the rest */
    assert_ptr_equal(lu__ptrmap_take(&pm, KEY(i)), KEY(i + 1));
  for (int i = 0; i < 1000; i += 2) assert_null(lu__ptrmap_take(&pm, KEY(i)));
  for (int i = 1; i < 1000; i += 2)
    assert_ptr_equal(lu__ptrmap_take(&pm, KEY(i)), KEY(i + 1));
  assert_int_equal(pm.n, 0);
  lu__ptrmap_free(&pm);
  lu__ptrmap_free(&pm); /* twice is harmless */
}

static void test_full(void **state) {
  (void)state;
  lu_ptrmap_t pm;
  assert_int_equal(lu__ptrmap_init(&pm, 0), 0); /* at least 16 slots */
  for (int i = 0; i < 15; i++)
    assert_int_equal(lu__ptrmap_put(&pm, KEY(i), (void *)KEY(i)), 0);
  /* One slot always stays empty, so that a lookup ends. */
  assert_int_equal(lu__ptrmap_put(&pm, KEY(15), (void *)KEY(15)), -1);
  assert_null(lu__ptrmap_take(&pm, KEY(15)));
  assert_ptr_equal(lu__ptrmap_take(&pm, KEY(3)), KEY(3));
  assert_int_equal(lu__ptrmap_put(&pm, KEY(15), (void *)KEY(15)), 0);
  for (int i = 0; i < 16; i++)
    if (i != 3) assert_ptr_equal(lu__ptrmap_take(&pm, KEY(i)), KEY(i));
  lu__ptrmap_free(&pm);
}

/* Many random fillings of a 16-slot map with values from 3 owners; one
 * owner's entries dropped: exactly they are gone, every other entry is
 * still found with its value. */
static void test_drop_value(void **state) {
  (void)state;
  uint64_t rng = 7;
  const void *owner[3] = {KEY(4090), KEY(4091), KEY(4092)};
  for (int round = 0; round < 2000; round++) {
    lu_ptrmap_t pm;
    assert_int_equal(lu__ptrmap_init(&pm, 16), 0);
    int val[16], key[16];
    size_t want = 0;
    int fill = 1 + (int)(lu__rand_next(&rng) % 15);
    for (int i = 0; i < fill; i++) {
      /* Random keys: consecutive ones hash too evenly to collide. */
      int dup;
      do {
        key[i] = (int)(lu__rand_next(&rng) % 4000);
        dup = 0;
        for (int j = 0; j < i; j++) dup |= key[j] == key[i];
      } while (dup);
      val[i] = (int)(lu__rand_next(&rng) % 3);
      want += val[i] == 0;
      assert_int_equal(lu__ptrmap_put(&pm, KEY(key[i]), (void *)owner[val[i]]),
                       0);
    }
    assert_int_equal(lu__ptrmap_drop_value(&pm, owner[0]), want);
    assert_int_equal(pm.n, (size_t)fill - want);
    for (int i = 0; i < fill; i++) {
      void *v = lu__ptrmap_take(&pm, KEY(key[i]));
      if (val[i] == 0) assert_null(v);
      else assert_ptr_equal(v, owner[val[i]]);
    }
    assert_int_equal(pm.n, 0);
    lu__ptrmap_free(&pm);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_put_take),
      cmocka_unit_test(test_full),
      cmocka_unit_test(test_drop_value),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
