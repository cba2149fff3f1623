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

// Inputs noted so far: (device, inode).
#define MAX_INPUTS 16
static struct { dev_t dev; ino_t ino; char path[256]; } g_in[MAX_INPUTS];
static int g_n_in;

void outfile_note_input(const char *path) {
    struct stat st;
    if (!path || stat(path, &st) != 0 || g_n_in == MAX_INPUTS) return;
    for (int i = 0; i < g_n_in; i++)
        if (g_in[i].dev == st.st_dev && g_in[i].ino == st.st_ino) return;
    g_in[g_n_in].dev = st.st_dev;
    g_in[g_n_in].ino = st.st_ino;
    snprintf(g_in[g_n_in].path, sizeof g_in[g_n_in].path, "%s", path);
    g_n_in++;
}

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

static int classify(OutFile *o, char *err, size_t errlen) {
    struct stat st, so;
    if (!strcmp(o->path, "-")) {
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
            snprintf(err, errlen, "the directory %s does not exist", dir);
            return -1;
        }
        if (access(dir, W_OK | X_OK) != 0) {
            snprintf(err, errlen, "cannot create a file in %s: %s", dir, strerror(errno));
            return -1;
        }
        o->kind = OUT_REPLACE;
        return 0;
    }
    // the file stdout already writes (`--trace /dev/stdout > f`) is written through stdout
    if (fstat(1, &so) == 0 && so.st_dev == st.st_dev && so.st_ino == st.st_ino && !S_ISDIR(st.st_mode)) {
        o->kind = OUT_STDOUT;
        return 0;
    }
    for (int i = 0; i < g_n_in; i++)
        if (g_in[i].dev == st.st_dev && g_in[i].ino == st.st_ino) {
            snprintf(err, errlen, "is also an input of this run (%s); writing it would destroy it",
                     g_in[i].path);
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
        snprintf(err, errlen, "cannot create a file in %s to replace it: %s", dir, strerror(errno));
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
    return classify(o, err, errlen);
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

static int write_replace(const OutFile *o, const void *data, size_t len, char *err, size_t errlen) {
    char dir[PATH_MAX], prefix[128], tmp[PATH_MAX + 160];
    dir_of(o->target, dir, sizeof dir);
    temp_prefix(o->target, prefix, sizeof prefix);
    clean_stale(dir, prefix);
    snprintf(tmp, sizeof tmp, "%s/%s%ld-XXXXXX", dir, prefix, (long)getpid());
    struct stat st;
    mode_t mode;
    if (stat(o->target, &st) == 0) {
        mode = st.st_mode & 07777;  // a replaced file keeps its mode
    } else {
        mode_t mask = umask(0);
        umask(mask);
        mode = 0666 & ~mask;
    }
    // Hold back the signals that would kill the process while the temporary
    // file exists; they are delivered once it is renamed or removed.
    sigset_t hold, old;
    sigemptyset(&hold);
    sigaddset(&hold, SIGINT);
    sigaddset(&hold, SIGTERM);
    sigaddset(&hold, SIGHUP);
    sigprocmask(SIG_BLOCK, &hold, &old);
    int e = 0;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        e = errno;
    } else {
        if (fchmod(fd, mode) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0) e = errno;
        if (close(fd) != 0 && !e) e = errno;
        if (!e && rename(tmp, o->target) != 0) e = errno;
        if (e) unlink(tmp);
    }
    if (!e) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);  // the rename itself reaches the disk
            close(dfd);
        }
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (e) snprintf(err, errlen, "%s", strerror(e));
    return e ? -1 : 0;
}

int outfile_write(const OutFile *o, const void *data, size_t len, char *err, size_t errlen) {
    OutFile now = *o;
    if (classify(&now, err, errlen)) return -1;
    if (now.kind == OUT_REPLACE) return write_replace(&now, data, len, err, errlen);
    int fd = 1;
    if (now.kind == OUT_STDOUT) {
        if (fflush(stdout) != 0) {
            snprintf(err, errlen, "standard output: %s", strerror(errno));
            return -1;
        }
    } else {
        fd = open(now.target, O_WRONLY);
        if (fd < 0) {
            snprintf(err, errlen, "cannot open: %s", strerror(errno));
            return -1;
        }
    }
    int e = write_all(fd, data, len) != 0 ? errno : 0;
    if (fd != 1 && close(fd) != 0 && !e) e = errno;
    if (e) snprintf(err, errlen, "%s", strerror(e));
    return e ? -1 : 0;
}
