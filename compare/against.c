// --against TRACE: check what another program recorded. The trace is a
// microgpt-trace of kind "train" (docs/traces.md; the schema is
// docs/schemas/against_trace.schema.json): per-step losses, and per step
// optionally "tensors": a safetensors file (relative to the trace) holding
// "logits" (B,T,V), "grads/<tensor>" and "params/<tensor>" (after the update).
// The reference engine trains from the same initial weights on the same
// batches (compare --export-init writes them); each recorded loss must be
// within the loss-drift tolerance of the reference's, each recorded tensor
// within the lockstep tolerance of its quantity.
#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare.h"
#include "against_check.h"
#include "engines.h"
#include "grad_check.h"
#include "common/atomic_file.h"
#include "common/safetensors.h"
#include "common/util.h"
#include "traces/trace_read.h"

// The settings that change the numbers: the trace's "settings" key, the
// flag that gives it, where it lives. A required one must come from the
// trace or the flag; the others have a default a trace may rely on.
typedef enum { S_INT, S_REAL, S_SEED, S_LOSS } SettingKind;
static const struct {
    const char *key, *flag;
    SettingKind kind;
    size_t off;
    int required;
} SETTINGS[] = {
    {"seed", "--seed", S_SEED, offsetof(Settings, seed), 1},
    {"steps", "--steps", S_INT, offsetof(Settings, steps), 1},
    {"batch", "--batch", S_INT, offsetof(Settings, batch), 1},
    {"loss", "--loss", S_LOSS, offsetof(Settings, token_mean), 0},        // absent: doc-mean (docs/traces.md)
    {"n_embd", "--n-embd", S_INT, offsetof(Settings, n_embd), 1},
    {"n_head", "--n-head", S_INT, offsetof(Settings, n_head), 1},
    {"n_kv_head", "--n-kv-head", S_INT, offsetof(Settings, n_kv_head), 0}, // absent: n_head
    {"n_layer", "--n-layer", S_INT, offsetof(Settings, n_layer), 1},
    {"block_size", "--block-size", S_INT, offsetof(Settings, block_size), 1},
    {"lr", "--lr", S_REAL, offsetof(Settings, lr), 1},
    {"init_std", "--init-std", S_REAL, offsetof(Settings, init_std), 1},
    {"beta1", NULL, S_REAL, offsetof(Settings, beta1), 0},                // no flags: the original's
    {"beta2", NULL, S_REAL, offsetof(Settings, beta2), 0},
    {"eps", NULL, S_REAL, offsetof(Settings, eps), 0},
};
#define N_SETTINGS (sizeof SETTINGS / sizeof *SETTINGS)

// A setting's value as text (messages): the shortest exact form of a number.
static void setting_text(const Settings *s, int k, char out[64]) {
    const void *p = (const char *)s + SETTINGS[k].off;
    char num[32];
    switch (SETTINGS[k].kind) {
    case S_INT: snprintf(out, 64, "%d", *(const int *)p); break;
    case S_REAL: trace_format_number(*(const double *)p, num), snprintf(out, 64, "%s", num); break;
    case S_SEED: snprintf(out, 64, "%.63s", *(const char *const *)p); break;
    case S_LOSS: snprintf(out, 64, "%s", loss_name(*(const int *)p)); break;
    }
}

// Store the trace's value x of setting k into s; a value of the wrong type
// or out of range is bad data (exit 2).
static void setting_from_json(Settings *s, int k, const cJSON *x, const char *path) {
    void *p = (char *)s + SETTINGS[k].off;
    const char *key = SETTINGS[k].key;
    const int steps = !strcmp(key, "steps");
    const double v = cJSON_IsNumber(x) ? x->valuedouble : NAN;
    static char seed[32];   // a seed recorded as a number
    switch (SETTINGS[k].kind) {
    case S_INT:
        if (!(v >= 1 && v <= (steps ? 1e9 : 1e6) && v == floor(v)))
            die(EXIT_USAGE, "--against: %s: settings.%s is not an integer from 1 to %s", path_short(path), key,
                steps ? "1e9" : "1e6");
        *(int *)p = (int)v;
        break;
    case S_REAL:
        if (!cJSON_IsNumber(x)) die(EXIT_USAGE, "--against: %s: settings.%s is not a number", path_short(path), key);
        *(double *)p = v;
        break;
    case S_SEED: {
        PyRandom probe;
        const char *t = cJSON_IsString(x) ? x->valuestring : NULL;
        if (fabs(v) < 0x1p53 && v == floor(v)) snprintf(seed, sizeof seed, "%.0f", v), t = seed;   // exact
        if (!t || !*t || pyrandom_seed_text(&probe, t))
            die(EXIT_USAGE, "--against: %s: settings.seed is not an integer (write a large one as a string)", path);
        *(const char **)p = t;
        break;
    }
    case S_LOSS:
        if (!cJSON_IsString(x) || (strcmp(x->valuestring, "doc-mean") && strcmp(x->valuestring, "token-mean")))
            die(EXIT_USAGE, "--against: %s: settings.loss is not \"doc-mean\" or \"token-mean\"", path);
        *(int *)p = !strcmp(x->valuestring, "token-mean");
        break;
    }
}

