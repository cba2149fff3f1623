// The pure half of reading an exec engine's reply: compare/exec_reply.h.
#include "exec_reply.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

cJSON *exec_reply_header(const char *line, size_t ll, const char *op, int want_payload, const char *hint,
                         size_t *bytes, char *err, size_t errlen) {
    *bytes = 0;
    cJSON *h = cJSON_ParseWithLength(line, ll);
    if (!cJSON_IsObject(h)) {
        cJSON_Delete(h);
        snprintf(err, errlen, "the reply to '%s' is not a JSON object on one line: '%s'", op,
                 text_safe_n(line, ll, 100));
        return NULL;
    }
    // a key twice: cJSON would read the first, Python's json (which most
    // engines' authors test with) the last
    const char *dup;
    char where[160];
    if (json_duplicate_key(h, &dup, where, sizeof where)) {
        snprintf(err, errlen, "the reply to '%s' has the key \"%s\" twice%s%s: JSON readers differ on which one "
                 "counts; send it once", op, text_safe_n(dup, (size_t)-1, 80), where[0] ? " in " : "",
                 where[0] ? text_safe_n(where, (size_t)-1, 80) : "");
        cJSON_Delete(h);
        return NULL;
    }
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(h, "ok");
    const cJSON *nb = cJSON_GetObjectItemCaseSensitive(h, "bytes");
    if (!cJSON_IsBool(ok)) {
        snprintf(err, errlen, "the reply to '%s' has no \"ok\": true or false", op);
    } else if (cJSON_IsFalse(ok)) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(h, "error");
        snprintf(err, errlen, "'%s' failed: %s%s", op,
                 cJSON_IsString(e) ? text_safe_n(e->valuestring, (size_t)-1, 2000) : "(the reply has no \"error\" text)",
                 hint ? hint : "");
    } else if (!want_payload) {
        if (!nb) return h;
        snprintf(err, errlen, "the reply to '%s' announces %g bytes of data; none were asked for", op,
                 cJSON_IsNumber(nb) ? nb->valuedouble : -1.0);
    } else if (!cJSON_IsNumber(nb) || !(nb->valuedouble >= 8) || nb->valuedouble > 9007199254740992.0 ||
               nb->valuedouble != floor(nb->valuedouble)) {
        snprintf(err, errlen, "the reply to '%s' needs \"bytes\": N (an integer from 8 to 2^53, the size of the "
                 "safetensors data after the line; the caller then caps it at what the request implies)", op);
    } else {
        *bytes = (size_t)nb->valuedouble;
        return h;
    }
    cJSON_Delete(h);
    return NULL;
}

int exec_reply_payload(const unsigned char *buf, size_t n, const char *op, StFile *st, char *err, size_t errlen) {
    char e[400];
    if (!safetensors_decode(buf, n, st, e, sizeof e)) return 0;
    snprintf(err, errlen, "the data of the reply to '%s': %s", op, e);
    return -1;
}
