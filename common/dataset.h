// The dataset and tokenizer, exactly as the original reads them:
//   docs = [l.strip() for l in open(path).read().strip().split('\n') if l.strip()]
// (UTF-8, universal newlines, Python's Unicode strip), then random.shuffle(docs);
// the vocabulary is the sorted set of code points; BOS = len(vocab).
#ifndef COMMON_DATASET_H
#define COMMON_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "pyrandom.h"

// What the loader accepts (larger inputs are refused with a message): the
// file, and one line (a document longer than block_size is cropped anyway).
#define DATASET_MAX_BYTES (64 << 20)
#define DATASET_MAX_LINE (1 << 20)

typedef struct {
    char *path;
    size_t n_bytes;          // size of the file
    char sha256[65];         // of the file's bytes
    int n_docs;
    int *order;              // (n_docs) document i (after shuffling) is source doc order[i]
    int *doc_start, *doc_len;// per source doc: its slice of `tokens`
    int *tokens;             // token ids of all source docs, back to back
    int n_chars;             // distinct characters
    uint32_t *vocab;         // (n_chars) code points, sorted
    int bos;                 // = n_chars
    int vocab_size;          // = n_chars + 1
} Dataset;

// Read and tokenize `path` (no shuffle) in memory linear in its size (the
// file, 4 bytes a character, and a 136 KiB bitmap for the vocabulary).
// Returns 0, or -1 with a message in err that names the file (and the line,
// for invalid UTF-8 or a line over DATASET_MAX_LINE).
int dataset_load(Dataset *d, const char *path, char *err, size_t errlen);
// Build a dataset from text already in memory (tests); `name` is used in messages.
int dataset_from_text(Dataset *d, const char *name, const char *text, size_t n, char *err,
                      size_t errlen);
void dataset_free(Dataset *d);
// random.shuffle(docs)
void dataset_shuffle(Dataset *d, PyRandom *r);
// Token ids of document i (after shuffling).
const int *dataset_doc(const Dataset *d, int i, int *len);
// True if `cp` is whitespace for Python's str.strip().
int py_isspace(uint32_t cp);
// UTF-8 encode a code point; returns bytes written (1..4) into out[4].
int utf8_encode(uint32_t cp, char out[4]);

#endif
