#include "interrupt.h"

#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

// How the tools end when interrupted (common/interrupt.h). The signals are
// those common/atomic_file.c holds back while an output's temporary file
// exists.

#define MAX_GROUPS 16

static const int WATCHED[3] = {SIGINT, SIGTERM, SIGHUP};
static volatile sig_atomic_t g_installed[3], g_pipe_installed;
static volatile sig_atomic_t g_pending, g_count, g_deferred;
static volatile sig_atomic_t g_groups[MAX_GROUPS];   // the leaders' pids (pid_t fits an int); 0: free

static double mono_seconds(void) {   // async-signal-safe
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void nap(long ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

// Messages from a signal handler: write(2) of a few pieces, no stdio.
static void say(const char *a, const char *b, const char *c, const char *d) {
    const char *part[4] = {a, b, c, d};
    for (int i = 0; i < 4; i++)
        if (part[i] && write(2, part[i], strlen(part[i])) < 0) return;
}

const char *interrupt_signal_name(int sig) {
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : "a signal";
}

// Reap what of group pg has ended among this process's children: the
// leader, and the orphans of the group when this process is their subreaper
// (compare/exec_engine.c). Sets *reaped (and *status) once the leader is
// reaped, or found not to be a child (any more).
static void reap_group(pid_t pg, int *reaped, int *status) {
    int st;
    pid_t r;
    while ((r = waitpid(-pg, &st, WNOHANG)) > 0 || (r < 0 && errno == EINTR))
        if (r == pg) *reaped = 1, *status = st;
    if (r < 0 && errno == ECHILD) *reaped = 1;   // no child of this process is in the group
}

// End the groups led by the children pid[0..n-1] (async-signal-safe): see
// proc_group_end. status[i]: the leader's wait status, or -1; killed[i]: SIGKILL was needed.
static void end_groups(const pid_t *pid, int n, double grace, int *status, int *killed) {
    int reaped[MAX_GROUPS] = {0}, empty[MAX_GROUPS] = {0};
    for (int i = 0; i < n; i++) {
        status[i] = -1;
        killed[i] = grace <= 0;
        if (kill(-pid[i], grace > 0 ? SIGTERM : SIGKILL) != 0 && errno == ESRCH) empty[i] = 1;
    }
    const double end = mono_seconds() + (grace > 0 ? grace : 0);
    for (;;) {
        int left = 0;
        for (int i = 0; i < n; i++) {
            reap_group(pid[i], &reaped[i], &status[i]);
            // a group whose leader is reaped and that no process is in any more
            if (reaped[i] && !empty[i] && kill(-pid[i], 0) != 0 && errno == ESRCH) empty[i] = 1;
            if (!reaped[i] || !empty[i]) left = 1;
        }
        if (!left || grace <= 0 || mono_seconds() > end) break;
        nap(10);
    }
    for (int i = 0; i < n; i++) {
        if (empty[i]) continue;
        if (kill(-pid[i], SIGKILL) == 0 && grace > 0) killed[i] = 1;
        int st;
        pid_t r;
        while ((r = waitpid(-pid[i], &st, 0)) > 0 || (r < 0 && errno == EINTR))   // until none is left
            if (r == pid[i]) status[i] = st;
    }
}

void proc_group_add(pid_t leader) {
    for (int i = 0; i < MAX_GROUPS; i++)
        if (!g_groups[i]) {
            g_groups[i] = (sig_atomic_t)leader;
            return;
        }
}

void proc_group_forget(pid_t leader) {
    for (int i = 0; i < MAX_GROUPS; i++)
        if (g_groups[i] == (sig_atomic_t)leader) g_groups[i] = 0;
}

int proc_group_end(pid_t leader, double grace, int *killed) {
    int st, k;
    end_groups(&leader, 1, grace, &st, &k);
    proc_group_forget(leader);
    if (killed) *killed = k;
    return st;
}

void proc_groups_end_all(double grace) {
    pid_t pid[MAX_GROUPS];
    int n = 0, st[MAX_GROUPS], killed[MAX_GROUPS];
    for (int i = 0; i < MAX_GROUPS; i++)
        if (g_groups[i] > 0) pid[n++] = (pid_t)g_groups[i], g_groups[i] = 0;
    if (n) end_groups(pid, n, grace, st, killed);
}

// Die by sig as if it had not been caught (async-signal-safe).
static void die_by(int sig) __attribute__((noreturn));
static void die_by(int sig) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    sigprocmask(SIG_UNBLOCK, &s, NULL);
    raise(sig);
    _exit(128 + sig);
}

static int any_group(void) {
    for (int i = 0; i < MAX_GROUPS; i++)
        if (g_groups[i] > 0) return 1;
    return 0;
}

// SA_NODEFER: a second signal reaches the handler even while the first one
// is still ending the process groups.
static void on_interrupt(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    const int saved = errno;
    // raised by this process (trace_exit_on_signal, once the trace is written): end now
    const int self = si && si->si_code == SI_TKILL && si->si_pid == getpid();
    if (!self) g_count++;
    if (!g_pending) g_pending = sig;
    const char *name = interrupt_signal_name(sig);
    if (!self && g_count == 1 && g_deferred) {
        say(prog_name(), ": ", name, ": stopping once the step under way is done, then writing the outputs (a "
            "second signal stops at once)\n");
        errno = saved;
        return;
    }
    const int second = !self && g_count > 1;
    if (second) say(prog_name(), ": ", name, " again: stopping at once; outputs not yet written are lost\n");
    if (any_group())
        say(prog_name(), ": ", name, second ? ": killing the engines' process groups\n"
                                            : ": ending the engines' process groups (SIGTERM, then SIGKILL)\n");
    proc_groups_end_all(second ? 0 : INTERRUPT_GRACE_S);
    die_by(sig);
}

static void on_sigpipe(int sig) { (void)sig; }   // the write fails with EPIPE instead

void interrupt_catch_sigpipe(void) {
    struct sigaction cur;
    if (g_pipe_installed || sigaction(SIGPIPE, NULL, &cur) != 0) return;
    if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler != SIG_DFL) return;   // ignored, or someone's handler
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigpipe;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) == 0) g_pipe_installed = 1;
}

