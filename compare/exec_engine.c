// Process engines: compare starts `/bin/sh -c "exec CMD"` and speaks the
// protocol of docs/outside_engines.md over the child's stdin and stdout. A
// message is one line of JSON; when it has "bytes": N, N bytes of a
// safetensors buffer follow (the arrays, little-endian). Every reply is read
// against a deadline; a child that dies, hangs or sends what was not asked for
// stops the run with a message naming what was expected, and is killed and
// reaped (at exit too, through an atexit handler). The child leads its own
// process group (setpgid): what it starts (a wrapper's engine, the engine's
// own workers) is ended with it, as a group (common/interrupt.h), when it is
// closed, when it fails, and when compare exits or is interrupted; on Linux
// it also gets SIGTERM when compare itself is killed (PR_SET_PDEATHSIG).
#include "plugin_engine.h"
#include "exec_reply.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/activations.h"
#include "common/interrupt.h"
#include "common/safetensors.h"
#include "common/util.h"
#include "traces/trace.h"

#define EXEC_PROTOCOL 1
#define MAX_LINE (1 << 20)   // a reply header longer than this is not one
// The sample request of --sampler own, as messages name it, and what a
// failed reply to it is told (an engine written before "own" fails on the
// missing uniforms).
#define OWN_SAMPLE "sample own"
#define OWN_SAMPLE_HINT " (--sampler own: the request {\"op\":\"sample\",\"own\":true} carries no uniforms; the " \
                        "engine draws with its own random generator: docs/outside_engines.md)"
static double g_timeout = 60;

void exec_engine_set_timeout(double seconds) { g_timeout = seconds; }

typedef struct {
    Engine base;
    EngineOps ops;
    char *label;             // "exec:CMD"
    pid_t pid;
    int to, from;            // the child's stdin, stdout
    char *rbuf;              // bytes read but not yet consumed
    size_t rlen, rcap;
    int in_create;           // failures are usage errors (2) until create succeeds
    char name[64], device[128];
    int B, T;                // the last step's batch
    unsigned char *payload;  // the last reply's payload and its decoding
    StFile st;
    // "activations": true in the create reply: the ops' outputs and gradients
    // of the last step (common/activations.h), fetched at the first ask
    int acts_fetched, n_ops;
    double **act[2];         // [0] acts/<op>, [1] dacts/<op>: [n_ops] each, sized for max_batch
    signed char *have[2];
} Proc;

static Proc *X(Engine *e) { return (Proc *)e; }

// ---- children: always reaped, with their process groups ----

// At exit (die() included) every engine still open is ended with its group.
static void end_all_at_exit(void) { proc_groups_end_all(INTERRUPT_GRACE_S); }

static void child_add(pid_t pid) {
    static int registered;
    if (!registered) atexit(end_all_at_exit), registered = 1;
    proc_group_add(pid);
}

// compare adopts the processes its engines leave behind (Linux: a child
// subreaper): ended, they are reaped with their group rather than left as
// zombies where init does not reap (a container), and their group is seen
// to be empty.
static void adopt_orphans(void) {
    static int done;
    if (!done) prctl(PR_SET_CHILD_SUBREAPER, 1), done = 1;
}

// Kill the child and every process of its group now (SIGKILL), and reap it.
static void child_kill(Proc *p) {
    if (p->pid <= 0) return;
    proc_group_end(p->pid, 0, NULL);
    p->pid = 0;
}

