// weights.h: the checkpoint file, a list of tagged byte blobs plus the model config.
//
// A checkpoint holds the GameConfig and up to CKPT_MAX_SECTIONS sections, each a
// 4-character tag and a payload of bytes. This module does not know what the
// payloads mean; the rest of the project uses these tags:
//   "VOCB"  (V) u32 symbols of the vocabulary, in token id order
//   "PARM"  float32 parameters, the model's whole parameter block
//   "ADAM"  the optimizer's float32 moments m then v, and what else it keeps
//   "GAME"  the GAME state, an opaque blob its module encodes
//   "TRAN"  the training state (step, generator state, best val loss), opaque
//
// File format, version 1. Every integer is little-endian; sizes and offsets are
// 64 bits. The file is a header, a section table, then the payloads in table
// order, each starting on an 8-byte boundary and followed by zero bytes up to
// the next boundary (the last one too, so the file size is a multiple of 8).
//
//   header, 64 bytes
//   offset size  field
//        0    8  magic "GAMECKPT"
//        8    4  format version, CKPT_VERSION (1)
//       12    4  header size in bytes, 64
//       16    4  context          (the GameConfig: five fields, each at least 1)
//       20    4  vocab_size
//       24    4  layers
//       28    4  heads
//       32    4  channels
//       36    4  number of sections n, 0 .. CKPT_MAX_SECTIONS
//       40    8  total file size in bytes
//       48    4  CRC-32 of the section table (all n entries)
//       52    8  reserved, zero
//       60    4  CRC-32 of header bytes 0 .. 59
//
//   section table at offset 64, n entries of 24 bytes
//   offset size  field
//        0    4  tag, 4 printable ASCII characters other than space
//        4    4  CRC-32 of the payload (without its padding)
//        8    8  payload offset from the start of the file
//       16    8  payload size in bytes
//
//   payloads: the first starts at 64 + 24 n (a multiple of 8), each next one at
//   the end of the previous, rounded up to a multiple of 8; the file ends at the
//   end of the last payload rounded up (at 64 + 24 n when n is 0).
//
// CRC-32 is zlib's crc32() (the ISO-HDLC polynomial, initial value 0). The layout
// is canonical: one set of sections gives exactly one file, so saving the same
// checkpoint twice gives identical bytes, and a loader rejects any other
// placement, nonzero padding or reserved bytes, and trailing data.
//
// Non-goals: no compression, no memory mapping, no in-place updates. Loading
// reads the whole file into memory and then copies each payload out, so it needs
// about twice the file size at its peak.
#ifndef WEIGHTS_H
#define WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "game.h"

#define CKPT_MAGIC        "GAMECKPT" // 8 bytes, no terminator in the file
#define CKPT_VERSION      1u         // newest format version this build reads
#define GAME_CKPT_VERSION CKPT_VERSION
#define CKPT_HEADER_SIZE  64u
#define CKPT_ENTRY_SIZE   24u // one section table entry
#define CKPT_ALIGN        8u  // payload alignment
#define CKPT_MAX_SECTIONS 16

// Byte offsets of the header fields, as in the table above.
enum {
    CKPT_OFF_MAGIC = 0,
    CKPT_OFF_VERSION = 8,
    CKPT_OFF_HEADER_SIZE = 12,
    CKPT_OFF_CONTEXT = 16,
    CKPT_OFF_VOCAB_SIZE = 20,
    CKPT_OFF_LAYERS = 24,
    CKPT_OFF_HEADS = 28,
    CKPT_OFF_CHANNELS = 32,
    CKPT_OFF_NUM_SECTIONS = 36,
    CKPT_OFF_FILE_SIZE = 40,
    CKPT_OFF_TABLE_CRC = 48,
    CKPT_OFF_RESERVED = 52,
    CKPT_OFF_HEADER_CRC = 60,
};

// Byte offsets inside one section table entry.
enum {
    CKPT_ENT_TAG = 0,
    CKPT_ENT_CRC = 4,
    CKPT_ENT_OFFSET = 8,
    CKPT_ENT_SIZE = 16,
};

typedef struct CkptSection {
    char tag[5];   // 4 characters and a NUL
    uint64_t size; // payload size in bytes
    void* data;    // (size) bytes; borrowed when saving, owned after a load
    int word_size; // 4: data is 32-bit words in host order, stored little-endian;
                   // 1: raw bytes, stored as they are (every loaded section)
} CkptSection;

typedef struct Checkpoint {
    GameConfig config;
    int num_sections;
    CkptSection sections[CKPT_MAX_SECTIONS];
    int owns_data; // 1 after a successful load: ckpt_free_loaded frees the payloads
} Checkpoint;

// ----------------------------------------------------------------------------
// Building and saving

// Starts an empty checkpoint for configuration cfg.
void ckpt_init(Checkpoint* c, const GameConfig* cfg);

// Appends a section of raw bytes data[0 .. size-1]. Only the pointer is kept: the
// data must stay valid and unchanged until ckpt_save returns. The tag must be 4
// printable ASCII characters other than space and not already present, and data
// may be NULL only when size is 0. Breaking these rules, or adding more than
// CKPT_MAX_SECTIONS sections, is a bug in the caller: it prints a message to
// stderr and exits.
void ckpt_add(Checkpoint* c, const char* tag, const void* data, uint64_t size);

