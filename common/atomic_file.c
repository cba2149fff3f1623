#include "atomic_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

// Inputs noted so far: (device, inode) and what to call them in a refusal.
static struct { dev_t dev; ino_t ino; char what[512]; } *g_in;
static int g_n_in, g_cap_in;

void outfile_note_input_as(const char *path, const char *role) {
    struct stat st;
    if (!path || stat(path, &st) != 0) return;
    for (int i = 0; i < g_n_in; i++)
        if (g_in[i].dev == st.st_dev && g_in[i].ino == st.st_ino) return;
    if (g_n_in == g_cap_in) {  // a run may read many files (--against's per-step tensors)
        void *more = realloc(g_in, (size_t)(g_cap_in ? 2 * g_cap_in : 16) * sizeof *g_in);
        if (!more) return;
        g_in = more;
        g_cap_in = g_cap_in ? 2 * g_cap_in : 16;
    }
    g_in[g_n_in].dev = st.st_dev;
    g_in[g_n_in].ino = st.st_ino;
    snprintf(g_in[g_n_in].what, sizeof g_in[g_n_in].what, "%s%s%s", role ? role : "", role ? " " : "", path);
    g_n_in++;
}

void outfile_note_input(const char *path) { outfile_note_input_as(path, NULL); }

int write_all(int fd, const void *data, size_t len) {
    size_t off = 0;
    while (off < len) {
        ssize_t k = write(fd, (const char *)data + off, len - off);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        off += (size_t)k;
    }
    return 0;
}

// Where a data output on standard output goes: fd 1 until an output claims
// stdout (claim_stdout), then a private copy of it.
static int g_data_fd = 1;

// A run's data on stdout must not be mixed with its human-readable text
// (`--trace - | jq`): the data keeps a private copy of fd 1 (not inherited by
// the engines and scripts the run starts) and fd 1, where printf writes, is
// pointed at stderr. Done once, before the tools print anything.
static void claim_stdout(void) {
    if (g_data_fd != 1) return;
    fflush(stdout);
    int fd = fcntl(1, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) return;  // stdout is closed: writing the data fails and says so
    if (dup2(2, 1) < 0) {  // stderr is closed: the text goes nowhere rather than into the data
        int null = open("/dev/null", O_WRONLY);  // on fd 2, which it then fills as well
        if (null >= 0) dup2(null, 1);
        if (null > 2) close(null);
    }
    g_data_fd = fd;
    setvbuf(stdout, NULL, _IOLBF, 0);  // the text in order with the messages on stderr
}

// The names of fd 1 itself: once stdout is claimed they lead to stderr, but
// the user meant the data's stdout.
static int names_fd1(const char *path) {
    return !strcmp(path, "/dev/stdout") || !strcmp(path, "/dev/fd/1") || !strcmp(path, "/proc/self/fd/1");
}

static void dir_of(const char *path, char *out, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(out, n, ".");
    else if (slash == path) snprintf(out, n, "/");
    else snprintf(out, n, "%.*s", (int)(slash - path), path);
}

// Follow symlinks (also dangling ones: the target is then created).
static int resolve(const char *path, char *out, size_t n, char *err, size_t errlen) {
    char cur[PATH_MAX];
    snprintf(cur, sizeof cur, "%s", path);
    for (int hops = 0; hops < 40; hops++) {
        struct stat st;
        if (lstat(cur, &st) != 0 || !S_ISLNK(st.st_mode)) {
            snprintf(out, n, "%s", cur);
            return 0;
        }
        char link[PATH_MAX];
        ssize_t k = readlink(cur, link, sizeof link - 1);
        if (k < 0) {
            snprintf(err, errlen, "cannot read the symlink: %s", strerror(errno));
            return -1;
        }
        link[k] = '\0';
        if (link[0] == '/') {
            snprintf(cur, sizeof cur, "%s", link);
        } else {
            char dir[PATH_MAX], next[PATH_MAX];
            dir_of(cur, dir, sizeof dir);
            if (snprintf(next, sizeof next, "%s/%s", dir, link) >= (int)sizeof next) {
                snprintf(err, errlen, "the symlink's target path is too long");
                return -1;
            }
            snprintf(cur, sizeof cur, "%s", next);
        }
    }
    snprintf(err, errlen, "too many levels of symbolic links");
    return -1;
}

