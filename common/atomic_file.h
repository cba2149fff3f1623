// Output files that are never seen half-written: the data goes to
// FILE.tmp.XXXXXX beside FILE and is renamed over FILE once complete. The
// temporary file is removed on failure, on exit (die() included) and on
// SIGINT, SIGTERM or SIGHUP, so an interrupted run leaves FILE as it was.
// One such file at a time per process.
#ifndef COMMON_ATOMIC_FILE_H
#define COMMON_ATOMIC_FILE_H

#include <stddef.h>

// Create the temporary file (early, so that an unwritable path is reported
// before any work). 0, or -1 with the reason in err.
int atomic_begin(const char *path, char *err, size_t errlen);
// Write data to it and rename it over the path. 0, or -1 with the reason in
// err (the temporary file removed, the path untouched).
int atomic_commit(const void *data, size_t len, char *err, size_t errlen);
// Remove the temporary file (an error path).
void atomic_abandon(void);

#endif
