// Timing one engine on one size (docs/BENCHMARKS.md). Each engine runs in a
// child process: its peak memory is its own (wait4), a run that overruns is
// stopped, and the parent never touches CUDA. The child sends back a fixed
// header and the per-step losses through a pipe.
//
// A timed run: set the initial weights and zero moments, the warm-up steps
// (untimed), then the timed steps. Engines with run_steps (CUDA) run the
// timed steps back to back, timed by their own events; the others are timed
// with the monotonic clock around the loop. Repeats train the same steps
// again from the same start, so their losses must agree to the bit.
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "bench.h"
#include "bench_stats.h"
#include "engines.h"
#include "common/atomic_file.h"
#include "common/safetensors.h"
#include "common/util.h"
#include "traces/trace.h"

typedef struct {
    int status;                 // RowStatus
    char why[512];
    char device[128];
    int repeats, warmup, timed_steps, steps_ran;
    int stop;                   // StopReason
    double ms[BENCH_MAX_REPEATS];
    double peak_device_bytes;
    double peak_host_bytes;
} ChildHeader;

const char *bench_stop_name(StopReason s) {
    return s == STOP_NOISE ? "noise" : s == STOP_MAX ? "max_repeats" : s == STOP_BUDGET ? "budget"
           : s == STOP_FIXED ? "fixed" : NULL;
}

void bench_row_stats(BenchRow *row) {
    row->ms_med = row->ms_min = row->ms_max = row->ci_lo = row->ci_hi = row->noise = NAN;
    if (row->repeats < 1) return;
    const int n = row->repeats;
    row->ms_min = row->ms_max = row->ms[0];
    for (int i = 1; i < n; i++) {
        if (row->ms[i] < row->ms_min) row->ms_min = row->ms[i];
        if (row->ms[i] > row->ms_max) row->ms_max = row->ms[i];
    }
    row->ms_med = bench_median(row->ms, n);
    bench_median_ci(row->ms, n, &row->ci_lo, &row->ci_hi);
    row->noise = bench_rel_noise(row->ms, n);
}

void bench_host_cpu(char *out, size_t n) {
    snprintf(out, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c += 2;
                c[strcspn(c, "\n")] = '\0';
                snprintf(out, n, "%s", c);
            }
            break;
        }
    fclose(f);
}

// VmRSS or VmHWM of this process, in bytes (NaN if unknown).
static double proc_status_bytes(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return NAN;
    char line[256];
    double kb = NAN;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            kb = strtod(line + kl + 1, NULL);
            break;
        }
    fclose(f);
    return kb * 1024;
}

// Reset VmHWM to the current RSS (Linux: "5" to clear_refs); 0 on success.
static int reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static void child_send(int fd, const ChildHeader *h, const double *losses) {
    if (write_all(fd, h, sizeof *h) || write_all(fd, losses, (size_t)h->steps_ran * sizeof *losses)) _exit(3);
    close(fd);
    _exit(0);
}