// Typed forms of ckpt_add: count 32-bit values in host order, written to the file
// little-endian whatever the host (payload size 4 * count). Same rules as
// ckpt_add; the array is borrowed the same way.
void ckpt_add_u32(Checkpoint* c, const char* tag, const uint32_t* values, size_t count);
void ckpt_add_f32(Checkpoint* c, const char* tag, const float* values, size_t count);

// Saves c to path atomically: writes "<path>.tmp.<pid>" in the same folder,
// flushes and fsyncs it, closes it (checked), renames it over path and fsyncs
// the folder. Returns 0, or -1 when anything fails (missing or read-only folder,
// disk full, path is a directory, invalid checkpoint ...): the temporary file is
// then removed, a file already at path is left as it was, and err (errlen bytes,
// may be NULL) receives a message naming the path and the reason. One exception:
// when only the final fsync of the folder fails, the new file is already in
// place; err then says so.
int ckpt_save(const Checkpoint* c, const char* path, char* err, size_t errlen);

// ----------------------------------------------------------------------------
// Loading

// Reads and checks the checkpoint at path and fills c (whatever c held before is
// overwritten, not freed). Every problem the format can detect is rejected: a
// missing or unreadable file, an empty or truncated one, wrong magic, a newer
// format version, sizes that disagree with the file, checksum mismatches, an
// inconsistent section table, duplicate tags. Returns 0, with every payload in
// its own malloc'd buffer owned by c (free with ckpt_free_loaded; sections of
// size 0 still get a non-NULL buffer), or -1 with c empty and a message naming
// the file and the problem in err (errlen bytes, may be NULL).
int ckpt_load(Checkpoint* c, const char* path, char* err, size_t errlen);

// The same checks on a checkpoint image buf[0 .. n-1] in memory (buf is only
// read; c gets its own copies). Any input, however hostile, gives 0 or -1: it
// never crashes, and it allocates only after every size has been checked
// against n, so in total never more than n bytes plus one per empty section.
// err receives the problem without a file name.
int ckpt_load_memory(Checkpoint* c, const unsigned char* buf, size_t n, char* err,
                     size_t errlen);

// Frees the payloads of a loaded checkpoint and leaves c with its config but no
// sections. Does nothing to the borrowed data of a checkpoint built with ckpt_add,
// so it is safe on both.
void ckpt_free_loaded(Checkpoint* c);

// ----------------------------------------------------------------------------
// Reading sections

// Returns the section with this tag, or NULL when there is none.
const CkptSection* ckpt_find(const Checkpoint* c, const char* tag);

// Checks that section VOCB exists and holds exactly config.vocab_size 32-bit
// symbols (vocab_size * 4 bytes). Returns 0, or -1 with a message in err.
int ckpt_check_vocab(const Checkpoint* c, char* err, size_t errlen);

// Copies section tag into out, which holds count values (or size bytes). Returns
// 0, or -1 with a message in err when the section is missing or its payload is
// not exactly 4 * count (or size) bytes. The typed forms decode little-endian
// file bytes into host order.
int ckpt_read_u32(const Checkpoint* c, const char* tag, uint32_t* out, size_t count,
                  char* err, size_t errlen);
int ckpt_read_f32(const Checkpoint* c, const char* tag, float* out, size_t count,
                  char* err, size_t errlen);
int ckpt_read_bytes(const Checkpoint* c, const char* tag, void* out, uint64_t size,
                    char* err, size_t errlen);

// ----------------------------------------------------------------------------
// Little-endian encoding, for the format here and for modules that lay out
// their own blobs (GAME, TRAN). p points at 4 or 8 bytes.

void ckpt_put_u32(unsigned char* p, uint32_t v);
void ckpt_put_u64(unsigned char* p, uint64_t v);
void ckpt_put_f32(unsigned char* p, float v); // the IEEE-754 bits, exactly
uint32_t ckpt_get_u32(const unsigned char* p);
uint64_t ckpt_get_u64(const unsigned char* p);
float ckpt_get_f32(const unsigned char* p);

// A blob of 8-byte little-endian words, written or read in order. Writing with
// p NULL only counts the bytes (n), so a caller can size the buffer by a first
// pass. A string is its length (UINT64_MAX for none) and then its bytes, padded
// to whole words. A reader past the end (cap) sets bad and reads zeros.
typedef struct {
    unsigned char* p; // NULL when only counting
    size_t n, cap;    // bytes written or read so far; the blob's size (reading)
    int bad;          // a read ran past the end, or a string could not be stored
} CkptBlob;

void ckpt_blob_put_u64(CkptBlob* b, uint64_t v);
void ckpt_blob_put_f64(CkptBlob* b, double v); // the IEEE-754 bits, exactly
void ckpt_blob_put_str(CkptBlob* b, const char* s); // s may be NULL
uint64_t ckpt_blob_get_u64(CkptBlob* b);
double ckpt_blob_get_f64(CkptBlob* b);
// A new NUL-terminated copy (free it), or NULL for none stored or a bad read.
char* ckpt_blob_get_str(CkptBlob* b);

#endif
