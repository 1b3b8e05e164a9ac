// fuzz_tokenizer.c: libFuzzer harness for the character tokenizer (tokenizer.c).
//
// Each input is used three ways:
//   1. as a text: build its vocabulary, encode it, decode the ids, and require
//      the exact bytes back (decode(encode(x)) == x), with every id in range and
//      every symbol looking up to its own id;
//   2. as a list of u32 symbols (little-endian, the trailing 0..3 bytes dropped)
//      for tokenizer_from_symbols; a list it accepts must be a valid vocabulary,
//      and the input text encodes under it exactly when every symbol is in it;
//   3. as symbols for tokenizer_describe, with buffers of several sizes.
// Any broken property aborts, so libFuzzer saves the input.
//
// Build flag: -DFUZZ_HAVE_RUN_H when run.h declares encode_prompt; it is then
// fuzzed with the vocabulary of part 2.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#ifdef FUZZ_HAVE_RUN_H
#include "run.h"
#endif

// ----------------------------------------------------------------------------
// Checks

static void fail(const char* what) {
    fprintf(stderr, "fuzz_tokenizer: invariant broken: %s\n", what);
    abort();
}

// A vocabulary must be strictly ascending valid symbols whose ids look up back.
static void check_vocab(const Tokenizer* tk) {
    for (int i = 0; i < tk->size; i++) {
        uint32_t s = tk->symbols[i];
        if (s >= TOKEN_SYMBOL_LIMIT || (s >= 0xD800 && s <= 0xDFFF) ||
            (s > 0x10FFFF && s < TOKEN_RAW_BASE)) {
            fail("vocabulary holds an invalid symbol");
        }
        if (i > 0 && s <= tk->symbols[i - 1]) {
            fail("vocabulary is not strictly ascending");
        }
        if (tokenizer_lookup(tk, s) != i) {
            fail("symbol does not look up to its own id");
        }
    }
}

// Display bytes must be well-formed UTF-8 without raw-byte symbols.
static void check_display(const Tokenizer* tk) {
    for (int i = 0; i < tk->size; i++) {
        unsigned char buf[4];
        int m = tokenizer_token_utf8(tk, i, buf);
        uint32_t symbol;
        if (m < 1 || m > 4 || utf8_next(buf, (size_t)m, &symbol) != (size_t)m ||
            symbol >= TOKEN_RAW_BASE) {
            fail("tokenizer_token_utf8 gave bytes that are not one UTF-8 character");
        }
    }
    unsigned char buf[4];
    if (tokenizer_token_utf8(tk, -1, buf) != -1 ||
        tokenizer_token_utf8(tk, tk->size, buf) != -1 ||
        tokenizer_token_bytes(tk, tk->size, buf) != -1) {
        fail("an id outside 0 .. V-1 was accepted");
    }
}

// Encodes text with tk; when every symbol is known, the ids must decode to the
// exact bytes. Returns the encode result.
static long round_trip(const Tokenizer* tk, const unsigned char* text, size_t n) {
    int* ids = malloc((n > 0 ? n : 1) * sizeof(int));
    if (ids == NULL) {
        return -1;
    }
    size_t bad_offset = (size_t)-1;
    uint32_t bad_symbol = 0;
    long count = tokenizer_encode(tk, text, n, ids, &bad_offset, &bad_symbol);

    // a failure names a real character of the text that the vocabulary lacks
    if (count < 0) {
        uint32_t symbol;
        if (bad_offset >= n || utf8_next(text + bad_offset, n - bad_offset, &symbol) == 0 ||
            symbol != bad_symbol || tokenizer_lookup(tk, bad_symbol) >= 0) {
            fail("encode failure with a wrong offset or symbol");
        }
        free(ids);
        return count;
    }

    // success: ids in range, at most one per byte, and the exact bytes back
    if ((size_t)count > n) {
        fail("more tokens than bytes");
    }
    for (long i = 0; i < count; i++) {
        if (ids[i] < 0 || ids[i] >= tk->size) {
            fail("encode produced an id outside the vocabulary");
        }
    }
    size_t len = 0;
    unsigned char* back = tokenizer_decode(tk, ids, (size_t)count, &len);
    if (back == NULL || len != n || (n > 0 && memcmp(back, text, n) != 0) ||
        back[len] != 0) {
        fail("decode(encode(x)) != x");
    }
    free(back);
    free(ids);
    return count;
}