// The trace's settings become this run's where no flag gave them; a flag
// that says otherwise is refused naming both. What neither says, of the
// settings without a default, is refused in one message naming the flags.
static void adopt_settings(Options *o, const TraceData *td) {
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(td->root, "settings");
    if (ts && !cJSON_IsObject(ts))
        die(EXIT_USAGE, "--against: %s: \"settings\" is not an object", path_short(td->path));
    char missing[256] = "", originals[512] = "";
    Settings def;
    settings_defaults(&def);
    for (int k = 0; k < (int)N_SETTINGS; k++) {
        const cJSON *x = ts ? cJSON_GetObjectItemCaseSensitive(ts, SETTINGS[k].key) : NULL;
        const int given = SETTINGS[k].flag && cli_given(&o->s.seen, SETTINGS[k].flag);
        if (!x) {
            if (!SETTINGS[k].required || given) continue;
            char v[64];
            setting_text(&def, k, v);
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%s", *missing ? ", " : "",
                     SETTINGS[k].flag);
            snprintf(originals + strlen(originals), sizeof originals - strlen(originals), "%s%s %s",
                     *originals ? " " : "", SETTINGS[k].flag, v);
            continue;
        }
        Settings rec = o->s;
        setting_from_json(&rec, k, x, td->path);
        char a[64], b[64];
        setting_text(&rec, k, a);
        setting_text(&o->s, k, b);
        if (!given) o->s = rec;
        else if (strcmp(a, b))
            die(EXIT_USAGE, "--against: %s was recorded with %s %s; %s %s contradicts it (leave the flag out: the "
                "trace's settings are used)", path_short(td->path), SETTINGS[k].key, a, SETTINGS[k].flag, b);
    }
    if (*missing)
        die(EXIT_USAGE, "--against: %s records %s; give the flags that change the numbers: %s (the original's: %s), "
            "or record them in the trace's \"settings\" (scripts/log_to_trace.py does)", path_short(td->path),
            ts ? "only some settings" : "no settings", missing, originals);
    settings_validate(&o->s);
}

// What follows from the settings and the data must be this run's too: the
// model's derived sizes, the dataset, the parameter count.
static void check_derived(const Options *o, const TraceData *td, const Run *r) {
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(td->root, "settings");
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(td->root, "dataset");
    const struct {
        const cJSON *obj;
        const char *key, *name;
        double ours;
    } derived[] = {
        {ts, "head_dim", "head_dim", r->L.shape.head_dim},
        {ts, "vocab_size", "vocab_size", r->L.shape.vocab_size},
        {ds, "vocab_size", "dataset.vocab_size", r->d.vocab_size},
        {ds, "documents", "dataset.documents", r->d.n_docs},
        {td->root, "num_params", "num_params", (double)r->L.n_params},
    };
    for (size_t k = 0; k < sizeof derived / sizeof *derived; k++) {
        double v;
        const int got = trace_get_number(derived[k].obj, derived[k].key, &v);
        if (got < 0) die(EXIT_USAGE, "--against: %s: %s is not a number", path_short(td->path), derived[k].name);
        if (got == 0 && v != derived[k].ours)
            die(EXIT_USAGE, "--against: %s was recorded with %s %.17g; this run has %.0f (from its settings and "
                "--data %s)", path_short(td->path), derived[k].name, v, derived[k].ours, path_short(o->s.data_path));
    }
    const char *sha = ds ? trace_get_string(ds, "sha256") : NULL;
    if (sha && strcmp(sha, r->d.sha256))
        die(EXIT_USAGE, "--against: %s was recorded on data with sha256 %s; %s has %s", path_short(td->path),
            text_safe_n(sha, (size_t)-1, 80),
            path_short(o->s.data_path), r->d.sha256);
}

