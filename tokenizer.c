// tokenizer.c: strict UTF-8 decoding, the character vocabulary, encoding and
// decoding of token ids, and reading a whole text file.
//
// See tokenizer.h for the token model: one token per code point, one raw-byte
// token per byte that does not start a well-formed UTF-8 sequence. Lookups are a
// binary search over the sorted symbols, with a per-call table for ASCII, which is
// most of a typical text.
#include "tokenizer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "game.h"

// ----------------------------------------------------------------------------
// UTF-8

// True when symbol is a Unicode scalar value: at most U+10FFFF, not a surrogate.
static int is_scalar_value(uint32_t symbol)
{
    return symbol <= 0x10FFFF && (symbol < 0xD800 || symbol > 0xDFFF);
}

// True when symbol is a code point or a raw-byte symbol.
static int is_valid_symbol(uint32_t symbol)
{
    int raw = symbol >= TOKEN_RAW_BASE && symbol < TOKEN_SYMBOL_LIMIT;
    return raw || is_scalar_value(symbol);
}

// Decodes one well-formed multi-byte sequence at s[0 .. n-1], whose lead byte is
// at least 0x80. Returns its length and stores the code point in *cp, or returns 0
// when the bytes are not a well-formed sequence (RFC 3629, table 3-7 of Unicode).
static size_t utf8_decode_multibyte(const unsigned char* s, size_t n, uint32_t* cp)
{
    unsigned b0 = s[0];
    size_t len;
    uint32_t value;

    // the lead byte gives the length and the allowed range of the second byte;
    // the narrowed ranges exclude overlong forms, surrogates and values > U+10FFFF
    unsigned lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2;
        value = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3;
        value = b0 & 0x0F;
        if (b0 == 0xE0) lo = 0xA0;  // below: overlong
        if (b0 == 0xED) hi = 0x9F;  // above: surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4;
        value = b0 & 0x07;
        if (b0 == 0xF0) lo = 0x90;  // below: overlong
        if (b0 == 0xF4) hi = 0x8F;  // above: beyond U+10FFFF
    } else {
        return 0;  // a continuation byte, C0, C1 or F5..FF
    }

    // a sequence cut off by the end of the buffer is not well formed
    if (n < len) return 0;

    // the second byte has the narrowed range, the others are plain continuations
    if (s[1] < lo || s[1] > hi) return 0;
    value = (value << 6) | (s[1] & 0x3F);
    for (size_t i = 2; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        value = (value << 6) | (s[i] & 0x3F);
    }
    *cp = value;
    return len;
}

size_t utf8_next(const unsigned char* s, size_t n, uint32_t* symbol)
{
    if (n == 0) {
        *symbol = 0;
        return 0;
    }

    // ASCII is its own code point
    if (s[0] < 0x80) {
        *symbol = s[0];
        return 1;
    }

    // a well-formed sequence is one code point; otherwise the lead byte stands alone
    uint32_t cp;
    size_t len = utf8_decode_multibyte(s, n, &cp);
    if (len > 0) {
        *symbol = cp;
        return len;
    }
    *symbol = TOKEN_RAW_BASE + s[0];
    return 1;
}

// Writes the bytes of a valid symbol into buf and returns their count: the UTF-8
// form of a code point, or the byte of a raw-byte symbol.
static int symbol_bytes(uint32_t symbol, unsigned char buf[4])
{
    if (symbol >= TOKEN_RAW_BASE) {
        buf[0] = (unsigned char)(symbol - TOKEN_RAW_BASE);
        return 1;
    }
    if (symbol < 0x80) {
        buf[0] = (unsigned char)symbol;
        return 1;
    }
    if (symbol < 0x800) {
        buf[0] = (unsigned char)(0xC0 | (symbol >> 6));
        buf[1] = (unsigned char)(0x80 | (symbol & 0x3F));
        return 2;
    }
    if (symbol < 0x10000) {
        buf[0] = (unsigned char)(0xE0 | (symbol >> 12));
        buf[1] = (unsigned char)(0x80 | ((symbol >> 6) & 0x3F));
        buf[2] = (unsigned char)(0x80 | (symbol & 0x3F));
        return 3;
    }
    buf[0] = (unsigned char)(0xF0 | (symbol >> 18));
    buf[1] = (unsigned char)(0x80 | ((symbol >> 12) & 0x3F));
    buf[2] = (unsigned char)(0x80 | ((symbol >> 6) & 0x3F));
    buf[3] = (unsigned char)(0x80 | (symbol & 0x3F));
    return 4;
}

