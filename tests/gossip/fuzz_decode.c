/*
 * libFuzzer target for everything gossip reads from the network (scripts/fuzz-gossip.sh builds it
 * with clang; tests/gossip/test_corpus.c replays the in-tree corpus through it in the normal
 * suite, built by gcc under ASan).
 *
 * The first input byte picks what the rest is:
 *   0  a datagram plaintext, handed to the protocol core as if it had been opened
 *   1  a push-pull request plaintext (the core merges it and builds its reply)
 *   2  a sealed datagram (envelope checks, then as 0 when it opens under the fuzz key)
 *   3  a push-pull reply plaintext
 * Every input gets a fresh core, so runs do not depend on each other. After the input the clock
 * advances through a few periods so probes, suspicions and timeouts the input set up run too.
 * Everything the core sends must itself open and decode: a reply we cannot read is a bug.
 */
#include "common/gossip/gossip_internal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fz_ctx {
    uint64_t now;
    qv__keyring ring;
} fz_ctx;

static uint64_t fz_now(void *ctx)
{
    return ((fz_ctx *)ctx)->now;
}

static void fz_random(void *ctx, void *buf, size_t len)
{
    (void)ctx;
    memset(buf, 0x42, len);
}

static int fz_send(void *ctx, const qv_gossip_addr *to, const uint8_t *buf, size_t len)
{
    fz_ctx *c = ctx;
    static uint8_t pt[65536];
    size_t ptlen = 0;
    qv_gossip_drop why;
    int rc = qv__open(&c->ring, QV__PURPOSE_PACKET, buf, len, pt, &ptlen, &why);
    assert(rc == 0 && "the core sends only datagrams it can open itself");
    qv__hdr h;
    rc = qv__packet_validate(pt, ptlen, &h);
    assert(rc == 0 && "the core sends only datagrams that decode");
    (void)to;
    (void)rc;
    return 0;
}

static int fz_stream(void *ctx, uint64_t id, const qv_gossip_addr *to, const uint8_t *buf,
                     size_t len)
{
    (void)ctx;
    (void)id;
    (void)to;
    (void)buf;
    (void)len;
    return QV_EUNAVAIL; /* nothing to connect to */
}

static int fz_resolve(void *ctx, const char *text, qv_gossip_addr *out)
{
    (void)ctx;
    return qv_gossip_addr_parse(text, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool once;
    if (!once) {
        qv_log_set_level(QV_LOG_OFF);
        once = true;
    }
    if (size < 1)
        return 0;
    uint8_t mode = data[0] % 4;
    data++;
    size--;

    /* The decoders on their own first. */
    qv__hdr h;
    uint8_t kind;
    (void)qv__packet_validate(data, size, &h);
    (void)qv__pp_validate(data, size, &h, &kind);

    qv_gossip_key key;
    for (int i = 0; i < QV_GOSSIP_KEY_BYTES; i++)
        key.bytes[i] = (uint8_t)(0xf0 ^ i);
    qv_gossip_config cfg = {.name = "fuzz-self", .keys = &key, .nkeys = 1};
    qv_status err;
    if (qv__config_check(&cfg, &err) != 0)
        abort();
    fz_ctx ctx = {.now = 1000000};
    if (qv__keyring_set(&ctx.ring, &key, 1) != 0)
        abort();
    qv__io io = {.ctx = &ctx,
                 .now_ms = fz_now,
                 .random = fz_random,
                 .send_packet = fz_send,
                 .stream_start = fz_stream,
                 .resolve = fz_resolve};
    qv_gossip_addr self = {.family = 4, .port = 7946, .ip = {10, 9, 9, 9}};
    qv_gossip_addr from = {.family = 4, .port = 7946, .ip = {10, 9, 9, 8}};
    qv__swim s;
    if (qv__swim_init(&s, &cfg, &self, &io, 1, 1000) != 0)
        abort();
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    switch (mode) {
    case 0:
        qv__swim_on_plain(&s, &from, data, size);
        break;
    case 1:
        if (qv__swim_on_stream_plain(&s, data, size, false, &reply, &reply_len) == 0) {
            uint8_t *pt = malloc(reply_len);
            size_t ptlen = 0;
            qv_gossip_drop why;
            int rc =
                qv__open(&ctx.ring, QV__PURPOSE_STREAM_REPLY, reply, reply_len, pt, &ptlen, &why);
            assert(rc == 0 && "our push-pull reply opens");
            rc = qv__pp_validate(pt, ptlen, &h, &kind);
            assert(rc == 0 && kind == QV__STREAM_PP_REPLY && "our push-pull reply decodes");
            (void)rc;
            free(pt);
        }
        free(reply);
        break;
    case 2:
        qv__swim_on_packet(&s, &from, data, size);
        break;
    default:
        (void)qv__swim_on_stream_plain(&s, data, size, true, NULL, NULL);
        break;
    }
    for (int i = 0; i < 4; i++) {
        ctx.now += 700;
        qv__swim_tick(&s);
    }
    ctx.now += 60000; /* past every suspicion timeout */
    qv__swim_tick(&s);
    qv__swim_destroy(&s);
    qv__keyring_wipe(&ctx.ring);
    return 0;
}
