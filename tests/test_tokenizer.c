// test_tokenizer.c: tests for the UTF-8 tokenizer and read_file (suite "tokenizer").
//
// Round trips of ASCII, multi-byte and malformed UTF-8, NUL bytes and CR LF; the
// vocabulary of tinyshakespeare; lookup failures; validation of stored symbol
// lists; display output; file errors; and 1000 random byte strings.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tokenizer.h"

// ----------------------------------------------------------------------------
// Helpers

// Builds a tokenizer from text, encodes text with it, checks that decoding gives
// the same bytes, and returns the token count. ids (n ints) receives the tokens.
static long round_trip(Tokenizer* tk, const unsigned char* text, size_t n, int* ids)
{
    cr_assert_eq(tokenizer_build(tk, text, n), 0, "build failed on %zu bytes", n);
    size_t bad_offset = 0;
    uint32_t bad_symbol = 0;
    long count = tokenizer_encode(tk, text, n, ids, &bad_offset, &bad_symbol);
    cr_assert_geq(count, 1, "encode failed at offset %zu, symbol 0x%X", bad_offset,
                  (unsigned)bad_symbol);
    cr_assert_leq((size_t)count, n, "more tokens (%ld) than bytes (%zu)", count, n);
    size_t len = 0;
    unsigned char* back = tokenizer_decode(tk, ids, (size_t)count, &len);
    cr_assert_not_null(back);
    cr_assert_eq(len, n, "decoded %zu bytes, expected %zu", len, n);
    cr_assert_eq(memcmp(back, text, n), 0, "decoded bytes differ from the input");
    cr_assert_eq(back[len], 0, "decoded buffer is not NUL-terminated");
    free(back);
    return count;
}

// Checks that text encodes to exactly the symbols expected[0 .. count-1] and
// round-trips byte for byte.
static void check_symbols(const char* what, const unsigned char* text, size_t n,
                          const uint32_t* expected, long count)
{
    Tokenizer tk;
    int ids[64];
    cr_assert_leq(n, sizeof(ids) / sizeof(ids[0]));
    long got = round_trip(&tk, text, n, ids);
    cr_assert_eq(got, count, "%s: %ld tokens, expected %ld", what, got, count);
    for (long i = 0; i < count; i++) {
        uint32_t got_symbol = tk.symbols[ids[i]];
        cr_assert_eq(got_symbol, expected[i], "%s: token %ld is 0x%X, expected 0x%X", what,
                     i, (unsigned)got_symbol, (unsigned)expected[i]);
    }
    tokenizer_free(&tk);
}

#define RAW(b) (TOKEN_RAW_BASE + (uint32_t)(b))

// Reads tinyshakespeare from the repository root or from tests/.
static unsigned char* read_shakespeare(size_t* n)
{
    char err[256];
    unsigned char* text = read_file("data/tinyshakespeare.txt", n, err, sizeof(err));
    if (text == NULL) text = read_file("../data/tinyshakespeare.txt", n, err, sizeof(err));
    cr_assert_not_null(text, "%s (run the tests from the repository root)", err);
    return text;
}

// ----------------------------------------------------------------------------
// Round trips

Test(tokenizer, ascii_round_trip)
{
    const char* text = "Hello, world!\n";
    Tokenizer tk;
    int ids[32];
    long count = round_trip(&tk, (const unsigned char*)text, strlen(text), ids);
    cr_assert_eq(count, 14);

    // distinct characters: \n ' ' ! , H d e l o r w
    cr_assert_eq(tk.size, 11);
    cr_assert_eq(tk.symbols[0], '\n');
    cr_assert_eq(tk.symbols[1], ' ');
    cr_assert_eq(tk.symbols[tk.size - 1], 'w');
    cr_assert_eq(ids[0], tokenizer_lookup(&tk, 'H'));
    cr_assert_eq(ids[2], ids[3], "both l's share one id");
    tokenizer_free(&tk);
}