// Whether addr is in the main program (not in a shared library: a plugin
// built with this code must not change its host's signals).
static int in_main_program(uintptr_t addr) {
    const ElfW(Phdr) *ph = (const ElfW(Phdr) *)getauxval(AT_PHDR);
    const size_t n = (size_t)getauxval(AT_PHNUM);
    if (!ph || !n) return 0;
    uintptr_t bias = 0;   // a PIE's load address (0 for a fixed-address executable)
    for (size_t i = 0; i < n; i++)
        if (ph[i].p_type == PT_PHDR) bias = (uintptr_t)ph - (uintptr_t)ph[i].p_vaddr;
    for (size_t i = 0; i < n; i++)
        if (ph[i].p_type == PT_LOAD && addr - bias - (uintptr_t)ph[i].p_vaddr < (uintptr_t)ph[i].p_memsz) return 1;
    return 0;
}

// Every tool, from its first line (the trace tool has no other hook): a
// closed pipe is a write error.
__attribute__((constructor)) static void sigpipe_at_start(void) {
    if (in_main_program((uintptr_t)&sigpipe_at_start)) interrupt_catch_sigpipe();
}

// interrupt_exit_at_exit: the last atexit handler to run (the first
// registered) ends the process by the signal.
static volatile sig_atomic_t g_exit_sig;

static void exit_by_signal(void) {
    if (!g_exit_sig) return;
    fflush(NULL);
    proc_groups_end_all(INTERRUPT_GRACE_S);
    die_by(g_exit_sig);
}

void interrupt_exit_at_exit(int sig) { g_exit_sig = sig; }

void interrupt_install(void) {
    static int at_exit;
    if (!at_exit) at_exit = atexit(exit_by_signal) == 0;
    interrupt_catch_sigpipe();
    for (int k = 0; k < 3; k++) {
        struct sigaction cur;
        if (g_installed[k] || sigaction(WATCHED[k], NULL, &cur) != 0) continue;
        if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_IGN) continue;   // nohup: stays ignored
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_interrupt;
        // SA_RESTART: a noted signal does not fail the read or write it interrupts
        sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        if (sigaction(WATCHED[k], &sa, NULL) == 0) g_installed[k] = 1;
    }
}

void interrupt_defer(void) {
    interrupt_install();
    g_deferred = 1;
}

int interrupt_pending(void) { return (int)g_pending; }

void interrupt_exit(int sig) {
    fflush(stdout);
    if (any_group())
        fprintf(stderr, "%s: %s: ending the engines' process groups (SIGTERM, then SIGKILL)\n", prog_name(),
                interrupt_signal_name(sig));
    proc_groups_end_all(INTERRUPT_GRACE_S);
    die_by(sig);
}

void interrupt_child_reset(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int k = 0; k < 3; k++)
        if (g_installed[k]) sigaction(WATCHED[k], &sa, NULL);
    if (g_pipe_installed) sigaction(SIGPIPE, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}
