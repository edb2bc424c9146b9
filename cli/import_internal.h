/*
 * cli/import_internal.h - what the point readers of import.c, import_text.c and import_hdf5.c
 * share: the reader struct, the per-format vtable and the batch buffers. Not for other modules.
 */
#ifndef QV_CLI_IMPORT_INTERNAL_H
#define QV_CLI_IMPORT_INTERNAL_H

#include "cli/import.h"

#include <stdarg.h>
#include <stdio.h>

typedef struct qv__import_ops {
    /* Fills r->ids, r->vectors (and r->payload_off, r->arena when the format has payloads) with
     * up to `max` points (r->cap >= max is guaranteed); *n = 0 at the end. */
    int (*next)(qv_import_reader *r, size_t max, size_t *n, qv_status *err);
    /* Skips `rows` points; NULL: read and drop them. */
    int (*skip)(qv_import_reader *r, uint64_t rows, qv_status *err);
    /* Bytes consumed so far; NULL: derived from rows read and the file size. */
    uint64_t (*bytes_done)(const qv_import_reader *r);
    void (*close)(qv_import_reader *r); /* frees r->impl */
} qv__import_ops;

/* A growable byte buffer (JSON payload texts, text lines). */
typedef struct qv__buf {
    char *p;
    size_t len, cap;
} qv__buf;

struct qv_import_reader {
    const qv__import_ops *ops;
    void *impl;
    char *path;
    qv_import_format format;
    size_t dim;
    uint64_t start_id;
    uint64_t row; /* rows handed out or skipped so far: the index of the next row */
    bool has_total;
    uint64_t total;
    uint64_t file_size;
    const char *metric_hint;
    bool has_payloads;
    /* Batch buffers, `cap` rows each. */
    size_t cap;
    qv_point_id *ids;
    float *vectors;      /* 64-byte aligned */
    size_t *payload_off; /* offset into arena, or SIZE_MAX for none; turned into pointers */
    const char **payloads;
    qv__buf arena;
};

/* printf into err->msg; returns code. */
int qv__import_fail(qv_status *err, int code, const char *fmt, ...) QV_PRINTF(3, 4);

/* fopen + fstat: a regular file, and its size. */
int qv__open_regular(const char *path, FILE **out, uint64_t *size, qv_status *err);

/* Appends to a buffer (keeps it NUL-terminated). Return 0 or QV_ERESOURCE. */
int qv__buf_put(qv__buf *b, const char *s, size_t len);
int qv__buf_printf(qv__buf *b, const char *fmt, ...) QV_PRINTF(2, 3);
/* Appends s[0..len) as a JSON string literal (quotes and escapes added). */
int qv__buf_json_str(qv__buf *b, const char *s, size_t len);

/* The id of a row without an id of its own: start_id + row, QV_ERANGE past 2^64 - 1. */
int qv__import_seq_id(qv_import_reader *r, uint64_t row, qv_point_id *out, qv_status *err);

/* Parses a decimal number (0..2^64-1) or a UUID (8-4-4-4-12 hex, either case) of len bytes. */
bool qv__parse_point_id(const char *s, size_t len, qv_point_id *out);

/* Parses one float32 from s[0..len): the JSON number grammar plus a leading '+'; finite and in
 * float32 range. */
bool qv__parse_f32(const char *s, size_t len, float *out);

/* Format openers: fill r->ops, r->impl, r->dim (and the optional fields), or fail. */
int qv__open_hdf5(qv_import_reader *r, const qv_import_opts *o, qv_status *err);
int qv__open_jsonl(qv_import_reader *r, const qv_import_opts *o, qv_status *err);
int qv__open_csv(qv_import_reader *r, const qv_import_opts *o, qv_status *err);

#endif /* QV_CLI_IMPORT_INTERNAL_H */
