/*
 * Replays every file of the gossip fuzz corpus (tests/gossip/corpus, kept in the tree and grown by
 * scripts/fuzz-gossip.sh) through the fuzz target, under ASan and UBSan, so anything the fuzzer
 * once found stays fixed.
 */
#define _POSIX_C_SOURCE 200809L
#include "gossip_fixture.h"

#include <dirent.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

Test(corpus, every_corpus_file_goes_through_the_decoders_and_the_core)
{
    DIR *d = opendir(QV_GOSSIP_CORPUS_DIR);
    cr_assert_not_null(d, "cannot open %s", QV_GOSSIP_CORPUS_DIR);
    size_t files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", QV_GOSSIP_CORPUS_DIR, e->d_name);
        FILE *f = fopen(path, "rb");
        cr_assert_not_null(f, "%s", path);
        uint8_t *buf = malloc(1 << 20);
        size_t n = fread(buf, 1, 1 << 20, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        free(buf);
        files++;
    }
    closedir(d);
    cr_log_info("replayed %zu corpus files", files);
    cr_expect_geq(files, 30, "the corpus lost its seeds");
    fx_expect_no_leaks();
}
