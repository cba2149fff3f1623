// A growing text buffer: reports, tables and SVG are built in one and
// written at once.
#ifndef COMMON_STRBUF_H
#define COMMON_STRBUF_H

#include <stddef.h>

typedef struct {
    char *s;          // NUL-terminated once anything is written
    size_t n, cap;
} StrBuf;

// Append printf-style; allocation failure exits 1 with a message.
void sb_printf(StrBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_free(StrBuf *b);

#endif
