// fuzz_checkpoint.c: libFuzzer harness for the checkpoint loader and the model
// builder (weights.c, model_from_checkpoint in game.c).
//
// Each input is a checkpoint image. It is loaded twice: once as it is, and once
// with its three kinds of checksum (header, section table, payloads) rewritten to
// match, so that mutations reach the checks behind the checksums: the layout,
// the config, the vocabulary and the parameter count. Whatever loads is handed
// to model_from_checkpoint and everything is freed again. Run with
// -rss_limit_mb=2048 -malloc_limit_mb=1024: the loader promises to allocate no
// more than the input size, so any larger allocation is reported as a bug.
//
// Build flag: -DFUZZ_GUARD_PARAM_ALLOC skips model_from_checkpoint when the PARM
// section cannot match the config's parameter count, which keeps a long run going
// past the known early allocation in model_init (see fuzz/README.md).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "game.h"
#include "tokenizer.h"
#include "weights.h"

// ----------------------------------------------------------------------------
// Checks

// Stops the run with a message; libFuzzer saves the input that got here.
static void fail(const char* what) {
    fprintf(stderr, "fuzz_checkpoint: invariant broken: %s\n", what);
    abort();
}

// An error message must be terminated inside its buffer and, when there is
// room for one, not empty.
static void check_err(const char* err, size_t errlen) {
    if (errlen == 0) {
        return;
    }
    if (memchr(err, '\0', errlen) == NULL) {
        fail("error message not terminated");
    }
    if (errlen > 1 && err[0] == '\0') {
        fail("failure without an error message");
    }
}

// What a successful load promises: a valid config, valid distinct tags, owned
// buffers, and no more payload bytes than the image had.
static void check_loaded(const Checkpoint* c, size_t n) {
    const GameConfig* g = &c->config;
    if (g->context < 1 || g->vocab_size < 1 || g->layers < 1 || g->heads < 1 ||
        g->channels < 1) {
        fail("loaded config has a field below 1");
    }
    if (c->num_sections < 0 || c->num_sections > CKPT_MAX_SECTIONS || !c->owns_data) {
        fail("loaded checkpoint has a bad section count or does not own its data");
    }
    uint64_t total = 0;
    for (int i = 0; i < c->num_sections; i++) {
        const CkptSection* s = &c->sections[i];
        if (s->data == NULL || strlen(s->tag) != 4 || ckpt_find(c, s->tag) != s) {
            fail("loaded section without data, with a bad tag, or a duplicate");
        }
        total += s->size;
    }
    if (total > n) {
        fail("loaded payloads are larger than the image");
    }
}

// ----------------------------------------------------------------------------
// Checksum repair

static uint32_t crc_bytes(const unsigned char* p, size_t n) {
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

// Rewrites the payload, table and header checksums of img (n bytes) in place, as
// far as the image has room for them; entries pointing outside keep theirs.
static void fix_checksums(unsigned char* img, size_t n) {
    if (n < CKPT_HEADER_SIZE) {
        return;
    }

    // payloads, then the table that holds their checksums
    uint32_t num = ckpt_get_u32(img + CKPT_OFF_NUM_SECTIONS);
    size_t table_len = (size_t)CKPT_ENTRY_SIZE * num;
    if (num <= CKPT_MAX_SECTIONS && table_len <= n - CKPT_HEADER_SIZE) {
        unsigned char* table = img + CKPT_HEADER_SIZE;
        for (uint32_t i = 0; i < num; i++) {
            unsigned char* e = table + (size_t)CKPT_ENTRY_SIZE * i;
            uint64_t off = ckpt_get_u64(e + CKPT_ENT_OFFSET);
            uint64_t size = ckpt_get_u64(e + CKPT_ENT_SIZE);
            if (off <= n && size <= n - off) {
                ckpt_put_u32(e + CKPT_ENT_CRC, crc_bytes(img + off, (size_t)size));
            }
        }
        ckpt_put_u32(img + CKPT_OFF_TABLE_CRC, crc_bytes(table, table_len));
    }

    // the header last, since it covers the table checksum
    ckpt_put_u32(img + CKPT_OFF_HEADER_CRC, crc_bytes(img, CKPT_OFF_HEADER_CRC));
}

// ----------------------------------------------------------------------------
// One load

#ifdef FUZZ_GUARD_PARAM_ALLOC
// 1 when model_from_checkpoint would reach model_init with a PARM section of the
// wrong size (or none), i.e. allocate for a parameter count the file cannot hold.
static int param_alloc_unbacked(const Checkpoint* c) {
    if (config_check(&c->config) != NULL || ckpt_check_vocab(c, NULL, 0) != 0) {
        return 0; // rejected before model_init
    }
    size_t sizes[NUM_PARAM_TENSORS];
    size_t count = param_sizes(&c->config, sizes);
    const CkptSection* s = ckpt_find(c, "PARM");
    return s == NULL || s->size != (uint64_t)count * 4;
}
#endif

// Builds the model from a loaded checkpoint and frees it again.
static void build_model(const Checkpoint* c) {
#ifdef FUZZ_GUARD_PARAM_ALLOC
    if (param_alloc_unbacked(c)) {
        return;
    }
#endif
    Model m;
    Tokenizer tk;
    char err[512];
    err[0] = '\0';
    if (model_from_checkpoint(&m, &tk, c, err, sizeof(err)) != 0) {
        check_err(err, sizeof(err));
        return;
    }

    // the model must be what the config and the sections say
    const CkptSection* parm = ckpt_find(c, "PARM");
    if (tk.size != c->config.vocab_size || parm == NULL ||
        parm->size != (uint64_t)m.num_params * 4) {
        fail("model built with a vocabulary or parameter count the file does not hold");
    }
    for (int i = 0; i < tk.size; i++) {
        if (tokenizer_lookup(&tk, tk.symbols[i]) != i) {
            fail("vocabulary symbol does not look up to its own id");
        }
    }
    model_free(&m);
    tokenizer_free(&tk);
}

// Loads img (n bytes) with an error buffer of errlen bytes (0: none).
static void load_once(const unsigned char* img, size_t n, size_t errlen) {
    Checkpoint c;
    char errbuf[512];
    char* err = errlen > 0 ? errbuf : NULL;
    if (errlen > 0) {
        errbuf[0] = '\0';
    }
    if (ckpt_load_memory(&c, img, n, err, errlen) != 0) {
        if (c.num_sections != 0 || c.owns_data) {
            fail("failed load left sections behind");
        }
        if (err != NULL) {
            check_err(err, errlen);
        }
        return;
    }
    check_loaded(&c, n);
    build_model(&c);
    ckpt_free_loaded(&c);
    if (c.num_sections != 0) {
        fail("ckpt_free_loaded left sections behind");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // the image as it is; the error buffer size varies with the first byte so the
    // truncation of long messages is exercised too
    size_t errlen = size > 0 ? (size_t)(data[0] % 4) * 128 + 8 : 512;
    if (size > 0 && data[0] % 8 == 7) {
        errlen = 0;
    }
    load_once(data, size, errlen);

    // the same image with matching checksums, when that changes anything
    if (size < CKPT_HEADER_SIZE) {
        return 0;
    }
    unsigned char* img = malloc(size);
    if (img == NULL) {
        return 0;
    }
    memcpy(img, data, size);
    fix_checksums(img, size);
    if (memcmp(img, data, size) != 0) {
        load_once(img, size, 512);
    }
    free(img);
    return 0;
}