Test(tokenizer, multibyte_characters_are_one_token)
{
    const uint32_t e_acute[] = {0xE9};
    const uint32_t euro[] = {0x20AC};
    const uint32_t grin[] = {0x1F600};
    check_symbols("2-byte", (const unsigned char*)"\xC3\xA9", 2, e_acute, 1);
    check_symbols("3-byte", (const unsigned char*)"\xE2\x82\xAC", 3, euro, 1);
    check_symbols("4-byte", (const unsigned char*)"\xF0\x9F\x98\x80", 4, grin, 1);

    const uint32_t mixed[] = {'a', 0xE9, 0x20AC, 0x1F600, 'z'};
    const char* text = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z";
    check_symbols("mixed", (const unsigned char*)text, 11, mixed, 5);
}

Test(tokenizer, boundary_code_points_decode)
{
    // the first and last code point of each length, and around the surrogates
    struct { const char* bytes; size_t len; uint32_t cp; } cases[] = {
        {"\x7F", 1, 0x7F},
        {"\xC2\x80", 2, 0x80},
        {"\xDF\xBF", 2, 0x7FF},
        {"\xE0\xA0\x80", 3, 0x800},
        {"\xED\x9F\xBF", 3, 0xD7FF},
        {"\xEE\x80\x80", 3, 0xE000},
        {"\xEF\xBF\xBF", 3, 0xFFFF},
        {"\xF0\x90\x80\x80", 4, 0x10000},
        {"\xF4\x8F\xBF\xBF", 4, 0x10FFFF},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t symbol = 0;
        const unsigned char* bytes = (const unsigned char*)cases[i].bytes;
        size_t used = utf8_next(bytes, cases[i].len, &symbol);
        unsigned cp = cases[i].cp;
        cr_assert_eq(used, cases[i].len, "U+%04X: consumed %zu bytes", cp, used);
        cr_assert_eq(symbol, cp, "decoded 0x%X, expected U+%04X", (unsigned)symbol, cp);
        check_symbols("boundary", bytes, cases[i].len, &cases[i].cp, 1);
    }
}

Test(tokenizer, invalid_bytes_become_raw_tokens)
{
    // Latin-1 e acute
    const uint32_t latin1[] = {'c', 'a', 'f', RAW(0xE9)};
    check_symbols("latin-1", (const unsigned char*)"caf\xE9", 4, latin1, 4);

    // a lone continuation byte
    const uint32_t lone[] = {RAW(0x80), 'x'};
    check_symbols("lone continuation", (const unsigned char*)"\x80x", 2, lone, 2);

    // overlong forms of '/' (2 bytes), of U+0000 (3 bytes) and of U+FFFF (4 bytes)
    const uint32_t over2[] = {RAW(0xC0), RAW(0xAF)};
    check_symbols("overlong C0 AF", (const unsigned char*)"\xC0\xAF", 2, over2, 2);
    const uint32_t over3[] = {RAW(0xE0), RAW(0x80), RAW(0x80)};
    check_symbols("overlong E0 80 80", (const unsigned char*)"\xE0\x80\x80", 3, over3, 3);
    const uint32_t over4[] = {RAW(0xF0), RAW(0x8F), RAW(0xBF), RAW(0xBF)};
    check_symbols("overlong F0 8F BF BF", (const unsigned char*)"\xF0\x8F\xBF\xBF", 4,
                  over4, 4);

    // an encoded surrogate, U+D800
    const uint32_t surrogate[] = {RAW(0xED), RAW(0xA0), RAW(0x80)};
    check_symbols("surrogate", (const unsigned char*)"\xED\xA0\x80", 3, surrogate, 3);

    // beyond U+10FFFF, and lead bytes F5..FF that never occur
    const uint32_t beyond[] = {RAW(0xF4), RAW(0x90), RAW(0x80), RAW(0x80)};
    check_symbols("U+110000", (const unsigned char*)"\xF4\x90\x80\x80", 4, beyond, 4);
    const uint32_t f5[] = {RAW(0xF5), RAW(0x80), RAW(0x80), RAW(0x80),
                           RAW(0xFF), RAW(0xFE)};
    check_symbols("F5 and FF", (const unsigned char*)"\xF5\x80\x80\x80\xFF\xFE", 6, f5, 6);

    // a sequence cut off at the end of the buffer, and one broken by ASCII
    const uint32_t cut[] = {'a', RAW(0xE2), RAW(0x82)};
    check_symbols("truncated at end", (const unsigned char*)"a\xE2\x82", 3, cut, 3);
    const uint32_t broken[] = {RAW(0xE2), RAW(0x82), 'A', 0x20AC};
    check_symbols("bad continuation", (const unsigned char*)"\xE2\x82" "A\xE2\x82\xAC", 6,
                  broken, 4);

    // utf8_next consumes a single byte for each of them
    uint32_t symbol = 0;
    cr_assert_eq(utf8_next((const unsigned char*)"\xE2\x82", 2, &symbol), 1);
    cr_assert_eq(symbol, RAW(0xE2));
    cr_assert_eq(utf8_next((const unsigned char*)"\xC3", 1, &symbol), 1);
    cr_assert_eq(symbol, RAW(0xC3));
    cr_assert_eq(utf8_next((const unsigned char*)"", 0, &symbol), 0);
}

