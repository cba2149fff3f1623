// Arrays in the safetensors layout (an 8-byte little-endian header length, a
// JSON header naming each tensor's dtype, shape and byte range, then the raw
// little-endian data), so that numpy, torch and the `safetensors` package
// read what the harness writes without any code of ours.
#ifndef COMMON_SAFETENSORS_H
#define COMMON_SAFETENSORS_H

#include <stddef.h>

#include "util.h"

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

// A decoded safetensors buffer: the tensors point into the buffer given to
// safetensors_decode (which must outlive it); data may be unaligned, so read
// it with st_read_f64 / st_read_i32.
typedef struct {
    int n;
    StTensor *t;     // in file order (sorted by data offset)
    char **names;    // owned copies; t[i].name == names[i]
    StrIndex index;  // name -> position in t (st_find)
} StFile;

// Parse and check buf: the header length fits, the header is a JSON object
// whose entries have a known dtype (F64, F32, I32), a shape of at most
// ST_MAX_DIMS non-negative integers and data_offsets [begin, end] that match
// the shape, lie inside the data and tile it without overlap or hole
// (__metadata__, if present, must map strings to strings), and no object
// of the header has a key twice. Linear in the header's size. 0, or -1 with
// a message in err naming what is wrong, the names in it shown as
// text_safe() shows them (f is then empty).
int safetensors_decode(const unsigned char *buf, size_t len, StFile *f, char *err, size_t errlen);
void st_file_free(StFile *f);
// The tensor called name, or NULL (a hash lookup).
const StTensor *st_find(const StFile *f, const char *name);
// Elements of a tensor (the product of its shape).
size_t st_numel(const StTensor *t);
// Copy a tensor's elements into out as double (F64 or F32) or int (I32);
// -1 if the dtype is not one of those.
int st_read_f64(const StTensor *t, double *out);
int st_read_i32(const StTensor *t, int *out);
// "F64 [27,16]"
void st_describe(const StTensor *t, char *out, size_t n);
// Read a whole file and decode it; *buf gets the bytes (free it after f).
// Only a regular file is read (a FIFO, /dev/zero or a directory is refused
// at once, naming the file); its size is known before anything is read.
int safetensors_read_file(const char *path, StFile *f, unsigned char **buf, char *err, size_t errlen);

#endif
