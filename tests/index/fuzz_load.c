/*
 * tests/index/fuzz_load.c - libFuzzer target: qv_index_load_buffer on arbitrary bytes.
 *
 * Each input is loaded twice:
 *   1. as it is: almost every mutation dies on a checksum, which exercises the framing checks
 *      (header, table bounds, section bounds, CRCs) of index/format.c;
 *   2. when it is framed like an index file (magic, a table where the header says), with the
 *      header's file length set to the input's and every checksum recomputed, so mutations reach
 *      the semantic validation of each index type's load (counts, links, levels, lists, ...).
 * A load that succeeds is exercised with searches (graph, exact, filtered, batch), membership
 * and stats, then freed. Anything ASan/UBSan/LSan reports is a bug in the loader.
 *
 * The same entry point drives tests/index/replay_corpus.c, which replays the checked-in corpus in
 * the normal (gcc, sanitizer) test build without libFuzzer.
 */
#define _GNU_SOURCE /* POSIX types (pthread_rwlock_t) in index_internal.h */
#include "index/index_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void wr64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes the CRCs of a buffer framed like an index file (layout in index_internal.h).
 * Returns false when the framing is too broken to know where the checksums go. */
static bool fix_checksums(uint8_t *b, size_t len)
{
    if (len < QV__FILE_HEADER || memcmp(b, QV__FILE_MAGIC, 8) != 0)
        return false;
    uint32_t nsec = rd32(b + 32);
    uint64_t toff = rd64(b + 40);
    if (nsec > QV__MAX_SECTIONS || toff < QV__FILE_HEADER || toff > len ||
        len - toff != (uint64_t)nsec * 32 + 4)
        return false;
    uint8_t *t = b + toff;
    for (uint32_t i = 0; i < nsec; i++) {
        uint8_t *e = t + (size_t)i * 32;
        uint64_t off = rd64(e + 8), slen = rd64(e + 16);
        if (off <= len && slen <= len - off)
            wr32(e + 24, qv_crc32c(0, b + off, (size_t)slen));
    }
    wr32(t + (size_t)nsec * 32, qv_crc32c(0, t, (size_t)nsec * 32));
    wr64(b + 48, len);
    wr32(b + 12, 0);
    wr32(b + 12, qv_crc32c(0, b, QV__FILE_HEADER));
    return true;
}

static bool pred_odd(uint64_t id, void *ctx)
{
    (void)ctx;
    return (id & 1) != 0;
}

static void exercise(qv_index *idx, const uint8_t *data, size_t size)
{
    qv_index_stats st;
    qv_index_stats_get(idx, &st);
    size_t dim = st.dim;
    float *q = malloc(2 * dim * sizeof(float));
    qv_hit *out = malloc(2 * 16 * sizeof(qv_hit));
    roaring_bitmap_t *bm = roaring_bitmap_create();
    if (q == NULL || out == NULL || bm == NULL)
        goto done;
    for (size_t i = 0; i < 2 * dim; i++)
        q[i] = (float)((int)data[(i * 7) % size] - 128) / 16.0f;
    for (uint32_t id = 0; id < 64; id += 3)
        roaring_bitmap_add(bm, id);
    qv_filter fb = {.allow = bm};
    qv_filter fp = {.pred = pred_odd};
    qv_filter fboth = {.allow = bm, .pred = pred_odd, .expected_allowed = 4};
    qv_search_params sps[3] = {{0}, {.ef = 16, .nprobe = 2, .rerank = 4}, {.exact = true}};
    const qv_filter *fs[4] = {NULL, &fb, &fp, &fboth};
    size_t nout, counts[2];
    for (int s = 0; s < 3; s++)
        for (int f = 0; f < 4; f++)
            (void)qv_index_search(idx, q, s == 1 ? 16 : 1 + (size_t)f, &sps[s], fs[f], out, &nout,
                                  NULL);
    (void)qv_index_search_batch(idx, q, 2, 16, &sps[1], NULL, 1, out, counts, NULL);
    for (uint64_t id = 0; id < 8; id++)
        (void)qv_index_contains(idx, id);
    (void)qv_index_contains(idx, UINT64_MAX);
done:
    if (bm != NULL)
        roaring_bitmap_free(bm);
    free(out);
    free(q);
}

static void try_load(const uint8_t *buf, size_t len)
{
    qv_index *idx = NULL;
    qv_status err;
    int rc = qv_index_load_buffer(buf, len, &idx, &err);
    if (rc == 0) {
        exercise(idx, buf, len);
        qv_index_free(idx);
    } else if (idx != NULL || err.msg[0] == '\0') {
        __builtin_trap(); /* a refusal must say why and return nothing */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    try_load(data, size);
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    if (fix_checksums(copy, size))
        try_load(copy, size);
    free(copy);
    return 0;
}
