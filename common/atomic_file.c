#include "atomic_file.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t g_active;
static char g_tmp[PATH_MAX + 16];
static char g_path[PATH_MAX];
static int g_fd = -1;

static void on_signal(int sig) {
    if (g_active) unlink(g_tmp);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void on_exit_remove(void) {
    if (g_active) unlink(g_tmp);
}

static void set_handlers(void (*h)(int)) {
    signal(SIGINT, h);
    signal(SIGTERM, h);
    signal(SIGHUP, h);
}

int atomic_begin(const char *path, char *err, size_t errlen) {
    struct stat st;
    if (strlen(path) >= sizeof g_path) {
        snprintf(err, errlen, "the path is too long");
        return -1;
    }
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "is a directory; give a file name");
        return -1;
    }
    snprintf(g_path, sizeof g_path, "%s", path);
    snprintf(g_tmp, sizeof g_tmp, "%s.tmp.XXXXXX", path);
    static int registered;
    if (!registered++) atexit(on_exit_remove);
    set_handlers(on_signal);
    g_fd = mkstemp(g_tmp);
    if (g_fd < 0) {
        snprintf(err, errlen, "cannot create a file there: %s", strerror(errno));
        set_handlers(SIG_DFL);
        return -1;
    }
    g_active = 1;
    return 0;
}

void atomic_abandon(void) {
    if (!g_active) return;
    close(g_fd);
    unlink(g_tmp);
    g_active = 0;
    g_fd = -1;
    set_handlers(SIG_DFL);
}

int atomic_commit(const void *data, size_t len, char *err, size_t errlen) {
    mode_t mask = umask(0);  // mkstemp makes 0600: give the usual mode
    umask(mask);
    int e = 0;
    if (fchmod(g_fd, 0666 & ~mask) != 0) e = errno;
    size_t off = 0;
    while (!e && off < len) {
        ssize_t k = write(g_fd, (const char *)data + off, len - off);
        if (k < 0) {
            if (errno != EINTR) e = errno;
            continue;
        }
        off += (size_t)k;
    }
    if (close(g_fd) != 0 && !e) e = errno;
    g_fd = -1;
    if (!e && rename(g_tmp, g_path) != 0) e = errno;
    if (e) {
        unlink(g_tmp);
        snprintf(err, errlen, "%s", strerror(e));
    }
    g_active = 0;
    set_handlers(SIG_DFL);
    return e ? -1 : 0;
}