// ---- The file an output replaces: its owner, its mode, its links ----
// (issue 29: as root, replacing another user's output must not make it
// root's, a 0600 file unreadable to its owner, or keep a setuid bit.)

// A setuid or setgid file is never an output: 0, or -1 with the reason.
static int replaced_refused(const struct stat *st, char *err, size_t errlen) {
    if (!(st->st_mode & (S_ISUID | S_ISGID))) return 0;
    snprintf(err, errlen, "is %s (mode %04o): an output never replaces such a file (the new contents would run with "
             "its owner's rights); choose another path", st->st_mode & S_ISUID ? "setuid" : "setgid",
             (unsigned)(st->st_mode & 07777));
    return -1;
}

// The temporary file fd takes the owner (as root, the only user who can
// give a file away) and the permission bits of the file it replaces, st.
// 0, or an errno.
static int replaced_keep(int fd, const struct stat *st) {
    if (geteuid() == 0 && fchown(fd, st->st_uid, st->st_gid) != 0) return errno;
    return fchmod(fd, st->st_mode & 0777) != 0 ? errno : 0;
}

// Once it is replaced: a file with other hard links is now a new file under
// this name only; the other names keep the old contents. Said on stderr.
static void replaced_links(const char *path, const struct stat *st) {
    if (!S_ISREG(st->st_mode) || st->st_nlink < 2) return;
    fprintf(stderr, "%s: %s had %lu hard links: it was replaced by a new file, so the link is broken (its %lu other "
            "name%s still hold%s the old contents)\n", prog_name(), path_short(path), (unsigned long)st->st_nlink,
            (unsigned long)st->st_nlink - 1, st->st_nlink == 2 ? "" : "s", st->st_nlink == 2 ? "s" : "");
}

static int classify(OutFile *o, char *err, size_t errlen) {
    struct stat st, so;
    if (!strcmp(o->path, "-") || (g_data_fd != 1 && names_fd1(o->path))) {
        o->kind = OUT_STDOUT;
        return 0;
    }
    snprintf(o->target, sizeof o->target, "%s", o->path);
    if (stat(o->path, &st) != 0) {
        if (errno != ENOENT) {
            snprintf(err, errlen, "%s", strerror(errno));
            return -1;
        }
        // a new file, maybe behind a dangling symlink
        if (resolve(o->path, o->target, sizeof o->target, err, errlen)) return -1;
        char dir[PATH_MAX];
        dir_of(o->target, dir, sizeof dir);
        struct stat ds;
        if (stat(dir, &ds) != 0 || !S_ISDIR(ds.st_mode)) {
            snprintf(err, errlen, "the directory %s does not exist", path_short(dir));
            return -1;
        }
        if (access(dir, W_OK | X_OK) != 0) {
            snprintf(err, errlen, "cannot create a file in %s: %s", path_short(dir), strerror(errno));
            return -1;
        }
        o->kind = OUT_REPLACE;
        return 0;
    }
    // the file stdout already writes (`--trace /dev/stdout > f`) is written through stdout
    if (fstat(g_data_fd, &so) == 0 && so.st_dev == st.st_dev && so.st_ino == st.st_ino && !S_ISDIR(st.st_mode)) {
        o->kind = OUT_STDOUT;
        return 0;
    }
    for (int i = 0; i < g_n_in; i++)
        if (g_in[i].dev == st.st_dev && g_in[i].ino == st.st_ino) {
            snprintf(err, errlen, "is also an input of this run (%s); writing it would destroy it",
                     g_in[i].what);
            return -1;
        }
    if (S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "is a directory; give a file name");
        return -1;
    }
    if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
        o->kind = OUT_IN_PLACE;  // opened through the path given (/proc links work)
        return 0;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "is neither a regular file, a FIFO nor a character device");
        return -1;
    }
    if (replaced_refused(&st, err, errlen)) return -1;
    // root may write anything: the mode bits say what the owner meant
    if ((st.st_mode & 0222) == 0) {
        snprintf(err, errlen, "is read-only (mode %04o); make it writable or choose another path",
                 (unsigned)(st.st_mode & 07777));
        return -1;
    }
    if (access(o->target, W_OK) != 0) {
        snprintf(err, errlen, "is not writable by this user (mode %04o, owner uid %ld): %s",
                 (unsigned)(st.st_mode & 07777), (long)st.st_uid, strerror(errno));
        return -1;
    }
    // replaced where it really is: through symlinks, the link itself is kept
    if (!realpath(o->path, o->target)) {
        snprintf(err, errlen, "%s", strerror(errno));
        return -1;
    }
    char dir[PATH_MAX];
    dir_of(o->target, dir, sizeof dir);
    if (access(dir, W_OK | X_OK) != 0) {  // the temporary file goes beside it
        snprintf(err, errlen, "cannot create a file in %s to replace it: %s", path_short(dir), strerror(errno));
        return -1;
    }
    o->kind = OUT_REPLACE;
    return 0;
}

