// libFuzzer target: the dataset loader and tokenizer on arbitrary bytes.
// Every accepted text must give documents whose tokens are in the vocabulary.
#include <stdint.h>
#include <stdlib.h>

#include "common/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Dataset d;
    char err[512];
    if (dataset_from_text(&d, "fuzz.txt", (const char *)data, size, err, sizeof err) == 0) {
        if (d.n_docs < 1 || d.vocab_size != d.n_chars + 1) abort();
        for (int i = 0; i < d.n_docs; i++) {
            int len;
            const int *tok = dataset_doc(&d, i, &len);
            if (len < 1) abort();
            for (int j = 0; j < len; j++)
                if (tok[j] < 0 || tok[j] >= d.n_chars) abort();
        }
        for (int i = 1; i < d.n_chars; i++)
            if (d.vocab[i - 1] >= d.vocab[i]) abort();
        dataset_free(&d);
    }
    return 0;
}
