// --export-init DIR: everything an outside program needs to start from the
// harness's exact inputs (docs/outside_engines.md, docs/schemas/):
//   settings.json        the settings, model shape, vocabulary, tensor list
//   init.safetensors     the initial parameters, canonical names and shapes
//   documents.txt        the documents in training order (after the shuffle)
//   batches.safetensors  step<k>/tokens (B,T+1), step<k>/n (B), step<k>/doc (B)
// The four are one export: every path is checked before anything is
// computed, and they are replaced together (all written to temporary files,
// then renamed) or not at all, so that the folder never holds a mix of two
// exports.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "compare.h"
#include "common/atomic_file.h"
#include "common/safetensors.h"
#include "common/util.h"

enum { F_SETTINGS, F_INIT, F_DOCUMENTS, F_BATCHES, N_FILES };
static const char *const FILE_NAME[N_FILES] = {"settings.json", "init.safetensors", "documents.txt",
                                               "batches.safetensors"};

typedef struct {
    OutFile out[N_FILES];
    void *data[N_FILES];
    size_t len[N_FILES];
} Export;

// Refused (exit 2) before the run when one of the files cannot be replaced.
static void check_files(Export *x, const char *dir) {
    for (int k = 0; k < N_FILES; k++) {
        size_t n = strlen(dir) + strlen(FILE_NAME[k]) + 2;
        char *path = xmalloc(n), err[512];
        snprintf(path, n, "%s/%s", dir, FILE_NAME[k]);
        if (outfile_open(&x->out[k], path, err, sizeof err))
            die(EXIT_USAGE, "--export-init %s: %s (no file was written)", path_short(path), err);
        free(path);
    }
}

static void encode_safetensors(Export *x, int k, const StTensor *t, int n, const char *const *meta, int n_meta) {
    char err[256];
    x->data[k] = safetensors_encode(t, n, meta, n_meta, &x->len[k], err, sizeof err);
    if (!x->data[k]) die(EXIT_MISMATCH, "--export-init: %s: %s", FILE_NAME[k], err);
}

static void commit(Export *x) {
    char err[1024];
    if (outfile_write_group(x->out, (const void *const *)x->data, x->len, N_FILES, err, sizeof err))
        die(EXIT_MISMATCH, "--export-init %s", err);
    for (int k = 0; k < N_FILES; k++) free(x->data[k]);
}

// settings.json
static void export_settings(Export *x, const Options *o, const Run *r) {
    const ParamLayout *L = &r->L;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "microgpt-export");
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddItemToObject(root, "settings", trace_settings(&o->s, &L->shape));
    cJSON_AddItemToObject(root, "dataset", trace_dataset(&r->d));
    cJSON_AddNumberToObject(root, "bos", r->d.bos);
    cJSON_AddNumberToObject(root, "num_params", (double)L->n_params);
    cJSON *ts = cJSON_AddArrayToObject(root, "tensors");
    for (int k = 0; k < L->n_tensors; k++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "name", L->t[k].name);
        cJSON *sh = cJSON_AddArrayToObject(t, "shape");
        cJSON_AddItemToArray(sh, cJSON_CreateNumber(L->t[k].rows));
        cJSON_AddItemToArray(sh, cJSON_CreateNumber(L->t[k].cols));
        cJSON_AddNumberToObject(t, "offset", (double)L->t[k].offset);
        cJSON_AddItemToArray(ts, t);
    }
    cJSON *files = cJSON_AddObjectToObject(root, "files");
    cJSON_AddStringToObject(files, "init", FILE_NAME[F_INIT]);
    cJSON_AddStringToObject(files, "documents", FILE_NAME[F_DOCUMENTS]);
    cJSON_AddStringToObject(files, "batches", FILE_NAME[F_BATCHES]);
    char *json = cJSON_Print(root);
    cJSON_Delete(root);
    if (!json) die(EXIT_MISMATCH, "--export-init: out of memory");
    size_t jl = strlen(json);
    json = xrealloc(json, jl + 2);
    json[jl] = '\n';
    x->data[F_SETTINGS] = json;
    x->len[F_SETTINGS] = jl + 1;
}

// init.safetensors
static void export_init(Export *x, const Run *r) {
    const ParamLayout *L = &r->L;
    StTensor *t = xcalloc((size_t)L->n_tensors, sizeof *t);
    for (int k = 0; k < L->n_tensors; k++)
        t[k] = (StTensor){.name = L->t[k].name, .dtype = ST_F64, .ndim = 2,
                          .shape = {(size_t)L->t[k].rows, (size_t)L->t[k].cols}, .data = r->init + L->t[k].offset};
    const char *meta[2] = {"format", "microgpt-init"};
    encode_safetensors(x, F_INIT, t, L->n_tensors, meta, 1);
    free(t);
}

