// common/safetensors: the encoder writes the layout byte for byte, the decoder
// reads it back and refuses every malformed header with a message.
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "common/safetensors.h"

// 8-byte little-endian header length, the header, then the data.
static size_t build(unsigned char *out, const char *header, const void *data, size_t dlen) {
    size_t hl = strlen(header);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(out + 8, header, hl);
    if (dlen) memcpy(out + 8 + hl, data, dlen);
    return 8 + hl + dlen;
}

Test(safetensors, encode_writes_the_layout_byte_for_byte) {
    const double a[3] = {1.5, -2.0, 0.25};
    const int32_t b[2][2] = {{1, 2}, {3, -4}};
    StTensor t[2] = {{.name = "a", .dtype = ST_F64, .ndim = 1, .shape = {3}, .data = a},
                     {.name = "layer0.b", .dtype = ST_I32, .ndim = 2, .shape = {2, 2}, .data = b}};
    const char *meta[2] = {"k", "v"};
    char err[256];
    size_t len = 0;
    unsigned char *buf = safetensors_encode(t, 2, meta, 1, &len, err, sizeof err);
    cr_assert(buf, "%s", err);
    const char *want = "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[0,24]},"
                       "\"layer0.b\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[24,40]}}";
    size_t hl = strlen(want), hpad = (hl + 7) / 8 * 8;
    cr_assert_eq(len, 8 + hpad + 40);
    uint64_t got_hl = 0;
    for (int i = 0; i < 8; i++) got_hl |= (uint64_t)buf[i] << (8 * i);
    cr_expect_eq(got_hl, hpad, "header length %llu, want %zu (padded to 8)", (unsigned long long)got_hl, hpad);
    cr_expect(!memcmp(buf + 8, want, hl), "header:\n%.*s", (int)hl, buf + 8);
    for (size_t i = hl; i < hpad; i++) cr_expect_eq(buf[8 + i], ' ', "padding byte %zu", i);
    // 1.5 is 0x3FF8000000000000, little-endian
    const unsigned char one_half[8] = {0, 0, 0, 0, 0, 0, 0xF8, 0x3F};
    cr_expect(!memcmp(buf + 8 + hpad, one_half, 8), "the first double is not 1.5 little-endian");
    const unsigned char minus4[4] = {0xFC, 0xFF, 0xFF, 0xFF};
    cr_expect(!memcmp(buf + 8 + hpad + 36, minus4, 4), "the last int32 is not -4 little-endian");
    free(buf);
    // names must be distinct and not the metadata key
    StTensor dup[2] = {t[0], t[0]};
    cr_expect_null(safetensors_encode(dup, 2, NULL, 0, &len, err, sizeof err));
    cr_expect(strstr(err, "'a' is reserved or repeated"), "%s", err);
}

Test(safetensors, decode_reads_hand_built_bytes) {
    // an F32 (2,) at [8,16) and an F64 (1,) at [0,8), listed out of order; an
    // unaligned data start (the header is not padded)
    const char *h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                    "\"__metadata__\":{\"format\":\"pt\"},\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}";
    unsigned char data[16];
    double x = -3.75;
    float w[2] = {0.5f, 1e-3f};
    memcpy(data, &x, 8);
    memcpy(data + 8, w, 8);
    unsigned char buf[512];
    size_t len = build(buf, h, data, sizeof data);
    StFile f;
    char err[256];
    cr_assert_eq(safetensors_decode(buf, len, &f, err, sizeof err), 0, "%s", err);
    cr_assert_eq(f.n, 2);
    cr_expect_str_eq(f.t[0].name, "x", "sorted by offset");
    const StTensor *tw = st_find(&f, "w");
    cr_assert(tw);
    cr_expect_eq(tw->ndim, 1);
    cr_expect_eq(tw->shape[0], 2);
    double out[2];
    cr_assert_eq(st_read_f64(tw, out), 0);
    cr_expect_eq(out[0], 0.5);
    cr_expect_eq(out[1], (double)1e-3f);
    cr_assert_eq(st_read_f64(st_find(&f, "x"), out), 0);
    cr_expect_eq(out[0], -3.75);
    int ii;
    cr_expect_eq(st_read_i32(tw, &ii), -1, "an F32 tensor is not read as I32");
    char d[64];
    st_describe(tw, d, sizeof d);
    cr_expect_str_eq(d, "F32 [2]");
    cr_expect_null(st_find(&f, "__metadata__"));
    st_file_free(&f);
}

