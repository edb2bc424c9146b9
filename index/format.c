/* The index snapshot file: header, 64-byte aligned sections with CRC-32C, a section table.
 * Layout in index_internal.h. The reader verifies the header, the table and every section's
 * checksum before an index type sees a byte. */
#define _GNU_SOURCE
#include "index/index_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void w_fail(qv__writer *w, const char *what)
{
    if (w->err != 0)
        return;
    int e = errno;
    w->err = e == ENOSPC ? QV_ERESOURCE : QV_EUNAVAIL;
    snprintf(w->errmsg, sizeof(w->errmsg), "%s: %s", what, e ? strerror(e) : "failed");
}

static void w_raw(qv__writer *w, const void *data, size_t len)
{
    if (w->err != 0 || len == 0)
        return;
    if (fwrite(data, 1, len, w->f) != len) {
        w_fail(w, "write");
        return;
    }
    w->off += len;
}

static void w_pad(qv__writer *w)
{
    static const uint8_t zeros[QV__FILE_ALIGN];
    size_t rem = (size_t)(w->off % QV__FILE_ALIGN);
    if (rem != 0)
        w_raw(w, zeros, QV__FILE_ALIGN - rem);
}

void qv__w_begin(qv__writer *w, uint32_t tag)
{
    if (w->err != 0)
        return;
    if (w->open_section || w->nsec == QV__MAX_SECTIONS) {
        w->err = QV_EINTERNAL;
        snprintf(w->errmsg, sizeof(w->errmsg), "index writer: section misuse");
        return;
    }
    w_pad(w);
    qv__section *s = &w->sec[w->nsec];
    s->tag = tag;
    s->offset = w->off;
    s->len = 0;
    s->crc = 0;
    w->open_section = true;
}

void qv__w_write(qv__writer *w, const void *data, size_t len)
{
    if (w->err != 0 || !w->open_section)
        return;
    qv__section *s = &w->sec[w->nsec];
    s->crc = qv_crc32c(s->crc, data, len);
    s->len += len;
    w_raw(w, data, len);
}

void qv__w_end(qv__writer *w)
{
    if (w->err != 0 || !w->open_section)
        return;
    w->open_section = false;
    w->nsec++;
}

void qv__w_section(qv__writer *w, uint32_t tag, const void *data, size_t len)
{
    qv__w_begin(w, tag);
    qv__w_write(w, data, len);
    qv__w_end(w);
}

void qv__w_start(qv__writer *w, FILE *f)
{
    memset(w, 0, sizeof(*w));
    w->f = f;
    uint8_t hdr[QV__FILE_HEADER] = {0};
    w_raw(w, hdr, sizeof(hdr));
}

int qv__w_finish(qv__writer *w, const qv_index_params *p, qv_status *err)
{
    if (w->open_section && w->err == 0) {
        w->err = QV_EINTERNAL;
        snprintf(w->errmsg, sizeof(w->errmsg), "index writer: section left open");
    }
    w_pad(w);
    uint64_t table_off = w->off;
    uint8_t ent[32];
    uint32_t tcrc = 0;
    for (uint32_t i = 0; i < w->nsec; i++) {
        memset(ent, 0, sizeof(ent));
        put_u32(ent, w->sec[i].tag);
        put_u64(ent + 8, w->sec[i].offset);
        put_u64(ent + 16, w->sec[i].len);
        put_u32(ent + 24, w->sec[i].crc);
        tcrc = qv_crc32c(tcrc, ent, sizeof(ent));
        w_raw(w, ent, sizeof(ent));
    }
    uint8_t crcb[4];
    put_u32(crcb, tcrc);
    w_raw(w, crcb, 4);
    uint64_t file_len = w->off;

    uint8_t hdr[QV__FILE_HEADER] = {0};
    memcpy(hdr, QV__FILE_MAGIC, 8);
    put_u32(hdr + 8, QV__FILE_VERSION);
    put_u32(hdr + 16, (uint32_t)p->type);
    put_u32(hdr + 20, (uint32_t)p->metric);
    put_u32(hdr + 24, p->dim);
    put_u32(hdr + 28, (uint32_t)p->storage);
    put_u32(hdr + 32, w->nsec);
    put_u64(hdr + 40, table_off);
    put_u64(hdr + 48, file_len);
    put_u32(hdr + 12, qv_crc32c(0, hdr, sizeof(hdr)));
    if (w->err == 0 && fseek(w->f, 0, SEEK_SET) != 0)
        w_fail(w, "seek");
    if (w->err == 0 && fwrite(hdr, 1, sizeof(hdr), w->f) != sizeof(hdr))
        w_fail(w, "write header");
    if (w->err != 0) {
        *err = qv_status_make(w->err, "saving index: %s", w->errmsg);
        return w->err;
    }
    return 0;
}

#define CORRUPT(...)                                                                               \
    do {                                                                                           \
        *err = qv_status_make(QV_ECORRUPT, __VA_ARGS__);                                           \
        return QV_ECORRUPT;                                                                        \
    } while (0)