int outfile_open(OutFile *o, const char *path, char *err, size_t errlen) {
    memset(o, 0, sizeof *o);
    if (!*path) {
        snprintf(err, errlen, "empty path");
        return -1;
    }
    if (strlen(path) >= sizeof o->path) {
        snprintf(err, errlen, "the path is too long");
        return -1;
    }
    snprintf(o->path, sizeof o->path, "%s", path);
    if (classify(o, err, errlen)) return -1;
    if (o->kind == OUT_STDOUT) claim_stdout();
    return 0;
}

// The temporary files of `base` are ".<base>.tmp-<pid>-XXXXXX" (base cut to
// 100 bytes so the name fits NAME_MAX).
static void temp_prefix(const char *target, char *out, size_t n) {
    const char *slash = strrchr(target, '/');
    const char *base = slash ? slash + 1 : target;
    snprintf(out, n, ".%.100s.tmp-", base);
}

// Remove temporary files left by killed processes (their pid is gone).
static void clean_stale(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return;
    size_t pl = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, pl) != 0) continue;
        char *end;
        long pid = strtol(e->d_name + pl, &end, 10);
        if (end == e->d_name + pl || *end != '-' || pid <= 0) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p) unlink(p);
    }
    closedir(d);
}

// The signals that would kill the process while a temporary file exists are
// held back; they are delivered once it is renamed or removed.
static void hold_signals(sigset_t *old) {
    sigset_t hold;
    sigemptyset(&hold);
    sigaddset(&hold, SIGINT);
    sigaddset(&hold, SIGTERM);
    sigaddset(&hold, SIGHUP);
    sigprocmask(SIG_BLOCK, &hold, old);
}

// Write data to a new temporary file beside o->target, named in tmp
// (PATH_MAX + 160 bytes), with the mode the target will have. 0, or an errno
// (no file left).
static int write_temp(const OutFile *o, const void *data, size_t len, char *tmp) {
    char dir[PATH_MAX], prefix[128];
    dir_of(o->target, dir, sizeof dir);
    temp_prefix(o->target, prefix, sizeof prefix);
    clean_stale(dir, prefix);
    snprintf(tmp, PATH_MAX + 160, "%s/%s%ld-XXXXXX", dir, prefix, (long)getpid());
    struct stat st;
    const int replaces = stat(o->target, &st) == 0;
    mode_t mask = umask(0);
    umask(mask);
    int fd = mkstemp(tmp);
    if (fd < 0) return errno;
    // a replaced file keeps its owner and mode (replaced_keep); a new one gets 0666 less the umask
    int e = replaces ? replaced_keep(fd, &st) : fchmod(fd, 0666 & ~mask) != 0 ? errno : 0;
    if (!e && (write_all(fd, data, len) != 0 || fsync(fd) != 0)) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    if (e) unlink(tmp);
    return e;
}

