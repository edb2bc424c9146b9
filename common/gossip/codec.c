/*
 * The plaintext wire format of gossip (before sealing, after opening). Little-endian throughout.
 *
 *   header   u8 wire version (1) | u8 flags (0) | str8 sender | u64 boot epoch | u64 seq
 *   datagram header | u8 count (>= 1) | count x (u8 type | u16 body length | body)
 *   stream   header | u8 kind | u8 flags | u32 count | count x entry
 *
 *   str8     u8 length | bytes                       addr  u8 family (4|6) | 4|16 bytes | u16 port
 *   record   u8 role | u8 flags | str8 grpc | str8 version | load (48 bytes) | u32 n | n bytes
 *   entry    str8 name | addr | u64 incarnation | u8 state | u64 record version
 *            [ u8 flags | record ]   (only when the record version is not 0)
 *
 * Bodies by type: PING u32 seq, str8 target | PING_REQ u32 seq, str8 target, addr, u8 flags |
 * ACK, NACK u32 seq | ALIVE str8 name, u64 inc, addr | SUSPECT, DEAD str8 name, u64 inc, str8 from
 * | LEAVE str8 name, u64 inc | STATE str8 name, u64 version, u8 flags, record.
 *
 * Decoding checks every length against the bytes that remain and every value against its domain
 * before anything is used. A body may carry bytes after the fields this version knows (a later
 * version may append fields); a datagram or stream may not carry bytes after its last message.
 * Message types this version does not know are skipped.
 */
#include "common/gossip/gossip_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- writers --------------------------------------------------------------------------------- */

void qv__w_fixed(qv__wbuf *w, uint8_t *buf, size_t cap)
{
    memset(w, 0, sizeof(*w));
    w->p = buf;
    w->cap = cap;
    w->limit = cap;
}

void qv__w_growable(qv__wbuf *w, size_t limit)
{
    memset(w, 0, sizeof(*w));
    w->growable = true;
    w->limit = limit;
}

void qv__w_free(qv__wbuf *w)
{
    if (w->growable)
        free(w->p);
    w->p = NULL;
    w->len = w->cap = 0;
}

static bool w_reserve(qv__wbuf *w, size_t n)
{
    if (w->err)
        return false;
    if (n > w->limit - w->len) {
        w->err = true;
        return false;
    }
    if (w->len + n <= w->cap)
        return true;
    if (!w->growable) {
        w->err = true;
        return false;
    }
    size_t cap = w->cap < 256 ? 256 : w->cap;
    while (cap < w->len + n)
        cap = cap > w->limit / 2 ? w->limit : cap * 2;
    uint8_t *p = realloc(w->p, cap);
    if (p == NULL) {
        w->err = true;
        return false;
    }
    w->p = p;
    w->cap = cap;
    return true;
}

void qv__w_bytes(qv__wbuf *w, const void *b, size_t n)
{
    if (n == 0 || !w_reserve(w, n))
        return;
    memcpy(w->p + w->len, b, n);
    w->len += n;
}

void qv__w_u8(qv__wbuf *w, uint8_t v)
{
    qv__w_bytes(w, &v, 1);
}

void qv__w_u16(qv__wbuf *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    qv__w_bytes(w, b, 2);
}

void qv__w_u32(qv__wbuf *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    qv__w_bytes(w, b, 4);
}

void qv__w_u64(qv__wbuf *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    qv__w_bytes(w, b, 8);
}

void qv__w_str8(qv__wbuf *w, const char *s)
{
    size_t n = s == NULL ? 0 : strlen(s);
    if (n > 255) {
        w->err = true;
        return;
    }
    qv__w_u8(w, (uint8_t)n);
    qv__w_bytes(w, s, n);
}

void qv__w_put_u16_at(qv__wbuf *w, size_t at, uint16_t v)
{
    if (w->err || at + 2 > w->len)
        return;
    w->p[at] = (uint8_t)v;
    w->p[at + 1] = (uint8_t)(v >> 8);
}

void qv__w_put_u8_at(qv__wbuf *w, size_t at, uint8_t v)
{
    if (w->err || at + 1 > w->len)
        return;
    w->p[at] = v;
}

static void w_f32(qv__wbuf *w, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    qv__w_u32(w, u);
}

static void w_addr(qv__wbuf *w, const qv_gossip_addr *a)
{
    qv__w_u8(w, a->family);
    qv__w_bytes(w, a->ip, a->family == 6 ? 16 : 4);
    qv__w_u16(w, a->port);
}

/* ---- readers --------------------------------------------------------------------------------- */

void qv__r_init(qv__rbuf *r, const uint8_t *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->off = 0;
    r->err = false;
}