int qv__r_open(qv__reader *r, const void *buf, size_t len, qv_status *err)
{
    memset(r, 0, sizeof(*r));
    const uint8_t *b = buf;
    if (len < QV__FILE_HEADER)
        CORRUPT("index file truncated: %zu bytes, shorter than its header", len);
    if (memcmp(b, QV__FILE_MAGIC, 8) != 0)
        CORRUPT("not a Quiver index file (bad magic)");
    uint8_t hdr[QV__FILE_HEADER];
    memcpy(hdr, b, sizeof(hdr));
    uint32_t hcrc = get_u32(hdr + 12);
    put_u32(hdr + 12, 0);
    if (qv_crc32c(0, hdr, sizeof(hdr)) != hcrc)
        CORRUPT("index file header checksum mismatch");
    uint32_t version = get_u32(b + 8);
    if (version != QV__FILE_VERSION) {
        *err = qv_status_make(QV_EPRECONDITION,
                              "index file format version %u; this build reads version %u", version,
                              QV__FILE_VERSION);
        return QV_EPRECONDITION;
    }
    r->base = b;
    r->len = len;
    r->type = get_u32(b + 16);
    r->metric = get_u32(b + 20);
    r->dim = get_u32(b + 24);
    r->storage = get_u32(b + 28);
    r->nsec = get_u32(b + 32);
    uint64_t table_off = get_u64(b + 40);
    uint64_t file_len = get_u64(b + 48);
    if (file_len != len)
        CORRUPT("index file is %zu bytes but its header says %llu (truncated or extended)", len,
                (unsigned long long)file_len);
    if (r->nsec > QV__MAX_SECTIONS)
        CORRUPT("index file claims %u sections (at most %u)", r->nsec, QV__MAX_SECTIONS);
    uint64_t table_len = (uint64_t)r->nsec * 32 + 4;
    if (table_off < QV__FILE_HEADER || table_off > len || len - table_off != table_len)
        CORRUPT("index file section table is out of bounds");
    const uint8_t *t = b + table_off;
    if (qv_crc32c(0, t, (size_t)table_len - 4) != get_u32(t + table_len - 4))
        CORRUPT("index file section table checksum mismatch");
    for (uint32_t i = 0; i < r->nsec; i++) {
        const uint8_t *e = t + (size_t)i * 32;
        qv__section *s = &r->sec[i];
        s->tag = get_u32(e);
        s->offset = get_u64(e + 8);
        s->len = get_u64(e + 16);
        s->crc = get_u32(e + 24);
        if (s->offset < QV__FILE_HEADER || s->offset > table_off || s->len > table_off - s->offset)
            CORRUPT("index file section %u is out of bounds", i);
        if (qv_crc32c(0, b + s->offset, (size_t)s->len) != s->crc) {
            char tag[5] = {(char)(s->tag & 0xFF), (char)(s->tag >> 8 & 0xFF),
                           (char)(s->tag >> 16 & 0xFF), (char)(s->tag >> 24), 0};
            for (int k = 0; k < 4; k++)
                if (tag[k] < 32 || tag[k] > 126)
                    tag[k] = '?';
            CORRUPT("index file section '%s' checksum mismatch", tag);
        }
    }
    /* The writer lays sections out in order, 64-byte aligned, with zero padding between them:
     * anything else (overlap, duplicate tags, stray bytes in the padding) is corruption, since
     * no checksum covers the padding. */
    uint64_t pos = QV__FILE_HEADER;
    for (uint32_t i = 0; i < r->nsec; i++) {
        const qv__section *s = &r->sec[i];
        if (s->offset < pos || s->offset % QV__FILE_ALIGN != 0)
            CORRUPT("index file section %u overlaps another or is misaligned", i);
        for (uint64_t p = pos; p < s->offset; p++)
            if (b[p] != 0)
                CORRUPT("index file has stray bytes at offset %llu", (unsigned long long)p);
        for (uint32_t j = 0; j < i; j++)
            if (r->sec[j].tag == s->tag)
                CORRUPT("index file has two sections with one tag");
        pos = s->offset + s->len;
    }
    for (uint64_t p = pos; p < table_off; p++)
        if (b[p] != 0)
            CORRUPT("index file has stray bytes at offset %llu", (unsigned long long)p);
    return 0;
}

int qv__r_section(const qv__reader *r, uint32_t tag, const void **data, size_t *len, qv_status *err)
{
    for (uint32_t i = 0; i < r->nsec; i++) {
        if (r->sec[i].tag == tag) {
            *data = r->base + r->sec[i].offset;
            *len = (size_t)r->sec[i].len;
            return 0;
        }
    }
    char name[5] = {(char)(tag & 0xFF), (char)(tag >> 8 & 0xFF), (char)(tag >> 16 & 0xFF),
                    (char)(tag >> 24), 0};
    CORRUPT("index file lacks its '%s' section", name);
}

int qv__r_section_exact(const qv__reader *r, uint32_t tag, size_t want, const void **data,
                        qv_status *err)
{
    size_t len;
    int rc = qv__r_section(r, tag, data, &len, err);
    if (rc != 0)
        return rc;
    if (len != want) {
        char name[5] = {(char)(tag & 0xFF), (char)(tag >> 8 & 0xFF), (char)(tag >> 16 & 0xFF),
                        (char)(tag >> 24), 0};
        CORRUPT("index file section '%s' is %zu bytes, expected %zu", name, len, want);
    }
    return 0;
}
