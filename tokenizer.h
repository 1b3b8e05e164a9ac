// tokenizer.h: the character-level tokenizer and the text-input helper.
//
// A token is one Unicode code point decoded from UTF-8. Decoding is strict: a byte
// that does not begin a well-formed UTF-8 sequence (overlong forms, surrogates
// U+D800..U+DFFF, values above U+10FFFF, bad or missing continuation bytes, also at
// the end of the buffer) becomes a token of its own, the raw-byte symbol
// TOKEN_RAW_BASE + byte. Every byte string therefore encodes, and decoding the
// tokens gives back the exact bytes, NUL bytes, CR LF pairs and Latin-1 text
// included.
//
// A vocabulary is the sorted list of distinct symbols seen in the training text:
// code points first, then raw-byte symbols, which sort above U+10FFFF. A token id
// is a symbol's index in that list, so ids run 0 .. V - 1.
//
// Non-goals: no normalisation, no merges (BPE), no special tokens.
#ifndef TOKENIZER_H
#define TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

// Raw-byte symbols are TOKEN_RAW_BASE + b for a byte b; all symbols are below
// TOKEN_SYMBOL_LIMIT.
#define TOKEN_RAW_BASE     0x110000u
#define TOKEN_SYMBOL_LIMIT (TOKEN_RAW_BASE + 256u)

typedef struct Tokenizer {
    int size;          // V, the number of tokens
    uint32_t* symbols; // (V) strictly ascending; token id = index
} Tokenizer;

// Decodes the character at s[0 .. n-1] (n >= 1). Returns the number of bytes it
// takes (1 to 4) and stores its symbol: the code point, or TOKEN_RAW_BASE + s[0]
// with a return of 1 when s does not start a well-formed UTF-8 sequence. Returns 0
// (symbol 0) only when n == 0.
size_t utf8_next(const unsigned char* s, size_t n, uint32_t* symbol);

// Builds the vocabulary of every symbol in text[0 .. n-1]. Returns 0, or -1 when
// n == 0 (the caller reports the empty text); tk is then left empty (size 0,
// symbols NULL). Exits with a message if memory runs out.
int tokenizer_build(Tokenizer* tk, const unsigned char* text, size_t n);

// Builds a tokenizer from a stored list of n symbols, e.g. one read from a
// checkpoint. The list must be non-empty, strictly ascending, and each symbol a
// Unicode scalar value (at most U+10FFFF, not a surrogate) or a raw-byte symbol.
// Returns 0, or -1 with a message in err (errlen bytes, may be NULL) and tk empty.
int tokenizer_from_symbols(Tokenizer* tk, const uint32_t* symbols, int n, char* err,
                           size_t errlen);

// Frees the symbol list and leaves tk empty; safe on an empty tokenizer.
void tokenizer_free(Tokenizer* tk);

// Returns the token id of symbol, or -1 when it is not in the vocabulary.
int tokenizer_lookup(const Tokenizer* tk, uint32_t symbol);

// Encodes text[0 .. n-1] into out, which must hold n ints (a text of n bytes has
// at most n tokens). Returns the number of tokens written. When a symbol is not in
// the vocabulary, returns -1 and stores the byte offset of that character in
// *bad_offset and its symbol in *bad_symbol (either pointer may be NULL).
long tokenizer_encode(const Tokenizer* tk, const unsigned char* text, size_t n, int* out,
                      size_t* bad_offset, uint32_t* bad_symbol);

// Writes the exact bytes of token id into buf and returns their count (1 to 4): the
// UTF-8 form of a code point, or the single byte of a raw-byte token. Returns -1
// when id is outside 0 .. V - 1.
int tokenizer_token_bytes(const Tokenizer* tk, int id, unsigned char buf[4]);

// For display: like tokenizer_token_bytes, but a raw-byte token gives U+FFFD
// (EF BF BD), so the output is always valid UTF-8. Returns -1 for a bad id.
int tokenizer_token_utf8(const Tokenizer* tk, int id, unsigned char buf[4]);

// Decodes ids[0 .. n-1] into a new buffer of the exact bytes, stores the length in
// *len and returns the buffer (the caller frees it). A NUL byte follows the last
// byte, not counted in *len. Returns NULL, with *len = 0, when an id is outside
// 0 .. V - 1. decode(encode(x)) == x for every byte string x; the reverse holds
// for ids that encode produced, but not for every id sequence (separate raw-byte
// tokens may spell out a valid character, which re-encodes as one token).
unsigned char* tokenizer_decode(const Tokenizer* tk, const int* ids, size_t n,
                                size_t* len);

// Describes a symbol for error messages, into buf (len bytes, always terminated
// when len > 0): "'e' (U+0065)", "'\n' (U+000A)", "control character U+0001",
// "byte 0xE9 (not valid UTF-8)", or "invalid symbol 0x..." for values outside
// the symbol range.
void tokenizer_describe(uint32_t symbol, char* buf, size_t len);

// ----------------------------------------------------------------------------
// Text input

// Reads the whole file at path into a new buffer (the caller frees it) and stores
// its size in *n; a NUL byte follows the data, not counted in *n. An empty file
// gives a non-NULL buffer and *n = 0. Returns NULL with a message in err (errlen
// bytes, may be NULL) when the file is missing, unreadable, a directory, or memory
// runs out.
unsigned char* read_file(const char* path, size_t* n, char* err, size_t errlen);

#endif
