// The dataset and tokenizer against the original's reading of a file:
// [l.strip() for l in open(f).read().strip().split('\n') if l.strip()]
// (expected values checked with CPython 3.11).
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/dataset.h"
#include "common/model.h"
#include "helpers.h"

static Dataset load_text(const char *text, size_t n) {
    Dataset d;
    char err[512];
    int rc = dataset_from_text(&d, "mem.txt", text, n, err, sizeof err);
    cr_assert_eq(rc, 0, "unexpected error: %s", err);
    return d;
}

// Document i as UTF-8 text.
static void doc_text(const Dataset *d, int i, char *out, size_t cap) {
    int len;
    const int *tok = dataset_doc(d, i, &len);
    size_t k = 0;
    for (int j = 0; j < len; j++) {
        char u[4];
        int m = utf8_encode(d->vocab[tok[j]], u);
        cr_assert_lt(k + (size_t)m, cap);
        memcpy(out + k, u, (size_t)m);
        k += (size_t)m;
    }
    out[k] = '\0';
}

static void expect_docs(const char *text, size_t n, const char *const *want, int n_want) {
    Dataset d = load_text(text, n);
    cr_assert_eq(d.n_docs, n_want, "documents: got %d, want %d", d.n_docs, n_want);
    for (int i = 0; i < n_want; i++) {
        char s[256];
        doc_text(&d, i, s, sizeof s);
        cr_expect_str_eq(s, want[i], "doc %d", i);
    }
    dataset_free(&d);
}

#define DOCS(text, ...)                                                                    \
    do {                                                                                   \
        static const char *const w[] = {__VA_ARGS__};                                      \
        expect_docs(text, sizeof(text) - 1, w, (int)(sizeof w / sizeof w[0]));              \
    } while (0)

Test(dataset, crlf_line_ends) { DOCS("anna\r\nbob\r\n", "anna", "bob"); }
Test(dataset, lone_cr_line_ends) { DOCS("anna\rbob\rcy", "anna", "bob", "cy"); }
Test(dataset, mixed_cr_and_crlf) { DOCS("a\r\r\nb", "a", "b"); }
Test(dataset, empty_lines_are_dropped) { DOCS("\n\n anna\n\n\nbob\n\n", "anna", "bob"); }
Test(dataset, no_final_newline) { DOCS("anna\nbob", "anna", "bob"); }

Test(dataset, python_strip_removes_tabs_and_unicode_spaces) {
    // \t, U+00A0, U+3000, U+2028, \x1c and \x1f are all whitespace to str.strip()
    DOCS("\tanna \xc2\xa0\n\xe3\x80\x80" "bob\xe2\x80\xa8\n \x1c cy\x1f\n", "anna", "bob", "cy");
    DOCS("\xc2\x85" "anna\x0b\x0c\n", "anna");
}

Test(dataset, inner_unicode_separators_stay) {
    // only '\n' splits; U+2028 inside a line is a character of the document
    Dataset d = load_text("b\xe2\x80\xa8ob\n", 7);
    cr_assert_eq(d.n_docs, 1);
    cr_expect_eq(d.n_chars, 3);
    cr_expect_eq(d.vocab[2], 0x2028u);
    dataset_free(&d);
}

Test(dataset, non_ascii_names_and_sorted_vocabulary) {
    const char text[] = "Zo\xc3\xab\nJos\xc3\xa9\n\xe6\x97\xa5\xe6\x9c\xac\n";
    Dataset d = load_text(text, sizeof text - 1);
    const uint32_t want[] = {0x4a, 0x5a, 0x6f, 0x73, 0xe9, 0xeb, 0x65e5, 0x672c};
    cr_assert_eq(d.n_chars, 8);
    for (int i = 0; i < 8; i++) cr_expect_eq(d.vocab[i], want[i], "vocab[%d]", i);
    cr_expect_eq(d.bos, 8);
    cr_expect_eq(d.vocab_size, 9);
    char s[64];
    doc_text(&d, 2, s, sizeof s);
    cr_expect_str_eq(s, "\xe6\x97\xa5\xe6\x9c\xac");
    dataset_free(&d);
}

Test(dataset, byte_order_mark_is_a_character) {
    // Python's utf-8 codec keeps U+FEFF and str.strip() does not remove it
    Dataset d = load_text("\xef\xbb\xbf" "anna\nbob", 11);
    cr_assert_eq(d.n_docs, 2);
    cr_expect_eq(d.vocab[d.n_chars - 1], 0xfeffu);
    dataset_free(&d);
}

static void expect_error(const char *text, size_t n, const char *needle) {
    Dataset d;
    char err[512] = "";
    cr_assert_eq(dataset_from_text(&d, "bad.txt", text, n, err, sizeof err), -1);
    cr_expect(strstr(err, "bad.txt") != NULL, "message names the file: %s", err);
    cr_expect(strstr(err, needle) != NULL, "message has '%s': %s", needle, err);
}

