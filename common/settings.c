#include "settings.h"

#include <float.h>
#include <stddef.h>
#include <string.h>

#include "pyrandom.h"
#include "util.h"

void settings_defaults(Settings *s) {
    memset(s, 0, sizeof *s);
    s->data_path = "data/names.txt";
    s->seed = "42";
    s->steps = 1000;
    s->n_embd = 16;
    s->n_head = 4;
    s->n_kv_head = 0;
    s->n_layer = 1;
    s->block_size = 16;
    s->lr = 0.01;
    s->beta1 = 0.85;
    s->beta2 = 0.99;
    s->eps = 1e-8;
    s->init_std = 0.08;
    s->temperature = 0.5;
    s->samples = 20;
    s->batch = 1;
    s->trace_path = NULL;
}

const char *loss_name(int token_mean) { return token_mean ? "token-mean" : "doc-mean"; }

int settings_kv_heads(const Settings *s) { return s->n_kv_head ? s->n_kv_head : s->n_head; }

// Limits that keep every size product far from int overflow.
#define MAX_SIZE 1000000L

static int int_flag(const char *flag, const char *v, long min, long max) {
    long x;
    if (parse_int(v, min, max, &x))
        die(EXIT_USAGE, "%s: '%s' is not an integer in [%ld, %ld]", flag, v, min, max);
    return (int)x;
}

static double real_flag(const char *flag, const char *v) {
    double x;
    if (parse_double(v, &x)) die(EXIT_USAGE, "%s: '%s' is not a finite number", flag, v);
    return x;
}

static const char *path_flag(const char *flag, const char *v) { return cli_path(flag, v); }

// The integer flags: name, field, range.
static const struct {
    const char *name;
    size_t off;
    long min, max;
} INTS[] = {
    {"--steps", offsetof(Settings, steps), 0, 1000000000L},
    {"--n-embd", offsetof(Settings, n_embd), 1, MAX_SIZE},
    {"--n-head", offsetof(Settings, n_head), 1, MAX_SIZE},
    {"--n-kv-head", offsetof(Settings, n_kv_head), 1, MAX_SIZE},
    {"--n-layer", offsetof(Settings, n_layer), 1, 1000},
    {"--block-size", offsetof(Settings, block_size), 1, MAX_SIZE},
    {"--samples", offsetof(Settings, samples), 0, MAX_SIZE},
    {"--batch", offsetof(Settings, batch), 1, MAX_SIZE},
};

int settings_parse_flag(Settings *s, int argc, char **argv, int *i) {
    const char *v;
    for (size_t k = 0; k < sizeof INTS / sizeof *INTS; k++)
        if ((v = cli_value(&s->seen, argc, argv, i, INTS[k].name))) {
            *(int *)((char *)s + INTS[k].off) = int_flag(INTS[k].name, v, INTS[k].min, INTS[k].max);
            return 1;
        }
    if ((v = cli_value(&s->seen, argc, argv, i, "--data"))) {
        s->data_path = path_flag("--data", v);
    } else if ((v = cli_value(&s->seen, argc, argv, i, "--seed"))) {
        PyRandom probe;
        if (pyrandom_seed_text(&probe, v)) die(EXIT_USAGE, "--seed: '%s' is not an integer", v);
        s->seed = v;
    } else if ((v = cli_value(&s->seen, argc, argv, i, "--lr"))) {
        s->lr = real_flag("--lr", v);
    } else if ((v = cli_value(&s->seen, argc, argv, i, "--temperature"))) {
        s->temperature = real_flag("--temperature", v);
    } else if ((v = cli_value(&s->seen, argc, argv, i, "--loss"))) {
        if (strcmp(v, "doc-mean") && strcmp(v, "token-mean"))
            die(EXIT_USAGE, "--loss: '%s' is not doc-mean (the mean of per-document means, the original's) or "
                "token-mean (the mean over all the batch's tokens, F.cross_entropy's)", v);
        s->token_mean = !strcmp(v, "token-mean");
    } else if ((v = cli_value(&s->seen, argc, argv, i, "--init-std"))) {
        s->init_std = real_flag("--init-std", v);
    } else if ((v = cli_value(&s->seen, argc, argv, i, "--trace"))) {
        s->trace_path = path_flag("--trace", v);
    } else if ((v = cli_value(&s->seen, argc, argv, i, "--timeline"))) {
        s->timeline_path = path_flag("--timeline", v);
    } else if (cli_switch(&s->seen, argv, *i, "--pretty")) {
        s->pretty = 1;
    } else {
        return 0;
    }
    return 1;
}

