/*
 * tests/index/replay_corpus.c - a plain main() around the fuzz target of fuzz_load.c.
 *
 *   replay_corpus DIR|FILE...      feeds every regular file to LLVMFuzzerTestOneInput (what the
 *                                  fuzzer does with its corpus), so the normal sanitizer build
 *                                  re-checks every input the fuzzer ever kept, and a crash file
 *                                  can be reproduced under gdb without libFuzzer.
 *   replay_corpus --generate DIR   writes the seed corpus: small saved indexes of every type,
 *                                  storage and metric, empty, filled, with tombstones, compacted.
 *
 * Exit status: 0 when every input was processed (sanitizers abort the process on a bug), 1 on
 * usage or I/O errors, or when no input was found.
 */
#define _GNU_SOURCE
#include "index/index.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "replay_corpus: cannot open %s\n", path);
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return -1;
    }
    size_t len = (size_t)st.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL || fread(buf, 1, len, f) != len) {
        fprintf(stderr, "replay_corpus: cannot read %s\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

static int replay(const char *path, size_t *count)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay_corpus: %s does not exist\n", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        (*count)++;
        return replay_file(path);
    }
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *p = NULL;
        if (asprintf(&p, "%s/%s", path, e->d_name) < 0) {
            rc = -1;
            break;
        }
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            (*count)++;
            rc = replay_file(p);
        }
        free(p);
    }
    closedir(d);
    return rc;
}

/* --- seed generation ------------------------------------------------------------------------ */

enum state { S_EMPTY, S_FILLED, S_TOMBSTONES, S_COMPACTED, S_ALL_REMOVED };
static const char *const state_names[] = {"empty", "filled", "tombstones", "compacted",
                                          "all-removed"};

static int write_seed(const char *dir, qv_index_type type, qv_storage storage, qv_metric metric,
                      enum state state)
{
    const uint32_t dim = 4;
    const size_t n = 24;
    qv_index_params p;
    qv_index_params_default(&p, type, metric, dim);
    p.storage = storage;
    p.threads = 1;
    p.hnsw.M = 4;
    p.hnsw.ef_construction = 16;
    p.ivf.nlist = 4;
    p.ivf.nprobe = 2;
    p.ivf.iters = 4;
    qv_index *idx = NULL;
    qv_status err;
    if (qv_index_create(&p, &idx, &err) != 0) {
        fprintf(stderr, "replay_corpus: create: %s\n", err.msg);
        return -1;
    }
    float v[24 * 4];
    uint64_t ids[24];
    uint64_t s = 0x1234567u + (uint64_t)type * 131u + (uint64_t)metric * 17u + storage;
    for (size_t i = 0; i < n; i++) {
        ids[i] = 3 * i + 1;
        for (uint32_t d = 0; d < dim; d++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            v[i * dim + d] = (float)((int)(s >> 56) - 128) / 32.0f;
        }
    }
    int rc = 0;
    if (state != S_EMPTY)
        rc = qv_index_add(idx, ids, v, n, &err);
    if (rc == 0 && state >= S_TOMBSTONES) {
        size_t step = state == S_ALL_REMOVED ? 1 : 4;
        for (size_t i = 0; i < n; i += step)
            qv_index_remove(idx, &ids[i], 1, NULL);
    }
    if (rc == 0 && state >= S_COMPACTED)
        rc = qv_index_compact(idx, &err);
    char *path = NULL;
    if (rc == 0 && asprintf(&path, "%s/seed-%s%s-%s-%s.qvi", dir, qv_index_type_name(type),
                            storage == QV_STORAGE_INT8 ? "-int8" : "",
                            metric == QV_METRIC_L2   ? "l2"
                            : metric == QV_METRIC_IP ? "ip"
                                                     : "cosine",
                            state_names[state]) < 0)
        rc = -1;
    if (rc == 0)
        rc = qv_index_save(idx, path, &err);
    if (rc != 0)
        fprintf(stderr, "replay_corpus: seed %s: %s\n", path ? path : "?", err.msg);
    free(path);
    qv_index_free(idx);
    return rc;
}

static int generate(const char *dir)
{
    if (mkdir(dir, 0755) != 0 && access(dir, W_OK) != 0) {
        fprintf(stderr, "replay_corpus: cannot create %s\n", dir);
        return 1;
    }
    static const qv_metric metrics[] = {QV_METRIC_L2, QV_METRIC_IP, QV_METRIC_COSINE};
    int failed = 0, written = 0;
    for (int m = 0; m < 3; m++) {
        for (int st = S_EMPTY; st <= S_ALL_REMOVED; st++) {
            bool graph_state = st == S_COMPACTED || st == S_ALL_REMOVED;
            if (!graph_state) {
                failed |= write_seed(dir, QV_INDEX_FLAT, QV_STORAGE_F32, metrics[m], st) != 0;
                failed |= write_seed(dir, QV_INDEX_IVF_FLAT, QV_STORAGE_F32, metrics[m], st) != 0;
                written += 2;
            }
            failed |= write_seed(dir, QV_INDEX_HNSW, QV_STORAGE_F32, metrics[m], st) != 0;
            failed |= write_seed(dir, QV_INDEX_HNSW, QV_STORAGE_INT8, metrics[m], st) != 0;
            written += 2;
        }
    }
    printf("replay_corpus: %d seeds written to %s%s\n", written, dir,
           failed ? " (some failed, see above)" : "");
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--generate") == 0)
        return generate(argv[2]);
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: %s DIR|FILE...  |  %s --generate DIR\n", argv[0], argv[0]);
        return 1;
    }
    size_t count = 0;
    for (int i = 1; i < argc; i++)
        if (replay(argv[i], &count) != 0)
            return 1;
    printf("replay_corpus: %zu inputs replayed\n", count);
    return count > 0 ? 0 : 1;
}