// How the child ended, e.g. "exited with status 3"; waits at most a moment
// for it (it closed its stdout), then kills it. What is left of its process
// group is ended too (SIGTERM, then SIGKILL).
static void child_end(Proc *p, char *out, size_t n) {
    int st = 0;
    pid_t r = 0;
    for (int i = 0; i < 200 && (r = waitpid(p->pid, &st, WNOHANG)) == 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (r == 0) {
        child_kill(p);
        snprintf(out, n, "closed its stdout but did not exit; killed it and its process group");
        return;
    }
    const int e = errno;
    proc_group_end(p->pid, INTERRUPT_GRACE_S, NULL);   // the leader is reaped: the rest of its group
    if (r < 0) {
        snprintf(out, n, "ended (its status is lost: %s)", strerror(e));
    } else if (WIFEXITED(st)) {
        snprintf(out, n, "exited with status %d%s", WEXITSTATUS(st),
                 WEXITSTATUS(st) == 127 ? " (127: the shell did not find the command)" : "");
    } else if (WIFSIGNALED(st)) {
        snprintf(out, n, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    } else {
        snprintf(out, n, "ended with wait status %d", st);
    }
    p->pid = 0;
}

// Stop the run: during create a usage error (the engine cannot run), later a
// run failure.
static void fail(Proc *p, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void fail(Proc *p, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    child_kill(p);
    die(p->in_create ? EXIT_USAGE : EXIT_MISMATCH, "engine %s: %s", p->label, msg);
}

// A SIGINT, SIGTERM or SIGHUP noted while compare waits for the engine (a
// run with a trace: common/interrupt.h) stops the run at once rather than
// at the engine's reply or timeout: the engine's process group is ended, the
// trace written marked interrupted (die's hook), and compare ends by the
// signal (128 + N).
// doing: "waiting for the reply to 'step' from", "sending the 'step' request to".
static void check_interrupt(Proc *p, const char *doing) {
    const int sig = interrupt_pending();
    if (!sig) return;
    if (p->pid > 0) {
        proc_group_end(p->pid, INTERRUPT_GRACE_S, NULL);
        p->pid = 0;
    }
    interrupt_exit_at_exit(sig);
    die(128 + sig, "interrupted by %s while %s engine %s; ended its process group (SIGTERM, then SIGKILL after "
        "%g s)", interrupt_signal_name(sig), doing, p->label, INTERRUPT_GRACE_S);
}

// ---- the wire ----

// Write all of buf before the deadline (the pipe is non-blocking: a process
// that stops reading its stdin cannot block compare).
static void send_all(Proc *p, const char *op, const void *buf, size_t n, double deadline) {
    const unsigned char *b = buf;
    char doing[96];
    snprintf(doing, sizeof doing, "sending the '%s' request to", op);
    while (n) {
        check_interrupt(p, doing);
        ssize_t k = write(p->to, b, n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EAGAIN) {
            double left = deadline - now_seconds();
            if (left <= 0)
                fail(p, "the process read no more of the '%s' request within %g s (--exec-timeout); killed it and "
                     "its process group", op, g_timeout);
            struct pollfd pf = {.fd = p->to, .events = POLLOUT};
            if (poll(&pf, 1, (int)fmin(left * 1000 + 1, 1e9)) < 0 && errno != EINTR) fail(p, "poll: %s", strerror(errno));
            continue;
        }
        if (k <= 0) {
            char how[160];
            child_end(p, how, sizeof how);
            fail(p, "could not send the '%s' request (%s): the process %s", op, k < 0 ? strerror(errno) : "short write",
                 how);
        }
        b += k;
        n -= (size_t)k;
    }
}

// Send a request: its JSON line, then the payload (may be NULL).
static void send_request(Proc *p, cJSON *req, const char *op, const unsigned char *payload, size_t plen) {
    cJSON_AddStringToObject(req, "op", op);
    if (payload) cJSON_AddNumberToObject(req, "bytes", (double)plen);
    char *line = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (!line) die(EXIT_MISMATCH, "engine %s: out of memory", p->label);
    const double deadline = now_seconds() + g_timeout;
    send_all(p, op, line, strlen(line), deadline);
    send_all(p, op, "\n", 1, deadline);
    free(line);
    if (payload) send_all(p, op, payload, plen, deadline);
}

// Read more bytes into rbuf before the deadline.
static void fill(Proc *p, double deadline, const char *op, const char *what) {
    if (p->rlen == p->rcap) p->rbuf = xrealloc(p->rbuf, p->rcap = p->rcap ? 2 * p->rcap : 65536);
    char doing[128];
    snprintf(doing, sizeof doing, "waiting for the %s to '%s' from", what, op);
    for (;;) {
        check_interrupt(p, doing);
        double left = deadline - now_seconds();
        if (left <= 0) {
            child_kill(p);
            fail(p, "no %s to '%s' within %g s (--exec-timeout); killed the process and its process group", what, op,
                 g_timeout);
        }
        struct pollfd pf = {.fd = p->from, .events = POLLIN};
        int r = poll(&pf, 1, (int)fmin(left * 1000 + 1, 1e9));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) fail(p, "poll: %s", strerror(errno));
        if (r == 0) continue;
        ssize_t k = read(p->from, p->rbuf + p->rlen, p->rcap - p->rlen);
        if (k < 0 && errno == EINTR) continue;
        if (k > 0) {
            p->rlen += (size_t)k;
            return;
        }
        char how[160];
        child_end(p, how, sizeof how);
        fail(p, "the process %s while compare waited for the %s to '%s'%s (its stderr is above)", how, what, op,
             p->rlen ? " (what it sent was cut short)" : "");
    }
}

static void consume(Proc *p, size_t n) {
    memmove(p->rbuf, p->rbuf + n, p->rlen - n);
    p->rlen -= n;
}

// What a request's reply may hold: at most n_tensors tensors of n_values
// numbers in all (0 tensors: no data). The announced "bytes" is held to what
// that takes at 8 bytes a number (F64, the widest dtype) with a generous
// header (its JSON, metadata included), before anything is allocated for it.
typedef struct {
    int n_tensors;
    size_t n_values;
} Expect;

#define NO_DATA ((Expect){0, 0})
#define HEADER_ROOM 65536      // the safetensors header: 64 KiB, plus
#define HEADER_PER_TENSOR 1024 // this much for each tensor's entry

static double expect_bytes(Expect x) {
    return 8.0 + HEADER_ROOM + (double)HEADER_PER_TENSOR * x.n_tensors + 8.0 * (double)x.n_values;
}

// Read a reply: its JSON header (checked: an object with "ok" true, or the
// child's "error"), and the payload it announces (x: what the request
// implies), decoded into p->st.
static cJSON *read_reply(Proc *p, const char *op, Expect x) {
    const int want_payload = x.n_tensors > 0;
    const double deadline = now_seconds() + g_timeout;
    char *nl;
    size_t scanned = 0;
    // (rbuf is NULL before the first read: no pointer arithmetic on it then)
    while (!(nl = p->rlen > scanned ? memchr(p->rbuf + scanned, '\n', p->rlen - scanned) : NULL)) {
        scanned = p->rlen;
        if (p->rlen > MAX_LINE) fail(p, "the reply to '%s' has no newline in its first %d bytes: expected one line of "
                                     "JSON", op, MAX_LINE);
        fill(p, deadline, op, "reply");
    }
    size_t ll = (size_t)(nl - p->rbuf), n = 0;
    char err[1024];   // the checks themselves: compare/exec_reply.c
    cJSON *h = exec_reply_header(p->rbuf, ll, op, want_payload, !strcmp(op, OWN_SAMPLE) ? OWN_SAMPLE_HINT : "", &n,
                                 err, sizeof err);
    if (!h) fail(p, "%s", err);
    consume(p, ll + 1);
    free(p->payload);
    p->payload = NULL;
    st_file_free(&p->st);
    if (!want_payload) return h;
    if ((double)n > expect_bytes(x))   // before anything is allocated for it
        fail(p, "the reply to '%s' announces %g bytes of data; what was asked for (%d tensor%s, %zu numbers) takes at "
             "most %.0f bytes", op, (double)n, x.n_tensors, x.n_tensors == 1 ? "" : "s", x.n_values, expect_bytes(x));
    while (p->rlen < n) {
        if (p->rcap < n) p->rbuf = xrealloc(p->rbuf, p->rcap = n);
        fill(p, deadline, op, "data");
    }
    p->payload = xmalloc(n);
    memcpy(p->payload, p->rbuf, n);
    consume(p, n);
    if (exec_reply_payload(p->payload, n, op, &p->st, err, sizeof err)) fail(p, "%s", err);
    return h;
}

// ---- arrays by canonical name ----

// Read tensor prefix/name of the reply into out: F64 or F32 of exactly the
// expected shape, or the run stops naming what was expected.
static void take(Proc *p, const char *op, const char *tname, int ndim, const size_t *shape, double *out) {
    const StTensor *t = st_find(&p->st, tname);
    char want[96] = "F64 [";
    for (int d = 0; d < ndim; d++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%zu", d ? "," : "", shape[d]);
    strcat(want, "]");
    if (!t) {
        char have[400] = "";
        for (int i = 0; i < p->st.n && strlen(have) < 300; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%s", i ? ", " : "",
                     text_safe(p->st.t[i].name));
        fail(p, "the reply to '%s' lacks the tensor '%s' (expected %s); it has: %s", op, tname, want,
             have[0] ? have : "nothing");
    }
    int same = t->ndim == ndim && t->dtype != ST_I32;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char got[96];
        st_describe(t, got, sizeof got);
        fail(p, "the reply to '%s': tensor '%s' is %s, expected %s (F32 is also read)", op, text_safe(tname), got, want);
    }
    st_read_f64(t, out);
}

// Every tensor of the canonical layout under prefix ("grads" -> "grads/wte").
static void take_all(Proc *p, const char *op, const char *prefix, double *out) {
    const ParamLayout *L = p->base.cfg.L;
    for (int k = 0; k < L->n_tensors; k++) {
        char tname[128];
        snprintf(tname, sizeof tname, "%s/%s", prefix, L->t[k].name);
        size_t shape[2] = {(size_t)L->t[k].rows, (size_t)L->t[k].cols};
        take(p, op, tname, 2, shape, out + L->t[k].offset);
    }
}

static void refuse_extra(Proc *p, const char *op, int expected) {
    if (p->st.n > expected)
        fail(p, "the reply to '%s' has %d tensors, %d were asked for (a misspelt name?)", op, p->st.n, expected);
}

// The StTensors of a flat parameter-sized array, named prefix/name.
static int add_all(const ParamLayout *L, const char *prefix, const double *x, StTensor *t, char (*names)[128]) {
    for (int k = 0; k < L->n_tensors; k++) {
        snprintf(names[k], 128, "%s/%s", prefix, L->t[k].name);
        t[k] = (StTensor){.name = names[k], .dtype = ST_F64, .ndim = 2,
                          .shape = {(size_t)L->t[k].rows, (size_t)L->t[k].cols}, .data = x + L->t[k].offset};
    }
    return L->n_tensors;
}

static unsigned char *encode(Proc *p, const StTensor *t, int n, size_t *len) {
    char err[256];
    unsigned char *b = safetensors_encode(t, n, NULL, 0, len, err, sizeof err);
    if (!b) fail(p, "%s", err);
    return b;
}

// ---- the ops ----

// Ask for a quantity: want_tensors tensors at most, n_values numbers in all.
static void get_quantity(Proc *p, const char *what, int want_tensors, size_t n_values) {
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "what", what);
    char op[48];
    snprintf(op, sizeof op, "get %s", what);
    send_request(p, req, "get", NULL, 0);
    cJSON_Delete(read_reply(p, op, (Expect){want_tensors, n_values}));
    if (strcmp(what, "activations")) refuse_extra(p, op, want_tensors);   // those: each name is checked
}

static double x_step(Engine *e, const Batch *b, int step) {
    Proc *p = X(e);
    StTensor t[2] = {{.name = "tokens", .dtype = ST_I32, .ndim = 2, .shape = {(size_t)b->B, (size_t)b->T + 1},
                      .data = b->tokens},
                     {.name = "n", .dtype = ST_I32, .ndim = 1, .shape = {(size_t)b->B}, .data = b->n}};
    size_t len;
    unsigned char *buf = encode(p, t, 2, &len);
    cJSON *req = cJSON_CreateObject();
    cJSON_AddNumberToObject(req, "step", step);
    send_request(p, req, "step", buf, len);
    free(buf);
    cJSON *h = read_reply(p, "step", NO_DATA);
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(h, "loss");
    double loss;
    if (cJSON_IsNumber(l)) loss = l->valuedouble;
    else if (cJSON_IsString(l) && !strcasecmp(l->valuestring, "nan")) loss = NAN;
    else if (cJSON_IsString(l) && !strcasecmp(l->valuestring, "inf")) loss = INFINITY;
    else if (cJSON_IsString(l) && !strcasecmp(l->valuestring, "-inf")) loss = -INFINITY;
    else fail(p, "the reply to 'step' needs \"loss\": a number (or \"nan\", \"inf\", \"-inf\")");
    cJSON_Delete(h);
    p->B = b->B, p->T = b->T;
    p->acts_fetched = 0;
    return loss;
}

static void x_logits(Engine *e, double *out) {
    Proc *p = X(e);
    size_t shape[3] = {(size_t)p->B, (size_t)p->T, (size_t)e->cfg.L->shape.vocab_size};
    get_quantity(p, "logits", 1, shape[0] * shape[1] * shape[2]);
    take(p, "get logits", "logits", 3, shape, out);
}

static void x_grads(Engine *e, double *out) {
    get_quantity(X(e), "grads", e->cfg.L->n_tensors, e->cfg.L->n_params);
    take_all(X(e), "get grads", "grads", out);
}

static void x_params(Engine *e, double *out) {
    get_quantity(X(e), "params", e->cfg.L->n_tensors, e->cfg.L->n_params);
    take_all(X(e), "get params", "params", out);
}

static void x_moments(Engine *e, double *m, double *v) {
    get_quantity(X(e), "moments", 2 * e->cfg.L->n_tensors, 2 * e->cfg.L->n_params);
    take_all(X(e), "get moments", "adam_m", m);
    take_all(X(e), "get moments", "adam_v", v);
}

static void x_set_state(Engine *e, const double *params, const double *m, const double *v) {
    Proc *p = X(e);
    const ParamLayout *L = e->cfg.L;
    // a request for what the engine does not take is never sent
    if (e->ops->params_only && (m || v))
        fail(p, "compare was about to send Adam moments in 'set_state' to an engine whose create reply says "
             "\"offers\": {\"set_moments\": false}; this caller cannot run such an engine");
    int nt = L->n_tensors * (m && v ? 3 : 1);
    StTensor *t = xcalloc((size_t)nt, sizeof *t);
    char (*names)[128] = xcalloc((size_t)nt, sizeof *names);
    int k = add_all(L, "params", params, t, names);
    if (m && v) {
        k += add_all(L, "adam_m", m, t + k, names + k);
        k += add_all(L, "adam_v", v, t + k, names + k);
    }
    size_t len;
    unsigned char *buf = encode(p, t, k, &len);
    send_request(p, cJSON_CreateObject(), "set_state", buf, len);
    free(buf);
    free(t);
    free(names);
    cJSON_Delete(read_reply(p, "set_state", NO_DATA));
}

// The reply to a sample request: its tokens (without BOS) to out, each a
// character id; returns how many.
static int take_tokens(Engine *e, const char *op, int *out) {
    Proc *p = X(e);
    const int T = e->cfg.L->shape.block_size;
    cJSON_Delete(read_reply(p, op, (Expect){1, (size_t)T}));
    refuse_extra(p, op, 1);
    const StTensor *tk = st_find(&p->st, "tokens");
    if (!tk || tk->dtype != ST_I32 || tk->ndim != 1 || tk->shape[0] > (size_t)T)
        fail(p, "the reply to '%s' needs the tensor 'tokens': I32 [n] with n <= block_size %d", op, T);
    const int n = (int)tk->shape[0];
    st_read_i32(tk, out);
    char why[128];
    if (engine_check_sample(out, n, e->cfg.L->shape.vocab_size, why, sizeof why))
        fail(p, "the reply to '%s': %s", op, why);
    return n;
}

// The child draws with the uniforms it is sent (one per position, as
// random.choices does); compare's stream then skips the ones it used.
static int x_sample(Engine *e, PyRandom *r, double temperature, int *out) {
    Proc *p = X(e);
    const int T = e->cfg.L->shape.block_size;
    double *u = xmalloc((size_t)T * sizeof *u);
    PyRandom ahead = *r;
    for (int i = 0; i < T; i++) u[i] = pyrandom_random(&ahead);
    StTensor t = {.name = "uniforms", .dtype = ST_F64, .ndim = 1, .shape = {(size_t)T}, .data = u};
    size_t len;
    unsigned char *buf = encode(p, &t, 1, &len);
    cJSON *req = cJSON_CreateObject();
    trace_add_number(req, "temperature", temperature);
    send_request(p, req, "sample", buf, len);
    free(buf);
    free(u);
    const int n = take_tokens(e, "sample", out);
    for (int i = 0; i < (n < T ? n + 1 : T); i++) pyrandom_random(r);
    return n;
}

// --sampler own: the request says "own" and carries no uniforms; the child
// draws with its own generator.
static int x_sample_own(Engine *e, double temperature, int *out) {
    cJSON *req = cJSON_CreateObject();
    trace_add_number(req, "temperature", temperature);
    cJSON_AddBoolToObject(req, "own", 1);
    send_request(X(e), req, "sample", NULL, 0);
    return take_tokens(e, OWN_SAMPLE, out);
}

static const char *x_device(Engine *e) { return X(e)->device; }

// Optional (the create reply says "activations": true): every op's output
// acts/<op> and gradient dacts/<op> it reports, fetched in one request after
// a step; a name outside the table or a wrong shape stops the run.
static void fetch_activations(Proc *p) {
    const ModelShape *m = &p->base.cfg.L->shape;
    size_t n_values = 0;   // every op's output and gradient
    for (int i = 0; i < p->n_ops; i++) {
        ActOp o;
        act_op(m, i, &o);
        n_values += 2 * act_size(&o, p->B, p->T);
    }
    get_quantity(p, "activations", 2 * p->n_ops, n_values);
    for (int k = 0; k < 2; k++) memset(p->have[k], 0, (size_t)p->n_ops);
    for (int i = 0; i < p->st.n; i++) {
        const StTensor *t = &p->st.t[i];
        const int grad = !strncmp(t->name, "dacts/", 6);
        if (!grad && strncmp(t->name, "acts/", 5))
            fail(p, "the reply to 'get activations' has '%s': names are acts/<op> and dacts/<op> "
                 "(common/activations.h)", text_safe(t->name));
        const int op = act_find(m, t->name + (grad ? 6 : 5));
        if (op < 0)
            fail(p, "the reply to 'get activations' has '%s': no such op in this model (embed, embed_norm, "
                 "layer0.norm1, layer0.q, ..., logits: docs/outside_engines.md)", text_safe(t->name));
        ActOp o;
        act_op(m, op, &o);
        size_t shape[4] = {(size_t)p->B, (size_t)p->T, (size_t)o.width, 0};
        if (o.square) shape[1] = (size_t)o.width, shape[2] = shape[3] = (size_t)p->T;
        take(p, "get activations", t->name, o.square ? 4 : 3, shape, p->act[grad][op]);
        p->have[grad][op] = 1;
    }
    p->acts_fetched = 1;
}

static int x_activation(Engine *e, int op, int grad, double *out) {
    Proc *p = X(e);
    if (op < 0 || op >= p->n_ops) return -1;
    if (!p->acts_fetched) fetch_activations(p);
    if (!p->have[grad][op]) return -1;
    ActOp o;
    act_op(&e->cfg.L->shape, op, &o);
    memcpy(out, p->act[grad][op], act_size(&o, p->B, p->T) * sizeof(double));
    return 0;
}

// Optional (the create reply says "relu_inputs": true): (L,B,T,4C) of the last step.
static void x_relu(Engine *e, double *out) {
    Proc *p = X(e);
    const ModelShape *m = &e->cfg.L->shape;
    size_t shape[4] = {(size_t)m->n_layer, (size_t)p->B, (size_t)p->T, 4 * (size_t)m->n_embd};
    get_quantity(p, "relu_inputs", 1, shape[0] * shape[1] * shape[2] * shape[3]);
    take(p, "get relu_inputs", "relu_inputs", 4, shape, out);
}

static void x_destroy(Engine *e) {
    Proc *p = X(e);
    if (p->pid > 0) {
        // ask it to quit, then make sure it is gone
        if (write(p->to, "{\"op\":\"quit\"}\n", 14) < 0) {}
        close(p->to);
        char how[160];
        child_end(p, how, sizeof how);
    } else {
        close(p->to);
    }
    close(p->from);
    for (int k = 0; k < 2; k++) {
        for (int i = 0; p->act[k] && i < p->n_ops; i++) free(p->act[k][i]);
        free(p->act[k]);
        free(p->have[k]);
    }
    free(p->payload);
    st_file_free(&p->st);
    free(p->rbuf);
    free(p->label);
    free(p);
}

static void add_config(cJSON *c, const EngineConfig *cfg) {
    const ModelShape *m = &cfg->L->shape;
    const Settings *s = cfg->s;
    cJSON_AddNumberToObject(c, "vocab_size", m->vocab_size);
    cJSON_AddNumberToObject(c, "n_embd", m->n_embd);
    cJSON_AddNumberToObject(c, "n_head", m->n_head);
    cJSON_AddNumberToObject(c, "n_kv_head", m->n_kv_head);
    cJSON_AddNumberToObject(c, "head_dim", m->head_dim);
    cJSON_AddNumberToObject(c, "n_layer", m->n_layer);
    cJSON_AddNumberToObject(c, "block_size", m->block_size);
    cJSON_AddNumberToObject(c, "bos", m->vocab_size - 1);
    cJSON_AddNumberToObject(c, "steps", s->steps);
    trace_add_number(c, "lr", s->lr);
    trace_add_number(c, "beta1", s->beta1);
    trace_add_number(c, "beta2", s->beta2);
    trace_add_number(c, "eps", s->eps);
    cJSON_AddStringToObject(c, "precision", precision_name(cfg->precision));
    cJSON_AddNumberToObject(c, "max_batch", cfg->max_batch);
    cJSON_AddStringToObject(c, "loss", loss_name(cfg->s->token_mean));
    cJSON_AddStringToObject(c, "fault", fault_name(cfg->fault));
    cJSON_AddBoolToObject(c, "activations", cfg->activations);
    cJSON *ts = cJSON_AddArrayToObject(c, "tensors");
    for (int k = 0; k < cfg->L->n_tensors; k++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "name", cfg->L->t[k].name);
        cJSON *sh = cJSON_AddArrayToObject(t, "shape");
        cJSON_AddItemToArray(sh, cJSON_CreateNumber(cfg->L->t[k].rows));
        cJSON_AddItemToArray(sh, cJSON_CreateNumber(cfg->L->t[k].cols));
        cJSON_AddItemToArray(ts, t);
    }
}

