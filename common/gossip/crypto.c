/*
 * Cluster keys, the keyring, the sealed envelope and the replay window.
 *
 * Envelope: u8 version (1) | u32 key id (LE) | 24-byte random nonce | XChaCha20-Poly1305
 * ciphertext with its 16-byte tag. The authenticated data is the first five bytes plus a purpose
 * byte that is not sent (datagram, stream request, stream reply), so a sealed message cannot be
 * moved from one channel to another. The key id is the first four bytes of
 * BLAKE2b("quiver-gossip-key-id" || key): it picks the key without trial decryption, and says
 * nothing about the key.
 */
#define _POSIX_C_SOURCE 200809L
#include "common/gossip/gossip_internal.h"

#include <sodium.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int qv__crypto_init(void)
{
    return sodium_init() < 0 ? QV_EUNAVAIL : 0;
}

/* ---- keys ------------------------------------------------------------------------------------ */

int qv_gossip_key_parse(const char *text, qv_gossip_key *out)
{
    if (text == NULL || out == NULL || qv__crypto_init() != 0)
        return QV_EINVAL;
    while (isspace((unsigned char)*text))
        text++;
    size_t n = strlen(text);
    while (n > 0 && isspace((unsigned char)text[n - 1]))
        n--;
    size_t got = 0;
    const char *end = NULL;
    if (n == 2 * QV_GOSSIP_KEY_BYTES &&
        sodium_hex2bin(out->bytes, sizeof(out->bytes), text, n, NULL, &got, &end) == 0 &&
        got == QV_GOSSIP_KEY_BYTES && end == text + n)
        return 0;
    if (n == 44 &&
        sodium_base642bin(out->bytes, sizeof(out->bytes), text, n, NULL, &got, &end,
                          sodium_base64_VARIANT_ORIGINAL) == 0 &&
        got == QV_GOSSIP_KEY_BYTES && end == text + n)
        return 0;
    if (n == 43 &&
        sodium_base642bin(out->bytes, sizeof(out->bytes), text, n, NULL, &got, &end,
                          sodium_base64_VARIANT_ORIGINAL_NO_PADDING) == 0 &&
        got == QV_GOSSIP_KEY_BYTES && end == text + n)
        return 0;
    sodium_memzero(out, sizeof(*out));
    return QV_EINVAL;
}

int qv_gossip_keys_parse(const char *text, qv_gossip_key *keys, size_t max, size_t *n,
                         qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    *n = 0;
    if (text == NULL) {
        *err = qv_status_make(QV_EINVAL, "no cluster key given");
        return QV_EINVAL;
    }
    size_t count = 0, line = 1;
    const char *p = text;
    char tok[128];
    while (*p != '\0') {
        if (*p == '#') {
            while (*p != '\0' && *p != '\n')
                p++;
            continue;
        }
        if (*p == '\n')
            line++;
        if (*p == ',' || isspace((unsigned char)*p)) {
            p++;
            continue;
        }
        size_t len = 0;
        while (p[len] != '\0' && p[len] != ',' && p[len] != '#' && !isspace((unsigned char)p[len]))
            len++;
        if (len >= sizeof(tok)) {
            *err = qv_status_make(QV_EINVAL, "cluster key %zu (line %zu) is too long", count + 1,
                                  line);
            goto fail;
        }
        memcpy(tok, p, len);
        tok[len] = '\0';
        p += len;
        if (count == max) {
            *err = qv_status_make(QV_EINVAL, "more than %zu cluster keys", max);
            goto fail;
        }
        if (qv_gossip_key_parse(tok, &keys[count]) != 0) {
            *err = qv_status_make(QV_EINVAL,
                                  "cluster key %zu (line %zu) is neither 64 hex digits nor "
                                  "base64 of 32 bytes",
                                  count + 1, line);
            goto fail;
        }
        for (size_t i = 0; i < count; i++)
            if (sodium_memcmp(keys[i].bytes, keys[count].bytes, QV_GOSSIP_KEY_BYTES) == 0) {
                *err =
                    qv_status_make(QV_EINVAL, "cluster key %zu repeats key %zu", count + 1, i + 1);
                goto fail;
            }
        count++;
    }
    sodium_memzero(tok, sizeof(tok));
    if (count == 0) {
        *err = qv_status_make(QV_EINVAL, "no cluster key found");
        return QV_EINVAL;
    }
    *n = count;
    return 0;
fail:
    sodium_memzero(tok, sizeof(tok));
    sodium_memzero(keys, sizeof(*keys) * (count < max ? count + 1 : max));
    return QV_EINVAL;
}

int qv_gossip_keys_load_file(const char *path, qv_gossip_key *keys, size_t max, size_t *n,
                             qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    *n = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        *err = qv_status_make(QV_ENOTFOUND, "cannot read cluster key file %s: %s", path,
                              strerror(errno));
        return QV_ENOTFOUND;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0)
        qv_log_warn("gossip", "cluster key file %s is readable by group or others (mode %03o)",
                    path, (unsigned)(st.st_mode & 0777));
    char buf[4096];
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    bool more = !feof(f) && fgetc(f) != EOF;
    fclose(f);
    buf[len] = '\0';
    int rc;
    if (more) {
        *err = qv_status_make(QV_EINVAL, "cluster key file %s is larger than %zu bytes", path,
                              sizeof(buf) - 1);
        rc = QV_EINVAL;
    } else {
        rc = qv_gossip_keys_parse(buf, keys, max, n, err);
        if (rc != 0) {
            qv_status inner = *err;
            *err = qv_status_make(rc, "%s: %s", path, inner.msg);
        }
    }
    sodium_memzero(buf, sizeof(buf));
    return rc;
}