Test(safetensors, encode_then_decode_round_trips) {
    double a[6] = {1, 2, 3, 4, 5, 6};
    int32_t n[1] = {7};
    StTensor t[3] = {{.name = "m", .dtype = ST_F64, .ndim = 2, .shape = {2, 3}, .data = a},
                     {.name = "n", .dtype = ST_I32, .ndim = 1, .shape = {1}, .data = n},
                     {.name = "empty", .dtype = ST_F64, .ndim = 2, .shape = {0, 3}, .data = NULL}};
    char err[256];
    size_t len;
    unsigned char *buf = safetensors_encode(t, 3, NULL, 0, &len, err, sizeof err);
    cr_assert(buf, "%s", err);
    StFile f;
    cr_assert_eq(safetensors_decode(buf, len, &f, err, sizeof err), 0, "%s", err);
    cr_assert_eq(f.n, 3);
    double back[6];
    cr_assert_eq(st_read_f64(st_find(&f, "m"), back), 0);
    cr_expect(!memcmp(a, back, sizeof a));
    int nn;
    cr_assert_eq(st_read_i32(st_find(&f, "n"), &nn), 0);
    cr_expect_eq(nn, 7);
    cr_expect_eq(st_numel(st_find(&f, "empty")), 0);
    st_file_free(&f);
    free(buf);
}

static void expect_refused(const unsigned char *buf, size_t len, const char *needle) {
    StFile f;
    char err[256] = "";
    cr_expect_eq(safetensors_decode(buf, len, &f, err, sizeof err), -1, "accepted, want '%s'", needle);
    cr_expect(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
    cr_expect(!strncmp(err, "safetensors: ", 13), "message '%s' does not say what was read", err);
    cr_expect_eq(f.n, 0);
}

static void expect_header_refused(const char *header, size_t dlen, const char *needle) {
    unsigned char buf[1024], data[64] = {0};
    cr_assert(dlen <= sizeof data);
    expect_refused(buf, build(buf, header, data, dlen), needle);
}

Test(safetensors, malformed_short_and_overlapping_headers_are_refused) {
    unsigned char buf[64] = {5, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    expect_refused(buf, 5, "shorter than the 8-byte header length");
    expect_refused(buf, 10, "header length 5 is more than the 2 bytes after it");
    buf[0] = 0xff, buf[7] = 0xff;
    expect_refused(buf, 10, "is more than the 2 bytes");
    expect_header_refused("[1,2]", 0, "does not start with '{'");
    expect_header_refused("{\"a\":", 0, "not a JSON object");
    expect_header_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[1]}}", 8, "lacks a dtype, a shape or data_offsets");
    expect_header_refused("{\"a\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2, "dtype BF16");
    expect_header_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[-1],\"data_offsets\":[0,8]}}", 8, "dimension 0");
    expect_header_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8, "dimension 0");
    expect_header_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,8]}}", 8,
                          "5 dimensions");
    expect_header_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                          "hold 8 bytes, its dtype and shape need 16");
    expect_header_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,0]}}", 8, "begin <= end");
    expect_header_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8,
                          "past the 8 data bytes (short file?)");
    expect_header_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
                          "\"b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,16]}}", 16,
                          "'b' overlaps the tensor before it");
    expect_header_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,16]}}", 16,
                          "a hole of 8 bytes before tensor 'a'");
    expect_header_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 16,
                          "8 bytes after the last tensor");
    expect_header_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                          "\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,16]}}", 16, "'a' appears twice");
    expect_header_refused("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ 'k' is not a string");
}