// The decimals of x: the fewest that read back to it; 99 when none up to 17 do.
static int decimals_of(double x) {
    char buf[64];
    for (int d = 0; fabs(x) < 1e15 && d <= 17; d++) {
        snprintf(buf, sizeof buf, "%.*f", d, x);
        if (strtod(buf, NULL) == x) return d;
    }
    return 99;
}

// The decimals the record's losses were rounded to: "loss_decimals" where the
// trace says (no loss may have more), else the most any loss has when that
// is at most ROUNDED_MAX; -1: full precision.
#define ROUNDED_MAX 9   // more decimals round by at most 5e-11, a twentieth of fp64's tolerance
static int record_decimals(const TraceData *td, int *declared) {
    double dd;
    *declared = trace_get_number(td->root, "loss_decimals", &dd) != 1;
    if (*declared && !(dd >= 0 && dd <= 17 && dd == floor(dd)))
        die(EXIT_USAGE, "--against: %s: \"loss_decimals\" is not an integer from 0 to 17", path_short(td->path));
    int most = -1;
    for (int i = 0; i < td->n_steps; i++) {
        const double x = td->steps[i].loss[0];
        if (!isfinite(x)) continue;
        const int d = decimals_of(x);
        if (*declared && d > dd) {
            char num[32];
            trace_format_number(x, num);
            die(EXIT_USAGE, "--against: %s: step %d's loss %s has more than the %.0f decimals of \"loss_decimals\"",
                path_short(td->path), td->steps[i].step, num, dd);
        }
        if (d > most) most = d;
    }
    if (*declared) return (int)dd;
    return most <= ROUNDED_MAX ? most : -1;
}

// The reference engine's values, for the checks of compare/against_check.c.
typedef struct {
    Engine *e;
} RefCtx;

static int ref_get(void *ctx, Quantity q, double *out) {
    Engine *e = ((RefCtx *)ctx)->e;
    if (q == Q_LOGITS) {
        if (!engine_offers_logits(e)) return -1;
        e->ops->get_logits(e, out);
    } else if (q == Q_GRADS) {
        e->ops->get_grads(e, out);
    } else {
        e->ops->get_params(e, out);
    }
    return 0;
}

// The summary's largest differences: each quantity the record holds, with its
// tolerance; the others are named as not recorded, never shown as 0.
static void print_differences(const Options *o, const Tolerance *later, const double *worst,
                              const double *worst_scaled, const int *n_rec, double loss_tol) {
    static const Quantity tq[] = {Q_LOGITS, Q_GRADS, Q_PARAMS};
    char have[256] = "", tols[384] = "", none[64] = "";
    for (int k = 0; k < 3; k++) {
        const Quantity q = tq[k];
        const Tolerance *t = &o->tol[q];
        if (!n_rec[q]) {
            snprintf(none + strlen(none), sizeof none - strlen(none), "%s%s", *none ? ", " : "", quantity_name(q));
            continue;
        }
        snprintf(have + strlen(have), sizeof have - strlen(have), ", %s %.3e (%.2e x RMS)", quantity_name(q), worst[q],
                 worst_scaled[q]);
        if (t->scaled > 0)
            snprintf(tols + strlen(tols), sizeof tols - strlen(tols), "%s%s %g x each tensor's RMS", *tols ? ", " : "",
                     quantity_name(q), t->scaled);
        else   // fp32: lockstep's table at step 1, then the record's bound
            snprintf(tols + strlen(tols), sizeof tols - strlen(tols), "%s%s atol %.0e + rtol %.0e x |b| at step 1, "
                     "then %g x each tensor's RMS", *tols ? ", " : "", quantity_name(q), t->atol, t->rtol,
                     later[q].scaled);
    }
    printf("  largest differences: loss %.3e (tolerance %.0e", worst[Q_LOSS], loss_tol);
    if (o->extra[Q_LOSS].atol > 0 || o->extra[Q_LOSS].rtol > 0)
        printf(" + --tol loss: atol %g + rtol %g x |loss|", o->extra[Q_LOSS].atol, o->extra[Q_LOSS].rtol);
    printf(")%s", have);
    if (*tols) printf(" (tolerances: %s)", tols);
    if (*none) printf("; %s: not recorded", none);
    printf("\n");
}

