// test_weights.c: tests of the checkpoint format (weights.c), suite "weights".
//
// Round trips must be bit-identical and saves deterministic; every kind of damage
// the format can detect must be rejected with its own message; failed saves must
// leave an existing checkpoint alone and no temporary file behind; hostile
// headers must fail before anything is allocated. Each test works in its own
// temporary folder under /tmp, removed afterwards.
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "weights.h"

#include "testutil.h"

#define BIG_FLOATS (1u << 20) // 4 MiB of float32 in the large section

// ----------------------------------------------------------------------------
// Temporary folder and file helpers

// Per test: a fresh folder (g_test_dir).
static void make_dir(void) { test_dir_setup("weights"); }

TestSuite(weights, .init = make_dir, .fini = test_dir_teardown);

// A path inside the test's folder, into out (256 bytes).
static char* in_dir(char* out, const char* name) {
    snprintf(out, 256, "%s/%s", g_test_dir, name);
    return out;
}

// Recomputes the table and header checksums of a file image after a test edits
// it, so that the edit reaches the checks behind them.
static void fix_crcs(unsigned char* buf) {
    uint32_t num = ckpt_get_u32(buf + CKPT_OFF_NUM_SECTIONS);
    uLong t = crc32(0L, buf + CKPT_HEADER_SIZE, CKPT_ENTRY_SIZE * num);
    ckpt_put_u32(buf + CKPT_OFF_TABLE_CRC, (uint32_t)t);
    uLong h = crc32(0L, buf, CKPT_OFF_HEADER_CRC);
    ckpt_put_u32(buf + CKPT_OFF_HEADER_CRC, (uint32_t)h);
}

#define assert_err_has(err, text) \
    cr_assert_not_null(strstr((err), (text)), "expected \"%s\" in: %s", (text), (err))

// ----------------------------------------------------------------------------
// A sample checkpoint: all five project sections, one of them large

static const GameConfig SAMPLE_CFG = {
    .context = 64, .vocab_size = 65, .layers = 4, .heads = 4, .channels = 128};

typedef struct {
    uint32_t vocab[65];
    float* params; // (BIG_FLOATS)
    float adam[2 * 1000];
    unsigned char game[13];
    unsigned char tran[40];
} Sample;

