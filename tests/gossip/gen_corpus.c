/*
 * Writes the seed corpus of the gossip fuzzer (tests/gossip/fuzz_decode.c) into a directory:
 * valid encodings of every datagram message type (alone and together), push-pull requests and
 * replies, sealed datagrams under the fuzzer's key, and a few broken ones. Each file is the
 * fuzzer's mode byte followed by the payload.
 *
 * Usage: gossip_corpus_gen DIR   (the in-tree corpus is tests/gossip/corpus)
 */
#include "common/gossip/gossip_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_dir;
static int g_files;

static void put(const char *name, uint8_t mode, const uint8_t *p, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    fputc(mode, f);
    fwrite(p, 1, len, f);
    fclose(f);
    g_files++;
}

static qv__hdr hdr(const char *sender, uint64_t seq)
{
    qv__hdr h = {.epoch = 500, .seq = seq};
    snprintf(h.name, sizeof(h.name), "%s", sender);
    return h;
}

static qv_gossip_addr addr(uint8_t last)
{
    qv_gossip_addr a = {.family = 4, .port = 7946, .ip = {10, 9, 9, last}};
    return a;
}

static qv__record record(const uint8_t *blob, uint32_t len)
{
    qv__record r = {.role = QV_GOSSIP_ROLE_NODE, .blob = blob, .blob_len = len};
    snprintf(r.grpc, sizeof(r.grpc), "10.9.9.1:7070");
    snprintf(r.version, sizeof(r.version), "0.1.0");
    r.load.cpu = 0.5f;
    r.load.replicas = 3;
    return r;
}

static size_t packet(uint8_t *buf, size_t cap, const qv__msg *msgs, size_t n)
{
    qv__wbuf w;
    qv__w_fixed(&w, buf, cap);
    qv__hdr h = hdr("peer-1", 7);
    qv__hdr_encode(&w, &h);
    qv__w_u8(&w, (uint8_t)n);
    for (size_t i = 0; i < n; i++)
        qv__msg_encode(&w, &msgs[i]);
    return w.err ? 0 : w.len;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    uint8_t blob[64];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)i;

    qv__msg m[9];
    memset(m, 0, sizeof(m));
    m[0] = (qv__msg){.type = QV__MSG_PING, .seq = 1};
    snprintf(m[0].name, sizeof(m[0].name), "fuzz-self");
    m[1] = (qv__msg){.type = QV__MSG_PING_REQ, .seq = 2, .addr = addr(3), .flags = 1};
    snprintf(m[1].name, sizeof(m[1].name), "peer-3");
    m[2] = (qv__msg){.type = QV__MSG_ACK, .seq = 3};
    m[3] = (qv__msg){.type = QV__MSG_NACK, .seq = 4};
    m[4] = (qv__msg){.type = QV__MSG_ALIVE, .inc = 2, .addr = addr(2)};
    snprintf(m[4].name, sizeof(m[4].name), "peer-2");
    m[5] = (qv__msg){.type = QV__MSG_SUSPECT, .inc = 2};
    snprintf(m[5].name, sizeof(m[5].name), "peer-2");
    snprintf(m[5].from, sizeof(m[5].from), "peer-4");
    m[6] = (qv__msg){.type = QV__MSG_DEAD, .inc = 3};
    snprintf(m[6].name, sizeof(m[6].name), "peer-2");
    snprintf(m[6].from, sizeof(m[6].from), "peer-5");
    m[7] = (qv__msg){.type = QV__MSG_LEAVE, .inc = 4};
    snprintf(m[7].name, sizeof(m[7].name), "peer-2");
    m[8] = (qv__msg){.type = QV__MSG_STATE, .inc = 9, .rec = record(blob, sizeof(blob))};
    snprintf(m[8].name, sizeof(m[8].name), "peer-2");
    static const char *names[] = {"ping",    "ping-req", "ack",   "nack", "alive",
                                  "suspect", "dead",     "leave", "state"};

    uint8_t buf[4096];
    char fname[64];
    for (int i = 0; i < 9; i++) {
        /* Each type alone, and after an ALIVE that makes its subject known. */
        size_t len = packet(buf, sizeof(buf), &m[i], 1);
        snprintf(fname, sizeof(fname), "dgram-%s", names[i]);
        put(fname, 0, buf, len);
        qv__msg two[2] = {m[4], m[i]};
        len = packet(buf, sizeof(buf), two, 2);
        snprintf(fname, sizeof(fname), "dgram-alive-then-%s", names[i]);
        put(fname, 0, buf, len);
    }
    size_t len = packet(buf, sizeof(buf), m, 9);
    put("dgram-all-types", 0, buf, len);
    qv__msg about_self[3] = {m[5], m[6], m[0]};
    snprintf(about_self[0].name, sizeof(about_self[0].name), "fuzz-self");
    snprintf(about_self[1].name, sizeof(about_self[1].name), "fuzz-self");
    len = packet(buf, sizeof(buf), about_self, 3);
    put("dgram-accusations-about-self", 0, buf, len);
    put("dgram-truncated", 0, buf, len / 2);

    /* Sealed datagrams under the fuzzer's key. */
    qv_gossip_key key;
    for (int i = 0; i < QV_GOSSIP_KEY_BYTES; i++)
        key.bytes[i] = (uint8_t)(0xf0 ^ i);
    qv__keyring kr;
    if (qv__keyring_set(&kr, &key, 1) != 0)
        return 1;
    uint8_t nonce[QV__NONCE_BYTES] = {7};
    uint8_t sealed[4096 + QV__ENV_OVERHEAD];
    len = packet(buf, sizeof(buf), m, 9);
    size_t slen = qv__seal(&kr, QV__PURPOSE_PACKET, nonce, buf, len, sealed);
    put("sealed-all-types", 2, sealed, slen);
    len = packet(buf, sizeof(buf), &m[0], 1);
    slen = qv__seal(&kr, QV__PURPOSE_PACKET, nonce, buf, len, sealed);
    put("sealed-ping", 2, sealed, slen);
    put("sealed-truncated", 2, sealed, QV__ENV_OVERHEAD - 1);

    /* Push-pull requests and replies. */
    for (int kind = QV__STREAM_PP_REQ; kind <= QV__STREAM_PP_REPLY; kind++) {
        for (uint32_t n = 0; n <= 3; n++) {
            qv__wbuf w;
            qv__w_fixed(&w, buf, sizeof(buf));
            qv__hdr h = hdr("peer-1", 8);
            qv__pp_begin_encode(&w, &h, (uint8_t)kind, n == 1 ? QV__PP_FLAG_JOIN : 0, n);
            for (uint32_t i = 0; i < n; i++) {
                qv__pp_entry e = {.addr = addr((uint8_t)(i + 1)),
                                  .inc = i,
                                  .state = (uint8_t)(QV_GOSSIP_ALIVE + i),
                                  .rec_version = i == 0 ? 0 : 10 + i,
                                  .blob_omitted = i == 2,
                                  .rec = record(blob, sizeof(blob))};
                snprintf(e.name, sizeof(e.name), i == 2 ? "fuzz-self" : "peer-%u", i + 1);
                qv__pp_entry_encode(&w, &e);
            }
            snprintf(fname, sizeof(fname), "stream-%s-%u",
                     kind == QV__STREAM_PP_REQ ? "req" : "reply", n);
            put(fname, kind == QV__STREAM_PP_REQ ? 1 : 3, w.p, w.len);
        }
    }
    printf("wrote %d files to %s\n", g_files, g_dir);
    return 0;
}
