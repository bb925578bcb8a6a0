/* Test plugin: the same function name registered in two files. */
#include <lucent/fn.h>
LU_FUNCTION(Twice, .events = "T") { return LU_OK; }
LU_PLUGIN()
