// The benchmark's sizes (--sizes), the documents each trains and the cost
// estimates the report and the memory check use.
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "engines.h"
#include "common/util.h"
#include "scalar_ref/engine_scalar.h"
#include "tensor_gpu/cpu/engine_cpu.h"

// The sweep: the default model at three batch sizes, then wider and deeper
// models. Each is the default model with these settings changed.
static const struct {
    const char *name, *spec;
} PRESETS[] = {
    {"b1", "batch=1"},
    {"b32", "batch=32"},
    {"b256", "batch=256"},
    {"e64", "n_embd=64,n_head=4,n_layer=2,block_size=32,batch=32"},
    {"e128", "n_embd=128,n_head=4,n_layer=4,batch=256,init_std=0.02,lr=0.001"},
    {"e512", "n_embd=512,n_head=8,n_layer=8,block_size=64,batch=64,init_std=0.02,lr=0.001"},
};
// init_std=0.02 and lr=0.001 for the two largest (the work per step is the
// same): with the original's 0.08 and 0.01 they start far off (no norm
// before lm_head: e512's first loss is 56.7, e128's 6.4) and e128 diverges
// in the first steps (23.7 at step 4); in such a chaotic run fp32 and fp64
// part ways (22% at step 38 for e512), so their losses could not be
// checked against each other (docs/BENCHMARKS.md).
#define N_PRESETS ((int)(sizeof PRESETS / sizeof PRESETS[0]))

static const char *const SPEC_KEYS[] = {"n_embd", "n_head", "n_kv_head", "n_layer", "block_size", "batch",
                                        "lr", "init_std"};
#define N_SPEC_KEYS 8
#define KEY_LR 6
#define KEY_INIT_STD 7

static int *spec_field(Settings *s, int key) {
    int *f[] = {&s->n_embd, &s->n_head, &s->n_kv_head, &s->n_layer, &s->block_size, &s->batch};
    return f[key];
}

typedef struct {
    BenchSize *sizes;
    int n, max;
    const Settings *base;   // the command line's settings (SPECs start from them)
    Settings defaults;      // the default model with the command line's data, seed, steps, lr
    int open;               // a SPEC is being read into sizes[n-1]
    unsigned keys_set;      // of the open SPEC
    int n_specs;
} SizeParser;

static BenchSize *size_add(SizeParser *p, const char *list) {
    if (p->n == p->max) die(EXIT_USAGE, "--sizes '%s': at most %d sizes", list, p->max);
    BenchSize *z = &p->sizes[p->n++];
    memset(z, 0, sizeof *z);
    return z;
}

// Apply "key=value" to z (spec text appended); exits 2 on a bad item.
static void spec_apply(BenchSize *z, unsigned *keys_set, const char *item, const char *list) {
    const char *eq = strchr(item, '=');
    size_t kl = (size_t)(eq - item);
    int key = -1;
    for (int k = 0; k < N_SPEC_KEYS; k++)
        if (strlen(SPEC_KEYS[k]) == kl && !strncmp(item, SPEC_KEYS[k], kl)) key = k;
    if (key < 0)
        die(EXIT_USAGE, "--sizes '%s': unknown setting '%.*s' (n_embd, n_head, n_kv_head, n_layer, block_size, "
            "batch, lr, init_std)", list, (int)kl, item);
    if (*keys_set & (1u << key))
        die(EXIT_USAGE, "--sizes '%s': %s is given twice in one SPEC (end a SPEC with ';' to start another)",
            list, SPEC_KEYS[key]);
    *keys_set |= 1u << key;
    if (key == KEY_LR || key == KEY_INIT_STD) {
        double x;
        if (parse_double(eq + 1, &x) || !(x >= 0))
            die(EXIT_USAGE, "--sizes '%s': %s='%s' is not a number >= 0", list, SPEC_KEYS[key], eq + 1);
        *(key == KEY_LR ? &z->s.lr : &z->s.init_std) = x;
        size_t len = strlen(z->spec);
        snprintf(z->spec + len, sizeof z->spec - len, "%s%s", len ? "," : "", item);
        return;
    }
    long v;
    if (parse_int(eq + 1, key == 2 ? 0 : 1, 1000000, &v))
        die(EXIT_USAGE, "--sizes '%s': %s='%s' is not an integer from %d to 1000000", list, SPEC_KEYS[key], eq + 1,
            key == 2 ? 0 : 1);
    *spec_field(&z->s, key) = (int)v;
    size_t len = strlen(z->spec);
    snprintf(z->spec + len, sizeof z->spec - len, "%s%s", len ? "," : "", item);
}

static void preset_add(SizeParser *p, int i, const char *list) {
    BenchSize *z = size_add(p, list);
    snprintf(z->name, sizeof z->name, "%s", PRESETS[i].name);
    z->s = p->defaults;
    unsigned keys = 0;
    char spec[160];
    snprintf(spec, sizeof spec, "%s", PRESETS[i].spec);
    for (char *save = NULL, *it = strtok_r(spec, ",", &save); it; it = strtok_r(NULL, ",", &save))
        spec_apply(z, &keys, it, PRESETS[i].spec);
}