// The child: create the engine, time it, send the result. Only _exit():
// the parent's atexit handlers (its trace's temporary file) are not ours.
static void child_main(int fd, const Options *o, const BenchSize *z, const char *name, Precision p, Fault fault) {
    ChildHeader h;
    memset(&h, 0, sizeof h);
    // the engine's own peak: the high-water mark of this process's RSS over
    // what it held (inherited from the parent) before the engine existed
    const int peak_ok = reset_peak_rss() == 0;
    const double rss0 = proc_status_bytes("VmRSS");
    h.peak_host_bytes = NAN;
    const int S = z->s.steps;
    const size_t P = z->L.n_params;
    double *losses = xcalloc((size_t)S, sizeof *losses), *again = xcalloc((size_t)S, sizeof *again);
    EngineConfig cfg = {.s = &z->s, .L = &z->L, .precision = p, .fault = fault, .max_batch = z->s.batch};
    char err[512] = "";
    Engine *e = engine_new(name, &cfg, z->init, err, sizeof err);
    if (!e) {
        h.status = strstr(err, "no usable GPU") || strstr(err, "has no CUDA") ? ROW_UNAVAILABLE
                   : strstr(err, "out of memory") || strstr(err, "not enough")  ? ROW_SKIPPED
                                                                             : ROW_FAILED;
        snprintf(h.why, sizeof h.why, "%s", err);
        child_send(fd, &h, losses);
    }
    if (e->ops->device) snprintf(h.device, sizeof h.device, "%s", e->ops->device(e));
    else bench_host_cpu(h.device, sizeof h.device);
    // Engines timed on the host clock get the time budget for every run;
    // the GPU ones run the --repeats runs whatever they take (milliseconds)
    // and the budget bounds only the runs after those.
    const int budgeted = !e->ops->run_steps;
    const double budget = o->b.budget_s, t_start = now_seconds();
    double *zeros = xcalloc(P, sizeof *zeros);
    // At least R_min runs; more, up to R_max, while the median's interval is
    // wider than the noise target (noise_target 0: exactly R_min).
    const double target = o->b.noise_target;
    const int R_min = o->b.repeats < BENCH_MAX_REPEATS ? o->b.repeats : BENCH_MAX_REPEATS;
    int R_max = target > 0 && o->b.max_repeats > R_min ? o->b.max_repeats : R_min;
    if (R_max > BENCH_MAX_REPEATS) R_max = BENCH_MAX_REPEATS;
    int W = o->b.warmup < S ? o->b.warmup : S - 1, K = S - W;
    h.stop = target > 0 ? STOP_MAX : STOP_FIXED;   // unless a reason below stops it first
    for (int rep = 0; rep < R_max; rep++) {
        if (rep > 0) {
            if (target > 0 && rep >= R_min && bench_rel_noise(h.ms, rep) <= target) {
                h.stop = STOP_NOISE;
                break;
            }
            // the runs so far predict the next one
            const double spent = now_seconds() - t_start;
            if ((budgeted || rep >= R_min) && spent + spent / rep > budget) {
                h.stop = STOP_BUDGET;
                break;
            }
        }
        double *l = rep ? again : losses;
        if (rep && e->ops->params_only) {
            // an engine that cannot take Adam's moments (a partial engine) starts
            // each run afresh: a new engine from the initial weights (untimed)
            e->ops->destroy(e);
            e = engine_new(name, &cfg, z->init, err, sizeof err);
            if (!e) {
                h.status = ROW_FAILED;
                snprintf(h.why, sizeof h.why, "creating it again for run %d: %s", rep + 1, err);
                child_send(fd, &h, losses);
            }
        } else if (rep) {
            e->ops->set_state(e, z->init, zeros, zeros);
        }
        const double tw = now_seconds();
        for (int i = 0; i < W; i++) {
            l[i] = e->ops->step(e, &z->batches[i], i);
            if (!isfinite(l[i])) {
                h.status = ROW_FAILED;
                snprintf(h.why, sizeof h.why, "the loss is not finite at step %d (%g)", i + 1, l[i]);
                h.steps_ran = rep ? h.steps_ran : i + 1;
                child_send(fd, &h, losses);
            }
            // a slow engine warms up for a quarter of its budget at most
            if (budgeted && rep == 0 && i + 1 < W && now_seconds() - tw > budget / 4) {
                W = i + 1;
                K = S - W;
            }
        }
        double sec = 0;
        int k = 0;
        if (e->ops->run_steps) {
            if (e->ops->run_steps(e, z->batches + W, W, K, l + W, &sec)) {
                h.status = ROW_FAILED;
                snprintf(h.why, sizeof h.why, "run_steps refused %d steps", K);
                child_send(fd, &h, losses);
            }
            k = K;
        } else {
            const double t0 = now_seconds();
            for (int i = W; i < W + K; i++) {
                l[i] = e->ops->step(e, &z->batches[i], i);
                k++;
                if (!isfinite(l[i])) break;
                if (rep == 0 && budgeted && now_seconds() - t_start > budget) break;
            }
            sec = now_seconds() - t0;
        }
        for (int i = W; i < W + k; i++)
            if (!isfinite(l[i])) {
                h.status = ROW_FAILED;
                snprintf(h.why, sizeof h.why, "the loss is not finite at step %d (%g)", i + 1, l[i]);
                h.steps_ran = rep ? h.steps_ran : i + 1;
                child_send(fd, &h, losses);
            }
        if (rep == 0) {
            K = k;   // later runs time as many steps as the first
            h.steps_ran = W + K;
            h.warmup = W;
            h.timed_steps = K;
        } else {
            for (int i = 0; i < W + K; i++)
                if (memcmp(&again[i], &losses[i], sizeof(double))) {
                    h.status = ROW_FAILED;
                    snprintf(h.why, sizeof h.why, "not deterministic: timed run %d gives loss %.17g at step %d, run "
                             "1 gave %.17g", rep + 1, again[i], i + 1, losses[i]);
                    child_send(fd, &h, losses);
                }
        }
        h.ms[rep] = 1e3 * sec / k;
        h.repeats = rep + 1;
    }
    // the last run allowed may be the one that met the target
    if (h.stop == STOP_MAX && bench_rel_noise(h.ms, h.repeats) <= target) h.stop = STOP_NOISE;
    h.peak_device_bytes = e->ops->device_bytes ? (double)e->ops->device_bytes(e) : NAN;
    if (peak_ok) h.peak_host_bytes = proc_status_bytes("VmHWM") - rss0;
    e->ops->destroy(e);
    // an engine in a process of its own (exec:) has been reaped by now: its
    // peak RSS counts too
    struct rusage ru;
    if (!getrusage(RUSAGE_CHILDREN, &ru) && ru.ru_maxrss > 0)
        h.peak_host_bytes = (isnan(h.peak_host_bytes) ? 0 : h.peak_host_bytes) + (double)ru.ru_maxrss * 1024;
    h.status = ROW_OK;
    child_send(fd, &h, losses);
}