int qv_gossip_key_generate(qv_gossip_key *out)
{
    return qv_random_bytes(out->bytes, sizeof(out->bytes));
}

void qv_gossip_key_to_hex(const qv_gossip_key *key, char buf[65])
{
    sodium_bin2hex(buf, 65, key->bytes, QV_GOSSIP_KEY_BYTES);
}

uint32_t qv__key_id(const qv_gossip_key *key)
{
    static const char label[] = "quiver-gossip-key-id";
    uint8_t in[sizeof(label) + QV_GOSSIP_KEY_BYTES];
    memcpy(in, label, sizeof(label));
    memcpy(in + sizeof(label), key->bytes, QV_GOSSIP_KEY_BYTES);
    uint8_t h[32];
    crypto_generichash(h, sizeof(h), in, sizeof(in), NULL, 0);
    sodium_memzero(in, sizeof(in));
    return (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
}

int qv__keyring_set(qv__keyring *kr, const qv_gossip_key *keys, size_t n)
{
    if (keys == NULL || n == 0 || n > QV_GOSSIP_KEYRING_MAX || qv__crypto_init() != 0)
        return QV_EINVAL;
    qv__keyring tmp;
    memset(&tmp, 0, sizeof(tmp));
    for (size_t i = 0; i < n; i++) {
        tmp.keys[i] = keys[i];
        tmp.ids[i] = qv__key_id(&keys[i]);
    }
    tmp.n = n;
    *kr = tmp;
    sodium_memzero(&tmp, sizeof(tmp));
    return 0;
}

void qv__keyring_wipe(qv__keyring *kr)
{
    sodium_memzero(kr, sizeof(*kr));
}

/* ---- envelope -------------------------------------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

size_t qv__seal(const qv__keyring *kr, uint8_t purpose, const uint8_t nonce[QV__NONCE_BYTES],
                const uint8_t *pt, size_t ptlen, uint8_t *out)
{
    out[0] = QV__ENV_VERSION;
    put_u32(out + 1, kr->ids[0]);
    memcpy(out + 5, nonce, QV__NONCE_BYTES);
    uint8_t ad[6];
    memcpy(ad, out, 5);
    ad[5] = purpose;
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + QV__ENV_HDR, &clen, pt, ptlen, ad, sizeof(ad),
                                               NULL, nonce, kr->keys[0].bytes);
    return QV__ENV_HDR + (size_t)clen;
}

int qv__open(const qv__keyring *kr, uint8_t purpose, const uint8_t *in, size_t len, uint8_t *pt,
             size_t *ptlen, qv_gossip_drop *drop)
{
    if (len < QV__ENV_OVERHEAD) {
        *drop = QV_GOSSIP_DROP_TRUNCATED;
        return -1;
    }
    if (in[0] != QV__ENV_VERSION) {
        *drop = QV_GOSSIP_DROP_VERSION;
        return -1;
    }
    uint32_t id =
        (uint32_t)in[1] | (uint32_t)in[2] << 8 | (uint32_t)in[3] << 16 | (uint32_t)in[4] << 24;
    uint8_t ad[6];
    memcpy(ad, in, 5);
    ad[5] = purpose;
    bool known = false;
    for (size_t i = 0; i < kr->n; i++) {
        if (kr->ids[i] != id)
            continue;
        known = true;
        unsigned long long mlen = 0;
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &mlen, NULL, in + QV__ENV_HDR,
                                                       len - QV__ENV_HDR, ad, sizeof(ad), in + 5,
                                                       kr->keys[i].bytes) == 0) {
            *ptlen = (size_t)mlen;
            return 0;
        }
    }
    *drop = known ? QV_GOSSIP_DROP_AUTH : QV_GOSSIP_DROP_UNKNOWN_KEY;
    return -1;
}

/* ---- replay window --------------------------------------------------------------------------- */

#define WORDS (QV__REPLAY_WINDOW / 64)

static void replay_reset(qv__replay *w, uint64_t epoch, uint64_t seq)
{
    memset(w, 0, sizeof(*w));
    w->used = true;
    w->epoch = epoch;
    w->top = seq;
    w->bits[0] = 1;
}

/* Moves every remembered bit `shift` positions further from the top (older). */
static void replay_shift(qv__replay *w, uint64_t shift)
{
    if (shift >= QV__REPLAY_WINDOW) {
        memset(w->bits, 0, sizeof(w->bits));
        return;
    }
    size_t words = (size_t)(shift / 64);
    unsigned bits = (unsigned)(shift % 64);
    for (size_t i = WORDS; i-- > 0;) {
        uint64_t v = 0;
        if (i >= words) {
            v = w->bits[i - words] << bits;
            if (bits != 0 && i >= words + 1)
                v |= w->bits[i - words - 1] >> (64 - bits);
        }
        w->bits[i] = v;
    }
}

bool qv__replay_accept(qv__replay *w, uint64_t epoch, uint64_t seq, bool allow_old_epoch)
{
    if (!w->used || epoch > w->epoch) {
        replay_reset(w, epoch, seq);
        return true;
    }
    if (epoch < w->epoch) {
        if (!allow_old_epoch)
            return false;
        replay_reset(w, epoch, seq);
        return true;
    }
    if (seq > w->top) {
        replay_shift(w, seq - w->top);
        w->top = seq;
        w->bits[0] |= 1;
        return true;
    }
    uint64_t diff = w->top - seq;
    if (diff >= QV__REPLAY_WINDOW)
        return false;
    uint64_t mask = 1ull << (diff % 64);
    if (w->bits[diff / 64] & mask)
        return false;
    w->bits[diff / 64] |= mask;
    return true;
}