// Decodes ids made from the input bytes, some outside 0 .. V-1: a decode with a
// bad id must fail cleanly, one without must give one token's bytes per id.
static void decode_arbitrary(const Tokenizer* tk, const unsigned char* data, size_t n) {
    size_t count = n < 256 ? n : 256;
    int ids[256];
    int any_bad = 0;
    for (size_t i = 0; i < count; i++) {
        ids[i] = (int)data[i] - 8; // -8 .. 247: below, inside and above the range
        any_bad |= ids[i] < 0 || ids[i] >= tk->size;
    }
    size_t len = 1;
    unsigned char* out = tokenizer_decode(tk, ids, count, &len);
    if (any_bad) {
        if (out != NULL || len != 0) {
            fail("decode accepted an id outside the vocabulary");
        }
        return;
    }
    if (out == NULL || len > 4 * count || out[len] != 0) {
        fail("decode of valid ids failed or overran");
    }
    free(out);
}

// ----------------------------------------------------------------------------
// The three parts

static void fuzz_text(const unsigned char* data, size_t size) {
    Tokenizer tk;
    if (tokenizer_build(&tk, data, size) != 0) {
        if (size != 0 || tk.size != 0 || tk.symbols != NULL) {
            fail("tokenizer_build failed on a non-empty text or left symbols");
        }
        return;
    }
    if (tk.size < 1 || (size_t)tk.size > size) {
        fail("vocabulary size outside 1 .. n");
    }
    check_vocab(&tk);
    check_display(&tk);
    if (round_trip(&tk, data, size) < 0) {
        fail("a text does not encode with its own vocabulary");
    }
    decode_arbitrary(&tk, data, size);
    tokenizer_free(&tk);
    if (tk.size != 0 || tk.symbols != NULL) {
        fail("tokenizer_free left symbols");
    }
}

static void fuzz_symbols(const unsigned char* data, size_t size) {
    // the input as little-endian u32s
    int n = (int)(size / 4);
    uint32_t* symbols = malloc((n > 0 ? (size_t)n : 1) * sizeof(uint32_t));
    if (symbols == NULL) {
        return;
    }
    for (int i = 0; i < n; i++) {
        const unsigned char* p = data + 4 * (size_t)i;
        symbols[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
    }

    // accepted lists are valid vocabularies, copied rather than borrowed
    Tokenizer tk;
    char err[160];
    err[0] = '\0';
    if (tokenizer_from_symbols(&tk, symbols, n, err, sizeof(err)) != 0) {
        if (tk.size != 0 || tk.symbols != NULL || err[0] == '\0' ||
            memchr(err, '\0', sizeof(err)) == NULL) {
            fail("rejected symbol list without a message or with symbols left");
        }
        free(symbols);
        return;
    }
    if (tk.size != n || tk.symbols == symbols) {
        fail("tokenizer_from_symbols kept the wrong size or borrowed the list");
    }
    free(symbols);
    check_vocab(&tk);
    check_display(&tk);

    // the input text under this foreign vocabulary, and arbitrary ids
    round_trip(&tk, data, size);
    decode_arbitrary(&tk, data, size);

#ifdef FUZZ_HAVE_RUN_H
    int* ids = malloc((size + 1) * sizeof(int));
    if (ids != NULL) {
        char msg[256];
        msg[0] = '\0';
        long got = encode_prompt(&tk, data, size, ids, msg, sizeof(msg));
        if (got < 0 && msg[0] == '\0') {
            fail("encode_prompt failed without a message");
        }
        free(ids);
    }
#endif
    tokenizer_free(&tk);
}

static void fuzz_describe(const unsigned char* data, size_t size) {
    static const size_t lens[] = {1, 2, 5, 12, 64};
    char buf[64 + 8];
    size_t count = size / 4 < 64 ? size / 4 : 64;
    for (size_t i = 0; i < count; i++) {
        const unsigned char* p = data + 4 * i;
        uint32_t symbol = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                          (uint32_t)p[3] << 24;

        // two symbols in four folded near the symbol range and the raw-byte base
        if (i % 4 == 1) {
            symbol %= TOKEN_SYMBOL_LIMIT + 16;
        } else if (i % 4 == 2) {
            symbol = TOKEN_RAW_BASE - 128 + symbol % 512;
        }

        // the guard bytes after len must stay untouched
        size_t len = lens[i % 5];
        memset(buf, 'Z', sizeof(buf));
        tokenizer_describe(symbol, buf, len);
        if (memchr(buf, '\0', len) == NULL || buf[len] != 'Z') {
            fail("tokenizer_describe overran or did not terminate");
        }
    }
    memset(buf, 'Z', sizeof(buf));
    tokenizer_describe(0x41, buf, 0); // len 0: nothing may be written
    if (buf[0] != 'Z') {
        fail("tokenizer_describe wrote into a buffer of length 0");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz_text(data, size);
    fuzz_symbols(data, size);
    fuzz_describe(data, size);
    return 0;
}
