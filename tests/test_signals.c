// Issue 29, items 4, 9, 11-14: how the tools end when their output goes away
// or they are interrupted, and that no process an engine started outlives
// compare.
//   - a closed stdout pipe is a write error (exit 1, the trace written marked
//     incomplete), not a death by SIGPIPE; SIGHUP is handled like SIGTERM
//   - an exec reply announcing more data than its request can hold is refused
//     (exit 1, the engine named) before anything is allocated
//   - SIGINT during sampling, and while compare waits for an exec reply, ends
//     the run at once with the trace marked interrupted
//   - an exec engine runs in its own process group, ended as a whole when it
//     is closed and when compare is interrupted; PR_SET_PDEATHSIG ends it when
//     compare is killed with SIGKILL
//   - a second signal ends a tool at once, even one stuck writing its trace
// Each tool runs as a child of the test, which is a child subreaper
// (PR_SET_CHILD_SUBREAPER): the processes compare leaves behind become the
// test's, so that "gone" can be checked (kill(pid, 0) fails with ESRCH) and
// whatever a failing run leaves is killed by the test.
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void nap_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *tool_path(const char *tool) {
    static char p[4][4200];
    static int k;
    char *s = p[k++ % 4];
    snprintf(s, sizeof p[0], "%s/%s", th_build_dir(), tool);
    cr_assert(access(s, X_OK) == 0, "%s is missing: build it first", s);
    return s;
}

