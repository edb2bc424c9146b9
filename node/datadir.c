/* The node's data directory: creation, the exclusive lock, and the checksummed identity file.
 *
 * NODE_ID holds one line: "quiver-node-id 1 <32 hex digits> <crc32c of the hex, 8 hex digits>".
 * It is written to a temporary file, fsynced and renamed into place, so a crash leaves either no
 * file or a whole one. */
#define _GNU_SOURCE
#include "node/node_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define ID_MAGIC   "quiver-node-id"
#define ID_VERSION 1

static int mkdir_p(const char *path, qv_status *err)
{
    char *tmp = strdup(path);
    if (tmp == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        return QV_ERESOURCE;
    }
    for (char *p = tmp + 1;; p++) {
        bool end = *p == '\0';
        if (*p == '/' || end) {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
                int e = errno;
                *err = qv_status_make(qv_from_errno(e), "cannot create data directory '%s': %s",
                                      tmp, strerror(e));
                free(tmp);
                return qv_from_errno(e);
            }
            if (end)
                break;
            *p = '/';
        }
    }
    free(tmp);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        *err = qv_status_make(QV_EINVAL, "data directory '%s' is not a directory", path);
        return QV_EINVAL;
    }
    return 0;
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_id(const char *dir, const char *id_hex, qv_status *err)
{
    char path[4096], tmp[4096], line[128];
    snprintf(path, sizeof(path), "%s/NODE_ID", dir);
    snprintf(tmp, sizeof(tmp), "%s/NODE_ID.tmp", dir);
    int n = snprintf(line, sizeof(line), "%s %d %s %08x\n", ID_MAGIC, ID_VERSION, id_hex,
                     qv_crc32c(0, id_hex, QV_NODE_ID_HEX));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        goto fail;
    if (write(fd, line, (size_t)n) != n || fsync(fd) != 0) {
        close(fd);
        goto fail;
    }
    close(fd);
    if (rename(tmp, path) != 0 || fsync_dir(dir) != 0)
        goto fail;
    return 0;
fail : {
    int e = errno;
    unlink(tmp);
    *err = qv_status_make(qv_from_errno(e), "cannot write '%s': %s", path, strerror(e));
    return qv_from_errno(e) ? qv_from_errno(e) : QV_EUNKNOWN;
}
}

static int read_id(const char *dir, char *id_hex, bool *found, qv_status *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/NODE_ID", dir);
    *found = false;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        int e = errno;
        *err = qv_status_make(qv_from_errno(e), "cannot read '%s': %s", path, strerror(e));
        return qv_from_errno(e);
    }
    char line[256];
    bool got = fgets(line, sizeof(line), f) != NULL && fgetc(f) == EOF; /* exactly one line */
    fclose(f);
    char magic[32], hex[64];
    int version;
    unsigned crc;
    /* %4d bounds the version (no overflow); the exact re-print below rejects trailing bytes,
     * missing newlines and any other deviation from what write_id produced. */
    if (!got || sscanf(line, "%31s %4d %63s %8x", magic, &version, hex, &crc) != 4 ||
        strcmp(magic, ID_MAGIC) != 0) {
        *err = qv_status_make(QV_ECORRUPT, "'%s' is not a Quiver node identity file", path);
        return QV_ECORRUPT;
    }
    if (version != ID_VERSION) {
        *err = qv_status_make(QV_EPRECONDITION,
                              "'%s' has format version %d; this build reads version %d", path,
                              version, ID_VERSION);
        return QV_EPRECONDITION;
    }
    bool hex_ok = strlen(hex) == QV_NODE_ID_HEX;
    for (size_t i = 0; hex_ok && i < QV_NODE_ID_HEX; i++)
        hex_ok = (hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f');
    if (!hex_ok || qv_crc32c(0, hex, QV_NODE_ID_HEX) != crc) {
        *err = qv_status_make(QV_ECORRUPT,
                              "'%s' is corrupt (checksum mismatch); restore it from a backup or "
                              "move the data directory aside",
                              path);
        return QV_ECORRUPT;
    }
    char expect[128];
    snprintf(expect, sizeof(expect), "%s %d %s %08x\n", ID_MAGIC, ID_VERSION, hex, crc);
    if (strcmp(line, expect) != 0) {
        *err = qv_status_make(QV_ECORRUPT, "'%s' is corrupt (unexpected bytes in its line)", path);
        return QV_ECORRUPT;
    }
    memcpy(id_hex, hex, QV_NODE_ID_HEX + 1);
    *found = true;
    return 0;
}

int qv__datadir_open(qv_datadir *dir, const char *path, qv_status *err)
{
    memset(dir, 0, sizeof(*dir));
    dir->lock_fd = -1;
    if (path == NULL || path[0] == '\0' || strlen(path) > 3000) {
        *err = qv_status_make(QV_EINVAL, "data directory path is empty or too long");
        return QV_EINVAL;
    }
    int rc = mkdir_p(path, err);
    if (rc != 0)
        return rc;
    dir->path = strdup(path);
    if (dir->path == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        return QV_ERESOURCE;
    }

    char lock_path[4096];
    snprintf(lock_path, sizeof(lock_path), "%s/LOCK", path);
    dir->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (dir->lock_fd < 0) {
        int e = errno;
        *err = qv_status_make(qv_from_errno(e), "cannot open '%s': %s", lock_path, strerror(e));
        rc = qv_from_errno(e);
        goto fail;
    }
    if (flock(dir->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        *err = qv_status_make(QV_EUNAVAIL,
                              "data directory '%s' is in use by another quiver-node process", path);
        rc = QV_EUNAVAIL;
        goto fail;
    }

    bool found;
    rc = read_id(path, dir->node_id, &found, err);
    if (rc != 0)
        goto fail;
    if (!found) {
        uint8_t raw[QV_NODE_ID_HEX / 2];
        if (qv_random_bytes(raw, sizeof(raw)) != 0) {
            *err = qv_status_make(QV_EUNAVAIL, "no randomness available for a node id");
            rc = QV_EUNAVAIL;
            goto fail;
        }
        for (size_t i = 0; i < sizeof(raw); i++)
            snprintf(dir->node_id + 2 * i, 3, "%02x", raw[i]);
        rc = write_id(path, dir->node_id, err);
        if (rc != 0)
            goto fail;
        qv_log_info("node", "new data directory %s, node id %s", path, dir->node_id);
    }
    return 0;

fail:
    qv__datadir_close(dir);
    return rc;
}

void qv__datadir_close(qv_datadir *dir)
{
    if (dir->lock_fd >= 0)
        close(dir->lock_fd); /* releases the flock */
    dir->lock_fd = -1;
    free(dir->path);
    dir->path = NULL;
}