void settings_validate(const Settings *s) {
    if (s->n_embd < 1 || s->n_head < 1 || s->n_layer < 1 || s->block_size < 1 || s->batch < 1)
        die(EXIT_USAGE, "sizes must be at least 1");
    if (s->n_embd % s->n_head)
        die(EXIT_USAGE, "--n-embd %d is not divisible by --n-head %d: each head gets n_embd/n_head "
            "channels", s->n_embd, s->n_head);
    int kv = settings_kv_heads(s);
    if (kv > s->n_head || s->n_head % kv)
        die(EXIT_USAGE, "--n-kv-head %d must divide --n-head %d (grouped-query attention shares "
            "each key/value head among n_head/n_kv_head query heads)", kv, s->n_head);
    if ((long)s->n_embd * 4 > MAX_SIZE)
        die(EXIT_USAGE, "--n-embd %d is too large (the MLP has 4*n_embd channels; at most %ld)",
            s->n_embd, MAX_SIZE / 4);
    if (!(s->temperature > 0)) die(EXIT_USAGE, "--temperature must be > 0 (got %g)", s->temperature);
    // the original divides the logits by it as l * temperature**-1, and
    // Python's float ** raises OverflowError when that overflows
    if (!(1.0 / s->temperature <= DBL_MAX))
        die(EXIT_USAGE, "--temperature %g: 1/temperature overflows a double (the original raises OverflowError "
            "when it divides the logits); use a temperature of at least %.3g", s->temperature, 1.0 / DBL_MAX);
    if (s->lr < 0) die(EXIT_USAGE, "--lr must be >= 0 (got %g)", s->lr);
    if (!(s->init_std > 0 && s->init_std <= 1e6))
        die(EXIT_USAGE, "--init-std must be > 0 and at most 1e6 (got %g)", s->init_std);
    if (s->pretty && !s->trace_path) die(EXIT_USAGE, "--pretty applies to --trace (it indents the trace)");
}

void settings_print_help(FILE *f, int own_samples) {
    fprintf(f,
            "  (a flag takes its value as the next argument or after '=', --steps=3; a flag\n"
            "  given twice is refused)\n"
            "  --data FILE          training text, one document per line, UTF-8 (data/names.txt)\n"
            "  --seed N             random seed, an integer of any size (42)\n"
            "  --steps N            training steps (1000)\n"
            "  --n-embd N           embedding width (16)\n"
            "  --n-head N           attention heads; must divide n-embd (4)\n"
            "  --n-kv-head N        key/value heads for grouped-query attention; must divide\n"
            "                       n-head (n-head)\n"
            "  --n-layer N          transformer layers (1)\n"
            "  --block-size N       context length; longer documents are cropped (16)\n"
            "  --lr X               Adam learning rate, decayed linearly to 0 (0.01)\n"
            "  --init-std X         standard deviation of the initial weights, > 0 (0.08); wide\n"
            "                       models train with less, e.g. 0.02 with --lr 0.001\n"
            "  --temperature X      sampling temperature, > 0 with 1/X finite (0.5)\n");
    if (!own_samples) fprintf(f, "  --samples N          names to sample after training (20)\n");
    fprintf(f,
            "  --batch B            documents per step; document b of step s is\n"
            "                       docs[(s*B+b) %% N] (1)\n"
            "  --loss doc-mean|token-mean\n"
            "                       the batch's loss: the mean of per-document mean cross-\n"
            "                       entropies (doc-mean, the original's) or the mean over all\n"
            "                       its tokens (token-mean, F.cross_entropy's); equal at batch 1\n"
            "                       (doc-mean)\n"
            "  --trace FILE         write a JSON trace of the run to FILE ('-': stdout); a failed\n"
            "                       or interrupted run writes it too, marked incomplete; compact\n"
            "                       JSON, one line\n"
            "  --pretty             with --trace: indent the trace for reading (about a quarter\n"
            "                       larger)\n"
            "  --timeline FILE      write each step's phases per engine as Chrome trace-event\n"
            "                       JSON (open it in ui.perfetto.dev or chrome://tracing)\n");
}
