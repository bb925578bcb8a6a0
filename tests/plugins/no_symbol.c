/* Test plugin: registers a function but forgot LU_PLUGIN(). */
#include <lucent/fn.h>
LU_FUNCTION(Orphan, .events = "O") { return LU_OK; }