// Read everything fd gives until EOF or the deadline; 0 at EOF, -1 on timeout.
typedef struct {
    char *buf;
    size_t len, cap;
} Buf;

static void buf_add(Buf *b, const char *p, size_t n) {
    if (b->len + n + 1 > b->cap) b->buf = xrealloc(b->buf, b->cap = 2 * (b->len + n + 1));
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

// Collect the child's result pipe and stderr (echoed to ours) until both
// close or the deadline passes. 0, or -1 on timeout.
static int collect(int out_fd, int err_fd, double deadline, Buf *out, Buf *err) {
    struct pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
    int open_fds = 2;
    while (open_fds) {
        double left = deadline - now_seconds();
        if (left <= 0) return -1;
        int r = poll(fds, 2, left > 1e6 ? 1000000000 : (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        for (int k = 0; k < 2; k++) {
            if (fds[k].fd < 0 || !(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char chunk[65536];
            ssize_t n = read(fds[k].fd, chunk, sizeof chunk);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                fds[k].fd = -1;
                open_fds--;
                continue;
            }
            buf_add(k ? err : out, chunk, (size_t)n);
            if (k) fwrite(chunk, 1, (size_t)n, stderr);
        }
    }
    return 0;
}

// The last non-empty line of text, into out.
static void last_line(const char *text, char *out, size_t n) {
    out[0] = '\0';
    if (!text) return;
    const char *end = text + strlen(text);
    while (end > text && (end[-1] == '\n' || end[-1] == ' ')) end--;
    const char *start = end;
    while (start > text && start[-1] != '\n') start--;
    snprintf(out, n, "%.*s", (int)(end - start), start);
}

static void describe_exit(int status, char *out, size_t n) {
    if (WIFEXITED(status)) snprintf(out, n, "exit code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, n, "killed by signal %d%s", WTERMSIG(status), WTERMSIG(status) == SIGKILL ? " (out of memory?)" : "");
    else snprintf(out, n, "status %d", status);
}

// A child process whose result pipe and stderr the parent collects.
typedef struct {
    pid_t pid;
    int out_fd, err_fd;
} Child;

// Fork; the child runs body(fd of the result pipe, ctx) with its stderr
// (and, if stdout_to_pipe, its stdout) going to the parent, and must _exit.
static Child spawn(void (*body)(int fd, void *ctx), void *ctx, int stdout_to_pipe) {
    int out[2], err[2];
    if (pipe(out) || pipe(err)) die(EXIT_MISMATCH, "bench: pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) die(EXIT_MISMATCH, "bench: fork: %s", strerror(errno));
    if (pid == 0) {
        close(out[0]);
        close(err[0]);
        dup2(err[1], 2);
        close(err[1]);
        if (stdout_to_pipe) dup2(out[1], 1);
        body(out[1], ctx);
        _exit(3);
    }
    close(out[1]);
    close(err[1]);
    return (Child){pid, out[0], err[0]};
}

// Collect the child's output until it ends or limit_s pass (then kill it);
// always reap it. 1 if it was killed for time.
static int reap(Child c, double limit_s, Buf *out, Buf *err, int *status) {
    int timed_out = collect(c.out_fd, c.err_fd, now_seconds() + limit_s, out, err);
    if (timed_out) kill(c.pid, SIGKILL);
    close(c.out_fd);
    close(c.err_fd);
    *status = 0;
    while (waitpid(c.pid, status, 0) < 0 && errno == EINTR) {
    }
    return timed_out;
}

typedef struct {
    const Options *o;
    const BenchSize *z;
    const char *name;
    Precision p;
    Fault fault;
} EngineJob;

static void engine_body(int fd, void *ctx) {
    const EngineJob *j = ctx;
    child_main(fd, j->o, j->z, j->name, j->p, j->fault);
}

void bench_run_engine(const Options *o, BenchSize *z, const char *name, Precision p, Fault fault,
                      BenchRow *row) {
    memset(row, 0, sizeof *row);
    snprintf(row->engine, sizeof row->engine, "%s", name);
    row->prec = p;
    row->peak_host_bytes = row->peak_device_bytes = row->compile_s = NAN;
    const double need = bench_host_bytes_estimate(name, z, p), avail = mem_available();
    if (need > 0.75 * avail) {
        row->status = ROW_SKIPPED;
        snprintf(row->why, sizeof row->why, "needs about %.1f GiB of memory (estimate), %.1f GiB available", need / (1 << 30),
                 avail / (1 << 30));
        return;
    }
    bench_size_batches(z);   // the first engine that fits builds them (their bytes were in its estimate)
    EngineJob job = {o, z, name, p, fault};
    Child c = spawn(engine_body, &job, 0);
    // engines on the host clock stop timing at the budget; a step that
    // overruns it by far is stopped here
    const double limit = engine_supports(name, PREC_FP32) && engine_cpu_order(name) == ORDER_NUM ? 900 : 2 * o->b.budget_s + 30;
    Buf res = {0}, msg = {0};
    int status;
    const int timed_out = reap(c, limit, &res, &msg, &status);
    ChildHeader h;
    if (timed_out) {
        row->status = ROW_SKIPPED;
        snprintf(row->why, sizeof row->why, "no result within %.0f s (the time budget is %.0f s): too slow at this size",
                 limit, o->b.budget_s);
    } else if (res.len >= sizeof h) {
        memcpy(&h, res.buf, sizeof h);
        size_t want = sizeof h + (size_t)h.steps_ran * sizeof(double);
        if (res.len != want || h.steps_ran < 0 || h.steps_ran > z->s.steps) {
            row->status = ROW_FAILED;
            snprintf(row->why, sizeof row->why, "internal error: a malformed result from the engine process");
        } else {
            row->status = (RowStatus)h.status;
            snprintf(row->why, sizeof row->why, "%s", h.why);
            snprintf(row->device, sizeof row->device, "%s", h.device);
            row->repeats = h.repeats;
            row->warmup = h.warmup;
            row->timed_steps = h.timed_steps;
            row->stop = h.status == ROW_OK ? (StopReason)h.stop : STOP_NONE;
            memcpy(row->ms, h.ms, sizeof row->ms);
            row->steps_ran = h.steps_ran;
            row->losses = xmalloc((size_t)(h.steps_ran ? h.steps_ran : 1) * sizeof(double));
            memcpy(row->losses, res.buf + sizeof h, (size_t)h.steps_ran * sizeof(double));
            row->peak_device_bytes = h.peak_device_bytes;
            row->peak_host_bytes = h.peak_host_bytes;
        }
    } else {
        char how[64], line[400];
        describe_exit(status, how, sizeof how);
        last_line(msg.buf, line, sizeof line);
        row->status = ROW_FAILED;
        snprintf(row->why, sizeof row->why, "the engine process ended without a result (%s)%s%s", how,
                 line[0] ? ": " : "", line);
    }
    if (row->status != ROW_OK) row->repeats = row->repeats < 0 ? 0 : row->repeats;
    bench_row_stats(row);
    free(res.buf);
    free(msg.buf);
}

// ---- the PyTorch baseline ---------------------------------------------

// --torch-compile: torch_baseline.py's --compile-mode ("off": no
// torch-compile row).
static const char *g_compile_mode = "default";

int bench_set_torch_compile(const char *mode) {
    static const char *const modes[] = {"default", "max-autotune", "off"};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++)
        if (!strcmp(mode, modes[i])) {
            g_compile_mode = modes[i];
            return 0;
        }
    return -1;
}

// $MICROGPT_TORCH_BASELINE (for tests: a fake baseline that needs no torch
// or GPU, tests/fake_torch_baseline.py), else scripts/torch_baseline.py
// beside the working directory, or beside the program (build/compare ->
// scripts/). 0, or -1 with the reason in why.
static int find_script(char *out, size_t n, char *why, size_t wn) {
    const char *env = getenv("MICROGPT_TORCH_BASELINE");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        if (access(out, R_OK) == 0) return 0;
        snprintf(why, wn, "$MICROGPT_TORCH_BASELINE (%.300s): %s", env, strerror(errno));
        return -1;
    }
    if (access("scripts/torch_baseline.py", R_OK) == 0) {
        snprintf(out, n, "scripts/torch_baseline.py");
        return 0;
    }
    char exe[4096];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) {
        exe[k] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(out, n, "%s/../scripts/torch_baseline.py", exe);
            if (access(out, R_OK) == 0) return 0;
        }
    }
    snprintf(why, wn, "scripts/torch_baseline.py not found (run from the repository root)");
    return -1;
}

// The work of size z for an outside program: the initial parameters by
// their canonical names, every step's tokens (-1 past a document's end)
// and lengths, the learning rate of each step, the settings as metadata.
static int export_size(const BenchSize *z, Precision p, const char *path, char *err, size_t errlen) {
    const int S = z->s.steps, B = z->s.batch, T = z->s.block_size;
    const ParamLayout *L = &z->L;
    int nt = L->n_tensors + 3;
    StTensor *t = xcalloc((size_t)nt, sizeof *t);
    for (int i = 0; i < L->n_tensors; i++)
        t[i] = (StTensor){.name = L->t[i].name, .dtype = ST_F64, .ndim = 2,
                          .shape = {(size_t)L->t[i].rows, (size_t)L->t[i].cols}, .data = z->init + L->t[i].offset};
    int *tok = xmalloc((size_t)S * B * (T + 1) * sizeof *tok), *len = xmalloc((size_t)S * B * sizeof *len);
    double *lr = xmalloc((size_t)S * sizeof *lr);
    for (int s = 0; s < S; s++) {
        const Batch *b = &z->batches[s];
        for (int d = 0; d < B; d++) {
            len[(size_t)s * B + d] = b->n[d];
            for (int j = 0; j <= T; j++)
                tok[((size_t)s * B + d) * (T + 1) + j] = j <= b->T ? b->tokens[(size_t)d * (b->T + 1) + j] : -1;
        }
        lr[s] = lr_at(z->s.lr, s, S);
    }
    t[nt - 3] = (StTensor){.name = "tokens", .dtype = ST_I32, .ndim = 3, .shape = {(size_t)S, (size_t)B, (size_t)T + 1},
                           .data = tok};
    t[nt - 2] = (StTensor){.name = "n", .dtype = ST_I32, .ndim = 2, .shape = {(size_t)S, (size_t)B}, .data = len};
    t[nt - 1] = (StTensor){.name = "lr", .dtype = ST_F64, .ndim = 1, .shape = {(size_t)S}, .data = lr};
    const ModelShape *m = &L->shape;
    cJSON *js = cJSON_CreateObject();
    const struct {
        const char *key;
        double v;
    } nums[] = {{"vocab_size", m->vocab_size}, {"n_embd", m->n_embd},         {"n_head", m->n_head},
                {"n_kv_head", m->n_kv_head},   {"n_layer", m->n_layer},       {"block_size", m->block_size},
                {"batch", B},                  {"steps", S},                  {"beta1", z->s.beta1},
                {"beta2", z->s.beta2},         {"eps", z->s.eps}};
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) cJSON_AddItemToObject(js, nums[i].key, trace_number(nums[i].v));
    cJSON_AddStringToObject(js, "precision", precision_name(p));
    cJSON *pn = cJSON_AddArrayToObject(js, "params");
    for (int i = 0; i < L->n_tensors; i++) cJSON_AddItemToArray(pn, cJSON_CreateString(L->t[i].name));
    char *settings = cJSON_PrintUnformatted(js);
    cJSON_Delete(js);
    if (!settings) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const char *meta[] = {"format", "microgpt-bench-work", "settings", settings};
    size_t n = 0;
    unsigned char *buf = safetensors_encode(t, nt, meta, 2, &n, err, errlen);
    free(settings);
    free(t);
    free(tok);
    free(len);
    free(lr);
    if (!buf) return -1;
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(buf, 1, n, f) == n;
    if (f && fclose(f)) ok = 0;
    free(buf);
    if (!ok) {
        snprintf(err, errlen, "cannot write %.300s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void torch_skip(BenchRow *rows, int n, RowStatus st, const char *why) {
    for (int k = 0; k < n; k++) {
        rows[k].status = st;
        size_t len = strlen(why) < sizeof rows[k].why - 1 ? strlen(why) : sizeof rows[k].why - 1;
        memcpy(rows[k].why, why, len);
        rows[k].why[len] = '\0';
    }
}

static double json_num(const cJSON *o, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

static void exec_body(int fd, void *ctx) {
    (void)fd;
    char *const *argv = ctx;
    execvp(argv[0], argv);
    fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

// The row of the result named `engine`: the script writes them in the
// table's order, but a row is found by its name, so that a result without
// one (an older script, --compile-mode off) cannot shift the others.
static const cJSON *result_row(const cJSON *rows, const char *engine) {
    const cJSON *r;
    cJSON_ArrayForEach(r, rows) {
        const char *e = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "engine"));
        if (e && !strcmp(e, engine)) return r;
    }
    return NULL;
}

// One row of the script's result into row: its timings and losses, or why
// it has none (its "note").
static void torch_row_read(BenchRow *row, const cJSON *r, const BenchSize *z, const char *dev) {
    if (!r) {
        row->status = ROW_FAILED;
        snprintf(row->why, sizeof row->why, "the torch baseline's result has no row %s", row->engine);
        return;
    }
    row->compile_s = json_num(r, "compile_s");   // known even where the capture after it failed
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(r, "ms_per_step");
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(r, "losses");
    if (!cJSON_IsArray(ms) || !cJSON_IsArray(ls) || cJSON_GetArraySize(ls) > z->s.steps) {
        row->status = ROW_FAILED;
        snprintf(row->why, sizeof row->why, "the torch baseline's result lacks ms_per_step or losses");
        return;
    }
    const char *rwhy = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "note"));
    if (rwhy) snprintf(row->why, sizeof row->why, "%s", rwhy);
    if (!cJSON_GetArraySize(ms)) {
        row->status = ROW_FAILED;
        if (!rwhy) snprintf(row->why, sizeof row->why, "the torch baseline timed no run");
        return;
    }
    row->status = ROW_OK;
    row->stop = STOP_FIXED;   // torch_baseline.py times --repeats runs
    if (dev) snprintf(row->device, sizeof row->device, "%s", dev);
    row->repeats = cJSON_GetArraySize(ms) < BENCH_MAX_REPEATS ? cJSON_GetArraySize(ms) : BENCH_MAX_REPEATS;
    for (int i = 0; i < row->repeats; i++) row->ms[i] = cJSON_GetArrayItem(ms, i)->valuedouble;
    row->steps_ran = cJSON_GetArraySize(ls);
    row->losses = xmalloc((size_t)(row->steps_ran ? row->steps_ran : 1) * sizeof(double));
    for (int i = 0; i < row->steps_ran; i++) {
        const cJSON *x = cJSON_GetArrayItem(ls, i);
        row->losses[i] = cJSON_IsNumber(x) ? x->valuedouble : NAN;
    }
    row->warmup = (int)json_num(r, "warmup");
    row->timed_steps = (int)json_num(r, "timed_steps");
    row->peak_device_bytes = json_num(r, "peak_device_bytes");
    row->peak_host_bytes = json_num(r, "peak_host_bytes");
    bench_row_stats(row);
}

// The whole text of a file (NUL-terminated), or NULL.
static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = xmalloc((size_t)(sz > 0 ? sz : 0) + 1);
    size_t n = fread(text, 1, (size_t)(sz > 0 ? sz : 0), f);
    text[n] = '\0';
    fclose(f);
    return text;
}

