// How the tools end when they are interrupted or their output goes away
// (README.md, "Exit codes"), and the process groups of the engines they
// start, which end with them (common/interrupt.c; common/atomic_file.c holds
// these signals back while an output file is replaced).
//
// SIGPIPE: a write to a closed pipe (`build/microgpt | head -c1`) fails with
// EPIPE, and the tool treats it as the failed output it is (exit 1 with a
// message, the trace written marked incomplete) instead of dying by SIGPIPE
// (141). Every tool's executable installs, at start-up, a SIGPIPE handler
// that does nothing: unlike SIG_IGN it is reset by exec, so the programs the
// tools start get the default back. A SIGPIPE ignored when the tool started
// stays ignored. Loaded as part of a plugin into another program, this code
// changes nothing there.
//
// SIGINT, SIGTERM, SIGHUP (each unless it was ignored when the tool started:
// nohup, a background job of a script; it then stays ignored):
//   - after interrupt_install(), the signal ends the tool at once: the
//     process groups registered with proc_group_add are ended (SIGTERM, up to
//     INTERRUPT_GRACE_S seconds, SIGKILL) and the tool dies by the signal
//     (exit status 128 + N in a shell: 130, 143, 129);
//   - after interrupt_defer() (a tool with a trace or a timeline to write),
//     the first signal is only noted: the tool checks interrupt_pending()
//     between steps, between samples and while it waits for an engine, writes
//     its outputs marked incomplete and then ends by the signal
//     (trace_exit_on_signal, interrupt_exit), its process groups ended first;
//   - a second signal always ends the tool at once: the process groups get
//     SIGKILL, the tool dies by the signal and an output not yet written is
//     not written (one being replaced is finished first: the signals are held
//     back while its temporary file exists, common/atomic_file.h).
#ifndef COMMON_INTERRUPT_H
#define COMMON_INTERRUPT_H

#include <sys/types.h>

// How long a process group is given to end after SIGTERM before SIGKILL.
#define INTERRUPT_GRACE_S 1.0

// Catch SIGINT, SIGTERM and SIGHUP (those not ignored) as above, and make a
// closed pipe a write error. Call first thing in main; safe to call again.
void interrupt_install(void);
// From now on the first signal is noted for interrupt_pending() (installs
// the handlers first if need be).
void interrupt_defer(void);
// The first SIGINT, SIGTERM or SIGHUP caught, or 0.
int interrupt_pending(void);
// "SIGINT", "SIGTERM", "SIGHUP", or "a signal".
const char *interrupt_signal_name(int sig);
// End the registered process groups (SIGTERM, grace, SIGKILL) and die by sig
// (its default action), or _exit(128 + sig) if that does not end it.
void interrupt_exit(int sig) __attribute__((noreturn));
// Make the exit() that comes next end the process by sig instead, once the
// atexit handlers registered after interrupt_install have run and stdio is
// flushed: die(128 + sig, ...) then writes the trace through its hooks and
// the tool still ends by the signal, as a shell expects of an interrupted
// program. (Without interrupt_install the exit status stays as given.)
void interrupt_exit_at_exit(int sig);
// Make a SIGPIPE a write error (EPIPE) instead of the end of the process
// (done at start-up already; for code that may run in a program that is not
// one of the tools).
void interrupt_catch_sigpipe(void);
// In a child between fork and exec: the handlers above back to the default
// and no signal blocked, so that the program it becomes starts as from a
// shell (async-signal-safe).
void interrupt_child_reset(void);

// Process groups that end with the tool: a child started with
// setpgid(0, 0) leads one (its pid is the group's id). At most 16.
void proc_group_add(pid_t leader);
void proc_group_forget(pid_t leader);
// End the group led by the child `leader`: SIGTERM to the group (SIGKILL at
// once when grace <= 0), up to grace seconds for every process in it to exit
// (the leader reaped meanwhile), then SIGKILL to what is left; reaps the
// leader and forgets the group. Returns the leader's wait status, or -1 when
// it had been reaped before. Sets *killed (if not NULL) when SIGKILL was
// needed.
int proc_group_end(pid_t leader, double grace, int *killed);
// proc_group_end for every registered group at once (async-signal-safe).
void proc_groups_end_all(double grace);

#endif