int bench_sizes_parse(const char *list, const Settings *base, BenchSize *sizes, int max) {
    SizeParser p = {.sizes = sizes, .max = max, .base = base};
    settings_defaults(&p.defaults);
    p.defaults.data_path = base->data_path;
    p.defaults.seed = base->seed;
    p.defaults.steps = base->steps;
    p.defaults.lr = base->lr;
    if (!list) list = "default";
    char *copy = xstrdup(list);
    for (char *q = copy;;) {
        size_t len = strcspn(q, ",;");
        char sep = q[len];
        q[len] = '\0';
        char *item = q;
        while (isspace((unsigned char)*item)) item++;
        if (!*item) {
            if (sep != ';' && !(sep == '\0' && p.n)) die(EXIT_USAGE, "--sizes '%s': an empty item", list);
        } else if (strchr(item, '=')) {
            if (!p.open) {
                BenchSize *z = size_add(&p, list);
                snprintf(z->name, sizeof z->name, "spec%d", ++p.n_specs);
                z->s = *base;
                p.open = 1;
                p.keys_set = 0;
            }
            spec_apply(&sizes[p.n - 1], &p.keys_set, item, list);
        } else {
            p.open = 0;
            if (!strcmp(item, "default")) {
                BenchSize *z = size_add(&p, list);
                snprintf(z->name, sizeof z->name, "default");
                z->s = *base;
            } else if (!strcmp(item, "sweep")) {
                for (int i = 0; i < N_PRESETS; i++) preset_add(&p, i, list);
            } else {
                int found = -1;
                for (int i = 0; i < N_PRESETS; i++)
                    if (!strcmp(item, PRESETS[i].name)) found = i;
                if (found < 0)
                    die(EXIT_USAGE, "--sizes '%s': unknown size '%s' (default, sweep, b1, b32, b256, e64, e128, "
                        "e512, or key=value settings)", list, item);
                preset_add(&p, found, list);
            }
        }
        if (sep == ';') p.open = 0;
        if (!sep) break;
        q += len + 1;
    }
    free(copy);
    if (!p.n) die(EXIT_USAGE, "--sizes '%s': no sizes", list);
    for (int i = 0; i < p.n; i++) {
        BenchSize *z = &sizes[i];
        if (!z->spec[0]) {
            const Settings *s = &z->s;
            snprintf(z->spec, sizeof z->spec, "n_embd=%d,n_head=%d,n_kv_head=%d,n_layer=%d,block_size=%d,batch=%d",
                     s->n_embd, s->n_head, settings_kv_heads(s), s->n_layer, s->block_size, s->batch);
        }
        const Settings *s = &z->s;
        if (s->n_embd % s->n_head || (s->n_kv_head && s->n_head % s->n_kv_head))
            die(EXIT_USAGE, "--sizes: size %s (%s): n_head must divide n_embd and n_kv_head must divide n_head",
                z->name, z->spec);
        settings_validate(&z->s);
    }
    return p.n;
}

// Lines of at least block_size characters: the source documents in file
// order joined by single spaces, a line ending as soon as it is long
// enough; a last line that stays shorter is dropped. Every document then
// fills the block, so every position of every batch is real.
static char *pack_text(const Dataset *raw, int block_size, size_t *len, int *n_lines, int *n_used) {
    size_t cap = raw->n_bytes + (size_t)raw->n_docs + 64, n = 0;
    char *text = xmalloc(cap);
    size_t line_start = 0;
    int chars = 0, lines = 0, used = 0, in_line = 0;
    for (int i = 0; i < raw->n_docs; i++) {
        int dl;
        const int *ids = dataset_doc(raw, i, &dl);
        if (n + 4 * (size_t)dl + 8 > cap) text = xrealloc(text, cap = 2 * cap + 4 * (size_t)dl + 8);
        if (chars) text[n++] = ' ', chars++;
        for (int k = 0; k < dl; k++) {
            char u[4];
            int b = utf8_encode(raw->vocab[ids[k]], u);
            memcpy(text + n, u, (size_t)b);
            n += (size_t)b;
        }
        chars += dl;
        in_line++;
        if (chars >= block_size) {
            text[n++] = '\n';
            line_start = n;
            chars = 0;
            lines++;
            used += in_line;
            in_line = 0;
        }
    }
    n = line_start;   // drop the short tail
    *len = n;
    *n_lines = lines;
    *n_used = used;
    return text;
}

// The forward's flops of one batch: the products (qkv, wo, the MLP 4C wide
// and lm_head, 2 flops a multiply-add) and the attention (scores and the
// weighted sum over the keys, head_dim each).
static double batch_fwd_flops(const ModelShape *m, const Batch *b) {
    const double C = m->n_embd, KV = (double)m->n_kv_head * m->head_dim, V = m->vocab_size, L = m->n_layer;
    double N = 0, pairs = 0;   // positions, and (query, key) pairs of the causal attention
    for (int d = 0; d < b->B; d++) {
        N += b->n[d];
        pairs += 0.5 * b->n[d] * (b->n[d] + 1.0);
    }
    return L * (2 * N * C * (C + 2 * KV) + 2 * N * C * C + 2 * 2 * N * C * 4 * C + 2 * 2 * C * pairs) + 2 * N * C * V;
}