// The rename itself reaches the disk.
static void sync_dir(const char *target) {
    char dir[PATH_MAX];
    dir_of(target, dir, sizeof dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

static int write_replace(const OutFile *o, const void *data, size_t len, char *err, size_t errlen) {
    char tmp[PATH_MAX + 160];
    sigset_t old;
    hold_signals(&old);
    struct stat before;
    const int replaces = stat(o->target, &before) == 0;
    int e = write_temp(o, data, len, tmp);
    if (!e && rename(tmp, o->target) != 0) {
        e = errno;
        unlink(tmp);
    }
    if (!e) sync_dir(o->target);
    if (!e && replaces) replaced_links(o->path, &before);
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (e) snprintf(err, errlen, "%s", strerror(e));
    return e ? -1 : 0;
}

// Write to stdout, a FIFO or a character device.
static int write_in_place(const OutFile *now, const void *data, size_t len, char *err, size_t errlen) {
    int fd = g_data_fd;
    if (now->kind == OUT_STDOUT) {
        if (fd == 1 && fflush(stdout) != 0) {  // unclaimed: the text before it goes first
            snprintf(err, errlen, "standard output: %s", strerror(errno));
            return -1;
        }
    } else {
        fd = open(now->target, O_WRONLY);
        if (fd < 0) {
            snprintf(err, errlen, "cannot open: %s", strerror(errno));
            return -1;
        }
    }
    int e = write_all(fd, data, len) != 0 ? errno : 0;
    if (now->kind != OUT_STDOUT && close(fd) != 0 && !e) e = errno;
    if (e) snprintf(err, errlen, "%s", strerror(e));
    return e ? -1 : 0;
}

int outfile_write(const OutFile *o, const void *data, size_t len, char *err, size_t errlen) {
    OutFile now = *o;
    if (classify(&now, err, errlen)) return -1;
    if (now.kind == OUT_REPLACE) return write_replace(&now, data, len, err, errlen);
    return write_in_place(&now, data, len, err, errlen);
}

// Remove the temporary files from..n-1 that exist (tmp[i][0] set).
static void drop_temps(char (*tmp)[PATH_MAX + 160], int from, int n) {
    for (int i = from; i < n; i++)
        if (tmp[i][0]) unlink(tmp[i]);
}

int outfile_write_group(const OutFile *o, const void *const *data, const size_t *len, int n, char *err,
                        size_t errlen) {
    OutFile *now = calloc((size_t)n, sizeof *now);
    char (*tmp)[PATH_MAX + 160] = calloc((size_t)n, sizeof *tmp);
    if (!now || !tmp) {
        free(now);
        free(tmp);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char why[512];
    int bad = -1, e = 0, renamed = 0;
    for (int i = 0; i < n && bad < 0; i++) {  // every path checked before any is written
        now[i] = o[i];
        if (classify(&now[i], why, sizeof why)) bad = i;
    }
    sigset_t old;
    hold_signals(&old);
    for (int i = 0; i < n && bad < 0; i++)
        if (now[i].kind == OUT_REPLACE && (e = write_temp(&now[i], data[i], len[i], tmp[i]))) {
            tmp[i][0] = '\0';
            bad = i;
        }
    if (bad >= 0) drop_temps(tmp, 0, n);
    for (int i = 0; i < n && bad < 0; i++) {
        if (now[i].kind != OUT_REPLACE) continue;
        struct stat before;
        const int replaces = stat(now[i].target, &before) == 0;
        if (rename(tmp[i], now[i].target) != 0) {  // unlikely after the checks: the files before it are new
            e = errno;
            bad = i;
            drop_temps(tmp, i, n);
        } else {
            sync_dir(now[i].target);
            if (replaces) replaced_links(now[i].path, &before);
            renamed++;
        }
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    for (int i = 0; i < n && bad < 0; i++)  // stdout, FIFOs: nothing to take back
        if (now[i].kind != OUT_REPLACE && write_in_place(&now[i], data[i], len[i], why, sizeof why)) bad = i, e = -1;
    if (bad >= 0)
        snprintf(err, errlen, "%s: %s; %s", path_short(o[bad].path), e > 0 ? strerror(e) : why,
                 renamed ? "the files before it were replaced" : "no file was replaced");
    free(now);
    free(tmp);
    return bad >= 0 ? -1 : 0;
}

// A new file's path with its directory resolved: the same name in the
// same directory is the same file.
static int canonical(const char *target, char *out, size_t n) {
    char dir[PATH_MAX], real[PATH_MAX];
    dir_of(target, dir, sizeof dir);
    if (!realpath(dir, real)) return -1;
    const char *slash = strrchr(target, '/');
    snprintf(out, n, "%s/%s", real, slash ? slash + 1 : target);
    return 0;
}

int outfile_same(const OutFile *a, const OutFile *b) {
    if (a->kind == OUT_STDOUT || b->kind == OUT_STDOUT) return a->kind == b->kind;
    struct stat sa, sb;
    int ea = stat(a->target, &sa), eb = stat(b->target, &sb);
    if (!ea && !eb) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino && !S_ISCHR(sa.st_mode);
    if (!ea || !eb) return 0;  // one exists, the other not
    char ca[PATH_MAX + 256], cb[PATH_MAX + 256];
    return !canonical(a->target, ca, sizeof ca) && !canonical(b->target, cb, sizeof cb) && !strcmp(ca, cb);
}