// Start argv (argv[0] a path) as a child with the signals a shell would give
// it (default dispositions, none blocked), stdout to out_fd (or the file
// out_path), stderr to the file err_path. Returns its pid.
static pid_t spawn(char *const argv[], int out_fd, const char *out_path, const char *err_path) {
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT};
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);   // a test that dies takes its tool along
        int o = out_fd >= 0 ? out_fd : open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0) _exit(127);
        dup2(o, 1);
        dup2(e, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

// The exit status as a shell shows it (128 + N for a death by signal N), or
// -1 if pid did not end within `seconds` (it is then killed).
static int wait_status(pid_t pid, double seconds) {
    const double end = now_s() + seconds;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        cr_assert(r == 0, "waitpid: %s", strerror(errno));
        if (now_s() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        nap_ms(5);
    }
}

static int still_running(pid_t pid) {
    int st;
    return waitpid(pid, &st, WNOHANG) == 0;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    size_t got;
    while ((got = fread(b + n, 1, cap - n, f)) > 0)
        if ((n += got) == cap) b = realloc(b, (cap *= 2) + 1);
    fclose(f);
    b[n] = '\0';
    return b;
}

// Wait until the file at path contains needle (the tool got that far), while
// pid runs; fails the test (killing pid) after `seconds`.
static void wait_for_text(const char *path, const char *needle, pid_t pid, double seconds) {
    const double end = now_s() + seconds;
    for (;;) {
        char *t = slurp(path);
        int found = t && strstr(t, needle);
        free(t);
        if (found) return;
        if (!still_running(pid)) cr_assert_fail("the tool ended before it wrote '%s' to %s", needle, path);
        if (now_s() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            cr_assert_fail("no '%s' in %s within %g s", needle, path, seconds);
        }
        nap_ms(10);
    }
}

// The trace at path: "complete" false and a stop_reason containing reason.
static void expect_incomplete(const char *path, const char *reason) {
    struct stat st;
    cr_assert(stat(path, &st) == 0, "no trace was written at %s", path);
    cJSON *t = th_load_json(path);
    cJSON *c = cJSON_GetObjectItem(t, "complete"), *why = cJSON_GetObjectItem(t, "stop_reason");
    cr_expect(cJSON_IsFalse(c), "%s should be marked \"complete\": false", path);
    cr_expect(cJSON_IsString(why) && strstr(why->valuestring, reason), "%s: stop_reason '%s' lacks '%s'", path,
              cJSON_IsString(why) ? why->valuestring : "(none)", reason);
    cJSON_Delete(t);
}

static void expect_in_file(const char *path, const char *needle, const char *what) {
    char *t = slurp(path);
    cr_expect(t && strstr(t, needle), "%s: '%s' lacks '%s':\n%s", what, path, needle, t ? t : "(no file)");
    free(t);
}

// ---- processes left behind ----

static void become_subreaper(void) {
    cr_assert(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
}

static void reap_orphans(void) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

// pid must be gone within `seconds` (orphans are reaped meanwhile: the test
// is their subreaper); one that is still there is killed, and the test fails.
static void expect_gone(long pid, const char *what, double seconds) {
    cr_assert(pid > 1, "%s: no pid", what);
    const double end = now_s() + seconds;
    for (;;) {
        reap_orphans();
        if (kill((pid_t)pid, 0) == -1 && errno == ESRCH) return;
        if (now_s() > end) break;
        nap_ms(10);
    }
    kill((pid_t)pid, SIGKILL);
    nap_ms(50);
    reap_orphans();
    cr_expect_fail("%s (pid %ld) is still running after compare ended", what, pid);
}

// The fake engine's pids, from the file it writes (renamed into place, so
// never half-written): its own, its parent's and the grandchild's. tool:
// compare's pid while it runs, 0 once it has ended.
typedef struct { long self, parent, grandchild; } Pids;

static Pids wait_for_pids(const char *path, pid_t tool, double seconds) {
    const double end = now_s() + seconds;
    Pids p = {0, 0, 0};
    for (;;) {
        char *t = slurp(path);
        int ok = t && sscanf(t, "%ld %ld %ld", &p.self, &p.parent, &p.grandchild) == 3;
        free(t);
        if (ok) return p;
        if (tool > 0 && !still_running(tool)) cr_assert_fail("compare ended before the engine wrote %s", path);
        if (now_s() > end) {
            if (tool > 0) kill(tool, SIGKILL), waitpid(tool, NULL, 0);
            cr_assert_fail("the engine wrote no %s within %g s", path, seconds);
        }
        nap_ms(10);
    }
}

// ---- a fake exec engine ----

// Speaks the protocol of compare/exec_engine.c with zeros; starts a
// grandchild (sleep 600) at create and writes "pid ppid grandchild" to
// PIDFILE when the first step comes. MODE: ok (answers everything),
// sleep-step (sleeps in step), huge (announces 1e12 bytes in reply to any
// get and then sleeps).
static const char ENGINE_PY[] =
    "import json, os, struct, subprocess, sys, time\n"
    "mode, pidfile = sys.argv[1], sys.argv[2]\n"
    "inp, out = sys.stdin.buffer, sys.stdout.buffer\n"
    "child, cfg, shape = None, None, [1, 1]\n"
    "def send(obj, payload=b''):\n"
    "    if payload: obj['bytes'] = len(payload)\n"
    "    out.write(json.dumps(obj).encode() + b'\\n' + payload)\n"
    "    out.flush()\n"
    "def zeros(tensors):\n"
    "    header, off = {}, 0\n"
    "    for name, shp in tensors:\n"
    "        n = 8\n"
    "        for d in shp: n *= d\n"
    "        header[name] = {'dtype': 'F64', 'shape': list(shp), 'data_offsets': [off, off + n]}\n"
    "        off += n\n"
    "    h = json.dumps(header).encode()\n"
    "    h += b' ' * (-len(h) % 8)\n"
    "    return struct.pack('<Q', len(h)) + h + bytes(off)\n"
    "def params(prefix):\n"
    "    return [(prefix + '/' + t['name'], t['shape']) for t in cfg['tensors']]\n"
    "while True:\n"
    "    line = inp.readline()\n"
    "    if not line: break\n"
    "    req = json.loads(line)\n"
    "    data = inp.read(int(req['bytes'])) if 'bytes' in req else b''\n"
    "    op = req['op']\n"
    "    if op == 'create':\n"
    "        cfg = req['config']\n"
    "        child = subprocess.Popen(['sleep', '600'], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)\n"
    "        send({'ok': True, 'protocol': 1, 'name': 'fake'})\n"
    "    elif op == 'step':\n"
    "        (hl,) = struct.unpack('<Q', data[:8])\n"
    "        shape = json.loads(data[8:8 + hl])['tokens']['shape']\n"
    "        tmp = pidfile + '.tmp'\n"
    "        with open(tmp, 'w') as f: f.write('%d %d %d\\n' % (os.getpid(), os.getppid(), child.pid))\n"
    "        os.rename(tmp, pidfile)\n"
    "        if mode == 'sleep-step': time.sleep(600)\n"
    "        send({'ok': True, 'loss': 3.0})\n"
    "    elif op == 'get':\n"
    "        if mode == 'huge':\n"
    "            out.write(b'{\"ok\": true, \"bytes\": 1e12}\\n'); out.flush(); time.sleep(600)\n"
    "        what = req['what']\n"
    "        if what == 'logits': t = [('logits', [shape[0], shape[1] - 1, cfg['vocab_size']])]\n"
    "        elif what == 'moments': t = params('adam_m') + params('adam_v')\n"
    "        elif what in ('grads', 'params'): t = params(what)\n"
    "        else: send({'ok': False, 'error': 'not offered: ' + what}); continue\n"
    "        send({'ok': True}, zeros(t))\n"
    "    elif op == 'set_state':\n"
    "        send({'ok': True})\n"
    "    elif op == 'quit':\n"
    "        break\n"
    "    else:\n"
    "        send({'ok': False, 'error': 'not in this test: ' + op})\n";

static const char *python(void) {
    const char *py = th_python("import json, struct, subprocess");
    if (!py) cr_skip_test("no python3");
    return py;
}

// "exec:[WRAPPER ]PY ENGINE MODE PIDFILE" for the engine written into the case dir.
static const char *engine_spec(const char *wrapper, const char *mode, const char *pidfile) {
    static char spec[4][2000];
    static int k;
    char *s = spec[k++ % 4];
    const char *script = th_case_path("engine.py");
    FILE *f = fopen(script, "w");
    cr_assert(f, "cannot write %s", script);
    fputs(ENGINE_PY, f);
    fclose(f);
    snprintf(s, sizeof spec[0], "scalar,exec:%s%s%s %s %s %s", wrapper ? wrapper : "", wrapper ? " " : "", python(),
             script, mode, pidfile);
    return s;
}

// ---- item 4: a closed pipe; SIGHUP ----

// Run the tool with its stdout into a pipe (4 KiB, so that the tool's output
// fills it) that the reader closes after one byte, as `| head -c1` does.
// Returns the exit status.
static int run_into_closed_pipe(char *const argv[], const char *err_path) {
    int pfd[2];
    cr_assert(pipe2(pfd, O_CLOEXEC) == 0);   // the tool must not hold the read end itself
    fcntl(pfd[1], F_SETPIPE_SZ, 4096);
    pid_t pid = spawn(argv, pfd[1], NULL, err_path);
    close(pfd[1]);
    char c;
    ssize_t k;
    while ((k = read(pfd[0], &c, 1)) < 0 && errno == EINTR) {}
    cr_expect_eq(k, 1, "the tool wrote nothing to stdout");
    close(pfd[0]);
    return wait_status(pid, 60);
}

Test(signals, microgpt_into_a_closed_pipe_exits_1_with_its_trace, .timeout = 90) {
    th_case_dir("pipe-microgpt");
    const char *tr = th_case_path("t.json"), *err = th_case_path("err");
    char *argv[] = {(char *)tool_path("microgpt"), "--data", (char *)th_names_path(), "--steps", "1000", "--trace",
                    (char *)tr, NULL};
    int st = run_into_closed_pipe(argv, err);
    cr_expect_eq(st, 1, "exit %d: a closed stdout must be exit 1, not a death by SIGPIPE (141)", st);
    expect_in_file(err, "Broken pipe", "microgpt's message");
    expect_incomplete(tr, "standard output");
    // it stopped there: the 1000 steps were not all run
    cJSON *t = th_load_json(tr);
    cJSON *at = cJSON_GetObjectItem(t, "stop_step");
    cr_expect(cJSON_IsNumber(at) && at->valueint < 1000, "the run should stop at the failed write, not train on");
    cJSON_Delete(t);
}

Test(signals, compare_into_a_closed_pipe_exits_1_with_its_trace, .timeout = 90) {
    th_case_dir("pipe-compare");
    const char *tr = th_case_path("t.json"), *err = th_case_path("err");
    char *argv[] = {(char *)tool_path("compare"), "--data", (char *)th_names_path(), "--engines", "scalar,cpu",
                    "--mode", "free", "--steps", "500", "--every", "1", "--trace", (char *)tr, NULL};
    int st = run_into_closed_pipe(argv, err);
    cr_expect_eq(st, 1, "exit %d: a closed stdout must be exit 1, not a death by SIGPIPE (141)", st);
    expect_in_file(err, "Broken pipe", "compare's message");
    expect_incomplete(tr, "standard output");
}

Test(signals, trace_tool_into_a_closed_pipe_exits_1, .timeout = 90) {
    th_case_dir("pipe-trace");
    const char *big = th_case_path("big.json"), *err = th_case_path("err");
    th_expect_status(th_tool("microgpt", "--data", th_names_path(), "--steps", "600", "--samples", "0", "--trace", big,
                             NULL), 0, NULL, "a 600-step trace");
    char *argv[] = {(char *)tool_path("trace"), "export", "--csv", (char *)big, NULL};
    int st = run_into_closed_pipe(argv, err);
    cr_expect_eq(st, 1, "exit %d: a closed stdout must be exit 1, not a death by SIGPIPE (141)", st);
    expect_in_file(err, "Broken pipe", "trace's message");
}

Test(signals, sighup_is_handled_as_sigterm, .timeout = 90) {
    th_case_dir("sighup");
    const char *tr = th_case_path("t.json"), *out = th_case_path("out"), *err = th_case_path("err");
    char *argv[] = {(char *)tool_path("microgpt"), "--data", (char *)th_names_path(), "--steps", "1000000",
                    "--trace", (char *)tr, NULL};
    pid_t pid = spawn(argv, -1, out, err);
    wait_for_text(out, "step ", pid, 60);   // training: the handlers are in place
    kill(pid, SIGHUP);
    int st = wait_status(pid, 30);
    cr_expect_eq(st, 128 + SIGHUP, "exit %d: SIGHUP should end the run as SIGTERM does, by the signal", st);
    expect_incomplete(tr, "interrupted by");
}

// ---- item 11: interrupted while sampling ----

Test(signals, sigint_during_sampling_ends_the_run, .timeout = 90) {
    th_case_dir("sampling");
    const char *tr = th_case_path("t.json"), *out = th_case_path("out"), *err = th_case_path("err");
    char *argv[] = {(char *)tool_path("microgpt"), "--data", (char *)th_names_path(), "--steps", "1", "--samples",
                    "1000000", "--trace", (char *)tr, NULL};
    pid_t pid = spawn(argv, -1, out, err);
    wait_for_text(out, "sample ", pid, 60);
    kill(pid, SIGINT);
    int st = wait_status(pid, 20);
    cr_expect_eq(st, 128 + SIGINT, "exit %d: SIGINT while sampling must end the run (130), not be swallowed", st);
    expect_incomplete(tr, "interrupted by SIGINT");
    cJSON *t = th_load_json(tr);
    cJSON *s = cJSON_GetObjectItem(t, "samples");
    cr_expect(cJSON_IsArray(s) && cJSON_GetArraySize(s) < 1000000, "the trace should hold the samples drawn so far");
    cJSON_Delete(t);
}

// microgpt in case folder `name`, trained and sampled, now writing its trace
// to a FIFO (*fifo) that nobody reads yet: it waits there. Its pid.
static pid_t done_and_writing_to_a_fifo(const char *name, const char **fifo) {
    th_case_dir(name);
    const char *out = th_case_path("out"), *err = th_case_path("err");
    *fifo = th_case_path("t.fifo");
    cr_assert(mkfifo(*fifo, 0644) == 0, "mkfifo: %s", strerror(errno));
    char *argv[] = {(char *)tool_path("microgpt"), "--data", (char *)th_names_path(), "--steps", "1", "--samples",
                    "1", "--trace", (char *)*fifo, NULL};
    pid_t pid = spawn(argv, -1, out, err);
    wait_for_text(out, "sample  1", pid, 60);   // printed and flushed: next is the trace
    return pid;
}

// A signal that comes while the finished run writes its trace (here: waiting
// for the FIFO's reader) lets the write finish, complete, and still ends the
// run by the signal instead of exit 0.
Test(signals, a_signal_during_the_last_write_still_ends_the_run, .timeout = 90) {
    const char *fifo;
    pid_t pid = done_and_writing_to_a_fifo("last-write", &fifo);
    kill(pid, SIGTERM);
    nap_ms(100);
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid)   // (else reading the FIFO would wait for a writer forever)
        cr_assert_fail("the SIGTERM ended the run before its trace was written (status %d)",
                       WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    char *text = slurp(fifo);   // the reader the write waited for
    st = wait_status(pid, 20);
    cr_expect_eq(st, 128 + SIGTERM, "exit %d: a SIGTERM during the last write must still end the run (143)", st);
    cJSON *t = text ? cJSON_Parse(text) : NULL;
    cr_expect(t && cJSON_IsTrue(cJSON_GetObjectItem(t, "complete")), "the trace is written in full: %.200s",
              text ? text : "(nothing)");
    cJSON_Delete(t);
    free(text);
}

// ---- item 9: an announced size beyond what the request implies ----

Test(signals, an_impossible_announced_size_is_refused, .timeout = 90) {
    become_subreaper();
    th_case_dir("huge");
    const char *pids = th_case_path("pids");
    ThRun r = th_tool("compare", "--data", th_names_path(), "--engines", engine_spec(NULL, "huge", pids), "--mode",
                      "free", "--steps", "1", "--exec-timeout", "60", NULL);
    cr_expect_eq(r.status, 1, "exit %d (want 1)\n%s", r.status, r.err);
    cr_expect(strstr(r.err, "engine exec:"), "the engine is named: %s", r.err);
    cr_expect(strstr(r.err, "announces 1e+12 bytes"), "the announced size is named: %s", r.err);
    cr_expect(strstr(r.err, "at most"), "the expected size is named: %s", r.err);
    cr_expect(!strstr(r.err, "out of memory"), "nothing is allocated for it: %s", r.err);
    th_run_free(&r);
    Pids p = wait_for_pids(pids, 0, 1);
    expect_gone(p.self, "the engine", 10);
    expect_gone(p.grandchild, "the engine's child", 10);
}

// ---- items 12, 13: compare waiting for an engine; process groups ----

static void interrupt_while_engine_steps(int sig) {
    become_subreaper();
    th_case_dir(sig == SIGINT ? "wait-int" : "wait-term");
    const char *tr = th_case_path("t.json"), *out = th_case_path("out"), *err = th_case_path("err"),
               *pids = th_case_path("pids");
    char *argv[] = {(char *)tool_path("compare"), "--data", (char *)th_names_path(), "--engines",
                    (char *)engine_spec(NULL, "sleep-step", pids), "--steps", "3", "--exec-timeout", "600", "--trace",
                    (char *)tr, NULL};
    pid_t pid = spawn(argv, -1, out, err);
    Pids p = wait_for_pids(pids, pid, 60);   // the engine is in its step
    const double t0 = now_s();
    kill(pid, sig);
    int st = wait_status(pid, 20);
    cr_expect_eq(st, 128 + sig, "exit %d (want %d): compare must not wait for the engine's timeout", st, 128 + sig);
    cr_expect(now_s() - t0 < 10, "compare took %.1f s to stop", now_s() - t0);
    expect_gone(p.self, "the engine", 10);   // first: a failed assertion below would leave them running
    expect_gone(p.grandchild, "the engine's child", 10);
    expect_in_file(err, "process group", "compare's message says it ended the engine's processes");
    expect_incomplete(tr, sig == SIGINT ? "interrupted by SIGINT" : "interrupted by SIGTERM");
}

Test(signals, sigint_while_waiting_for_an_engine_stops_at_once, .timeout = 120) {
    interrupt_while_engine_steps(SIGINT);
}

Test(signals, sigterm_while_waiting_for_an_engine_stops_at_once, .timeout = 120) {
    interrupt_while_engine_steps(SIGTERM);
}

static const char *timeout_wrapper(void) {
    if (access("/usr/bin/timeout", X_OK) == 0) return "/usr/bin/timeout 1000";
    if (access("/bin/timeout", X_OK) == 0) return "/bin/timeout 1000";
    cr_skip_test("no timeout(1)");
    return NULL;
}

// An engine behind a wrapper, closed at the end of a run: the wrapper, the
// engine and the engine's own child all end with it.
Test(signals, a_closed_engine_takes_its_processes_along, .timeout = 120) {
    become_subreaper();
    th_case_dir("close");
    const char *pids = th_case_path("pids");
    ThRun r = th_tool("compare", "--data", th_names_path(), "--engines", engine_spec(timeout_wrapper(), "ok", pids),
                      "--mode", "free", "--steps", "2", NULL);
    // the fake engine's loss is 3.0: a drift, exit 1; what matters is what is left
    cr_expect(r.status == 0 || r.status == 1, "exit %d\n%s%s", r.status, r.out, r.err);
    th_run_free(&r);
    Pids p = wait_for_pids(pids, 0, 1);
    expect_gone(p.self, "the engine", 10);
    expect_gone(p.parent, "the wrapper (timeout)", 10);
    expect_gone(p.grandchild, "the engine's child", 10);
}

// compare without a trace, killed by a signal while the engine steps: it
// ends the engine's process group (wrapper included), then dies by the signal.
static void kill_compare_while_engine_steps(int sig) {
    become_subreaper();
    th_case_dir(sig == SIGINT ? "kill-int" : "kill-term");
    const char *out = th_case_path("out"), *err = th_case_path("err"), *pids = th_case_path("pids");
    char *argv[] = {(char *)tool_path("compare"), "--data", (char *)th_names_path(), "--engines",
                    (char *)engine_spec(timeout_wrapper(), "sleep-step", pids), "--steps", "3", "--exec-timeout",
                    "600", NULL};
    pid_t pid = spawn(argv, -1, out, err);
    Pids p = wait_for_pids(pids, pid, 60);
    kill(pid, sig);
    int st = wait_status(pid, 20);
    cr_expect_eq(st, 128 + sig, "exit %d (want %d)", st, 128 + sig);
    expect_gone(p.self, "the engine", 10);
    expect_gone(p.parent, "the wrapper (timeout)", 10);
    expect_gone(p.grandchild, "the engine's child", 10);
}

Test(signals, sigterm_to_compare_ends_the_engine_group, .timeout = 120) {
    kill_compare_while_engine_steps(SIGTERM);
}

Test(signals, sigint_to_compare_ends_the_engine_group, .timeout = 120) {
    kill_compare_while_engine_steps(SIGINT);
}

// SIGKILL cannot be handled: the engine gets SIGTERM from the kernel
// (PR_SET_PDEATHSIG, Linux). Its own child is beyond that: the test ends it.
Test(signals, sigkill_to_compare_ends_the_engine, .timeout = 120) {
    become_subreaper();
    th_case_dir("kill-9");
    const char *out = th_case_path("out"), *err = th_case_path("err"), *pids = th_case_path("pids");
    char *argv[] = {(char *)tool_path("compare"), "--data", (char *)th_names_path(), "--engines",
                    (char *)engine_spec(NULL, "sleep-step", pids), "--steps", "3", "--exec-timeout", "600", NULL};
    pid_t pid = spawn(argv, -1, out, err);
    Pids p = wait_for_pids(pids, pid, 60);
    kill(pid, SIGKILL);
    cr_expect_eq(wait_status(pid, 20), 128 + SIGKILL);
    expect_gone(p.self, "the engine", 10);
    kill((pid_t)p.grandchild, SIGKILL);
    nap_ms(50);
    reap_orphans();
}

// ---- item 14: a second signal ends a tool at once ----

// The trace goes to a FIFO nobody reads: the run is done and waits to write
// it. The first SIGINT leaves it waiting (the trace may still be read); the
// second ends it at once, by the signal.
Test(signals, a_second_signal_ends_a_stuck_tool, .timeout = 90) {
    const char *fifo;
    pid_t pid = done_and_writing_to_a_fifo("second", &fifo);
    kill(pid, SIGINT);
    nap_ms(300);
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid)
        cr_assert_fail("the first SIGINT ended the run (status %d): it should leave the trace's write waiting for "
                       "its reader", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    const double t0 = now_s();
    kill(pid, SIGINT);
    st = wait_status(pid, 10);
    cr_expect_eq(st, 128 + SIGINT, "exit %d: the second SIGINT must end the run at once, by the signal", st);
    cr_expect(now_s() - t0 < 5, "the second signal took %.1f s", now_s() - t0);
}