const uint8_t *qv__r_bytes(qv__rbuf *r, size_t n)
{
    if (r->err || n > r->len - r->off) {
        r->err = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

uint8_t qv__r_u8(qv__rbuf *r)
{
    const uint8_t *p = qv__r_bytes(r, 1);
    return p == NULL ? 0 : p[0];
}

uint16_t qv__r_u16(qv__rbuf *r)
{
    const uint8_t *p = qv__r_bytes(r, 2);
    return p == NULL ? 0 : (uint16_t)(p[0] | p[1] << 8);
}

uint32_t qv__r_u32(qv__rbuf *r)
{
    const uint8_t *p = qv__r_bytes(r, 4);
    if (p == NULL)
        return 0;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t qv__r_u64(qv__rbuf *r)
{
    const uint8_t *p = qv__r_bytes(r, 8);
    if (p == NULL)
        return 0;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static float r_f32(qv__rbuf *r)
{
    uint32_t u = qv__r_u32(r);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

bool qv__name_valid(const char *s, size_t len)
{
    if (len == 0 || len > QV_GOSSIP_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* A str8 into out[cap] (NUL-terminated); printable ASCII only (names: no spaces either). */
static int r_str8(qv__rbuf *r, char *out, size_t cap, bool is_name)
{
    uint8_t n = qv__r_u8(r);
    const uint8_t *p = qv__r_bytes(r, n);
    if (p == NULL || (size_t)n >= cap)
        return QV_EINVAL;
    if (is_name && !qv__name_valid((const char *)p, n))
        return QV_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return QV_EINVAL;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

static int r_addr(qv__rbuf *r, qv_gossip_addr *a)
{
    memset(a, 0, sizeof(*a));
    a->family = qv__r_u8(r);
    if (a->family != 4 && a->family != 6)
        return QV_EINVAL;
    const uint8_t *ip = qv__r_bytes(r, a->family == 6 ? 16 : 4);
    a->port = qv__r_u16(r);
    if (ip == NULL || a->port == 0)
        return QV_EINVAL;
    memcpy(a->ip, ip, a->family == 6 ? 16 : 4);
    return 0;
}

/* ---- header ---------------------------------------------------------------------------------- */

void qv__hdr_encode(qv__wbuf *w, const qv__hdr *h)
{
    qv__w_u8(w, QV__WIRE_VERSION);
    qv__w_u8(w, 0);
    qv__w_str8(w, h->name);
    qv__w_u64(w, h->epoch);
    qv__w_u64(w, h->seq);
}

int qv__hdr_decode(qv__rbuf *r, qv__hdr *h)
{
    uint8_t version = qv__r_u8(r);
    if (r->err)
        return QV_EINVAL;
    if (version != QV__WIRE_VERSION)
        return QV_EUNIMPL;
    (void)qv__r_u8(r); /* flags: none defined yet */
    if (r_str8(r, h->name, sizeof(h->name), true) != 0)
        return QV_EINVAL;
    h->epoch = qv__r_u64(r);
    h->seq = qv__r_u64(r);
    return r->err ? QV_EINVAL : 0;
}

/* ---- records --------------------------------------------------------------------------------- */

static void w_load(qv__wbuf *w, const qv_gossip_load *l)
{
    w_f32(w, l->cpu);
    qv__w_u64(w, l->memory_bytes);
    qv__w_u64(w, l->disk_used_bytes);
    qv__w_u64(w, l->disk_free_bytes);
    qv__w_u32(w, l->replicas);
    qv__w_u32(w, l->leaders);
    qv__w_u32(w, l->inflight_requests);
    w_f32(w, l->search_qps);
    qv__w_u32(w, l->search_p95_us);
}

void qv__record_encode(qv__wbuf *w, const qv__record *rec, bool omit_blob)
{
    qv__w_u8(w, rec->role);
    qv__w_u8(w, rec->draining ? QV__REC_FLAG_DRAIN : 0);
    qv__w_str8(w, rec->grpc);
    qv__w_str8(w, rec->version);
    w_load(w, &rec->load);
    if (omit_blob || rec->blob_len == 0) {
        qv__w_u32(w, 0);
    } else {
        qv__w_u32(w, rec->blob_len);
        qv__w_bytes(w, rec->blob, rec->blob_len);
    }
}

static int r_record(qv__rbuf *r, qv__record *rec)
{
    memset(rec, 0, sizeof(*rec));
    rec->role = qv__r_u8(r);
    uint8_t flags = qv__r_u8(r);
    if (r->err || rec->role > QV_GOSSIP_ROLE_ROUTER)
        return QV_EINVAL;
    rec->draining = (flags & QV__REC_FLAG_DRAIN) != 0;
    if (r_str8(r, rec->grpc, sizeof(rec->grpc), false) != 0 ||
        r_str8(r, rec->version, sizeof(rec->version), false) != 0)
        return QV_EINVAL;
    qv_gossip_load *l = &rec->load;
    l->cpu = r_f32(r);
    l->memory_bytes = qv__r_u64(r);
    l->disk_used_bytes = qv__r_u64(r);
    l->disk_free_bytes = qv__r_u64(r);
    l->replicas = qv__r_u32(r);
    l->leaders = qv__r_u32(r);
    l->inflight_requests = qv__r_u32(r);
    l->search_qps = r_f32(r);
    l->search_p95_us = qv__r_u32(r);
    if (r->err || !isfinite(l->cpu) || !isfinite(l->search_qps))
        return QV_EINVAL;
    rec->blob_len = qv__r_u32(r);
    if (r->err)
        return QV_EINVAL;
    rec->blob = rec->blob_len == 0 ? NULL : qv__r_bytes(r, rec->blob_len);
    return r->err ? QV_EINVAL : 0;
}

/* ---- datagram messages ----------------------------------------------------------------------- */

void qv__msg_encode(qv__wbuf *w, const qv__msg *m)
{
    qv__w_u8(w, m->type);
    size_t at = w->len;
    qv__w_u16(w, 0);
    size_t body = w->len;
    switch (m->type) {
    case QV__MSG_PING:
        qv__w_u32(w, m->seq);
        qv__w_str8(w, m->name);
        break;
    case QV__MSG_PING_REQ:
        qv__w_u32(w, m->seq);
        qv__w_str8(w, m->name);
        w_addr(w, &m->addr);
        qv__w_u8(w, m->flags);
        break;
    case QV__MSG_ACK:
    case QV__MSG_NACK:
        qv__w_u32(w, m->seq);
        break;
    case QV__MSG_ALIVE:
        qv__w_str8(w, m->name);
        qv__w_u64(w, m->inc);
        w_addr(w, &m->addr);
        break;
    case QV__MSG_SUSPECT:
    case QV__MSG_DEAD:
        qv__w_str8(w, m->name);
        qv__w_u64(w, m->inc);
        qv__w_str8(w, m->from);
        break;
    case QV__MSG_LEAVE:
        qv__w_str8(w, m->name);
        qv__w_u64(w, m->inc);
        break;
    case QV__MSG_STATE:
        qv__w_str8(w, m->name);
        qv__w_u64(w, m->inc);
        qv__w_u8(w, m->flags);
        qv__record_encode(w, &m->rec, (m->flags & QV__STATE_BLOB_OMIT) != 0);
        break;
    default:
        w->err = true;
        return;
    }
    size_t n = w->len - body;
    if (n > UINT16_MAX)
        w->err = true;
    qv__w_put_u16_at(w, at, (uint16_t)n);
}

static int msg_body_decode(qv__rbuf *r, qv__msg *m)
{
    switch (m->type) {
    case QV__MSG_PING:
        m->seq = qv__r_u32(r);
        return r_str8(r, m->name, sizeof(m->name), true);
    case QV__MSG_PING_REQ:
        m->seq = qv__r_u32(r);
        if (r_str8(r, m->name, sizeof(m->name), true) != 0 || r_addr(r, &m->addr) != 0)
            return QV_EINVAL;
        m->flags = qv__r_u8(r);
        return r->err ? QV_EINVAL : 0;
    case QV__MSG_ACK:
    case QV__MSG_NACK:
        m->seq = qv__r_u32(r);
        return r->err ? QV_EINVAL : 0;
    case QV__MSG_ALIVE:
        if (r_str8(r, m->name, sizeof(m->name), true) != 0)
            return QV_EINVAL;
        m->inc = qv__r_u64(r);
        return r_addr(r, &m->addr);
    case QV__MSG_SUSPECT:
    case QV__MSG_DEAD:
        if (r_str8(r, m->name, sizeof(m->name), true) != 0)
            return QV_EINVAL;
        m->inc = qv__r_u64(r);
        return r_str8(r, m->from, sizeof(m->from), true);
    case QV__MSG_LEAVE:
        if (r_str8(r, m->name, sizeof(m->name), true) != 0)
            return QV_EINVAL;
        m->inc = qv__r_u64(r);
        return r->err ? QV_EINVAL : 0;
    case QV__MSG_STATE:
        if (r_str8(r, m->name, sizeof(m->name), true) != 0)
            return QV_EINVAL;
        m->inc = qv__r_u64(r);
        m->flags = qv__r_u8(r);
        if (r->err || m->inc == 0)
            return QV_EINVAL;
        return r_record(r, &m->rec);
    default:
        m->type = 0; /* unknown: skipped */
        return 0;
    }
}

int qv__msg_decode(qv__rbuf *r, qv__msg *m)
{
    memset(m, 0, sizeof(*m));
    m->type = qv__r_u8(r);
    uint16_t n = qv__r_u16(r);
    const uint8_t *body = qv__r_bytes(r, n);
    if (body == NULL || m->type == 0)
        return QV_EINVAL;
    qv__rbuf br;
    qv__r_init(&br, body, n);
    int rc = msg_body_decode(&br, m);
    if (rc == 0 && br.err)
        rc = QV_EINVAL;
    return rc;
}

int qv__packet_begin(qv__rbuf *r, qv__hdr *h, uint32_t *count)
{
    int rc = qv__hdr_decode(r, h);
    if (rc != 0)
        return rc;
    *count = qv__r_u8(r);
    return r->err || *count == 0 ? QV_EINVAL : 0;
}

int qv__packet_validate(const uint8_t *p, size_t len, qv__hdr *h)
{
    qv__rbuf r;
    qv__r_init(&r, p, len);
    uint32_t count;
    int rc = qv__packet_begin(&r, h, &count);
    if (rc != 0)
        return rc;
    qv__msg m;
    for (uint32_t i = 0; i < count; i++) {
        rc = qv__msg_decode(&r, &m);
        if (rc != 0)
            return rc;
    }
    return qv__r_left(&r) == 0 && !r.err ? 0 : QV_EINVAL;
}

/* ---- push-pull stream ------------------------------------------------------------------------ */

void qv__pp_begin_encode(qv__wbuf *w, const qv__hdr *h, uint8_t kind, uint8_t flags, uint32_t count)
{
    qv__hdr_encode(w, h);
    qv__w_u8(w, kind);
    qv__w_u8(w, flags);
    qv__w_u32(w, count);
}

void qv__pp_entry_encode(qv__wbuf *w, const qv__pp_entry *e)
{
    qv__w_str8(w, e->name);
    w_addr(w, &e->addr);
    qv__w_u64(w, e->inc);
    qv__w_u8(w, e->state);
    qv__w_u64(w, e->rec_version);
    if (e->rec_version != 0) {
        qv__w_u8(w, e->blob_omitted ? QV__STATE_BLOB_OMIT : 0);
        qv__record_encode(w, &e->rec, e->blob_omitted);
    }
}

int qv__pp_begin(qv__rbuf *r, qv__hdr *h, uint8_t *kind, uint8_t *flags, uint32_t *count)
{
    int rc = qv__hdr_decode(r, h);
    if (rc != 0)
        return rc;
    *kind = qv__r_u8(r);
    *flags = qv__r_u8(r);
    *count = qv__r_u32(r);
    if (r->err || (*kind != QV__STREAM_PP_REQ && *kind != QV__STREAM_PP_REPLY))
        return QV_EINVAL;
    /* Every entry takes at least 26 bytes: a count the remaining bytes cannot hold is a lie. */
    if (*count > QV__PP_MAX_ENTRIES || *count > qv__r_left(r) / 26)
        return QV_EINVAL;
    return 0;
}

int qv__pp_entry_decode(qv__rbuf *r, qv__pp_entry *e)
{
    memset(e, 0, sizeof(*e));
    if (r_str8(r, e->name, sizeof(e->name), true) != 0 || r_addr(r, &e->addr) != 0)
        return QV_EINVAL;
    e->inc = qv__r_u64(r);
    e->state = qv__r_u8(r);
    e->rec_version = qv__r_u64(r);
    if (r->err || e->state < QV_GOSSIP_ALIVE || e->state > QV_GOSSIP_LEFT)
        return QV_EINVAL;
    if (e->rec_version != 0) {
        uint8_t flags = qv__r_u8(r);
        e->blob_omitted = (flags & QV__STATE_BLOB_OMIT) != 0;
        if (r->err || r_record(r, &e->rec) != 0)
            return QV_EINVAL;
    }
    return 0;
}

int qv__pp_validate(const uint8_t *p, size_t len, qv__hdr *h, uint8_t *kind)
{
    qv__rbuf r;
    qv__r_init(&r, p, len);
    uint8_t flags;
    uint32_t count;
    int rc = qv__pp_begin(&r, h, kind, &flags, &count);
    if (rc != 0)
        return rc;
    qv__pp_entry e;
    for (uint32_t i = 0; i < count; i++) {
        rc = qv__pp_entry_decode(&r, &e);
        if (rc != 0)
            return rc;
    }
    return qv__r_left(&r) == 0 && !r.err ? 0 : QV_EINVAL;
}
