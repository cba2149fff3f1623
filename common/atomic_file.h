// Output files written like a careful Unix tool (traces, SVG plots, timelines):
//   "-"                       standard output, which then carries that data
//                             alone (outfile_open)
//   a regular file, new path  replaced atomically: the bytes go to a temporary
//                             file in the same directory, created only when
//                             the whole output is ready, fsync'ed and renamed
//                             over the path; the path is never half-written
//   a symlink                 its target is written (as above), the link kept
//   a FIFO, a character device written in place (no rename): pipes, /dev/stdout
// Refused with a message: a directory, a read-only file (by its mode bits, so
// also as root, who ignores permissions), a missing directory, and an output
// that is one of the run's inputs (same device and inode: `--data d.txt
// --trace d.txt`). While the temporary file exists SIGINT, SIGTERM and SIGHUP
// are held back, so only SIGKILL can leave one: the next write beside it
// removes temporary files of processes that no longer run.
#ifndef COMMON_ATOMIC_FILE_H
#define COMMON_ATOMIC_FILE_H

#include <limits.h>
#include <stddef.h>

typedef enum { OUT_STDOUT, OUT_REPLACE, OUT_IN_PLACE } OutKind;

typedef struct {
    char path[PATH_MAX];    // as given (for messages)
    char target[PATH_MAX];  // what is written: symlinks resolved
    OutKind kind;
} OutFile;

// Check where `path` would be written (creates nothing). 0, or -1 with the
// reason in err (without the path). An output on standard output ("-", or
// the file stdout writes) claims it: from then on stdout carries that data
// alone and printf's text goes to stderr; so the tools check their outputs
// before they print.
int outfile_open(OutFile *o, const char *path, char *err, size_t errlen);
// Write all of data to the output (checked again first: an input may have
// been noted since). 0, or -1 with the reason in err; a replaced file is
// then untouched and no temporary file is left.
int outfile_write(const OutFile *o, const void *data, size_t len, char *err, size_t errlen);

// Several outputs replaced together (--export-init's files): every one is
// checked again, then written to its temporary file, and only when all are
// written are they renamed over their paths; if one fails none is replaced
// (the directory never holds a mix of two runs' files). 0, or -1 with
// "PATH: reason; no file was replaced" in err (only a rename that fails
// after every check and write leaves the files before it replaced).
int outfile_write_group(const OutFile *o, const void *const *data, const size_t *len, int n, char *err,
                        size_t errlen);

// Whether two checked outputs are the same file under any spelling (./x and
// x, a symlink and its target, "-" and /dev/stdout): the second would
// replace the first. A character device (/dev/null) may take both.
int outfile_same(const OutFile *a, const OutFile *b);

// Note a file the run reads, so that no output overwrites it. Files that
// cannot be stat'ed are ignored (reading them fails on its own).
void outfile_note_input(const char *path);
// The same, saying which input it is in the refusal, e.g. role "--data":
// "is also an input of this run (--data d.txt)".
void outfile_note_input_as(const char *path, const char *role);

// Write all of data to fd (EINTR retried). 0, or -1 with errno set.
int write_all(int fd, const void *data, size_t len);

#endif
