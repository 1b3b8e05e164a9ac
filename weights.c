// weights.c: saving and loading checkpoints, the sectioned format of weights.h.
//
// Saving lays the sections out in the one canonical way, checksums them, and
// writes a temporary file that replaces the old checkpoint only once it is
// complete and on disk. Loading treats the bytes as hostile: every size and
// offset is checked against the real file size before anything is allocated.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "weights.h"

#define CRC_CHUNK  ((size_t)1 << 30) // zlib's crc32 takes a 32-bit length
#define WORD_CHUNK 4096              // 32-bit words converted per step when saving

// ----------------------------------------------------------------------------
// Small helpers

// Formats a message into err (len bytes, always terminated); err may be NULL.
static void set_err(char* err, size_t len, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char* err, size_t len, const char* fmt, ...) {
    if (err == NULL || len == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

void ckpt_put_u32(unsigned char* p, uint32_t v) {
    for (int i = 0; i < 4; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

void ckpt_put_u64(unsigned char* p, uint64_t v) {
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

void ckpt_put_f32(unsigned char* p, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    ckpt_put_u32(p, bits);
}

uint32_t ckpt_get_u32(const unsigned char* p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

uint64_t ckpt_get_u64(const unsigned char* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

float ckpt_get_f32(const unsigned char* p) {
    uint32_t bits = ckpt_get_u32(p);
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

void ckpt_blob_put_u64(CkptBlob* b, uint64_t v) {
    if (b->p) ckpt_put_u64(b->p + b->n, v);
    b->n += 8;
}

void ckpt_blob_put_f64(CkptBlob* b, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    ckpt_blob_put_u64(b, bits);
}

void ckpt_blob_put_str(CkptBlob* b, const char* s) {
    size_t len = s ? strlen(s) : 0;
    ckpt_blob_put_u64(b, s ? len : UINT64_MAX);
    if (b->p && len) memcpy(b->p + b->n, s, len);
    b->n += (len + 7) / 8 * 8;
}

uint64_t ckpt_blob_get_u64(CkptBlob* b) {
    if (b->bad || b->n > b->cap || b->cap - b->n < 8) {
        b->bad = 1;
        return 0;
    }
    uint64_t v = ckpt_get_u64(b->p + b->n);
    b->n += 8;
    return v;
}

double ckpt_blob_get_f64(CkptBlob* b) {
    uint64_t bits = ckpt_blob_get_u64(b);
    double v;
    memcpy(&v, &bits, sizeof(v));
    return v;
}

char* ckpt_blob_get_str(CkptBlob* b) {
    uint64_t len = ckpt_blob_get_u64(b);
    if (b->bad || len == UINT64_MAX) return NULL;
    uint64_t padded = (len + 7) / 8 * 8;
    if (len > b->cap - b->n || padded > b->cap - b->n) {
        b->bad = 1;
        return NULL;
    }
    char* s = malloc((size_t)len + 1);
    if (!s) {
        b->bad = 1;
        return NULL;
    }
    memcpy(s, b->p + b->n, (size_t)len);
    s[len] = '\0';
    b->n += (size_t)padded;
    return s;
}

// CRC-32 of p[0 .. n-1] continued from crc, in pieces zlib's 32-bit length takes.
static uint32_t crc_update(uint32_t crc, const unsigned char* p, size_t n) {
    uLong c = crc;
    while (n > 0) {
        size_t k = n < CRC_CHUNK ? n : CRC_CHUNK;
        c = crc32(c, p, (uInt)k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

static uint32_t crc_of(const unsigned char* p, size_t n) {
    return crc_update((uint32_t)crc32(0L, Z_NULL, 0), p, n);
}

// Rounds n up to a multiple of CKPT_ALIGN; returns 0 in *ok on overflow.
static uint64_t align_up(uint64_t n, int* ok) {
    if (n > UINT64_MAX - (CKPT_ALIGN - 1)) {
        *ok = 0;
        return 0;
    }
    return (n + CKPT_ALIGN - 1) / CKPT_ALIGN * CKPT_ALIGN;
}

// 1 when tag is exactly 4 printable ASCII characters other than space.
static int tag_valid(const char* tag) {
    if (tag == NULL) {
        return 0;
    }
    for (int i = 0; i < 4; i++) {
        unsigned char ch = (unsigned char)tag[i];
        if (ch <= 0x20 || ch >= 0x7f) {
            return 0;
        }
    }
    return tag[4] == '\0';
}

// The config as its five named fields, in header order.
static const char* const CONFIG_NAMES[5] = {"context", "vocab_size", "layers", "heads",
                                            "channels"};

static void config_fields(const GameConfig* cfg, int out[5]) {
    out[0] = cfg->context;
    out[1] = cfg->vocab_size;
    out[2] = cfg->layers;
    out[3] = cfg->heads;
    out[4] = cfg->channels;
}

// ----------------------------------------------------------------------------
// Building

void ckpt_init(Checkpoint* c, const GameConfig* cfg) {
    memset(c, 0, sizeof(*c));
    c->config = *cfg;
}

const CkptSection* ckpt_find(const Checkpoint* c, const char* tag) {
    if (tag == NULL) {
        return NULL;
    }
    for (int i = 0; i < c->num_sections; i++) {
        if (strcmp(c->sections[i].tag, tag) == 0) {
            return &c->sections[i];
        }
    }
    return NULL;
}

// Shared by ckpt_add and its typed forms; misuse is a caller bug and exits.
static void add_section(Checkpoint* c, const char* tag, const void* data, uint64_t size,
                        int word_size) {

    // the rules of ckpt_add
    const char* problem = NULL;
    if (!tag_valid(tag)) {
        problem = "the tag must be 4 printable ASCII characters other than space";
    } else if (ckpt_find(c, tag) != NULL) {
        problem = "a section with this tag was already added";
    } else if (c->num_sections >= CKPT_MAX_SECTIONS) {
        problem = "the checkpoint already holds CKPT_MAX_SECTIONS sections";
    } else if (data == NULL && size > 0) {
        problem = "data is NULL but size is not 0";
    }
    if (problem != NULL) {
        fprintf(stderr, "ckpt_add: cannot add section \"%s\": %s (a bug in the caller)\n",
                tag != NULL ? tag : "(null)", problem);
        exit(EXIT_FAILURE);
    }

    // store the pointer, no copy
    CkptSection* s = &c->sections[c->num_sections++];
    memcpy(s->tag, tag, 5);
    s->size = size;
    s->data = (void*)data;
    s->word_size = word_size;
}

void ckpt_add(Checkpoint* c, const char* tag, const void* data, uint64_t size) {
    add_section(c, tag, data, size, 1);
}

void ckpt_add_u32(Checkpoint* c, const char* tag, const uint32_t* values, size_t count) {
    add_section(c, tag, values, (uint64_t)count * 4, 4);
}

void ckpt_add_f32(Checkpoint* c, const char* tag, const float* values, size_t count) {
    add_section(c, tag, values, (uint64_t)count * 4, 4);
}

// ----------------------------------------------------------------------------
// Saving

// Receives the file bytes of a payload piece by piece; returns 0 or -1.
typedef int (*ByteSink)(void* ctx, const unsigned char* p, size_t n);

// Feeds the payload of s to sink as it appears in the file: raw sections as they
// are, 32-bit word sections encoded little-endian a chunk at a time (the same
// code on every host, so the encoding is tested wherever the tests run).
static int feed_payload(const CkptSection* s, ByteSink sink, void* ctx) {
    const unsigned char* p = (const unsigned char*)s->data;
    uint64_t left = s->size;
    if (s->word_size != 4) {
        while (left > 0) {
            size_t k = left < CRC_CHUNK ? (size_t)left : CRC_CHUNK;
            if (sink(ctx, p, k) != 0) {
                return -1;
            }
            p += k;
            left -= k;
        }
        return 0;
    }
    unsigned char buf[4 * WORD_CHUNK];
    while (left > 0) {
        size_t words = left / 4 < WORD_CHUNK ? (size_t)(left / 4) : WORD_CHUNK;
        for (size_t i = 0; i < words; i++) {
            uint32_t w; // memcpy: the words may be floats, and must not be aliased
            memcpy(&w, p + 4 * i, 4);
            ckpt_put_u32(buf + 4 * i, w);
        }
        if (sink(ctx, buf, 4 * words) != 0) {
            return -1;
        }
        p += 4 * words;
        left -= 4 * (uint64_t)words;
    }
    return 0;
}

static int crc_sink(void* ctx, const unsigned char* p, size_t n) {
    uint32_t* crc = (uint32_t*)ctx;
    *crc = crc_update(*crc, p, n);
    return 0;
}

static int file_sink(void* ctx, const unsigned char* p, size_t n) {
    return fwrite(p, 1, n, (FILE*)ctx) == n ? 0 : -1;
}

// Checks a checkpoint before saving and works out where each payload goes.
// Fills offsets[i] and *file_size; returns 0, or -1 with the reason in why.
static int plan_layout(const Checkpoint* c, uint64_t offsets[CKPT_MAX_SECTIONS],
                       uint64_t* file_size, char* why, size_t whylen) {

    // the config must fit the header's u32 fields and be at least 1 each
    int fields[5];
    config_fields(&c->config, fields);
    for (int i = 0; i < 5; i++) {
        if (fields[i] < 1) {
            set_err(why, whylen, "config field %s is %d; it must be at least 1",
                    CONFIG_NAMES[i], fields[i]);
            return -1;
        }
    }
    if (c->num_sections < 0 || c->num_sections > CKPT_MAX_SECTIONS) {
        set_err(why, whylen, "%d sections; a checkpoint holds 0 to %d",
                c->num_sections, CKPT_MAX_SECTIONS);
        return -1;
    }

    // sections: valid distinct tags, data present, whole words
    for (int i = 0; i < c->num_sections; i++) {
        const CkptSection* s = &c->sections[i];
        if (!tag_valid(s->tag)) {
            set_err(why, whylen, "section %d has an invalid tag", i);
            return -1;
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(c->sections[j].tag, s->tag) == 0) {
                set_err(why, whylen, "duplicate section %s", s->tag);
                return -1;
            }
        }
        if (s->data == NULL && s->size > 0) {
            set_err(why, whylen, "section %s has no data", s->tag);
            return -1;
        }
        if (s->word_size == 4 && s->size % 4 != 0) {
            set_err(why, whylen, "section %s of 32-bit words has %llu bytes", s->tag,
                    (unsigned long long)s->size);
            return -1;
        }
    }

    // offsets: after the table, each payload on the next 8-byte boundary
    int ok = 1;
    uint64_t at = CKPT_HEADER_SIZE + CKPT_ENTRY_SIZE * (uint64_t)c->num_sections;
    for (int i = 0; i < c->num_sections && ok; i++) {
        offsets[i] = at;
        uint64_t size = c->sections[i].size;
        if (size > UINT64_MAX - at) {
            ok = 0;
            break;
        }
        at = align_up(at + size, &ok);
    }
    if (!ok) {
        set_err(why, whylen, "the sections add up to more than 2^64 bytes");
        return -1;
    }
    *file_size = at;
    return 0;
}

// Encodes the header and section table into out, (64 + 24 n) bytes.
static size_t encode_head(const Checkpoint* c, const uint64_t offsets[CKPT_MAX_SECTIONS],
                          const uint32_t crcs[CKPT_MAX_SECTIONS], uint64_t file_size,
                          unsigned char* out) {
    size_t table_len = (size_t)CKPT_ENTRY_SIZE * (size_t)c->num_sections;
    size_t len = CKPT_HEADER_SIZE + table_len;
    memset(out, 0, len);

    // section table
    unsigned char* table = out + CKPT_HEADER_SIZE;
    for (int i = 0; i < c->num_sections; i++) {
        unsigned char* e = table + (size_t)CKPT_ENTRY_SIZE * (size_t)i;
        memcpy(e + CKPT_ENT_TAG, c->sections[i].tag, 4);
        ckpt_put_u32(e + CKPT_ENT_CRC, crcs[i]);
        ckpt_put_u64(e + CKPT_ENT_OFFSET, offsets[i]);
        ckpt_put_u64(e + CKPT_ENT_SIZE, c->sections[i].size);
    }

    // header, its checksum last
    int fields[5];
    config_fields(&c->config, fields);
    memcpy(out + CKPT_OFF_MAGIC, CKPT_MAGIC, 8);
    ckpt_put_u32(out + CKPT_OFF_VERSION, CKPT_VERSION);
    ckpt_put_u32(out + CKPT_OFF_HEADER_SIZE, CKPT_HEADER_SIZE);
    for (int i = 0; i < 5; i++) {
        ckpt_put_u32(out + CKPT_OFF_CONTEXT + 4 * i, (uint32_t)fields[i]);
    }
    ckpt_put_u32(out + CKPT_OFF_NUM_SECTIONS, (uint32_t)c->num_sections);
    ckpt_put_u64(out + CKPT_OFF_FILE_SIZE, file_size);
    ckpt_put_u32(out + CKPT_OFF_TABLE_CRC, crc_of(table, table_len));
    ckpt_put_u32(out + CKPT_OFF_HEADER_CRC, crc_of(out, CKPT_OFF_HEADER_CRC));
    return len;
}

// The folder that holds path, into dir ("." for a bare file name).
static void folder_of(const char* path, char* dir, size_t len) {
    const char* slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(dir, len, ".");
    } else if (slash == path) {
        snprintf(dir, len, "/");
    } else {
        snprintf(dir, len, "%.*s", (int)(slash - path), path);
    }
}

// Writes the whole file to the open stream f; returns 0, or -1 with errno set.
static int write_all(const Checkpoint* c, const unsigned char* head, size_t head_len,
                     uint64_t file_size, FILE* f) {
    static const unsigned char zeros[CKPT_ALIGN];
    if (fwrite(head, 1, head_len, f) != head_len) {
        return -1;
    }
    uint64_t at = head_len;
    for (int i = 0; i < c->num_sections; i++) {
        const CkptSection* s = &c->sections[i];
        if (feed_payload(s, file_sink, f) != 0) {
            return -1;
        }
        at += s->size;
        size_t pad = (size_t)((CKPT_ALIGN - at % CKPT_ALIGN) % CKPT_ALIGN);
        if (pad > 0 && fwrite(zeros, 1, pad, f) != pad) {
            return -1;
        }
        at += pad;
    }
    if (at != file_size) {
        errno = EIO; // cannot happen: the layout and the writer disagree
        return -1;
    }
    return 0;
}

int ckpt_save(const Checkpoint* c, const char* path, char* err, size_t errlen) {
    char why[256];
    if (path == NULL || path[0] == '\0') {
        set_err(err, errlen, "cannot save checkpoint: empty file name");
        return -1;
    }

    // check the checkpoint and lay it out
    uint64_t offsets[CKPT_MAX_SECTIONS];
    uint64_t file_size;
    if (plan_layout(c, offsets, &file_size, why, sizeof(why)) != 0) {
        set_err(err, errlen, "cannot save checkpoint '%s': %s", path, why);
        return -1;
    }

    // checksum every payload, then encode the header and table
    uint32_t crcs[CKPT_MAX_SECTIONS];
    for (int i = 0; i < c->num_sections; i++) {
        crcs[i] = crc_of(NULL, 0);
        feed_payload(&c->sections[i], crc_sink, &crcs[i]);
    }
    unsigned char head[CKPT_HEADER_SIZE + CKPT_ENTRY_SIZE * CKPT_MAX_SECTIONS];
    size_t head_len = encode_head(c, offsets, crcs, file_size, head);

    // a directory at path would only make the final rename fail; say so first
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        set_err(err, errlen,
                "cannot save checkpoint '%s': it is a directory; give a file name", path);
        return -1;
    }

    // the temporary file, in the same folder so that rename is atomic
    size_t tmp_len = strlen(path) + 32;
    char* tmp = malloc(tmp_len);
    if (tmp == NULL) {
        set_err(err, errlen, "cannot save checkpoint '%s': out of memory", path);
        return -1;
    }
    snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno == EEXIST) {
        // left over from an earlier process with this pid that died mid-save
        unlink(tmp);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    }
    if (fd < 0) {
        set_err(err, errlen,
                "cannot save checkpoint '%s': cannot create '%s': %s; check that the "
                "folder exists and is writable", path, tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    FILE* f = fdopen(fd, "wb");
    if (f == NULL) {
        int e = errno;
        close(fd);
        unlink(tmp);
        set_err(err, errlen, "cannot save checkpoint '%s': %s", path, strerror(e));
        free(tmp);
        return -1;
    }

    // write, flush, sync, close: each step checked
    const char* step = NULL;
    int e = 0;
    if (write_all(c, head, head_len, file_size, f) != 0) {
        step = "writing";
    } else if (fflush(f) != 0) {
        step = "writing";
    } else if (fsync(fileno(f)) != 0) {
        step = "syncing";
    }
    if (step != NULL) {
        e = errno;
        fclose(f);
    } else if (fclose(f) != 0) {
        step = "closing";
        e = errno;
    }

    // put the finished file in place
    if (step == NULL && rename(tmp, path) != 0) {
        step = "renaming it over the checkpoint";
        e = errno;
    }
    if (step != NULL) {
        unlink(tmp);
        set_err(err, errlen, "cannot save checkpoint '%s': %s '%s' failed: %s", path,
                step, tmp, strerror(e));
        free(tmp);
        return -1;
    }
    free(tmp);

    // make the rename itself durable; some filesystems cannot sync a folder
    char dir[4096];
    folder_of(path, dir, sizeof(dir));
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        e = errno;
    } else {
        e = fsync(dfd) != 0 ? errno : 0;
        close(dfd);
        if (e == EINVAL || e == ENOTSUP) {
            e = 0;
        }
    }
    if (e != 0) {
        set_err(err, errlen,
                "checkpoint '%s' was written, but syncing its folder '%s' failed: %s; "
                "it may not survive a crash", path, dir, strerror(e));
        return -1;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// Loading

int ckpt_load_memory(Checkpoint* c, const unsigned char* buf, size_t n, char* err,
                     size_t errlen) {
    memset(c, 0, sizeof(*c));
    if (buf == NULL && n > 0) {
        set_err(err, errlen, "no data");
        return -1;
    }

    // identity: not empty, the magic, a version this build understands
    if (n == 0) {
        set_err(err, errlen, "empty file, no checkpoint header (was the save "
                "interrupted?)");
        return -1;
    }
    size_t magic_len = n < 8 ? n : 8;
    if (memcmp(buf, CKPT_MAGIC, magic_len) != 0) {
        set_err(err, errlen, "not a game checkpoint (it does not start with \"%s\")",
                CKPT_MAGIC);
        return -1;
    }
    if (n < CKPT_HEADER_SIZE) {
        set_err(err, errlen, "truncated: %zu bytes, shorter than the %u-byte header", n,
                CKPT_HEADER_SIZE);
        return -1;
    }
    uint32_t version = ckpt_get_u32(buf + CKPT_OFF_VERSION);
    if (version > CKPT_VERSION) {
        set_err(err, errlen, "written by a newer version of game (format version %u, "
                "this build reads up to %u); upgrade game to load it", version,
                CKPT_VERSION);
        return -1;
    }
    if (version == 0) {
        set_err(err, errlen, "corrupt: format version 0");
        return -1;
    }

    // the header: its size, its checksum, then the file size it declares
    uint32_t header_size = ckpt_get_u32(buf + CKPT_OFF_HEADER_SIZE);
    if (header_size > n) {
        set_err(err, errlen, "truncated: the header size field says %u bytes but the "
                "file has only %zu", header_size, n);
        return -1;
    }
    if (header_size != CKPT_HEADER_SIZE) {
        set_err(err, errlen, "corrupt: header size field is %u, format version %u "
                "headers are %u bytes", header_size, version, CKPT_HEADER_SIZE);
        return -1;
    }
    uint32_t stored = ckpt_get_u32(buf + CKPT_OFF_HEADER_CRC);
    uint32_t computed = crc_of(buf, CKPT_OFF_HEADER_CRC);
    if (stored != computed) {
        set_err(err, errlen, "corrupt: header checksum mismatch (stored %08x, computed "
                "%08x)", stored, computed);
        return -1;
    }
    uint64_t file_size = ckpt_get_u64(buf + CKPT_OFF_FILE_SIZE);
    if (file_size > n) {
        set_err(err, errlen, "truncated: the header says %llu bytes but the file has "
                "only %zu (%llu missing); the save or copy was cut short",
                (unsigned long long)file_size, n, (unsigned long long)(file_size - n));
        return -1;
    }
    if (file_size < n) {
        set_err(err, errlen, "padded: the file has %zu bytes, %llu more than the %llu "
                "its header declares (data was appended)", n,
                (unsigned long long)(n - file_size), (unsigned long long)file_size);
        return -1;
    }
    for (size_t i = CKPT_OFF_RESERVED; i < CKPT_OFF_HEADER_CRC; i++) {
        if (buf[i] != 0) {
            set_err(err, errlen, "corrupt: reserved header bytes are not zero");
            return -1;
        }
    }

    // the config: each field at least 1 and within an int
    int fields[5];
    for (int i = 0; i < 5; i++) {
        uint32_t v = ckpt_get_u32(buf + CKPT_OFF_CONTEXT + 4 * i);
        if (v < 1 || v > INT_MAX) {
            set_err(err, errlen, "corrupt: config field %s is %u", CONFIG_NAMES[i], v);
            return -1;
        }
        fields[i] = (int)v;
    }

    // the section table: its extent, then its checksum
    uint32_t num = ckpt_get_u32(buf + CKPT_OFF_NUM_SECTIONS);
    if (num > CKPT_MAX_SECTIONS) {
        set_err(err, errlen, "section table inconsistent: %u sections, at most %d",
                num, CKPT_MAX_SECTIONS);
        return -1;
    }
    size_t table_len = (size_t)CKPT_ENTRY_SIZE * num;
    if (table_len > n - CKPT_HEADER_SIZE) {
        set_err(err, errlen, "section table inconsistent: a table of %u sections does "
                "not fit in the file of %zu bytes", num, n);
        return -1;
    }
    const unsigned char* table = buf + CKPT_HEADER_SIZE;
    stored = ckpt_get_u32(buf + CKPT_OFF_TABLE_CRC);
    computed = crc_of(table, table_len);
    if (stored != computed) {
        set_err(err, errlen, "corrupt: section table checksum mismatch (stored %08x, "
                "computed %08x)", stored, computed);
        return -1;
    }

    // each entry: a valid, new tag at exactly the canonical offset, inside the file
    CkptSection secs[CKPT_MAX_SECTIONS];
    uint32_t crcs[CKPT_MAX_SECTIONS];
    uint64_t offsets[CKPT_MAX_SECTIONS];
    memset(secs, 0, sizeof(secs));
    uint64_t at = CKPT_HEADER_SIZE + table_len;
    for (uint32_t i = 0; i < num; i++) {
        const unsigned char* e = table + (size_t)CKPT_ENTRY_SIZE * i;
        CkptSection* s = &secs[i];
        memcpy(s->tag, e + CKPT_ENT_TAG, 4);
        s->tag[4] = '\0';
        if (!tag_valid(s->tag)) {
            set_err(err, errlen, "section table inconsistent: section %u has an invalid "
                    "tag (bytes %02x %02x %02x %02x)", i, e[0], e[1], e[2], e[3]);
            return -1;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (memcmp(secs[j].tag, s->tag, 4) == 0) {
                set_err(err, errlen, "corrupt: duplicate section %s (entries %u and %u)",
                        s->tag, j, i);
                return -1;
            }
        }
        offsets[i] = ckpt_get_u64(e + CKPT_ENT_OFFSET);
        s->size = ckpt_get_u64(e + CKPT_ENT_SIZE);
        crcs[i] = ckpt_get_u32(e + CKPT_ENT_CRC);
        if (offsets[i] != at) {
            set_err(err, errlen, "section table inconsistent: section %s starts at byte "
                    "%llu, expected %llu", s->tag, (unsigned long long)offsets[i],
                    (unsigned long long)at);
            return -1;
        }
        if (at > n || s->size > n - at) {
            set_err(err, errlen, "section table inconsistent: section %s of %llu bytes "
                    "at byte %llu extends past the end of the file (%zu bytes)", s->tag,
                    (unsigned long long)s->size, (unsigned long long)at, n);
            return -1;
        }

        // the padding after the payload must be zero bytes
        uint64_t end = at + s->size;
        int ok = 1;
        at = align_up(end, &ok);
        for (uint64_t k = end; ok && k < at && k < n; k++) {
            if (buf[k] != 0) {
                set_err(err, errlen, "corrupt: nonzero padding after section %s", s->tag);
                return -1;
            }
        }
        if (!ok) {
            at = UINT64_MAX; // fails the end check below
        }
    }
    if (at != n) {
        set_err(err, errlen, "section table inconsistent: the sections end at byte %llu "
                "but the file has %zu bytes", (unsigned long long)at, n);
        return -1;
    }

    // payload checksums, now that every payload is known to lie inside buf
    for (uint32_t i = 0; i < num; i++) {
        computed = crc_of(buf + offsets[i], (size_t)secs[i].size);
        if (computed != crcs[i]) {
            set_err(err, errlen, "corrupt: checksum mismatch in section %s (stored %08x, "
                    "computed %08x); the file is damaged, restore it from a copy",
                    secs[i].tag, crcs[i], computed);
            return -1;
        }
    }

    // all checks passed: copy the payloads out (at most n bytes in total)
    for (uint32_t i = 0; i < num; i++) {
        size_t size = (size_t)secs[i].size;
        secs[i].data = malloc(size > 0 ? size : 1);
        if (secs[i].data == NULL) {
            for (uint32_t j = 0; j < i; j++) {
                free(secs[j].data);
            }
            set_err(err, errlen, "out of memory: cannot hold section %s of %zu bytes",
                    secs[i].tag, size);
            return -1;
        }
        memcpy(secs[i].data, buf + offsets[i], size);
        secs[i].word_size = 1;
    }
    c->config.context = fields[0];
    c->config.vocab_size = fields[1];
    c->config.layers = fields[2];
    c->config.heads = fields[3];
    c->config.channels = fields[4];
    c->num_sections = (int)num;
    memcpy(c->sections, secs, sizeof(secs));
    c->owns_data = 1;
    return 0;
}

int ckpt_load(Checkpoint* c, const char* path, char* err, size_t errlen) {
    memset(c, 0, sizeof(*c));

    // open it and make sure it is a plain file
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "cannot open checkpoint '%s': %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "cannot read checkpoint '%s': %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        set_err(err, errlen, "checkpoint '%s' is a directory, not a file", path);
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "checkpoint '%s' is not a regular file", path);
        close(fd);
        return -1;
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX - 1) {
        set_err(err, errlen, "checkpoint '%s' is too large for this machine", path);
        close(fd);
        return -1;
    }

    // read it whole
    size_t n = (size_t)st.st_size;
    unsigned char* buf = malloc(n > 0 ? n : 1);
    if (buf == NULL) {
        set_err(err, errlen, "cannot read checkpoint '%s': out of memory for %zu bytes",
                path, n);
        close(fd);
        return -1;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            if (r < 0) {
                set_err(err, errlen, "cannot read checkpoint '%s': %s", path,
                        strerror(errno));
            } else {
                set_err(err, errlen, "cannot read checkpoint '%s': it shrank while being "
                        "read", path);
            }
            free(buf);
            close(fd);
            return -1;
        }
        got += (size_t)r;
    }
    close(fd);

    // check and copy out
    char why[512];
    int rc = ckpt_load_memory(c, buf, n, why, sizeof(why));
    free(buf);
    if (rc != 0) {
        set_err(err, errlen, "checkpoint '%s': %s", path, why);
        return -1;
    }
    return 0;
}

void ckpt_free_loaded(Checkpoint* c) {
    if (c->owns_data) {
        for (int i = 0; i < c->num_sections; i++) {
            free(c->sections[i].data);
        }
    }
    memset(c->sections, 0, sizeof(c->sections));
    c->num_sections = 0;
    c->owns_data = 0;
}

// ----------------------------------------------------------------------------
// Reading sections

// Finds tag and checks that its payload has exactly `size` bytes.
static const CkptSection* find_sized(const Checkpoint* c, const char* tag, uint64_t size,
                                     const char* what, char* err, size_t errlen) {
    const CkptSection* s = ckpt_find(c, tag);
    if (s == NULL) {
        set_err(err, errlen, "checkpoint has no %s section",
                tag != NULL ? tag : "(null)");
        return NULL;
    }
    if (s->size != size) {
        set_err(err, errlen, "checkpoint section %s has %llu bytes, expected %llu (%s)",
                tag, (unsigned long long)s->size, (unsigned long long)size, what);
        return NULL;
    }
    return s;
}

int ckpt_check_vocab(const Checkpoint* c, char* err, size_t errlen) {
    char what[96];
    snprintf(what, sizeof(what), "vocab_size %d times 4 bytes", c->config.vocab_size);
    uint64_t want = c->config.vocab_size > 0 ? (uint64_t)c->config.vocab_size * 4 : 0;
    return find_sized(c, "VOCB", want, what, err, errlen) != NULL ? 0 : -1;
}

// Copies count 32-bit words of section s into out (uint32_t or float), in host
// order; memcpy per word keeps the float case free of aliasing trouble.
static void read_words(const CkptSection* s, void* out, size_t count) {
    if (s->word_size == 4) {
        memcpy(out, s->data, count * 4); // still host order: built, not loaded
        return;
    }
    const unsigned char* p = (const unsigned char*)s->data;
    unsigned char* q = (unsigned char*)out;
    for (size_t i = 0; i < count; i++) {
        uint32_t w = ckpt_get_u32(p + 4 * i);
        memcpy(q + 4 * i, &w, 4);
    }
}

int ckpt_read_u32(const Checkpoint* c, const char* tag, uint32_t* out, size_t count,
                  char* err, size_t errlen) {
    char what[64];
    snprintf(what, sizeof(what), "%zu 32-bit values", count);
    const CkptSection* s = find_sized(c, tag, (uint64_t)count * 4, what, err, errlen);
    if (s == NULL) {
        return -1;
    }
    read_words(s, out, count);
    return 0;
}

int ckpt_read_f32(const Checkpoint* c, const char* tag, float* out, size_t count,
                  char* err, size_t errlen) {
    char what[64];
    snprintf(what, sizeof(what), "%zu float32 values", count);
    const CkptSection* s = find_sized(c, tag, (uint64_t)count * 4, what, err, errlen);
    if (s == NULL) {
        return -1;
    }
    _Static_assert(sizeof(float) == 4, "float must be 32 bits");
    read_words(s, out, count);
    return 0;
}

int ckpt_read_bytes(const Checkpoint* c, const char* tag, void* out, uint64_t size,
                    char* err, size_t errlen) {
    const CkptSection* s = find_sized(c, tag, size, "the size the reader expects", err,
                                      errlen);
    if (s == NULL) {
        return -1;
    }
    if (size > 0) {
        memcpy(out, s->data, (size_t)size);
    }
    return 0;
}