Test(dataset, invalid_utf8_names_the_line) {
    expect_error("anna\nbo\xff" "b\n", 8, "line 2");
    expect_error("anna\nbob\n\xc0\x80\n", 11, "line 3");          // overlong NUL
    expect_error("\xed\xa0\x80\n", 4, "line 1");                    // a surrogate
    expect_error("ok\n\xf4\x90\x80\x80\n", 8, "line 2");            // above U+10FFFF
    expect_error("ok\nabc\xe2\x82", 8, "line 2");                   // truncated at the end
    expect_error("ok\n\x80\n", 5, "invalid UTF-8");                 // stray continuation
}

Test(dataset, no_documents_is_an_error) {
    expect_error("", 0, "no documents");
    expect_error(" \n\t\r\n\xe3\x80\x80\n", 9, "no documents");
}

Test(dataset, missing_file_is_an_error) {
    Dataset d;
    char err[512];
    cr_assert_eq(dataset_load(&d, "/nonexistent/names.txt", err, sizeof err), -1);
    cr_expect(strstr(err, "/nonexistent/names.txt") != NULL, "%s", err);
    cr_expect(strstr(err, "make data") != NULL, "%s", err);
    cr_assert_eq(dataset_load(&d, th_temp_dir(), err, sizeof err), -1, "a directory is refused");
}

Test(dataset, file_and_memory_agree_and_hash) {
    const char text[] = "anna\nbob\n";
    const char *p = th_write_temp("two.txt", text, sizeof text - 1);
    Dataset d;
    char err[256];
    cr_assert_eq(dataset_load(&d, p, err, sizeof err), 0, "%s", err);
    cr_expect_eq(d.n_docs, 2);
    cr_expect_eq(d.n_bytes, 9);
    // sha256("anna\nbob\n"), from sha256sum
    cr_expect_str_eq(d.sha256, "f2d79fceb11407f5d6bfeb35a61b6f5847cdab273d4b64613b2afe6bda117fd7");
    dataset_free(&d);
}

Test(dataset, batches_crop_long_documents_and_wrap) {
    Dataset d = load_text("abcdefghij\nxy\n", 14);
    Batch b = {0};
    // step 0, B = 3, block_size 4: docs 0, 1, 0 (wrap around)
    batch_make(&b, &d, 0, 3, 4);
    cr_expect_eq(b.n[0], 4, "a 10-character document is cropped to block_size positions");
    cr_expect_eq(b.n[1], 3, "xy: [BOS] x y [BOS] gives 3 positions");
    cr_expect_eq(b.doc[2], 0);
    cr_expect_eq(b.T, 4);
    const int *row0 = b.tokens, *row1 = b.tokens + (b.T + 1);
    cr_expect_eq(row0[0], d.bos);
    cr_expect_eq(row0[1], 0);   // 'a'
    cr_expect_eq(row0[4], 3);   // 'd': the target of the last trained position
    cr_expect_eq(row1[3], d.bos);
    cr_expect_eq(row1[4], -1, "padding past the document");
    // step 1, B = 3: docs 3 % 2 = 1, 0, 1
    batch_make(&b, &d, 1, 3, 4);
    cr_expect_eq(b.doc[0], 1);
    cr_expect_eq(b.doc[1], 0);
    batch_free(&b);
    dataset_free(&d);
}

Test(dataset, lines_over_the_limit_and_huge_texts_are_refused) {
    size_t n = DATASET_MAX_LINE + 2;
    char *text = malloc(n + 6);
    memcpy(text, "anna\n", 5);
    memset(text + 5, 'x', n);
    Dataset d;
    char err[512];
    cr_expect_eq(dataset_from_text(&d, "long.txt", text, n + 5, err, sizeof err), -1);
    cr_expect(strstr(err, "long.txt: line 2 is longer than"), "%s", err);
    // exactly at the limit is fine
    cr_expect_eq(dataset_from_text(&d, "ok.txt", text, DATASET_MAX_LINE + 5, err, sizeof err), 0, "%s", err);
    cr_expect_eq(d.n_docs, 2);
    dataset_free(&d);
    free(text);
}

// The vocabulary from the whole range of Unicode, sorted, including
// characters beyond the BMP; whitespace only where it is inside a document.
Test(dataset, vocabulary_spans_unicode_and_ignores_stripped_whitespace) {
    const char text[] = " b\xf0\x9f\x98\x80 a\xc3\xa9 \n\xc2\x85z\xe2\x80\xa8\r\n";
    Dataset d = load_text(text, sizeof text - 1);
    const uint32_t want[] = {0x20, 'a', 'b', 'z', 0xe9, 0x1f600};
    cr_assert_eq(d.n_chars, 6, "vocab size %d", d.n_chars);
    for (int i = 0; i < 6; i++) cr_expect_eq(d.vocab[i], want[i], "vocab[%d] = U+%04X", i, d.vocab[i]);
    cr_expect_eq(d.n_docs, 2);
    dataset_free(&d);
}
