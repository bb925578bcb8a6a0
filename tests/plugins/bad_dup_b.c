/* Test plugin: the second registration of Twice. */
#include <lucent/fn.h>
LU_FUNCTION(Twice, .events = "T") { return LU_OK; }
