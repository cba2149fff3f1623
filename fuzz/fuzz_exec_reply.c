// libFuzzer target: the exec engine's reply reader (compare/exec_reply.c)
// on arbitrary bytes: a header line, a newline, then the payload it
// announces. The first byte picks whether the request asked for data and
// which request it was. A refusal says why in text that is safe on a
// terminal (an engine's error text is shown with text_safe()).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compare/exec_reply.h"

static void check_message(const char *err) {
    if (!err[0]) abort();
    for (const unsigned char *c = (const unsigned char *)err; *c; c++)
        if (*c < 0x20 || *c == 0x7f) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int want_payload = data[0] & 1;
    static const char *const ops[4] = {"create", "step", "get grads", "sample own"};
    const char *op = ops[(data[0] >> 1) & 3];
    const char *line = (const char *)data + 1;
    const size_t rest = size - 1;
    const char *nl = memchr(line, '\n', rest);
    const size_t ll = nl ? (size_t)(nl - line) : rest;
    char err[1024];
    size_t n = 0;
    cJSON *h = exec_reply_header(line, ll, op, want_payload, " (hint)", &n, err, sizeof err);
    if (!h) {
        check_message(err);
        return 0;
    }
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(h, "ok"))) abort();   // only "ok": true is accepted
    if (want_payload && n < 8) abort();
    if (!want_payload && n) abort();
    const size_t have = nl ? rest - ll - 1 : 0;
    if (want_payload && have >= n) {
        // the payload as the engine reads it: n bytes of their own
        unsigned char *payload = malloc(n);
        memcpy(payload, nl + 1, n);
        StFile st;
        if (exec_reply_payload(payload, n, op, &st, err, sizeof err) == 0) st_file_free(&st);
        else check_message(err);
        free(payload);
    }
    cJSON_Delete(h);
    return 0;
}