// The create reply's "offers" (optional; each key true when absent): what
// a partial engine offers of "logits" (get logits), "moments" (get moments)
// and "set_moments" (set_state with adam_m/adam_v); docs/outside_engines.md,
// "Partial engines". An unknown key or a value that is not a boolean is
// refused (a misspelt key would otherwise be ignored).
static void read_offers(Proc *p, const cJSON *h, int *logits, int *moments, int *set_moments) {
    static const char *const keys[3] = {"logits", "moments", "set_moments"};
    int *vals[3] = {logits, moments, set_moments};
    for (int k = 0; k < 3; k++) *vals[k] = 1;
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(h, "offers");
    if (!of) return;
    if (!cJSON_IsObject(of))
        fail(p, "the reply to 'create': \"offers\" must be an object such as {\"logits\": false, \"moments\": "
             "false, \"set_moments\": false} (docs/outside_engines.md, \"Partial engines\")");
    const cJSON *x;
    cJSON_ArrayForEach(x, of) {
        int k = 0;
        while (k < 3 && strcmp(x->string, keys[k])) k++;
        if (k == 3)
            fail(p, "the reply to 'create': \"offers\" has '%s'; its keys are logits, moments and set_moments",
                 text_safe(x->string));
        if (!cJSON_IsBool(x))
            fail(p, "the reply to 'create': \"offers\": \"%s\" must be true or false", text_safe(x->string));
        *vals[k] = cJSON_IsTrue(x);
    }
}

