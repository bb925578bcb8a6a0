/*
 * malloc_conf.c - jemalloc's settings for the programs that link it (the
 * lucent command and the benchmarks; see lucent_use_jemalloc in
 * CMakeLists.txt).  jemalloc reads this symbol at start-up; the
 * MALLOC_CONF environment variable still overrides it.
 *
 * thp:always - jemalloc asks for transparent huge pages on its extents
 * (the kernel here gives them on madvise only).  An in-memory event store
 * grows by SQLite pages, and at 4 KiB each new page was a page fault: a
 * quarter of the store thread's time.  With 2 MiB pages the embedded
 * pipeline used 8.1-8.4 instead of 9.3-11.0 us of CPU per event (bench/
 * README.md).  metadata_thp:auto does the same for jemalloc's own
 * metadata once it is large.
 */
const char *malloc_conf = "thp:always,metadata_thp:auto";