// ----------------------------------------------------------------------------
// Vocabulary

// Formats a message into err when there is room for one.
static void set_error(char* err, size_t errlen, const char* fmt, ...)
{
    if (err == NULL || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int tokenizer_build(Tokenizer* tk, const unsigned char* text, size_t n)
{
    tk->size = 0;
    tk->symbols = NULL;
    if (n == 0) return -1;

    // mark every symbol of the text in a bitset over the whole symbol range
    size_t words = (TOKEN_SYMBOL_LIMIT + 63) / 64;
    uint64_t* seen = xcalloc(words, sizeof(uint64_t), "tokenizer_build");
    for (size_t i = 0; i < n;) {
        uint32_t symbol;
        i += utf8_next(text + i, n - i, &symbol);
        seen[symbol / 64] |= (uint64_t)1 << (symbol % 64);
    }

    // count the marks, then collect them in ascending order
    int count = 0;
    for (size_t w = 0; w < words; w++) count += __builtin_popcountll(seen[w]);
    tk->symbols = xmalloc((size_t)count * sizeof(uint32_t), "tokenizer_build");
    int k = 0;
    for (size_t w = 0; w < words; w++) {
        uint64_t bits = seen[w];
        while (bits != 0) {
            int bit = __builtin_ctzll(bits);
            tk->symbols[k++] = (uint32_t)(w * 64 + (size_t)bit);
            bits &= bits - 1;
        }
    }
    tk->size = count;
    free(seen);
    return 0;
}

int tokenizer_from_symbols(Tokenizer* tk, const uint32_t* symbols, int n, char* err,
                           size_t errlen)
{
    tk->size = 0;
    tk->symbols = NULL;

    // the list must be non-empty, in range, and strictly ascending
    if (n <= 0 || symbols == NULL) {
        set_error(err, errlen,
                  "the vocabulary is empty (%d symbols); it needs at least one", n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (!is_valid_symbol(symbols[i])) {
            set_error(err, errlen,
                      "vocabulary symbol %d is 0x%X, which is neither a Unicode code point "
                      "(up to U+10FFFF, no surrogates) nor a raw byte (0x110000..0x1100FF)",
                      i, (unsigned)symbols[i]);
            return -1;
        }
        if (i > 0 && symbols[i] <= symbols[i - 1]) {
            set_error(err, errlen,
                      "vocabulary symbols %d and %d (0x%X, 0x%X) are %s; the list must be "
                      "strictly ascending",
                      i - 1, i, (unsigned)symbols[i - 1], (unsigned)symbols[i],
                      symbols[i] == symbols[i - 1] ? "repeated" : "out of order");
            return -1;
        }
    }

    // keep a copy, so the caller's list may be freed
    tk->symbols = xmalloc((size_t)n * sizeof(uint32_t), "tokenizer_from_symbols");
    memcpy(tk->symbols, symbols, (size_t)n * sizeof(uint32_t));
    tk->size = n;
    return 0;
}

void tokenizer_free(Tokenizer* tk)
{
    free(tk->symbols);
    tk->symbols = NULL;
    tk->size = 0;
}

int tokenizer_lookup(const Tokenizer* tk, uint32_t symbol)
{
    // binary search over the half-open range [lo, hi)
    int lo = 0, hi = tk->size;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        uint32_t s = tk->symbols[mid];
        if (s == symbol) return mid;
        if (s < symbol) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return -1;
}

// ----------------------------------------------------------------------------
// Encoding and decoding

long tokenizer_encode(const Tokenizer* tk, const unsigned char* text, size_t n, int* out,
                      size_t* bad_offset, uint32_t* bad_symbol)
{
    // ids of the ASCII symbols (-1 when absent), so most characters skip the search
    int ascii[128];
    for (int c = 0; c < 128; c++) ascii[c] = tokenizer_lookup(tk, (uint32_t)c);

    // one id per character; stop at the first symbol outside the vocabulary
    long count = 0;
    for (size_t i = 0; i < n;) {
        uint32_t symbol;
        size_t step;
        int id;
        if (text[i] < 0x80) {
            symbol = text[i];
            step = 1;
            id = ascii[symbol];
        } else {
            step = utf8_next(text + i, n - i, &symbol);
            id = tokenizer_lookup(tk, symbol);
        }
        if (id < 0) {
            if (bad_offset != NULL) *bad_offset = i;
            if (bad_symbol != NULL) *bad_symbol = symbol;
            return -1;
        }
        out[count++] = id;
        i += step;
    }
    return count;
}

int tokenizer_token_bytes(const Tokenizer* tk, int id, unsigned char buf[4])
{
    if (id < 0 || id >= tk->size) return -1;
    return symbol_bytes(tk->symbols[id], buf);
}

int tokenizer_token_utf8(const Tokenizer* tk, int id, unsigned char buf[4])
{
    if (id < 0 || id >= tk->size) return -1;

    // a raw byte has no character of its own: show the replacement character
    uint32_t symbol = tk->symbols[id];
    if (symbol >= TOKEN_RAW_BASE) symbol = 0xFFFD;
    return symbol_bytes(symbol, buf);
}

unsigned char* tokenizer_decode(const Tokenizer* tk, const int* ids, size_t n,
                                size_t* len)
{
    // at most 4 bytes per token, plus the terminating NUL
    *len = 0;
    unsigned char* out = xmalloc(n * 4 + 1, "tokenizer_decode");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int m = tokenizer_token_bytes(tk, ids[i], out + k);
        if (m < 0) {
            free(out);
            return NULL;
        }
        k += (size_t)m;
    }
    out[k] = 0;
    *len = k;
    return out;
}

void tokenizer_describe(uint32_t symbol, char* buf, size_t len)
{
    if (buf == NULL || len == 0) return;

    // values that are no symbol at all, then raw bytes
    if (!is_valid_symbol(symbol)) {
        snprintf(buf, len, "invalid symbol 0x%X", (unsigned)symbol);
        return;
    }
    if (symbol >= TOKEN_RAW_BASE) {
        unsigned byte = (unsigned)(symbol - TOKEN_RAW_BASE);
        snprintf(buf, len, "byte 0x%02X (not valid UTF-8)", byte);
        return;
    }

    // control characters: the common ones by their C escape, the rest by number
    const char* escape = NULL;
    switch (symbol) {
    case 0x00: escape = "\\0"; break;
    case 0x09: escape = "\\t"; break;
    case 0x0A: escape = "\\n"; break;
    case 0x0D: escape = "\\r"; break;
    case 0x27: escape = "\\'"; break;
    case 0x5C: escape = "\\\\"; break;
    }
    if (escape != NULL) {
        snprintf(buf, len, "'%s' (U+%04X)", escape, (unsigned)symbol);
        return;
    }
    if (symbol < 0x20 || (symbol >= 0x7F && symbol <= 0x9F)) {
        snprintf(buf, len, "control character U+%04X", (unsigned)symbol);
        return;
    }

    // anything else is shown as itself
    unsigned char bytes[5];
    int m = symbol_bytes(symbol, bytes);
    bytes[m] = 0;
    snprintf(buf, len, "'%s' (U+%04X)", (const char*)bytes, (unsigned)symbol);
}

// ----------------------------------------------------------------------------
// Text input

unsigned char* read_file(const char* path, size_t* n, char* err, size_t errlen)
{
    *n = 0;

    // stat first, to tell a missing file and a directory apart from a read error
    struct stat st;
    if (stat(path, &st) != 0) {
        set_error(err, errlen, "cannot open '%s': %s (check the path)", path,
                  strerror(errno));
        return NULL;
    }
    if (S_ISDIR(st.st_mode)) {
        set_error(err, errlen, "'%s' is a directory; give the path of a text file", path);
        return NULL;
    }
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
        set_error(err, errlen, "'%s' is a device, not a text file; give the path of a "
                  "text file (or a pipe)", path);
        return NULL;
    }
    FILE* f = fopen(path, "rb");
    if (f == NULL) {
        set_error(err, errlen, "cannot open '%s': %s (check its permissions)", path,
                  strerror(errno));
        return NULL;
    }

    // room for the whole file, one byte to see the end, and the NUL; the buffer
    // grows for files whose size stat cannot tell (pipes, /proc)
    size_t cap = (S_ISREG(st.st_mode) ? (size_t)st.st_size : 4096) + 2;
    unsigned char* buf = malloc(cap);
    size_t used = 0;
    while (buf != NULL) {
        if (used + 1 == cap) {
            unsigned char* bigger = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + used, 1, cap - 1 - used, f);
        used += got;
        if (got == 0) break;
    }
    if (buf == NULL) {
        set_error(err, errlen, "out of memory reading '%s' after %zu bytes", path, used);
        fclose(f);
        return NULL;
    }

    // a short read that is not the end of the file is an I/O error
    if (ferror(f)) {
        set_error(err, errlen, "cannot read '%s': %s", path, strerror(errno));
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[used] = 0;
    *n = used;
    return buf;
}
