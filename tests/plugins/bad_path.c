/* Test plugin: hash_based with an empty field path. */
#include <lucent/fn.h>
LU_FUNCTION(Hashless, .events = "H", LU_HASH_BASED("")) { return LU_OK; }
LU_PLUGIN()
