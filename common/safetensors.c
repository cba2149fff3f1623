#include "safetensors.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const DTYPE_NAMES[] = {"F64", "F32", "I32"};

size_t st_dtype_size(StDtype d) { return d == ST_F64 ? 8 : 4; }

static size_t st_bytes(const StTensor *t) {
    size_t n = st_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

unsigned char *safetensors_encode(const StTensor *t, int n, const char *const *meta, int n_meta, size_t *len,
                                  char *err, size_t errlen) {
    cJSON *h = cJSON_CreateObject();
    if (!h) goto oom;
    if (n_meta > 0) {
        cJSON *m = cJSON_AddObjectToObject(h, "__metadata__");
        for (int i = 0; i < n_meta; i++)
            if (!m || !cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1])) goto oom_h;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(t[i].name, "__metadata__") || cJSON_GetObjectItemCaseSensitive(h, t[i].name)) {
            snprintf(err, errlen, "safetensors: tensor name '%s' is reserved or repeated", t[i].name);
            cJSON_Delete(h);
            return NULL;
        }
        if (t[i].ndim < 0 || t[i].ndim > ST_MAX_DIMS || (unsigned)t[i].dtype > ST_I32) {
            snprintf(err, errlen, "safetensors: tensor '%s' has a bad dtype or rank", t[i].name);
            cJSON_Delete(h);
            return NULL;
        }
        cJSON *o = cJSON_AddObjectToObject(h, t[i].name);
        if (!o || !cJSON_AddStringToObject(o, "dtype", DTYPE_NAMES[t[i].dtype])) goto oom_h;
        cJSON *shape = cJSON_AddArrayToObject(o, "shape"), *range = cJSON_AddArrayToObject(o, "data_offsets");
        if (!shape || !range) goto oom_h;
        for (int d = 0; d < t[i].ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t[i].shape[d]));
        size_t b = st_bytes(&t[i]);
        cJSON_AddItemToArray(range, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(range, cJSON_CreateNumber((double)(off + b)));
        off += b;
    }
    char *json = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!json) goto oom;
    // the header is padded with spaces so that the data starts 8-byte aligned
    size_t hl = strlen(json), hpad = (hl + 7) / 8 * 8;
    unsigned char *buf = malloc(8 + hpad + off);
    if (!buf) {
        free(json);
        goto oom;
    }
    uint64_t hl64 = hpad;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hl64 >> (8 * i));
    memcpy(buf + 8, json, hl);
    memset(buf + 8 + hl, ' ', hpad - hl);
    free(json);
    unsigned char *p = buf + 8 + hpad;
    for (int i = 0; i < n; i++) {
        size_t b = st_bytes(&t[i]);
        if (b) memcpy(p, t[i].data, b);
        p += b;
    }
    *len = 8 + hpad + off;
    return buf;
oom_h:
    cJSON_Delete(h);
oom:
    snprintf(err, errlen, "safetensors: out of memory");
    return NULL;
}
