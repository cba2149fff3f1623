// SHA-256 of a byte buffer, for identifying datasets in traces.
#ifndef COMMON_SHA256_H
#define COMMON_SHA256_H

#include <stddef.h>
#include <stdint.h>

void sha256(const void *data, size_t n, uint8_t out[32]);
// Lower-case hex digest, 64 characters plus NUL.
void sha256_hex(const void *data, size_t n, char out[65]);

#endif