// Empty rows of the baseline, named in the table's order; how many.
static int torch_rows_init(BenchRow rows[BENCH_TORCH_ROWS], Precision p) {
    const int compile = strcmp(g_compile_mode, "off") != 0;
    const char *names[BENCH_TORCH_ROWS] = {"torch-graph", compile ? "torch-compile" : "torch-eager", "torch-eager"};
    const int n = compile ? 3 : 2;
    for (int k = 0; k < n; k++) {
        memset(&rows[k], 0, sizeof rows[k]);
        snprintf(rows[k].engine, sizeof rows[k].engine, "%s", names[k]);
        rows[k].prec = p;
        rows[k].peak_host_bytes = rows[k].peak_device_bytes = rows[k].compile_s = NAN;
        if (!strcmp(names[k], "torch-compile"))
            snprintf(rows[k].compile_mode, sizeof rows[k].compile_mode, "%s", g_compile_mode);
        bench_row_stats(&rows[k]);
    }
    return n;
}

int bench_run_torch(const Options *o, BenchSize *z, Precision p, const char *workdir,
                    BenchRow rows[BENCH_TORCH_ROWS]) {
    const int nr = torch_rows_init(rows, p);
    char script[4200], err[512];
    if (find_script(script, sizeof script, err, sizeof err)) {
        torch_skip(rows, nr, ROW_UNAVAILABLE, err);
        return nr;
    }
    char in[4300], out[4300];
    snprintf(in, sizeof in, "%s/%s-%s.safetensors", workdir, z->name, precision_name(p));
    snprintf(out, sizeof out, "%s/%s-%s.json", workdir, z->name, precision_name(p));
    bench_size_batches(z);   // PyTorch trains on the same batches
    if (export_size(z, p, in, err, sizeof err)) {
        torch_skip(rows, nr, ROW_FAILED, err);
        return nr;
    }
    char reps[16], warm[16];
    snprintf(reps, sizeof reps, "%d", o->b.repeats);
    snprintf(warm, sizeof warm, "%d", o->b.warmup);
    const char *python = o->b.python ? o->b.python : "python3";
    const char *argv[] = {python, script, "--work", in, "--out", out, "--repeats", reps, "--warmup", warm,
                          "--compile-mode", g_compile_mode, NULL};
    Child c = spawn(exec_body, (void *)argv, 1);
    Buf so = {0}, se = {0};
    int status;
    // torch.compile compiles each size and precision afresh (max-autotune
    // also benchmarks its kernel choices): it gets time of its own
    const double limit = !strcmp(g_compile_mode, "off") ? 900 : !strcmp(g_compile_mode, "default") ? 1800 : 3600;
    const int timed_out = reap(c, limit, &so, &se, &status);
    free(so.buf);
    char line[400];
    last_line(se.buf, line, sizeof line);
    free(se.buf);
    if (timed_out) {
        snprintf(err, sizeof err, "the torch baseline gave no result within %.0f s", limit);
        torch_skip(rows, nr, ROW_FAILED, err);
        return nr;
    }
    if (!WIFEXITED(status) || (WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 3)) {
        char how[64], why[1024];
        describe_exit(status, how, sizeof how);
        snprintf(why, sizeof why, "%.40s %.100s failed (%s)%s%.300s", python, script, how, line[0] ? ": " : "", line);
        torch_skip(rows, nr, WIFEXITED(status) && WEXITSTATUS(status) == 127 ? ROW_UNAVAILABLE : ROW_FAILED, why);
        return nr;
    }
    char *text = read_text(out);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!j) {
        torch_skip(rows, nr, ROW_FAILED, "the torch baseline wrote no readable result");
        return nr;
    }
    const char *st = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "status"));
    const char *why = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "why"));
    const char *dev = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "device"));
    if (!st || strcmp(st, "ok")) {
        torch_skip(rows, nr, st && !strcmp(st, "skipped") ? ROW_UNAVAILABLE : ROW_FAILED,
                   why ? why : "the torch baseline reported a failure");
    } else {
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "rows");
        for (int k = 0; k < nr; k++) torch_row_read(&rows[k], result_row(rs, rows[k].engine), z, dev);
    }
    cJSON_Delete(j);
    return nr;
}
