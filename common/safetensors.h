// Arrays in the safetensors layout (an 8-byte little-endian header length, a
// JSON header naming each tensor's dtype, shape and byte range, then the raw
// little-endian data), so that numpy, torch and the `safetensors` package
// read what the harness writes without any code of ours.
#ifndef COMMON_SAFETENSORS_H
#define COMMON_SAFETENSORS_H

#include <stddef.h>

typedef enum { ST_F64, ST_F32, ST_I32 } StDtype;

#define ST_MAX_DIMS 4

typedef struct {
    const char *name;
    StDtype dtype;
    int ndim;
    size_t shape[ST_MAX_DIMS];
    const void *data;   // prod(shape) elements of dtype, host byte order (little-endian)
} StTensor;

// Bytes of one element of dtype.
size_t st_dtype_size(StDtype d);
// Encode n tensors, with string metadata (meta: n_meta key, value pairs,
// may be NULL), into a malloc'd buffer; *len gets its size. Tensor names
// must be distinct and not "__metadata__". NULL with a message in err if not.
unsigned char *safetensors_encode(const StTensor *t, int n, const char *const *meta, int n_meta, size_t *len,
                                  char *err, size_t errlen);

#endif