static void copy_string(const cJSON *h, const char *key, char *out, size_t n, const char *dflt) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(h, key);
    snprintf(out, n, "%s", cJSON_IsString(x) ? text_safe(x->valuestring) : dflt);   // shown in messages
}

Engine *exec_engine_create(const char *cmd, const EngineConfig *cfg, const double *init, char *err,
                           size_t errlen) {
    if (engine_config_check(cfg, init, "exec", err, errlen)) return NULL;
    interrupt_catch_sigpipe();   // a dead child is seen as EPIPE, and reported
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return NULL;
    }
    adopt_orphans();
    fflush(stdout);
    fflush(stderr);
    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        return NULL;
    }
    if (pid == 0) {
        // its own process group, ended as a whole; SIGTERM when compare dies,
        // even by SIGKILL (Linux); signals as a shell would start it with
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(126);   // compare is gone already
        interrupt_child_reset();
        dup2(in[0], 0);
        dup2(out[1], 1);
        size_t n = strlen(cmd) + 8;
        char *line = malloc(n);
        if (!line) _exit(126);
        snprintf(line, n, "exec %s", cmd);
        execl("/bin/sh", "sh", "-c", line, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);   // as the child does: whichever runs first (EACCES once it has exec'd)
    close(in[0]);
    close(out[1]);
    child_add(pid);
    Proc *p = xcalloc(1, sizeof *p);
    p->pid = pid;
    p->to = in[1];
    p->from = out[0];
    fcntl(p->to, F_SETFL, fcntl(p->to, F_GETFL) | O_NONBLOCK);
    p->in_create = 1;
    size_t ll = strlen(cmd) + 8;
    p->label = xmalloc(ll);
    snprintf(p->label, ll, "exec:%s", cmd);
    p->base.cfg = *cfg;
    p->base.ops = &p->ops;
    // create: the configuration, and the initial parameters as params/<name>
    const ParamLayout *L = cfg->L;
    StTensor *t = xcalloc((size_t)L->n_tensors, sizeof *t);
    char (*names)[128] = xcalloc((size_t)L->n_tensors, sizeof *names);
    add_all(L, "params", init, t, names);
    size_t len;
    unsigned char *buf = encode(p, t, L->n_tensors, &len);
    free(t);
    free(names);
    cJSON *req = cJSON_CreateObject();
    cJSON_AddNumberToObject(req, "protocol", EXEC_PROTOCOL);
    add_config(cJSON_AddObjectToObject(req, "config"), cfg);
    send_request(p, req, "create", buf, len);
    free(buf);
    cJSON *h = read_reply(p, "create", NO_DATA);
    const cJSON *pv = cJSON_GetObjectItemCaseSensitive(h, "protocol");
    if (pv && !(cJSON_IsNumber(pv) && pv->valuedouble == EXEC_PROTOCOL))
        fail(p, "the process speaks protocol %g; compare speaks %d (docs/outside_engines.md)",
             cJSON_IsNumber(pv) ? pv->valuedouble : -1.0, EXEC_PROTOCOL);
    copy_string(h, "name", p->name, sizeof p->name, "exec");
    copy_string(h, "device", p->device, sizeof p->device, "");
    const int relu = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(h, "relu_inputs"));
    const int acts = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(h, "activations"));
    int logits, moments, set_moments;
    read_offers(p, h, &logits, &moments, &set_moments);
    cJSON_Delete(h);
    if (acts) {
        p->n_ops = act_count(&L->shape);
        for (int k = 0; k < 2; k++) {
            p->act[k] = xcalloc((size_t)p->n_ops, sizeof *p->act[k]);
            p->have[k] = xcalloc((size_t)p->n_ops, 1);
            for (int i = 0; i < p->n_ops; i++) {   // room for the largest batch
                ActOp o;
                act_op(&L->shape, i, &o);
                p->act[k][i] = xmalloc(act_size(&o, cfg->max_batch, L->shape.block_size) * sizeof(double));
            }
        }
    }
    p->in_create = 0;
    // what it does not offer is never asked for: those entries stay NULL
    p->ops = (EngineOps){.name = p->name, .destroy = x_destroy, .step = x_step,
                         .get_logits = logits ? x_logits : NULL, .get_grads = x_grads, .get_params = x_params,
                         .get_moments = moments ? x_moments : NULL, .set_state = x_set_state, .sample = x_sample,
                         .device = p->device[0] ? x_device : NULL, .get_relu_inputs = relu ? x_relu : NULL,
                         .get_activation = acts ? x_activation : NULL, .sample_own = x_sample_own,
                         .params_only = !set_moments};
    return &p->base;
}
