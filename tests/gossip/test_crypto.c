/*
 * Tests for common/gossip/crypto.c: key parsing (hex, base64, lists, files), the sealed envelope
 * (every way to break it is refused with the right reason), keyring rotation, and the replay
 * window.
 */
#define _POSIX_C_SOURCE 200809L
#include "gossip_fixture.h"

#include "common/gossip/gossip_internal.h"

#include <sys/stat.h>
#include <unistd.h>

static const char HEX[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
static const char B64[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

Test(keys, hex_and_base64_give_the_same_key)
{
    qv_gossip_key a, b, c;
    cr_assert_eq(qv_gossip_key_parse(HEX, &a), 0);
    cr_assert_eq(qv_gossip_key_parse(B64, &b), 0);
    cr_assert_eq(qv_gossip_key_parse("  AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\n", &c), 0,
                 "unpadded base64 with white space");
    for (int i = 0; i < 32; i++) {
        cr_expect_eq(a.bytes[i], i);
        cr_expect_eq(b.bytes[i], i);
        cr_expect_eq(c.bytes[i], i);
    }
    char hex[65];
    qv_gossip_key_to_hex(&a, hex);
    cr_expect_str_eq(hex, HEX);
}

Test(keys, malformed_keys_are_refused)
{
    const char *bad[] = {
        "",
        "00",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1", /* 63 digits */
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fff",
        "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==", /* 31 bytes */
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdH!8=",
    };
    qv_gossip_key k;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(qv_gossip_key_parse(bad[i], &k), QV_EINVAL, "'%s' accepted", bad[i]);
}

Test(keys, key_lists_keep_order_and_refuse_duplicates)
{
    qv_gossip_key keys[4];
    size_t n = 0;
    qv_status err;
    char text[512];
    snprintf(text, sizeof(text),
             "# the cluster keyring\n%s  # new, primary\n\n"
             "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff,\n",
             B64);
    cr_assert_eq(qv_gossip_keys_parse(text, keys, 4, &n, &err), 0, "%s", err.msg);
    cr_expect_eq(n, 2);
    cr_expect_eq(keys[0].bytes[31], 31);
    cr_expect_eq(keys[1].bytes[0], 0xff);
    snprintf(text, sizeof(text), "%s,%s", HEX, B64);
    cr_expect_eq(qv_gossip_keys_parse(text, keys, 4, &n, &err), QV_EINVAL);
    cr_expect(strstr(err.msg, "repeats") != NULL, "%s", err.msg);
    cr_expect_eq(qv_gossip_keys_parse("# nothing\n", keys, 4, &n, &err), QV_EINVAL);
    cr_expect_eq(qv_gossip_keys_parse("nothex", keys, 4, &n, &err), QV_EINVAL);
    cr_expect(strstr(err.msg, "nothex") == NULL, "messages never echo key material");
    snprintf(text, sizeof(text), "%s %s", HEX,
             "ffffffffffffffffffffffffffffffffffffffffffffffffffffff"
             "ffffffffff");
    cr_expect_eq(qv_gossip_keys_parse(text, keys, 1, &n, &err), QV_EINVAL, "more than max");
}

Test(keys, key_files_load)
{
    char path[] = "/tmp/qv-gossip-key-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, HEX, strlen(HEX)), (ssize_t)strlen(HEX));
    close(fd);
    qv_gossip_key keys[2];
    size_t n = 0;
    qv_status err;
    cr_expect_eq(qv_gossip_keys_load_file(path, keys, 2, &n, &err), 0, "%s", err.msg);
    cr_expect_eq(n, 1);
    unlink(path);
    cr_expect_eq(qv_gossip_keys_load_file(path, keys, 2, &n, &err), QV_ENOTFOUND);
    cr_expect(strstr(err.msg, path) != NULL);
}

static qv__keyring ring(const qv_gossip_key *keys, size_t n)
{
    qv__keyring kr;
    cr_assert_eq(qv__keyring_set(&kr, keys, n), 0);
    return kr;
}

static size_t seal_text(const qv__keyring *kr, uint8_t purpose, const char *text, uint8_t *out)
{
    uint8_t nonce[QV__NONCE_BYTES];
    for (int i = 0; i < QV__NONCE_BYTES; i++)
        nonce[i] = (uint8_t)(i + 100);
    return qv__seal(kr, purpose, nonce, (const uint8_t *)text, strlen(text), out);
}

Test(envelope, sealed_messages_open_only_intact_under_a_known_key)
{
    qv_gossip_key k1 = fx_key(1), k2 = fx_key(2);
    qv__keyring r1 = ring(&k1, 1), r2 = ring(&k2, 1);
    uint8_t sealed[256], pt[256];
    size_t len = seal_text(&r1, QV__PURPOSE_PACKET, "hello members", sealed);
    cr_assert_eq(len, strlen("hello members") + QV__ENV_OVERHEAD);
    cr_expect_eq(sealed[0], QV__ENV_VERSION);
    size_t ptlen = 0;
    qv_gossip_drop why;
    cr_assert_eq(qv__open(&r1, QV__PURPOSE_PACKET, sealed, len, pt, &ptlen, &why), 0);
    cr_expect_eq(ptlen, strlen("hello members"));
    cr_expect_eq(memcmp(pt, "hello members", ptlen), 0);

    cr_expect_eq(qv__open(&r2, QV__PURPOSE_PACKET, sealed, len, pt, &ptlen, &why), -1);
    cr_expect_eq(why, QV_GOSSIP_DROP_UNKNOWN_KEY, "another cluster's key");
    cr_expect_eq(qv__open(&r1, QV__PURPOSE_STREAM_REQ, sealed, len, pt, &ptlen, &why), -1);
    cr_expect_eq(why, QV_GOSSIP_DROP_AUTH, "a datagram replayed as a stream");
    for (size_t i = 0; i < len; i++) {
        uint8_t t[256];
        memcpy(t, sealed, len);
        t[i] ^= 0x01;
        cr_expect_eq(qv__open(&r1, QV__PURPOSE_PACKET, t, len, pt, &ptlen, &why), -1,
                     "a flipped bit at %zu went unnoticed", i);
        qv_gossip_drop want = i == 0  ? QV_GOSSIP_DROP_VERSION
                              : i < 5 ? QV_GOSSIP_DROP_UNKNOWN_KEY
                                      : QV_GOSSIP_DROP_AUTH;
        cr_expect_eq(why, want, "byte %zu: reason %d", i, why);
    }
    for (size_t cut = 0; cut < QV__ENV_OVERHEAD; cut++) {
        cr_expect_eq(qv__open(&r1, QV__PURPOSE_PACKET, sealed, cut, pt, &ptlen, &why), -1);
        cr_expect_eq(why, QV_GOSSIP_DROP_TRUNCATED);
    }
    for (size_t cut = QV__ENV_OVERHEAD; cut < len; cut++) {
        cr_expect_eq(qv__open(&r1, QV__PURPOSE_PACKET, sealed, cut, pt, &ptlen, &why), -1);
        cr_expect_eq(why, QV_GOSSIP_DROP_AUTH);
    }
}

Test(envelope, keyring_rotation_accepts_old_and_new_keys)
{
    qv_gossip_key k1 = fx_key(1), k2 = fx_key(2);
    qv__keyring old = ring(&k1, 1);
    qv_gossip_key both[] = {k2, k1};
    qv__keyring rotating = ring(both, 2), fresh = ring(&k2, 1);
    uint8_t a[128], b[128], pt[128];
    size_t alen = seal_text(&old, QV__PURPOSE_PACKET, "old", a);
    size_t blen = seal_text(&rotating, QV__PURPOSE_PACKET, "new", b);
    size_t ptlen;
    qv_gossip_drop why;
    cr_expect_eq(qv__open(&rotating, QV__PURPOSE_PACKET, a, alen, pt, &ptlen, &why), 0,
                 "a rotating member still reads the old key");
    cr_expect_eq(qv__open(&fresh, QV__PURPOSE_PACKET, b, blen, pt, &ptlen, &why), 0,
                 "the new primary seals");
    cr_expect_eq(qv__open(&fresh, QV__PURPOSE_PACKET, a, alen, pt, &ptlen, &why), -1);
    cr_expect_eq(why, QV_GOSSIP_DROP_UNKNOWN_KEY, "the old key is gone after rotation");
    cr_expect_neq(qv__key_id(&k1), qv__key_id(&k2));
    qv__keyring kr;
    cr_expect_eq(qv__keyring_set(&kr, both, 0), QV_EINVAL);
    qv_gossip_key many[QV_GOSSIP_KEYRING_MAX + 1];
    cr_expect_eq(qv__keyring_set(&kr, many, QV_GOSSIP_KEYRING_MAX + 1), QV_EINVAL);
}

Test(replay, in_order_duplicates_reordering_and_old_sequences)
{
    qv__replay w;
    memset(&w, 0, sizeof(w));
    cr_expect(qv__replay_accept(&w, 100, 1, false), "first");
    cr_expect(qv__replay_accept(&w, 100, 2, false));
    cr_expect(!qv__replay_accept(&w, 100, 2, false), "duplicate");
    cr_expect(qv__replay_accept(&w, 100, 10, false), "a gap");
    cr_expect(qv__replay_accept(&w, 100, 5, false), "late but inside the window");
    cr_expect(!qv__replay_accept(&w, 100, 5, false), "late duplicate");
    cr_expect(!qv__replay_accept(&w, 100, 1, false), "old duplicate");
    cr_expect(qv__replay_accept(&w, 100, 10 + QV__REPLAY_WINDOW - 1, false));
    cr_expect(qv__replay_accept(&w, 100, 11, false), "the window's last slot");
    cr_expect(!qv__replay_accept(&w, 100, 9, false), "fell out of the window");
    cr_expect(qv__replay_accept(&w, 100, 5000, false), "a jump past the whole window");
    cr_expect(!qv__replay_accept(&w, 100, 5000, false));
    cr_expect(qv__replay_accept(&w, 100, 4999, false));
    /* Every sequence number in a shuffled window is accepted exactly once. */
    uint64_t base = 10000;
    for (uint64_t i = 0; i < 500; i++) {
        uint64_t seq = base + (i * 7919) % 500;
        cr_expect(qv__replay_accept(&w, 100, seq, false), "seq %lu", (unsigned long)seq);
    }
    for (uint64_t i = 0; i < 500; i++)
        cr_expect(!qv__replay_accept(&w, 100, base + i, false));
}

Test(replay, boot_epochs_order_restarts)
{
    qv__replay w;
    memset(&w, 0, sizeof(w));
    cr_expect(qv__replay_accept(&w, 100, 50, false));
    cr_expect(qv__replay_accept(&w, 200, 1, false), "a restart (newer epoch) starts over");
    cr_expect(!qv__replay_accept(&w, 100, 51, false), "the previous life is over");
    cr_expect(qv__replay_accept(&w, 200, 2, false));
    cr_expect(qv__replay_accept(&w, 150, 1, true),
              "an older epoch is let in when the sender was declared dead");
    cr_expect(!qv__replay_accept(&w, 150, 1, true), "and then replays are refused again");
}