int against_main(Options *o) {
    TraceData td;
    char err[1024];
    if (trace_load(&td, o->against, err, sizeof err)) die(EXIT_USAGE, "--against: %s", err);
    if (td.kind != TRACE_KIND_TRAIN)
        die(EXIT_USAGE, "--against: %s is a compare trace; give a trace of one program's run (kind \"train\")",
            path_short(o->against));
    if (!td.n_steps) die(EXIT_USAGE, "--against: %s has no steps", path_short(o->against));
    // the recorded precision picks the tolerances (fp32: fp32's)
    Precision tp = PREC_FP64;
    if (!strcmp(td.precision[0], "fp32")) tp = PREC_FP32;
    else if (td.precision[0][0] && strcmp(td.precision[0], "fp64"))
        die(EXIT_USAGE, "--against: %s: precision '%s' (fp64 or fp32)", path_short(o->against),
            text_safe(td.precision[0]));
    if (o->prec_given && o->prec != tp)
        die(EXIT_USAGE, "--against: %s was recorded in %s; --precision says %s", path_short(o->against),
            precision_name(tp), precision_name(o->prec));
    if (!o->prec_given && tp == PREC_FP32) {
        o->prec = tp;
        for (int q = 0; q < Q_NUM; q++) o->tol[q] = fixed_tolerance(o, tp, (Quantity)q);
        o->drift_tol = drift_tol_for(o, tp);
    }
    // a record's own trajectory: not lockstep's statistic (tolerance.h). The
    // tensors of later steps take the record's calibrated bound (--tol on
    // top); step 1's too in fp64, while fp32's step 1, the same start, keeps
    // lockstep's fixed table
    Tolerance later[Q_NUM];
    const double *cal = tp == PREC_FP64 ? AGAINST_FP64_SCALED : AGAINST_FP32_SCALED;
    for (int q = 0; q < Q_NUM; q++) {
        later[q] = o->tol[q];
        if (cal[q] > 0) later[q] = (Tolerance){.atol = o->extra[q].atol, .rtol = o->extra[q].rtol, .scaled = cal[q]};
        if (tp == PREC_FP64) o->tol[q] = later[q];
    }
    adopt_settings(o, &td);
    if (td.n_steps > o->s.steps)
        die(EXIT_USAGE, "--against: %s has %d steps, more than its %d-step schedule", path_short(o->against),
            td.n_steps, o->s.steps);
    // a record rounded to D decimals is off by up to half a unit of the last one
    int declared;
    const int decimals = record_decimals(&td, &declared);
    const double loss_tol = o->drift_tol + (decimals >= 0 ? 0.5 * pow(10, -decimals) : 0);
    const cJSON *jsteps = cJSON_GetObjectItemCaseSensitive(td.root, "steps");
    Run r;
    run_setup(&r, o);
    check_derived(o, &td, &r);
    r.e[0] = run_make_engine(&r, 0);
    Engine *e = r.e[0];
    const size_t P = r.L.n_params;
    const int V = r.L.shape.vocab_size;
    const size_t n_logits = (size_t)o->s.batch * (size_t)o->s.block_size * (size_t)V;
    // the record's engine as messages show it (the trace names it)
    char recorder[128];
    snprintf(recorder, sizeof recorder, "%s", text_safe_n(td.engine[0], (size_t)-1, 100));
    RefCtx rc = {e};
    AgainstRef ar = {.L = &r.L, .tol = o->tol, .engine = o->names[0], .recorder = recorder, .get = ref_get,
                     .ctx = &rc, .lg = xmalloc(n_logits * sizeof(double)), .rlg = xmalloc(n_logits * sizeof(double)),
                     .rec = xmalloc(P * sizeof(double)), .ref = xmalloc(P * sizeof(double))};
    // the trace's folder: tensor files are relative to it
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", o->against);
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = '\0';
    else dir[0] = '\0';
    AgainstFirst f = {0};
    double worst[Q_NUM] = {0}, worst_scaled[Q_NUM] = {0};
    int n_tensor_steps = 0, n_rec[Q_NUM] = {0};   // steps that recorded each quantity
    Batch b = {0};
    const cJSON *jstep = jsteps->child;   // walked with i (an index lookup each step would be quadratic)
    for (int i = 0; i < td.n_steps; i++, jstep = jstep->next) {
        const int step = td.steps[i].step;
        if (step != i + 1)
            die(EXIT_USAGE, "--against: %s: steps[%d] is step %d; steps must be 1, 2, 3, ... in order",
                path_short(o->against), i, step);
        batch_make(&b, &r.d, i, o->s.batch, o->s.block_size);
        const double loss = e->ops->step(e, &b, i), rec = td.steps[i].loss[0];
        const double d = fabs(rec - loss);
        if (!(d <= worst[Q_LOSS])) worst[Q_LOSS] = d;
        // --tol loss=RTOL[:ATOL] widens it on top
        const double step_tol = loss_tol + o->extra[Q_LOSS].atol + o->extra[Q_LOSS].rtol * fabs(loss);
        int bad = !(d <= step_tol);
        const int rec_digits = decimals >= 0 ? decimals : 17;
        if (bad)
            against_first_fail(&f, step, "the loss: recorded %.*f, reference %.17g, |a-b| = %.3g > %.3g", rec_digits,
                               rec, loss, d, step_tol);
        const char *tf = trace_get_string(jstep, "tensors");
        if (!tf && cJSON_GetObjectItemCaseSensitive(jstep, "tensors") &&
            !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(jstep, "tensors")))   // not silently skipped
            die(EXIT_USAGE, "--against: step %d's \"tensors\" is not a string: give the path of a safetensors file "
                "(relative to the trace), or leave the key out", step);
        char line[256] = "", *zero_note = NULL;
        if (tf) {
            char file[8192];
            snprintf(file, sizeof file, "%s%s", tf[0] == '/' ? "" : dir, tf);
            StFile sf;
            unsigned char *raw;
            if (safetensors_read_file(file, &sf, &raw, err, sizeof err))
                die(EXIT_USAGE, "--against: %s (step %d's \"tensors\")", text_safe(err), step);
            outfile_note_input_as(file, "a tensor file of --against:");
            n_tensor_steps++;
            AgainstStep got;
            ar.tol = step == 1 ? o->tol : later;
            against_check_file(&ar, &sf, file, b.B, b.T, b.n, step, &f, &got);
            static const Quantity tq[3] = {Q_LOGITS, Q_GRADS, Q_PARAMS};
            for (int k = 0; k < 3; k++) {
                const Quantity q = tq[k];
                if (!got.have[q]) continue;
                n_rec[q]++;
                if (!(got.err[q] <= worst[q])) worst[q] = got.err[q];
                if (!(got.scaled[q] <= worst_scaled[q])) worst_scaled[q] = got.scaled[q];
                snprintf(line + strlen(line), sizeof line - strlen(line), " | %s %.1e", quantity_name(q), got.err[q]);
                // the statistic the records' calibrated bounds limit
                snprintf(line + strlen(line), sizeof line - strlen(line), " (%.2e x RMS)", got.scaled[q]);
            }
            bad |= got.bad;
            zero_note = got.zero_note;
            st_file_free(&sf);
            free(raw);
        }
        if (bad || (!o->quiet && ((i + 1) % o->every == 0 || i == 0 || i + 1 == td.n_steps)))
            printf("step %4d | loss %s %.12f | %s %.*f | diff %.1e%s | %s\n", step, o->names[0], loss, recorder,
                   decimals >= 0 ? decimals : 12, rec, d, line, bad ? "FAIL" : "ok");
        if (zero_note) fputs(zero_note, stdout);
        free(zero_note);
    }
    printf("%s: %s (recorded by %s, %s) against %s (%s), %d steps (%d with tensors), batch %d\n",
           f.failed ? "FAIL" : "PASS", o->against, recorder, precision_name(o->prec), o->names[0],
           precision_name(engine_prec(o, 0)), td.n_steps, n_tensor_steps, o->s.batch);
    if (f.failed) printf("  first failure at step %d: %s\n", f.step, f.what);
    if (tp == PREC_FP32)   // docs/compare.md, "How the constants were measured" (against-fp32)
        printf("  note: an fp32 record parts ways from the reference after step 1 (held to lockstep's fp32 table): "
               "from step 2 its tensors (x RMS: logits %g, grads %g, params %g) and its loss (%.1e a step) catch "
               "gross errors only; lockstep (exec: or plugin:) checks every step\n",
               AGAINST_FP32_SCALED[Q_LOGITS], AGAINST_FP32_SCALED[Q_GRADS], AGAINST_FP32_SCALED[Q_PARAMS],
               o->drift_tol);
    if (decimals >= 0)
        printf("  the record is rounded to %d decimals: tolerance %.0e (half a unit of the last digit, plus %.0e; "
               "%s)\n", decimals, loss_tol, o->drift_tol, declared ? "its loss_decimals" : "no recorded loss has more");
    print_differences(o, later, worst, worst_scaled, n_rec, loss_tol);
    batch_free(&b);
    free(ar.lg);
    free(ar.rlg);
    free(ar.rec);
    free(ar.ref);
    run_teardown(&r);
    trace_data_free(&td);
    return f.failed;
}
