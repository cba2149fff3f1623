// The pure half of reading an exec engine's reply (docs/outside_engines.md):
// the JSON header line and the safetensors payload it announces, checked
// without the process that sent them (compare/exec_engine.c reads the bytes
// off the pipe and calls these; fuzz/fuzz_exec_reply.c calls them on
// arbitrary bytes).
#ifndef COMPARE_EXEC_REPLY_H
#define COMPARE_EXEC_REPLY_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "common/safetensors.h"

// The header line of a reply to `op` (line: ll bytes, without the newline):
// one JSON object, no key twice, with "ok": true, or "ok": false and the
// engine's "error" (then refused with that text, shown as text_safe() shows
// it, and `hint` after it). want_payload: the reply must announce "bytes":
// N (N >= 8), put into *bytes; otherwise it must announce none. The header
// (cJSON_Delete it), or NULL with the reason in err.
cJSON *exec_reply_header(const char *line, size_t ll, const char *op, int want_payload, const char *hint,
                         size_t *bytes, char *err, size_t errlen);
// The payload of a reply to `op`: n bytes of safetensors, decoded into *st
// (which points into buf). 0, or -1 with the reason in err.
int exec_reply_payload(const unsigned char *buf, size_t n, const char *op, StFile *st, char *err, size_t errlen);

#endif
