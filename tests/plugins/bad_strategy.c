/* Test plugin: a strategy lucent does not know. */
#include <lucent/fn.h>
LU_FUNCTION(Wanders, .events = "W", .strategy = "random_walk") { return LU_OK; }
LU_PLUGIN()