static uint64_t xorshift(uint64_t* s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void sample_fill(Sample* s, uint64_t seed) {
    uint64_t r = seed;
    for (int i = 0; i < 65; i++) {
        s->vocab[i] = 10u + (uint32_t)i * 3u;
    }

    // random bit patterns: NaNs, infinities and subnormals included
    s->params = malloc(BIG_FLOATS * sizeof(float));
    cr_assert_not_null(s->params);
    for (uint32_t i = 0; i < BIG_FLOATS; i++) {
        uint32_t bits = (uint32_t)(xorshift(&r) >> 16);
        memcpy(&s->params[i], &bits, 4);
    }
    for (int i = 0; i < 2000; i++) {
        s->adam[i] = (float)(xorshift(&r) % 100000) * 1e-5f - 0.5f;
    }
    for (int i = 0; i < 13; i++) {
        s->game[i] = (unsigned char)xorshift(&r);
    }
    for (int i = 0; i < 40; i++) {
        s->tran[i] = (unsigned char)(i * 7);
    }
}

static void sample_add(Checkpoint* c, const Sample* s) {
    ckpt_init(c, &SAMPLE_CFG);
    ckpt_add_u32(c, "VOCB", s->vocab, 65);
    ckpt_add_f32(c, "PARM", s->params, BIG_FLOATS);
    ckpt_add_f32(c, "ADAM", s->adam, 2000);
    ckpt_add(c, "GAME", s->game, sizeof(s->game));
    ckpt_add(c, "TRAN", s->tran, sizeof(s->tran));
}

// A small checkpoint (VOCB of 3 symbols, a 5-byte GAME blob) saved to path.
static void save_small(const char* path) {
    static const uint32_t vocab[3] = {'a', 'b', 'c'};
    static const unsigned char blob[5] = {1, 2, 3, 4, 5};
    GameConfig cfg = {.context = 8, .vocab_size = 3, .layers = 1, .heads = 1,
                      .channels = 4};
    Checkpoint c;
    ckpt_init(&c, &cfg);
    ckpt_add_u32(&c, "VOCB", vocab, 3);
    ckpt_add(&c, "GAME", blob, sizeof(blob));
    char err[512];
    cr_assert_eq(ckpt_save(&c, path, err, sizeof(err)), 0, "save failed: %s", err);
}

// Loads an image and returns err's text (static), asserting that it failed.
static const char* load_fails(const unsigned char* buf, size_t n) {
    static char err[512];
    Checkpoint c;
    err[0] = '\0';
    int rc = ckpt_load_memory(&c, buf, n, err, sizeof(err));
    if (rc == 0) {
        ckpt_free_loaded(&c);
    }
    cr_assert_eq(rc, -1, "a damaged image of %zu bytes loaded", n);
    cr_assert_eq(c.num_sections, 0);
    cr_assert_neq(err[0], '\0', "no message for a damaged image");
    return err;
}

// ----------------------------------------------------------------------------
// Round trips

Test(weights, round_trip_is_bit_identical) {
    Sample s;
    sample_fill(&s, 0x9e3779b97f4a7c15ull);
    Checkpoint c;
    sample_add(&c, &s);
    char path[256], err[512];
    in_dir(path, "model.bin");
    cr_assert_eq(ckpt_save(&c, path, err, sizeof(err)), 0, "save failed: %s", err);
    cr_assert_eq(test_count_temp_files(g_test_dir, NULL, 0), 0,
                 "a temporary file was left behind");

    // the config and the section list come back as they were
    Checkpoint l;
    cr_assert_eq(ckpt_load(&l, path, err, sizeof(err)), 0, "load failed: %s", err);
    cr_assert_eq(l.config.context, 64);
    cr_assert_eq(l.config.vocab_size, 65);
    cr_assert_eq(l.config.layers, 4);
    cr_assert_eq(l.config.heads, 4);
    cr_assert_eq(l.config.channels, 128);
    cr_assert_eq(l.num_sections, 5);
    const char* tags[5] = {"VOCB", "PARM", "ADAM", "GAME", "TRAN"};
    for (int i = 0; i < 5; i++) {
        cr_assert_str_eq(l.sections[i].tag, tags[i]);
        cr_assert_eq(l.sections[i].size, c.sections[i].size, "size of %s", tags[i]);
    }

    // raw bytes: the blobs exactly, the word sections as little-endian words
    cr_assert_eq(memcmp(ckpt_find(&l, "GAME")->data, s.game, sizeof(s.game)), 0);
    cr_assert_eq(memcmp(ckpt_find(&l, "TRAN")->data, s.tran, sizeof(s.tran)), 0);
    unsigned char* le = malloc(4 * (size_t)BIG_FLOATS);
    cr_assert_not_null(le);
    for (uint32_t i = 0; i < BIG_FLOATS; i++) {
        ckpt_put_f32(le + 4 * i, s.params[i]);
    }
    cr_assert_eq(memcmp(ckpt_find(&l, "PARM")->data, le, 4 * (size_t)BIG_FLOATS), 0,
                 "PARM bytes differ from the little-endian encoding");

    // decoded through the typed helpers, every value is bit-identical
    float* params = malloc(BIG_FLOATS * sizeof(float));
    cr_assert_not_null(params);
    cr_assert_eq(ckpt_read_f32(&l, "PARM", params, BIG_FLOATS, err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_eq(memcmp(params, s.params, BIG_FLOATS * sizeof(float)), 0,
                 "PARM values differ after the round trip");
    float adam[2000];
    cr_assert_eq(ckpt_read_f32(&l, "ADAM", adam, 2000, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(memcmp(adam, s.adam, sizeof(adam)), 0, "ADAM values differ");
    uint32_t vocab[65];
    cr_assert_eq(ckpt_read_u32(&l, "VOCB", vocab, 65, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(memcmp(vocab, s.vocab, sizeof(vocab)), 0, "VOCB symbols differ");
    unsigned char tran[40];
    cr_assert_eq(ckpt_read_bytes(&l, "TRAN", tran, 40, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(memcmp(tran, s.tran, 40), 0);
    cr_assert_eq(ckpt_check_vocab(&l, err, sizeof(err)), 0, "%s", err);

    ckpt_free_loaded(&l);
    cr_assert_eq(l.num_sections, 0);
    free(params);
    free(le);
    free(s.params);
}

Test(weights, saves_are_deterministic) {
    Sample s;
    sample_fill(&s, 42);
    Checkpoint c;
    sample_add(&c, &s);
    char a[256], b[256], r[256], err[512];
    cr_assert_eq(ckpt_save(&c, in_dir(a, "a.bin"), err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ckpt_save(&c, in_dir(b, "b.bin"), err, sizeof(err)), 0, "%s", err);

    // a loaded checkpoint saved again gives the same bytes too
    Checkpoint l;
    cr_assert_eq(ckpt_load(&l, a, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ckpt_save(&l, in_dir(r, "resaved.bin"), err, sizeof(err)), 0, "%s", err);
    ckpt_free_loaded(&l);

    size_t na, nb, nr;
    unsigned char* fa = test_read_file(a, &na);
    unsigned char* fb = test_read_file(b, &nb);
    unsigned char* fr = test_read_file(r, &nr);
    cr_assert_eq(na, nb);
    cr_assert_eq(na, nr);
    cr_assert_eq(memcmp(fa, fb, na), 0, "two saves of one checkpoint differ");
    cr_assert_eq(memcmp(fa, fr, na), 0, "re-saving a loaded checkpoint changed it");
    free(fa);
    free(fb);
    free(fr);
    free(s.params);
}

Test(weights, file_layout_matches_the_documented_table) {
    char path[256];
    save_small(in_dir(path, "small.bin"));
    size_t n;
    unsigned char* f = test_read_file(path, &n);

    // header fields at their documented offsets
    cr_assert_eq(memcmp(f, "GAMECKPT", 8), 0);
    cr_assert_eq(ckpt_get_u32(f + CKPT_OFF_VERSION), 1u);
    cr_assert_eq(ckpt_get_u32(f + CKPT_OFF_HEADER_SIZE), 64u);
    cr_assert_eq(ckpt_get_u32(f + CKPT_OFF_CONTEXT), 8u);
    cr_assert_eq(ckpt_get_u32(f + CKPT_OFF_VOCAB_SIZE), 3u);
    cr_assert_eq(ckpt_get_u32(f + CKPT_OFF_CHANNELS), 4u);
    cr_assert_eq(ckpt_get_u32(f + CKPT_OFF_NUM_SECTIONS), 2u);

    // 64 header + 2 * 24 table + 12 VOCB padded to 16 + 5 GAME padded to 8
    cr_assert_eq(n, 64u + 48u + 16u + 8u);
    cr_assert_eq(ckpt_get_u64(f + CKPT_OFF_FILE_SIZE), (uint64_t)n);
    cr_assert_eq(ckpt_get_u32(f + CKPT_OFF_HEADER_CRC), (uint32_t)crc32(0L, f, 60));

    // table entries, and the symbols written little-endian
    const unsigned char* e0 = f + 64;
    const unsigned char* e1 = f + 64 + 24;
    cr_assert_eq(memcmp(e0 + CKPT_ENT_TAG, "VOCB", 4), 0);
    cr_assert_eq(ckpt_get_u64(e0 + CKPT_ENT_OFFSET), 112u);
    cr_assert_eq(ckpt_get_u64(e0 + CKPT_ENT_SIZE), 12u);
    cr_assert_eq(memcmp(e1 + CKPT_ENT_TAG, "GAME", 4), 0);
    cr_assert_eq(ckpt_get_u64(e1 + CKPT_ENT_OFFSET), 128u);
    cr_assert_eq(ckpt_get_u64(e1 + CKPT_ENT_SIZE), 5u);
    static const unsigned char symbols[12] = {'a', 0, 0, 0, 'b', 0, 0, 0, 'c', 0, 0, 0};
    cr_assert_eq(memcmp(f + 112, symbols, 12), 0);
    cr_assert_eq(ckpt_get_u32(e0 + CKPT_ENT_CRC), (uint32_t)crc32(0L, symbols, 12));
    free(f);
}

Test(weights, empty_sections_and_no_sections) {
    GameConfig cfg = {.context = 1, .vocab_size = 1, .layers = 1, .heads = 1,
                      .channels = 1};
    Checkpoint c;
    ckpt_init(&c, &cfg);
    char path[256], err[512];
    cr_assert_eq(ckpt_save(&c, in_dir(path, "none.bin"), err, sizeof(err)), 0, "%s", err);
    Checkpoint l;
    cr_assert_eq(ckpt_load(&l, path, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(l.num_sections, 0);
    cr_assert_null(ckpt_find(&l, "PARM"));
    ckpt_free_loaded(&l);

    // a zero-length section still loads with a buffer
    ckpt_add(&c, "TRAN", NULL, 0);
    cr_assert_eq(ckpt_save(&c, path, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ckpt_load(&l, path, err, sizeof(err)), 0, "%s", err);
    const CkptSection* s = ckpt_find(&l, "TRAN");
    cr_assert_not_null(s);
    cr_assert_eq(s->size, 0u);
    cr_assert_not_null(s->data);
    ckpt_free_loaded(&l);
}

Test(weights, little_endian_helpers) {
    unsigned char b[8];
    ckpt_put_u32(b, 0x11223344u);
    cr_assert(b[0] == 0x44 && b[1] == 0x33 && b[2] == 0x22 && b[3] == 0x11);
    cr_assert_eq(ckpt_get_u32(b), 0x11223344u);
    ckpt_put_u64(b, 0x0102030405060708ull);
    cr_assert(b[0] == 0x08 && b[7] == 0x01);
    cr_assert_eq(ckpt_get_u64(b), 0x0102030405060708ull);
    ckpt_put_f32(b, 1.0f);
    cr_assert(b[0] == 0 && b[1] == 0 && b[2] == 0x80 && b[3] == 0x3f);
    cr_assert_eq(ckpt_get_f32(b), 1.0f);
}

// ----------------------------------------------------------------------------
// Damaged files, each with its own message

Test(weights, truncated_by_one_byte) {
    char path[256], err[512];
    save_small(in_dir(path, "t.bin"));
    size_t n;
    unsigned char* f = test_read_file(path, &n);
    test_write_file(path, f, n - 1);
    Checkpoint l;
    cr_assert_eq(ckpt_load(&l, path, err, sizeof(err)), -1);
    assert_err_has(err, path);
    assert_err_has(err, "truncated");
    cr_assert_null(strstr(err, "padded"));
    free(f);
}

Test(weights, padded_by_one_byte) {
    char path[256], err[512];
    save_small(in_dir(path, "p.bin"));
    size_t n;
    unsigned char* f = test_read_file(path, &n);
    unsigned char* g = calloc(n + 1, 1);
    cr_assert_not_null(g);
    memcpy(g, f, n);
    test_write_file(path, g, n + 1);
    Checkpoint l;
    cr_assert_eq(ckpt_load(&l, path, err, sizeof(err)), -1);
    assert_err_has(err, path);
    assert_err_has(err, "padded");
    cr_assert_null(strstr(err, "truncated"));
    free(f);
    free(g);
}

Test(weights, flipped_bit_in_header) {
    char path[256], err[512];
    save_small(in_dir(path, "h.bin"));
    size_t n;
    unsigned char* f = test_read_file(path, &n);
    f[CKPT_OFF_HEADS] ^= 0x04; // heads 1 -> 5
    test_write_file(path, f, n);
    Checkpoint l;
    cr_assert_eq(ckpt_load(&l, path, err, sizeof(err)), -1);
    assert_err_has(err, path);
    assert_err_has(err, "header checksum mismatch");
    free(f);
}

Test(weights, flipped_bit_in_payload) {
    Sample s;
    sample_fill(&s, 7);
    Checkpoint c;
    sample_add(&c, &s);
    char path[256], err[512];
    cr_assert_eq(ckpt_save(&c, in_dir(path, "x.bin"), err, sizeof(err)), 0, "%s", err);
    size_t n;
    unsigned char* f = test_read_file(path, &n);

    // one bit in the middle of PARM, found through the table (entry 1)
    uint64_t off = ckpt_get_u64(f + 64 + 24 + CKPT_ENT_OFFSET);
    f[off + 2 * (uint64_t)BIG_FLOATS] ^= 0x10;
    test_write_file(path, f, n);
    Checkpoint l;
    cr_assert_eq(ckpt_load(&l, path, err, sizeof(err)), -1);
    assert_err_has(err, path);
    assert_err_has(err, "corrupt: checksum mismatch in section PARM");
    free(f);
    free(s.params);
}

Test(weights, newer_version_asks_for_an_upgrade) {
    char path[256], err[512];
    save_small(in_dir(path, "v.bin"));
    size_t n;
    unsigned char* f = test_read_file(path, &n);
    ckpt_put_u32(f + CKPT_OFF_VERSION, CKPT_VERSION + 1);
    fix_crcs(f);
    test_write_file(path, f, n);
    Checkpoint l;
    cr_assert_eq(ckpt_load(&l, path, err, sizeof(err)), -1);
    assert_err_has(err, path);
    assert_err_has(err, "written by a newer version");
    assert_err_has(err, "upgrade");
    free(f);
}

Test(weights, wrong_magic) {
    char path[256], err[512];
    save_small(in_dir(path, "m.bin"));
    size_t n;
    unsigned char* f = test_read_file(path, &n);
    memcpy(f, "GPT2CKPT", 8);
    test_write_file(path, f, n);
    Checkpoint l;
    cr_assert_eq(ckpt_load(&l, path, err, sizeof(err)), -1);
    assert_err_has(err, path);
    assert_err_has(err, "not a game checkpoint");

    // a short text file is not a checkpoint either, not a truncated one
    test_write_file(path, "hello\n", 6);
    cr_assert_eq(ckpt_load(&l, path, err, sizeof(err)), -1);
    assert_err_has(err, "not a game checkpoint");
    free(f);
}

Test(weights, empty_and_missing_files) {
    char path[256], err[512];
    test_write_file(in_dir(path, "empty.bin"), "", 0);
    Checkpoint l;
    cr_assert_eq(ckpt_load(&l, path, err, sizeof(err)), -1);
    assert_err_has(err, path);
    assert_err_has(err, "empty file");
    cr_assert_eq(l.num_sections, 0);

    in_dir(path, "missing.bin");
    cr_assert_eq(ckpt_load(&l, path, err, sizeof(err)), -1);
    assert_err_has(err, path);
    assert_err_has(err, strerror(ENOENT));

    // a directory is not a checkpoint
    cr_assert_eq(ckpt_load(&l, g_test_dir, err, sizeof(err)), -1);
    assert_err_has(err, "is a directory");

    // a header cut short
    save_small(in_dir(path, "short.bin"));
    size_t n;
    unsigned char* f = test_read_file(path, &n);
    assert_err_has(load_fails(f, 40), "truncated");
    free(f);
}

Test(weights, hostile_huge_section_fails_before_allocating) {
    // header + one entry declaring 2^60 bytes + 8 bytes of payload, CRCs valid
    unsigned char f[64 + 24 + 8];
    memset(f, 0, sizeof(f));
    memcpy(f, CKPT_MAGIC, 8);
    ckpt_put_u32(f + CKPT_OFF_VERSION, 1);
    ckpt_put_u32(f + CKPT_OFF_HEADER_SIZE, 64);
    for (int i = 0; i < 5; i++) {
        ckpt_put_u32(f + CKPT_OFF_CONTEXT + 4 * i, 4);
    }
    ckpt_put_u32(f + CKPT_OFF_NUM_SECTIONS, 1);
    ckpt_put_u64(f + CKPT_OFF_FILE_SIZE, sizeof(f));
    memcpy(f + 64 + CKPT_ENT_TAG, "PARM", 4);
    ckpt_put_u64(f + 64 + CKPT_ENT_OFFSET, 88);
    ckpt_put_u64(f + 64 + CKPT_ENT_SIZE, 1ull << 60);
    fix_crcs(f);

    // rejected by the size check (an attempted allocation would say out of memory)
    const char* err = load_fails(f, sizeof(f));
    assert_err_has(err, "section table inconsistent");
    assert_err_has(err, "extends past the end of the file");
    cr_assert_null(strstr(err, "memory"));

    // one byte more than the file holds is rejected the same way
    ckpt_put_u64(f + 64 + CKPT_ENT_SIZE, 9);
    fix_crcs(f);
    assert_err_has(load_fails(f, sizeof(f)), "extends past the end of the file");

    // and exactly 8 bytes (a zero payload with a matching CRC) is accepted
    ckpt_put_u64(f + 64 + CKPT_ENT_SIZE, 8);
    ckpt_put_u32(f + 64 + CKPT_ENT_CRC, (uint32_t)crc32(0L, f + 88, 8));
    fix_crcs(f);
    Checkpoint l;
    char msg[512];
    cr_assert_eq(ckpt_load_memory(&l, f, sizeof(f), msg, sizeof(msg)), 0, "%s", msg);
    cr_assert_eq(ckpt_find(&l, "PARM")->size, 8u);
    ckpt_free_loaded(&l);
}

Test(weights, inconsistent_table_and_duplicates) {
    char path[256];
    save_small(in_dir(path, "d.bin"));
    size_t n;
    unsigned char* f = test_read_file(path, &n);
    unsigned char* g = malloc(n);
    cr_assert_not_null(g);

    // the second tag renamed to the first
    memcpy(g, f, n);
    memcpy(g + 64 + 24 + CKPT_ENT_TAG, "VOCB", 4);
    fix_crcs(g);
    assert_err_has(load_fails(g, n), "duplicate section VOCB");

    // a payload moved off its canonical offset
    memcpy(g, f, n);
    ckpt_put_u64(g + 64 + CKPT_ENT_OFFSET, 120);
    fix_crcs(g);
    assert_err_has(load_fails(g, n), "section table inconsistent");

    // more sections than allowed
    memcpy(g, f, n);
    ckpt_put_u32(g + CKPT_OFF_NUM_SECTIONS, CKPT_MAX_SECTIONS + 1);
    fix_crcs(g);
    assert_err_has(load_fails(g, n), "section table inconsistent");

    // a table entry flipped without fixing the table checksum
    memcpy(g, f, n);
    g[64 + CKPT_ENT_SIZE] ^= 1;
    assert_err_has(load_fails(g, n), "section table checksum mismatch");

    // a tag that is not printable
    memcpy(g, f, n);
    g[64 + 2] = 0;
    fix_crcs(g);
    assert_err_has(load_fails(g, n), "invalid tag");

    // a zero config field
    memcpy(g, f, n);
    ckpt_put_u32(g + CKPT_OFF_HEADS, 0);
    fix_crcs(g);
    assert_err_has(load_fails(g, n), "config field heads");

    // nonzero padding after GAME (5 bytes + 3 of padding at the end)
    memcpy(g, f, n);
    g[n - 1] = 1;
    assert_err_has(load_fails(g, n), "nonzero padding after section GAME");
    free(f);
    free(g);
}

Test(weights, every_truncation_and_bit_flip_is_rejected) {
    char path[256];
    save_small(in_dir(path, "all.bin"));
    size_t n;
    unsigned char* f = test_read_file(path, &n);
    cr_assert_eq(n, 136u);
    unsigned char g[136 + 16];

    // every prefix, and every suffix of zeros up to 16 bytes
    for (size_t k = 0; k < n; k++) {
        load_fails(f, k);
    }
    memset(g, 0, sizeof(g));
    memcpy(g, f, n);
    for (size_t k = 1; k <= 16; k++) {
        load_fails(g, n + k);
    }

    // every single bit flip anywhere in the file
    for (size_t bit = 0; bit < 8 * n; bit++) {
        memcpy(g, f, n);
        g[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        load_fails(g, n);
    }

    // the undamaged image still loads
    Checkpoint l;
    char err[512];
    cr_assert_eq(ckpt_load_memory(&l, f, n, err, sizeof(err)), 0, "%s", err);
    ckpt_free_loaded(&l);
    free(f);
}

// ----------------------------------------------------------------------------
// Failed saves leave the old checkpoint and no temporary file

// Saves the small checkpoint at path and returns its bytes, to compare later.
static unsigned char* existing_checkpoint(const char* path, size_t* n) {
    save_small(path);
    return test_read_file(path, n);
}

static void assert_unchanged(const char* path, const unsigned char* old, size_t n) {
    size_t m;
    unsigned char* now = test_read_file(path, &m);
    cr_assert_eq(m, n, "the existing checkpoint changed size");
    cr_assert_eq(memcmp(now, old, n), 0, "the existing checkpoint changed");
    free(now);
}

Test(weights, save_into_missing_folder_fails) {
    Sample s;
    sample_fill(&s, 3);
    Checkpoint c;
    sample_add(&c, &s);
    char path[256], err[512];
    in_dir(path, "no/such/folder/model.bin");
    cr_assert_eq(ckpt_save(&c, path, err, sizeof(err)), -1);
    assert_err_has(err, path);
    assert_err_has(err, strerror(ENOENT));
    cr_assert_eq(test_count_temp_files(g_test_dir, NULL, 0), 0);
    free(s.params);
}

Test(weights, save_into_read_only_folder_fails) {
    Sample s;
    sample_fill(&s, 4);
    Checkpoint c;
    sample_add(&c, &s);
    char dir[256], path[300], err[512];
    in_dir(dir, "ro");
    cr_assert_eq(mkdir(dir, 0700), 0);
    snprintf(path, sizeof(path), "%s/model.bin", dir);
    size_t n;
    unsigned char* old = existing_checkpoint(path, &n);

    if (geteuid() != 0) {
        // a folder without write permission
        cr_assert_eq(chmod(dir, 0500), 0);
        int rc = ckpt_save(&c, path, err, sizeof(err));
        chmod(dir, 0700);
        cr_assert_eq(rc, -1);
        assert_err_has(err, path);
        assert_err_has(err, strerror(EACCES));
        assert_unchanged(path, old, n);
        cr_assert_eq(test_count_temp_files(dir, NULL, 0), 0);
    } else {
        // root ignores permissions: a "folder" that is a regular file fails instead
        char bad[300];
        snprintf(bad, sizeof(bad), "%s/model.bin/ckpt", dir);
        cr_assert_eq(ckpt_save(&c, bad, err, sizeof(err)), -1);
        assert_err_has(err, bad);
        assert_err_has(err, strerror(ENOTDIR));
        assert_unchanged(path, old, n);
        cr_assert_eq(test_count_temp_files(dir, NULL, 0), 0);
    }
    free(old);
    free(s.params);
}

Test(weights, save_over_a_directory_fails) {
    Checkpoint c;
    ckpt_init(&c, &SAMPLE_CFG);
    char dir[256], err[512];
    in_dir(dir, "adir");
    cr_assert_eq(mkdir(dir, 0700), 0);
    cr_assert_eq(ckpt_save(&c, dir, err, sizeof(err)), -1);
    assert_err_has(err, dir);
    assert_err_has(err, "directory");
    struct stat st;
    cr_assert_eq(stat(dir, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    cr_assert_eq(test_count_temp_files(g_test_dir, NULL, 0), 0);
}

Test(weights, failed_write_keeps_the_old_checkpoint) {
    Sample s;
    sample_fill(&s, 5);
    Checkpoint c;
    sample_add(&c, &s);
    char path[256], err[512];
    size_t n;
    unsigned char* old = existing_checkpoint(in_dir(path, "model.bin"), &n);

    // a file size limit makes the 4 MiB write fail part way, like a full disk
    struct rlimit saved, small = {.rlim_cur = 64 * 1024};
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    small.rlim_max = saved.rlim_max;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    int rc = ckpt_save(&c, path, err, sizeof(err));
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, old_handler);

    cr_assert_eq(rc, -1, "the save should have failed");
    assert_err_has(err, path);
    assert_err_has(err, strerror(EFBIG));
    assert_unchanged(path, old, n);
    cr_assert_eq(test_count_temp_files(g_test_dir, NULL, 0), 0,
                 "the temporary file was not removed");
    free(old);
    free(s.params);
}

Test(weights, save_rejects_a_bad_config) {
    GameConfig cfg = SAMPLE_CFG;
    cfg.layers = 0;
    Checkpoint c;
    ckpt_init(&c, &cfg);
    char path[256], err[512];
    cr_assert_eq(ckpt_save(&c, in_dir(path, "bad.bin"), err, sizeof(err)), -1);
    assert_err_has(err, "layers");
    cr_assert_eq(access(path, F_OK), -1, "a file was written for a bad config");
}

// ----------------------------------------------------------------------------
// Section helpers

Test(weights, vocab_check_and_typed_reads) {
    uint32_t vocab[65] = {0};
    Checkpoint c;
    ckpt_init(&c, &SAMPLE_CFG);
    char err[512];
    cr_assert_eq(ckpt_check_vocab(&c, err, sizeof(err)), -1);
    assert_err_has(err, "no VOCB section");

    // one symbol short of vocab_size
    ckpt_add_u32(&c, "VOCB", vocab, 64);
    cr_assert_eq(ckpt_check_vocab(&c, err, sizeof(err)), -1);
    assert_err_has(err, "256 bytes, expected 260");

    Checkpoint d;
    ckpt_init(&d, &SAMPLE_CFG);
    ckpt_add_u32(&d, "VOCB", vocab, 65);
    cr_assert_eq(ckpt_check_vocab(&d, err, sizeof(err)), 0, "%s", err);

    // typed reads insist on the exact size
    float out[65];
    cr_assert_eq(ckpt_read_f32(&d, "VOCB", out, 64, err, sizeof(err)), -1);
    assert_err_has(err, "VOCB");
    cr_assert_eq(ckpt_read_f32(&d, "PARM", out, 1, err, sizeof(err)), -1);
    assert_err_has(err, "no PARM section");
    cr_assert_null(ckpt_find(&d, "VOC"));
    ckpt_free_loaded(&d); // safe on a built checkpoint: frees nothing
    cr_assert_eq(d.num_sections, 0);
}

Test(weights, adding_a_duplicate_tag_exits, .exit_code = EXIT_FAILURE) {
    int x = 0;
    Checkpoint c;
    ckpt_init(&c, &SAMPLE_CFG);
    ckpt_add(&c, "GAME", &x, sizeof(x));
    ckpt_add(&c, "GAME", &x, sizeof(x));
}

Test(weights, adding_a_bad_tag_exits, .exit_code = EXIT_FAILURE) {
    int x = 0;
    Checkpoint c;
    ckpt_init(&c, &SAMPLE_CFG);
    ckpt_add(&c, "PARAM", &x, sizeof(x));
}