Test(tokenizer, nul_bytes_are_tokens)
{
    const unsigned char text[] = {'a', 0, 'b', 0, 0};
    const uint32_t expected[] = {'a', 0, 'b', 0, 0};
    check_symbols("NUL", text, 5, expected, 5);

    Tokenizer tk;
    int ids[5];
    round_trip(&tk, text, 5, ids);
    cr_assert_eq(tk.size, 3);
    cr_assert_eq(tokenizer_lookup(&tk, 0), 0, "NUL sorts first");
    tokenizer_free(&tk);
}

Test(tokenizer, crlf_is_two_tokens)
{
    const char* text = "a\r\nb\r\n";
    const uint32_t expected[] = {'a', '\r', '\n', 'b', '\r', '\n'};
    check_symbols("CRLF", (const unsigned char*)text, 6, expected, 6);
}

// ----------------------------------------------------------------------------
// Vocabulary

Test(tokenizer, vocabulary_sorted_with_raw_bytes_last)
{
    // b, e acute in Latin-1, a, euro sign, a, lone continuation
    const unsigned char text[] = "b\xE9" "a\xE2\x82\xAC" "a\x80";
    Tokenizer tk;
    cr_assert_eq(tokenizer_build(&tk, text, sizeof(text) - 1), 0);
    const uint32_t expected[] = {'a', 'b', 0x20AC, RAW(0x80), RAW(0xE9)};
    cr_assert_eq(tk.size, 5);
    for (int i = 0; i < tk.size; i++) {
        cr_assert_eq(tk.symbols[i], expected[i], "symbol %d is 0x%X", i,
                     (unsigned)tk.symbols[i]);
        cr_assert_eq(tokenizer_lookup(&tk, expected[i]), i);
    }
    tokenizer_free(&tk);
    cr_assert_eq(tk.size, 0);
    cr_assert_null(tk.symbols);

    // an empty text has no vocabulary
    cr_assert_eq(tokenizer_build(&tk, text, 0), -1);
    cr_assert_eq(tk.size, 0);
}