// documents.txt: UTF-8, one a line, in the order the batches take them
static void export_documents(Export *x, const Run *r) {
    size_t cap = 1 << 16, len = 0;
    char *txt = xmalloc(cap);
    for (int i = 0; i < r->d.n_docs; i++) {
        int n;
        const int *ids = dataset_doc(&r->d, i, &n);
        if (len + 4 * (size_t)n + 1 > cap) txt = xrealloc(txt, cap = 2 * cap + 4 * (size_t)n + 1);
        for (int j = 0; j < n; j++) len += (size_t)utf8_encode(r->d.vocab[ids[j]], txt + len);
        txt[len++] = '\n';
    }
    x->data[F_DOCUMENTS] = txt;
    x->len[F_DOCUMENTS] = len;
}

// batches.safetensors: three tensors a step; the data is copied because
// batch_make reuses its buffers
static void export_batches(Export *x, const Options *o, const Run *r) {
    const int S = o->s.steps;
    StTensor *bt = xcalloc(3 * (size_t)S, sizeof *bt);
    char (*names)[32] = xcalloc(3 * (size_t)S, sizeof *names);
    int **keep = xcalloc(3 * (size_t)S, sizeof *keep);
    Batch b = {0};
    for (int s = 0; s < S; s++) {
        batch_make(&b, &r->d, s, o->s.batch, o->s.block_size);
        const size_t B = (size_t)b.B, T1 = (size_t)b.T + 1;
        const int *src[3] = {b.tokens, b.n, b.doc};
        const size_t cnt[3] = {B * T1, B, B};
        const char *what[3] = {"tokens", "n", "doc"};
        for (int j = 0; j < 3; j++) {
            int i = 3 * s + j;
            keep[i] = xmalloc(cnt[j] * sizeof(int));
            memcpy(keep[i], src[j], cnt[j] * sizeof(int));
            snprintf(names[i], sizeof names[i], "step%d/%s", s + 1, what[j]);
            bt[i] = (StTensor){.name = names[i], .dtype = ST_I32, .ndim = j ? 1 : 2,
                               .shape = {B, j ? 0 : T1}, .data = keep[i]};
        }
    }
    encode_safetensors(x, F_BATCHES, bt, 3 * S, NULL, 0);
    for (int i = 0; i < 3 * S; i++) free(keep[i]);
    free(keep);
    free(names);
    free(bt);
    batch_free(&b);
}

// The memory making batches.safetensors takes per step, at most: each
// step's three tensors are kept, described in the JSON header as cJSON nodes,
// printed, and copied into the file's buffer.
static double export_step_bytes(const Options *o) {
    const double B = o->s.batch, T1 = o->s.block_size + 1.0;
    const double data = 4 * (B * T1 + 2 * B);   // one step's int32 tensors
    return 3 * (double)sizeof(StTensor) + 3 * 32 + 3 * 3 * sizeof(void *)  // bt, names, keep
           + data + 3 * 48                  // the kept copies (and malloc's overhead)
           + 3 * 8 * (sizeof(cJSON) + 48)   // the header's cJSON nodes and keys, per tensor
           + 3 * 48                         // the names' index
           + 2 * 3 * 100                    // the header's text, then in the buffer
           + data;                          // the data in the buffer
}

// All the files take: the batches dominate and grow with the steps, so that
// a run of 10^8 steps is refused before anything is allocated instead of
// asking for tens of GB at once.
static double export_bytes(const Options *o, const Run *r) {
    const double docs = 4.0 * (double)r->d.n_docs * (double)o->s.block_size + 2.0 * r->d.n_docs;
    return (double)o->s.steps * export_step_bytes(o) + 2 * 8.0 * (double)r->L.n_params + 2 * docs + (1 << 20);
}

int export_main(Options *o) {
    const char *dir = o->export_dir;
    if (mkdir(dir, 0777) && errno != EEXIST) die(EXIT_USAGE, "--export-init: cannot create %s: %s", path_short(dir), strerror(errno));
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) die(EXIT_USAGE, "--export-init: %s is not a directory", path_short(dir));
    Export x = {0};
    check_files(&x, dir);
    Run r;
    run_setup(&r, o);
    char hint[160];
    snprintf(hint, sizeof hint, "export fewer --steps (batches.safetensors holds every step's batch: making it takes "
             "about %.0f bytes a step here)", export_step_bytes(o));
    memory_check(export_bytes(o, &r), "--export-init's files", hint);
    export_settings(&x, o, &r);
    export_init(&x, &r);
    export_documents(&x, &r);
    export_batches(&x, o, &r);
    commit(&x);
    printf("exported to %s: settings.json, init.safetensors (%zu parameters), documents.txt (%d documents), "
           "batches.safetensors (%d steps, batch %d)\n", dir, r.L.n_params, r.d.n_docs, o->s.steps, o->s.batch);
    run_teardown(&r);
    return 0;
}