// Bytes of every step's batch: (B, T+1) tokens and two (B) arrays a step.
static double batches_bytes(const BenchSize *z) {
    return (double)z->s.steps * ((double)z->s.batch * (z->s.block_size + 3) * sizeof(int) + sizeof(Batch));
}

void bench_size_prepare(BenchSize *z, int raw_docs) {
    char err[512];
    Dataset raw;
    if (dataset_load(&raw, z->s.data_path, err, sizeof err)) die(EXIT_USAGE, "%s", err);
    if (raw_docs) {
        z->d = raw;
        snprintf(z->data_desc, sizeof z->data_desc, "raw: %s, %d documents as they are (ragged batches)",
                 raw.path, raw.n_docs);
    } else {
        size_t len;
        int lines, used;
        char *text = pack_text(&raw, z->s.block_size, &len, &lines, &used);
        if (!lines)
            die(EXIT_USAGE, "%s: the data is too small for one document of block_size %d characters "
                "(--bench-data packed joins the documents into lines at least that long); use --bench-data raw "
                "or a smaller block_size", raw.path, z->s.block_size);
        char name[600];
        snprintf(name, sizeof name, "%s (packed)", raw.path);
        if (dataset_from_text(&z->d, name, text, len, err, sizeof err)) die(EXIT_USAGE, "%s", err);
        snprintf(z->data_desc, sizeof z->data_desc,
                 "packed: %d of the %d documents of %s joined by spaces into %d lines of >= %d characters "
                 "(vocabulary %d)", used, raw.n_docs, raw.path, lines, z->s.block_size, z->d.vocab_size);
        free(text);
        dataset_free(&raw);
    }
    PyRandom rng;
    pyrandom_seed_text(&rng, z->s.seed);
    dataset_shuffle(&z->d, &rng);
    ModelShape m = model_shape(&z->s, z->d.vocab_size);
    layout_init(&z->L, &m);
    z->init = xmalloc(z->L.n_params * sizeof *z->init);
    params_init(&z->L, &rng, z->s.init_std, z->init);
    // positions and flops a step from the batches drawn one at a time: the
    // batches themselves are built only for an engine that fits
    // (bench_size_batches)
    Batch b = {0};
    double pos = 0, fwd = 0;
    for (int i = 0; i < z->s.steps; i++) {
        batch_make(&b, &z->d, i, z->s.batch, z->s.block_size);
        for (int d = 0; d < z->s.batch; d++) pos += b.n[d];
        fwd += batch_fwd_flops(&m, &b);
    }
    batch_free(&b);
    z->positions = pos / z->s.steps;
    // backward: two products per forward product (input and weight
    // gradients); Adam: about 10 flops a parameter
    z->flops = 3 * fwd / z->s.steps + 10.0 * (double)z->L.n_params;
}

void bench_size_batches(BenchSize *z) {
    if (z->batches) return;
    char what[160];
    snprintf(what, sizeof what, "size %s's batches (%d steps of batch %d, block %d)", z->name, z->s.steps, z->s.batch,
             z->s.block_size);
    memory_check(batches_bytes(z), what, "give fewer --steps or a smaller batch");
    z->batches = xcalloc((size_t)z->s.steps, sizeof *z->batches);
    for (int i = 0; i < z->s.steps; i++) batch_make(&z->batches[i], &z->d, i, z->s.batch, z->s.block_size);
}

void bench_size_free(BenchSize *z) {
    if (z->batches)
        for (int i = 0; i < z->s.steps; i++) batch_free(&z->batches[i]);
    free(z->batches);
    free(z->init);
    if (z->L.t) layout_free(&z->L);
    dataset_free(&z->d);
    z->batches = NULL;
    z->init = NULL;
}

double bench_host_bytes_estimate(const char *name, const BenchSize *z, Precision p) {
    const ModelShape *m = &z->L.shape;
    const double C = m->n_embd, V = m->vocab_size, L = m->n_layer;
    const double T = m->block_size, B = z->s.batch, P = (double)z->L.n_params;
    const double real = p == PREC_FP64 ? 8 : 4;
    // the batches every run reads, while they are not built yet (once built,
    // the memory available has them counted)
    const double batches = z->batches ? 0 : batches_bytes(z);
    // the engines' own estimates (the scalar engine's graph: 1.1-1.3x its measured peak)
    if (!strcmp(name, "scalar")) return batches + scalar_engine_bytes(&z->L, &z->d, z->s.batch, z->s.steps);
    if (engine_cpu_order(name) != ORDER_NUM) return batches + cpu_engine_bytes(m, z->L.n_params, z->s.batch, p);
    if (!strcmp(name, "cuda") || engine_cuda_path(name)) {
        // pinned transfer buffers (the device memory is checked by the engine itself)
        const double rows = B * T;
        double x = P;
        if (rows * V > x) x = rows * V;
        if (L * rows * 4 * C > x) x = L * rows * 4 * C;
        return batches + real * (x + rows) + 8 * P * 2;
    }
    return NAN;
}