Test(tokenizer, tinyshakespeare_vocabulary_and_round_trip)
{
    size_t n = 0;
    unsigned char* text = read_shakespeare(&n);
    cr_assert_eq(n, 1115394, "tinyshakespeare has %zu bytes", n);

    // 65 ASCII characters, from '\n' up to 'z'
    Tokenizer tk;
    cr_assert_eq(tokenizer_build(&tk, text, n), 0);
    cr_assert_eq(tk.size, 65, "V = %d", tk.size);
    cr_assert_eq(tk.symbols[0], '\n');
    cr_assert_eq(tk.symbols[1], ' ');
    cr_assert_eq(tk.symbols[64], 'z');
    for (int i = 1; i < tk.size; i++) cr_assert_gt(tk.symbols[i], tk.symbols[i - 1]);

    // every byte is one token, and the file comes back unchanged; the time bound
    // is far above the expected few milliseconds and only catches a slow path
    int* ids = malloc(n * sizeof(int));
    cr_assert_not_null(ids);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long count = tokenizer_encode(&tk, text, n, ids, NULL, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6;
    cr_assert_eq(count, (long)n);
    cr_assert_lt(ms, 250.0, "encoding took %.1f ms", ms);
    size_t len = 0;
    unsigned char* back = tokenizer_decode(&tk, ids, (size_t)count, &len);
    cr_assert_not_null(back);
    cr_assert_eq(len, n);
    cr_assert_eq(memcmp(back, text, n), 0, "decoded tinyshakespeare differs");
    free(back);
    free(ids);
    free(text);
    tokenizer_free(&tk);
}

Test(tokenizer, encode_reports_unknown_symbol)
{
    Tokenizer tk;
    cr_assert_eq(tokenizer_build(&tk, (const unsigned char*)"abc", 3), 0);
    cr_assert_eq(tokenizer_lookup(&tk, 'b'), 1);
    cr_assert_eq(tokenizer_lookup(&tk, 'd'), -1);
    cr_assert_eq(tokenizer_lookup(&tk, 0), -1);
    cr_assert_eq(tokenizer_lookup(&tk, RAW(0xFF)), -1);
    int ids[16];

    // an unknown multi-byte character: offset of its first byte, its code point
    size_t bad_offset = 99;
    uint32_t bad_symbol = 0;
    long count = tokenizer_encode(&tk, (const unsigned char*)"ab\xC3\xA9" "c", 5, ids,
                                  &bad_offset, &bad_symbol);
    cr_assert_eq(count, -1);
    cr_assert_eq(bad_offset, 2);
    cr_assert_eq(bad_symbol, 0xE9);

    // an unknown ASCII character after a multi-byte one is reported by byte offset
    Tokenizer tk2;
    cr_assert_eq(tokenizer_build(&tk2, (const unsigned char*)"\xE2\x82\xAC" "a", 4), 0);
    count = tokenizer_encode(&tk2, (const unsigned char*)"a\xE2\x82\xAC" "b", 5, ids,
                             &bad_offset, &bad_symbol);
    cr_assert_eq(count, -1);
    cr_assert_eq(bad_offset, 4);
    cr_assert_eq(bad_symbol, 'b');
    tokenizer_free(&tk2);

    // an unknown raw byte
    count = tokenizer_encode(&tk, (const unsigned char*)"cab\xFF", 4, ids, &bad_offset,
                             &bad_symbol);
    cr_assert_eq(count, -1);
    cr_assert_eq(bad_offset, 3);
    cr_assert_eq(bad_symbol, RAW(0xFF));

    // known text still encodes, and an empty text gives no tokens
    count = tokenizer_encode(&tk, (const unsigned char*)"cab", 3, ids, NULL, NULL);
    cr_assert_eq(count, 3);
    cr_assert_eq(ids[0], 2);
    cr_assert_eq(ids[1], 0);
    cr_assert_eq(ids[2], 1);
    cr_assert_eq(tokenizer_encode(&tk, (const unsigned char*)"", 0, ids, NULL, NULL), 0);
    tokenizer_free(&tk);
}

Test(tokenizer, from_symbols_validates)
{
    Tokenizer tk;
    char err[256];

    // a good list is copied
    const uint32_t good[] = {'\n', 'a', 0xD7FF, 0xE000, 0x10FFFF, RAW(0x00), RAW(0xFF)};
    cr_assert_eq(tokenizer_from_symbols(&tk, good, 7, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(tk.size, 7);
    cr_assert_neq(tk.symbols, good);
    cr_assert_eq(memcmp(tk.symbols, good, sizeof(good)), 0);
    cr_assert_eq(tokenizer_lookup(&tk, RAW(0xFF)), 6);
    tokenizer_free(&tk);

    // each bad list fails with a message and leaves the tokenizer empty
    struct { const char* what; uint32_t symbols[3]; int n; const char* word; } bad[] = {
        {"unsorted", {'b', 'a', 'c'}, 3, "out of order"},
        {"duplicate", {'a', 'b', 'b'}, 3, "repeated"},
        {"surrogate", {'a', 0xD800, 0xE000}, 3, "0xD800"},
        {"low surrogate", {0xDFFF}, 1, "0xDFFF"},
        {"above raw bytes", {'a', RAW(0x100)}, 2, "0x110100"},
        {"huge", {0xFFFFFFFFu}, 1, "0xFFFFFFFF"},
        {"empty", {'a'}, 0, "empty"},
        {"negative count", {'a'}, -3, "empty"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = 0;
        tk.size = 123;
        int rc = tokenizer_from_symbols(&tk, bad[i].symbols, bad[i].n, err, sizeof(err));
        cr_assert_eq(rc, -1, "%s list accepted", bad[i].what);
        cr_assert_eq(tk.size, 0, "%s: tokenizer not left empty", bad[i].what);
        cr_assert_null(tk.symbols);
        cr_assert_not_null(strstr(err, bad[i].word), "%s: message '%s' lacks '%s'",
                           bad[i].what, err, bad[i].word);
    }

    // a NULL message buffer is allowed
    const uint32_t dup[] = {'a', 'a'};
    cr_assert_eq(tokenizer_from_symbols(&tk, dup, 2, NULL, 0), -1);
}

// ----------------------------------------------------------------------------
// Token bytes and display

Test(tokenizer, token_utf8_is_always_valid)
{
    // every raw byte plus code points of each length
    uint32_t symbols[256 + 5] = {'A', 0xE9, 0x20AC, 0xFFFD, 0x1F600};
    for (int b = 0; b < 256; b++) symbols[5 + b] = RAW(b);
    Tokenizer tk;
    char err[256];
    cr_assert_eq(tokenizer_from_symbols(&tk, symbols, 261, err, sizeof(err)), 0, "%s", err);

    for (int id = 0; id < tk.size; id++) {
        unsigned char buf[4];
        int m = tokenizer_token_utf8(&tk, id, buf);
        cr_assert(m >= 1 && m <= 4, "id %d gave %d bytes", id, m);

        // the bytes are exactly one well-formed character
        uint32_t symbol = 0;
        size_t used = utf8_next(buf, (size_t)m, &symbol);
        cr_assert_eq(used, (size_t)m, "id %d: not one character", id);
        cr_assert_lt(symbol, TOKEN_RAW_BASE, "id %d: invalid UTF-8", id);
        if (tk.symbols[id] >= TOKEN_RAW_BASE) {
            cr_assert_eq(symbol, 0xFFFD, "raw byte id %d not shown as U+FFFD", id);
        } else {
            cr_assert_eq(symbol, tk.symbols[id]);
        }

        // token_bytes gives the exact byte of a raw token
        m = tokenizer_token_bytes(&tk, id, buf);
        if (tk.symbols[id] >= TOKEN_RAW_BASE) {
            cr_assert_eq(m, 1);
            cr_assert_eq(buf[0], tk.symbols[id] - TOKEN_RAW_BASE);
        }
    }
    unsigned char buf[4];
    cr_assert_eq(tokenizer_token_utf8(&tk, 5, buf), 3);
    cr_assert(buf[0] == 0xEF && buf[1] == 0xBF && buf[2] == 0xBD);

    // ids outside the vocabulary are refused
    cr_assert_eq(tokenizer_token_bytes(&tk, -1, buf), -1);
    cr_assert_eq(tokenizer_token_bytes(&tk, tk.size, buf), -1);
    cr_assert_eq(tokenizer_token_utf8(&tk, tk.size, buf), -1);
    int ids[] = {0, tk.size};
    size_t len = 7;
    cr_assert_null(tokenizer_decode(&tk, ids, 2, &len));
    cr_assert_eq(len, 0);
    tokenizer_free(&tk);
}

Test(tokenizer, describe_symbols)
{
    char buf[64];
    tokenizer_describe('e', buf, sizeof(buf));
    cr_assert_str_eq(buf, "'e' (U+0065)");
    tokenizer_describe(0xE9, buf, sizeof(buf));
    cr_assert_str_eq(buf, "'\xC3\xA9' (U+00E9)");
    tokenizer_describe(0x1F600, buf, sizeof(buf));
    cr_assert_str_eq(buf, "'\xF0\x9F\x98\x80' (U+1F600)");
    tokenizer_describe('\n', buf, sizeof(buf));
    cr_assert_str_eq(buf, "'\\n' (U+000A)");
    tokenizer_describe(0, buf, sizeof(buf));
    cr_assert_str_eq(buf, "'\\0' (U+0000)");
    tokenizer_describe(0x01, buf, sizeof(buf));
    cr_assert_str_eq(buf, "control character U+0001");
    tokenizer_describe(0x85, buf, sizeof(buf));
    cr_assert_str_eq(buf, "control character U+0085");
    tokenizer_describe(RAW(0xE9), buf, sizeof(buf));
    cr_assert_str_eq(buf, "byte 0xE9 (not valid UTF-8)");
    tokenizer_describe(0xD800, buf, sizeof(buf));
    cr_assert_str_eq(buf, "invalid symbol 0xD800");

    // a short buffer is cut but terminated
    char small[5];
    tokenizer_describe(RAW(0xE9), small, sizeof(small));
    cr_assert_str_eq(small, "byte");
}

// ----------------------------------------------------------------------------
// read_file

Test(tokenizer, read_file_errors)
{
    char err[256];
    size_t n = 42;

    // a missing file
    cr_assert_null(read_file("/nonexistent/no-such-file.txt", &n, err, sizeof(err)));
    cr_assert_not_null(strstr(err, "/nonexistent/no-such-file.txt"), "message: %s", err);
    cr_assert_not_null(strstr(err, "No such file"), "message: %s", err);
    cr_assert_eq(n, 0);

    // a directory
    err[0] = 0;
    cr_assert_null(read_file("/tmp", &n, err, sizeof(err)));
    cr_assert_not_null(strstr(err, "directory"), "message: %s", err);
}

Test(tokenizer, read_file_contents)
{
    char path[] = "/tmp/test_tokenizer_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    char err[256];
    size_t n = 42;

    // an empty file is a valid, empty buffer
    unsigned char* data = read_file(path, &n, err, sizeof(err));
    cr_assert_not_null(data, "%s", err);
    cr_assert_eq(n, 0);
    free(data);

    // bytes including NUL and invalid UTF-8 come back exactly
    const unsigned char bytes[] = {'h', 0, '\r', '\n', 0xE9, 0xFF, 'x'};
    cr_assert_eq(write(fd, bytes, sizeof(bytes)), (ssize_t)sizeof(bytes));
    close(fd);
    data = read_file(path, &n, err, sizeof(err));
    cr_assert_not_null(data, "%s", err);
    cr_assert_eq(n, sizeof(bytes));
    cr_assert_eq(memcmp(data, bytes, n), 0);
    cr_assert_eq(data[n], 0);
    free(data);
    unlink(path);
}

// ----------------------------------------------------------------------------
// Random byte strings

// xorshift64*, fixed seed, so failures reproduce
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

Test(tokenizer, random_byte_strings_round_trip)
{
    enum { TRIALS = 1000, MAX_LEN = 300 };
    unsigned char text[MAX_LEN];
    int ids[MAX_LEN];
    long multibyte = 0, raw = 0;
    for (int trial = 0; trial < TRIALS; trial++) {
        // lengths 1..MAX_LEN; a mix of random bytes, ASCII and UTF-8 lead and
        // continuation bytes, so that both valid and broken sequences occur
        size_t n = 1 + rng_next() % MAX_LEN;
        for (size_t i = 0; i < n; i++) {
            uint32_t r = rng_next();
            switch (r % 4) {
            case 0: text[i] = (unsigned char)(r >> 8); break;
            case 1: text[i] = (unsigned char)(0x20 + (r >> 8) % 95); break;
            case 2: text[i] = (unsigned char)(0x80 + (r >> 8) % 64); break;
            default: text[i] = (unsigned char)(0xC2 + (r >> 8) % 51); break;
            }
        }
        Tokenizer tk;
        long count = round_trip(&tk, text, n, ids);

        // count the kinds of tokens seen, to show the mix is useful
        for (long i = 0; i < count; i++) {
            uint32_t s = tk.symbols[ids[i]];
            if (s >= TOKEN_RAW_BASE) raw++;
            else if (s >= 0x80) multibyte++;
        }
        tokenizer_free(&tk);
    }
    cr_assert_gt(multibyte, 1000, "only %ld multi-byte characters occurred", multibyte);
    cr_assert_gt(raw, 1000, "only %ld raw bytes were generated", raw);
}
