/*
 * Tests for common/gossip/codec.c: every message type and the push-pull stream round-trip, and
 * every class of malformed input is refused (truncation at every byte, lengths past the end,
 * out-of-domain values, trailing bytes), while unknown message types and extra body fields from
 * a later version are tolerated.
 */
#include "gossip_fixture.h"

#include "common/gossip/gossip_internal.h"

#include <math.h>

static qv__hdr hdr(void)
{
    qv__hdr h = {.epoch = 1700000000123ull, .seq = 42};
    snprintf(h.name, sizeof(h.name), "node-a");
    return h;
}

static qv_gossip_addr addr4(uint8_t last, uint16_t port)
{
    qv_gossip_addr a = {.family = 4, .port = port, .ip = {10, 0, 0, last}};
    return a;
}

static qv__record sample_record(const uint8_t *blob, uint32_t blob_len)
{
    qv__record r = {
        .role = QV_GOSSIP_ROLE_NODE, .draining = true, .blob = blob, .blob_len = blob_len};
    snprintf(r.grpc, sizeof(r.grpc), "10.0.0.9:7070");
    snprintf(r.version, sizeof(r.version), "0.1.0");
    r.load = (qv_gossip_load){.cpu = 0.5f,
                              .memory_bytes = 1ull << 33,
                              .disk_used_bytes = 12345,
                              .disk_free_bytes = 1ull << 40,
                              .replicas = 7,
                              .leaders = 3,
                              .inflight_requests = 9,
                              .search_qps = 1234.5f,
                              .search_p95_us = 850};
    return r;
}

/* One message of every type. */
static size_t all_messages(qv__msg *out, const uint8_t *blob, uint32_t blob_len)
{
    size_t n = 0;
    out[n] = (qv__msg){.type = QV__MSG_PING, .seq = 7};
    snprintf(out[n++].name, QV_GOSSIP_NAME_MAX + 1, "target-1");
    out[n] = (qv__msg){.type = QV__MSG_PING_REQ, .seq = 8, .addr = addr4(5, 7946), .flags = 1};
    snprintf(out[n++].name, QV_GOSSIP_NAME_MAX + 1, "target-2");
    out[n++] = (qv__msg){.type = QV__MSG_ACK, .seq = 9};
    out[n++] = (qv__msg){.type = QV__MSG_NACK, .seq = 10};
    out[n] = (qv__msg){.type = QV__MSG_ALIVE, .inc = 11, .addr = addr4(6, 7000)};
    snprintf(out[n++].name, QV_GOSSIP_NAME_MAX + 1, "alive-one");
    out[n] = (qv__msg){.type = QV__MSG_SUSPECT, .inc = 12};
    snprintf(out[n].name, QV_GOSSIP_NAME_MAX + 1, "suspect-one");
    snprintf(out[n++].from, QV_GOSSIP_NAME_MAX + 1, "accuser");
    out[n] = (qv__msg){.type = QV__MSG_DEAD, .inc = 13};
    snprintf(out[n].name, QV_GOSSIP_NAME_MAX + 1, "dead-one");
    snprintf(out[n++].from, QV_GOSSIP_NAME_MAX + 1, "judge");
    out[n] = (qv__msg){.type = QV__MSG_LEAVE, .inc = 14};
    snprintf(out[n++].name, QV_GOSSIP_NAME_MAX + 1, "leaver");
    out[n] = (qv__msg){.type = QV__MSG_STATE, .inc = 15, .rec = sample_record(blob, blob_len)};
    snprintf(out[n++].name, QV_GOSSIP_NAME_MAX + 1, "stateful");
    return n;
}

static size_t encode_packet(uint8_t *buf, size_t cap, const qv__msg *msgs, size_t n)
{
    qv__wbuf w;
    qv__w_fixed(&w, buf, cap);
    qv__hdr h = hdr();
    qv__hdr_encode(&w, &h);
    qv__w_u8(&w, (uint8_t)n);
    for (size_t i = 0; i < n; i++)
        qv__msg_encode(&w, &msgs[i]);
    cr_assert(!w.err, "encoding overflowed");
    return w.len;
}

static void expect_msg_eq(const qv__msg *a, const qv__msg *b)
{
    cr_expect_eq(a->type, b->type);
    cr_expect_eq(a->seq, b->seq);
    cr_expect_str_eq(a->name, b->name);
    cr_expect_str_eq(a->from, b->from);
    cr_expect_eq(a->inc, b->inc);
    cr_expect_eq(a->flags, b->flags);
    if (a->type == QV__MSG_ALIVE || a->type == QV__MSG_PING_REQ)
        cr_expect(qv_gossip_addr_equal(&a->addr, &b->addr));
    if (a->type == QV__MSG_STATE) {
        cr_expect_eq(a->rec.role, b->rec.role);
        cr_expect_eq(a->rec.draining, b->rec.draining);
        cr_expect_str_eq(a->rec.grpc, b->rec.grpc);
        cr_expect_str_eq(a->rec.version, b->rec.version);
        cr_expect_eq(memcmp(&a->rec.load, &b->rec.load, sizeof(a->rec.load)), 0);
        cr_expect_eq(a->rec.blob_len, b->rec.blob_len);
        cr_expect_eq(memcmp(a->rec.blob, b->rec.blob, a->rec.blob_len), 0);
    }
}

Test(codec, every_message_type_round_trips)
{
    uint8_t blob[40];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(i * 3);
    qv__msg msgs[16];
    size_t n = all_messages(msgs, blob, sizeof(blob));
    uint8_t buf[2048];
    size_t len = encode_packet(buf, sizeof(buf), msgs, n);
    qv__hdr h;
    cr_assert_eq(qv__packet_validate(buf, len, &h), 0);
    cr_expect_str_eq(h.name, "node-a");
    cr_expect_eq(h.epoch, 1700000000123ull);
    cr_expect_eq(h.seq, 42);
    qv__rbuf r;
    qv__r_init(&r, buf, len);
    uint32_t count;
    cr_assert_eq(qv__packet_begin(&r, &h, &count), 0);
    cr_assert_eq(count, n);
    for (size_t i = 0; i < n; i++) {
        qv__msg m;
        cr_assert_eq(qv__msg_decode(&r, &m), 0, "message %zu", i);
        expect_msg_eq(&m, &msgs[i]);
    }
    cr_expect_eq(qv__r_left(&r), 0);
}

Test(codec, ipv6_addresses_round_trip)
{
    qv__msg m = {.type = QV__MSG_ALIVE, .inc = 1};
    snprintf(m.name, sizeof(m.name), "v6");
    cr_assert_eq(qv_gossip_addr_parse("[fe80::1:2]:7946", &m.addr), 0);
    uint8_t buf[256];
    size_t len = encode_packet(buf, sizeof(buf), &m, 1);
    qv__rbuf r;
    qv__r_init(&r, buf, len);
    qv__hdr h;
    uint32_t count;
    qv__msg got;
    cr_assert_eq(qv__packet_begin(&r, &h, &count), 0);
    cr_assert_eq(qv__msg_decode(&r, &got), 0);
    cr_expect(qv_gossip_addr_equal(&got.addr, &m.addr));
    char text[QV_GOSSIP_ADDR_STRLEN];
    cr_expect_str_eq(qv_gossip_addr_format(&got.addr, text, sizeof(text)), "[fe80::1:2]:7946");
}

Test(codec, push_pull_state_round_trips)
{
    uint8_t blob[3000];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(i ^ 0x5a);
    qv__pp_entry e[3];
    memset(e, 0, sizeof(e));
    snprintf(e[0].name, sizeof(e[0].name), "plain");
    e[0].addr = addr4(1, 7946);
    e[0].inc = 3;
    e[0].state = QV_GOSSIP_ALIVE;
    snprintf(e[1].name, sizeof(e[1].name), "with-record");
    e[1].addr = addr4(2, 7946);
    e[1].inc = 4;
    e[1].state = QV_GOSSIP_SUSPECT;
    e[1].rec_version = 99;
    e[1].rec = sample_record(blob, sizeof(blob));
    snprintf(e[2].name, sizeof(e[2].name), "omitted");
    e[2].addr = addr4(3, 7946);
    e[2].inc = 5;
    e[2].state = QV_GOSSIP_LEFT;
    e[2].rec_version = 100;
    e[2].blob_omitted = true;
    e[2].rec = sample_record(blob, sizeof(blob));
    qv__wbuf w;
    qv__w_growable(&w, 1 << 20);
    qv__hdr h = hdr();
    qv__pp_begin_encode(&w, &h, QV__STREAM_PP_REQ, QV__PP_FLAG_JOIN, 3);
    for (int i = 0; i < 3; i++)
        qv__pp_entry_encode(&w, &e[i]);
    cr_assert(!w.err);
    uint8_t kind;
    cr_assert_eq(qv__pp_validate(w.p, w.len, &h, &kind), 0);
    cr_expect_eq(kind, QV__STREAM_PP_REQ);
    qv__rbuf r;
    qv__r_init(&r, w.p, w.len);
    uint8_t flags;
    uint32_t count;
    cr_assert_eq(qv__pp_begin(&r, &h, &kind, &flags, &count), 0);
    cr_expect_eq(flags, QV__PP_FLAG_JOIN);
    cr_assert_eq(count, 3);
    for (int i = 0; i < 3; i++) {
        qv__pp_entry got;
        cr_assert_eq(qv__pp_entry_decode(&r, &got), 0);
        cr_expect_str_eq(got.name, e[i].name);
        cr_expect(qv_gossip_addr_equal(&got.addr, &e[i].addr));
        cr_expect_eq(got.inc, e[i].inc);
        cr_expect_eq(got.state, e[i].state);
        cr_expect_eq(got.rec_version, e[i].rec_version);
        cr_expect_eq(got.blob_omitted, e[i].blob_omitted);
        if (i == 1) {
            cr_expect_eq(got.rec.blob_len, sizeof(blob));
            cr_expect_eq(memcmp(got.rec.blob, blob, sizeof(blob)), 0);
            cr_expect_str_eq(got.rec.grpc, "10.0.0.9:7070");
        }
        if (i == 2)
            cr_expect_eq(got.rec.blob_len, 0, "an omitted blob is not sent");
    }
    qv__w_free(&w);
    fx_expect_no_leaks();
}

Test(codec, every_truncation_is_refused)
{
    uint8_t blob[20] = {1, 2, 3};
    qv__msg msgs[16];
    size_t n = all_messages(msgs, blob, sizeof(blob));
    uint8_t buf[2048];
    size_t len = encode_packet(buf, sizeof(buf), msgs, n);
    qv__hdr h;
    for (size_t cut = 0; cut < len; cut++) {
        /* A copy of exactly `cut` bytes, so ASan catches any read past the end. */
        uint8_t *p = malloc(cut > 0 ? cut : 1);
        memcpy(p, buf, cut);
        cr_expect_neq(qv__packet_validate(p, cut, &h), 0, "prefix of %zu bytes accepted", cut);
        free(p);
    }
}

Test(codec, every_push_pull_truncation_is_refused)
{
    qv__pp_entry e = {.addr = {.family = 4, .port = 1, .ip = {1, 2, 3, 4}},
                      .inc = 1,
                      .state = QV_GOSSIP_ALIVE,
                      .rec_version = 5};
    snprintf(e.name, sizeof(e.name), "x");
    uint8_t blob[9] = {9};
    e.rec = sample_record(blob, sizeof(blob));
    qv__wbuf w;
    qv__w_growable(&w, 1 << 16);
    qv__hdr h = hdr();
    qv__pp_begin_encode(&w, &h, QV__STREAM_PP_REPLY, 0, 2);
    qv__pp_entry_encode(&w, &e);
    qv__pp_entry_encode(&w, &e);
    uint8_t kind;
    cr_assert_eq(qv__pp_validate(w.p, w.len, &h, &kind), 0);
    for (size_t cut = 0; cut < w.len; cut++) {
        uint8_t *p = malloc(cut > 0 ? cut : 1);
        memcpy(p, w.p, cut);
        cr_expect_neq(qv__pp_validate(p, cut, &h, &kind), 0, "prefix of %zu bytes accepted", cut);
        free(p);
    }
    qv__w_free(&w);
    fx_expect_no_leaks();
}

/* Encodes one message of type t whose body is given raw. */
static size_t raw_packet(uint8_t *buf, uint8_t type, const uint8_t *body, size_t body_len)
{
    qv__wbuf w;
    qv__w_fixed(&w, buf, 1024);
    qv__hdr h = hdr();
    qv__hdr_encode(&w, &h);
    qv__w_u8(&w, 1);
    qv__w_u8(&w, type);
    qv__w_u16(&w, (uint16_t)body_len);
    qv__w_bytes(&w, body, body_len);
    return w.len;
}

static int validate_raw(uint8_t type, const uint8_t *body, size_t body_len)
{
    uint8_t buf[1024];
    size_t len = raw_packet(buf, type, body, body_len);
    qv__hdr h;
    return qv__packet_validate(buf, len, &h);
}

Test(codec, out_of_domain_values_are_refused)
{
    /* ALIVE: str8 name, u64 inc, addr */
    uint8_t ok[] = {1, 'a', 1, 0, 0, 0, 0, 0, 0, 0, 4, 10, 0, 0, 1, 0x0a, 0x1f};
    cr_assert_eq(validate_raw(QV__MSG_ALIVE, ok, sizeof(ok)), 0);
    uint8_t b[sizeof(ok)];

    memcpy(b, ok, sizeof(ok));
    b[0] = 0; /* empty name */
    cr_expect_neq(validate_raw(QV__MSG_ALIVE, b, sizeof(b)), 0, "empty name");
    memcpy(b, ok, sizeof(ok));
    b[1] = ' '; /* space in a name */
    cr_expect_neq(validate_raw(QV__MSG_ALIVE, b, sizeof(b)), 0, "space in name");
    memcpy(b, ok, sizeof(ok));
    b[1] = 0x7f; /* control character */
    cr_expect_neq(validate_raw(QV__MSG_ALIVE, b, sizeof(b)), 0, "DEL in name");
    memcpy(b, ok, sizeof(ok));
    b[10] = 5; /* address family */
    cr_expect_neq(validate_raw(QV__MSG_ALIVE, b, sizeof(b)), 0, "family 5");
    memcpy(b, ok, sizeof(ok));
    b[15] = b[16] = 0; /* port 0 */
    cr_expect_neq(validate_raw(QV__MSG_ALIVE, b, sizeof(b)), 0, "port 0");
    memcpy(b, ok, sizeof(ok));
    b[0] = 200; /* a name longer than the body */
    cr_expect_neq(validate_raw(QV__MSG_ALIVE, b, sizeof(b)), 0, "name past the end");
    memcpy(b, ok, sizeof(ok));
    b[10] = 6; /* IPv6 needs 16 address bytes */
    cr_expect_neq(validate_raw(QV__MSG_ALIVE, b, sizeof(b)), 0, "short IPv6");

    /* A name of 65 bytes. */
    uint8_t longname[1 + 65 + 8 + 7];
    memset(longname, 'n', sizeof(longname));
    longname[0] = 65;
    memcpy(longname + 66, (uint8_t[]){0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 1, 1, 1, 1, 0}, 15);
    cr_expect_neq(validate_raw(QV__MSG_ALIVE, longname, sizeof(longname)), 0, "65-byte name");

    /* STATE with a bad role, a NaN cpu, version 0, a blob past the end. */
    qv__msg st = {.type = QV__MSG_STATE, .inc = 3, .rec = sample_record(NULL, 0)};
    snprintf(st.name, sizeof(st.name), "s");
    uint8_t buf[1024];
    qv__hdr h;
    size_t len = encode_packet(buf, sizeof(buf), &st, 1);
    cr_assert_eq(qv__packet_validate(buf, len, &h), 0);
    size_t rec_at = len - (2 + 1 + 13 + 1 + 5 + QV__LOAD_WIRE_BYTES + 4);
    uint8_t bad[1024];
    memcpy(bad, buf, len);
    bad[rec_at] = 4; /* role */
    cr_expect_neq(qv__packet_validate(bad, len, &h), 0, "role 4");
    memcpy(bad, buf, len);
    float nan = NAN;
    memcpy(bad + rec_at + 2 + 14 + 6, &nan, 4); /* cpu */
    cr_expect_neq(qv__packet_validate(bad, len, &h), 0, "NaN cpu");
    memcpy(bad, buf, len);
    bad[len - 4] = 1; /* blob length 1, no byte follows */
    cr_expect_neq(qv__packet_validate(bad, len, &h), 0, "blob past the end");
    st.inc = 0;
    len = encode_packet(buf, sizeof(buf), &st, 1);
    cr_expect_neq(qv__packet_validate(buf, len, &h), 0, "record version 0");
}

Test(codec, framing_errors_are_refused)
{
    qv__msg ack = {.type = QV__MSG_ACK, .seq = 1};
    uint8_t buf[256];
    qv__hdr h;
    size_t len = encode_packet(buf, sizeof(buf), &ack, 1);
    cr_assert_eq(qv__packet_validate(buf, len, &h), 0);
    uint8_t b[256];

    memcpy(b, buf, len);
    b[0] = 2; /* wire version */
    cr_expect_eq(qv__packet_validate(b, len, &h), QV_EUNIMPL);
    memcpy(b, buf, len);
    size_t count_at = len - 8;
    b[count_at] = 0; /* zero messages */
    cr_expect_neq(qv__packet_validate(b, len, &h), 0, "count 0");
    memcpy(b, buf, len);
    b[count_at] = 2; /* more messages than present */
    cr_expect_neq(qv__packet_validate(b, len, &h), 0, "count too high");
    memcpy(b, buf, len);
    b[count_at + 2] = 0xff; /* body length past the end */
    cr_expect_neq(qv__packet_validate(b, len, &h), 0, "body past the end");
    memcpy(b, buf, len);
    b[count_at + 1] = 0; /* message type 0 */
    cr_expect_neq(qv__packet_validate(b, len, &h), 0, "type 0");
    memcpy(b, buf, len);
    b[len] = 0;
    cr_expect_neq(qv__packet_validate(b, len + 1, &h), 0, "a trailing byte");
    cr_expect_neq(qv__packet_validate(b, 0, &h), 0, "empty");
    /* ACK body shorter than its u32. */
    cr_expect_neq(validate_raw(QV__MSG_ACK, (uint8_t[]){1, 2, 3}, 3), 0, "short ACK");
}

Test(codec, push_pull_framing_errors_are_refused)
{
    qv__wbuf w;
    qv__w_growable(&w, 4096);
    qv__hdr h = hdr();
    qv__pp_begin_encode(&w, &h, QV__STREAM_PP_REQ, 0, 0);
    uint8_t kind;
    cr_assert_eq(qv__pp_validate(w.p, w.len, &h, &kind), 0, "an empty state is fine");
    uint8_t b[512];
    memcpy(b, w.p, w.len);
    b[w.len - 6] = 3; /* kind */
    cr_expect_neq(qv__pp_validate(b, w.len, &h, &kind), 0, "kind 3");
    memcpy(b, w.p, w.len);
    b[w.len - 1] = 0x10; /* a count of 2^28 with no bytes behind it */
    cr_expect_neq(qv__pp_validate(b, w.len, &h, &kind), 0, "count without entries");
    /* An entry with state 0 and one with state 5. */
    qv__pp_entry e = {.addr = {.family = 4, .port = 1, .ip = {1}}, .state = QV_GOSSIP_ALIVE};
    snprintf(e.name, sizeof(e.name), "e");
    for (int st = 0; st <= 5; st += 5) {
        e.state = (uint8_t)st;
        qv__wbuf x;
        qv__w_growable(&x, 4096);
        qv__pp_begin_encode(&x, &h, QV__STREAM_PP_REQ, 0, 1);
        qv__pp_entry_encode(&x, &e);
        cr_expect_neq(qv__pp_validate(x.p, x.len, &h, &kind), 0, "state %d", st);
        qv__w_free(&x);
    }
    qv__w_free(&w);
    fx_expect_no_leaks();
}

Test(codec, unknown_types_and_extra_body_bytes_are_tolerated)
{
    /* A message of type 200 (from a later version) between two ACKs, and an ACK whose body has
     * two extra bytes (a field a later version appended). */
    uint8_t buf[256];
    qv__wbuf w;
    qv__w_fixed(&w, buf, sizeof(buf));
    qv__hdr h = hdr();
    qv__hdr_encode(&w, &h);
    qv__w_u8(&w, 3);
    qv__w_u8(&w, QV__MSG_ACK);
    qv__w_u16(&w, 6);
    qv__w_u32(&w, 77);
    qv__w_u16(&w, 0xbeef);
    qv__w_u8(&w, 200);
    qv__w_u16(&w, 3);
    qv__w_bytes(&w, "abc", 3);
    qv__w_u8(&w, QV__MSG_NACK);
    qv__w_u16(&w, 4);
    qv__w_u32(&w, 78);
    cr_assert(!w.err);
    cr_assert_eq(qv__packet_validate(buf, w.len, &h), 0);
    qv__rbuf r;
    qv__r_init(&r, buf, w.len);
    uint32_t count;
    qv__packet_begin(&r, &h, &count);
    qv__msg m;
    cr_assert_eq(qv__msg_decode(&r, &m), 0);
    cr_expect_eq(m.type, QV__MSG_ACK);
    cr_expect_eq(m.seq, 77);
    cr_assert_eq(qv__msg_decode(&r, &m), 0);
    cr_expect_eq(m.type, 0, "an unknown type decodes as 0 (skip)");
    cr_assert_eq(qv__msg_decode(&r, &m), 0);
    cr_expect_eq(m.type, QV__MSG_NACK);
    cr_expect_eq(m.seq, 78);
}

Test(codec, writers_refuse_to_overflow)
{
    uint8_t buf[8];
    qv__wbuf w;
    qv__w_fixed(&w, buf, sizeof(buf));
    qv__w_u64(&w, 1);
    cr_expect(!w.err);
    qv__w_u8(&w, 1);
    cr_expect(w.err, "a ninth byte in an 8-byte buffer");
    cr_expect_eq(w.len, 8);
    qv__w_growable(&w, 100);
    for (int i = 0; i < 12; i++)
        qv__w_u64(&w, (uint64_t)i);
    cr_expect(!w.err);
    qv__w_u64(&w, 1);
    cr_expect(w.err, "past the growable limit");
    qv__w_free(&w);
    char big[300];
    memset(big, 'x', sizeof(big) - 1);
    big[299] = '\0';
    qv__w_growable(&w, 1000);
    qv__w_str8(&w, big);
    cr_expect(w.err, "a str8 longer than 255");
    qv__w_free(&w);
    fx_expect_no_leaks();
}

Test(codec, addresses_parse_and_format)
{
    qv_gossip_addr a;
    cr_assert_eq(qv_gossip_addr_parse("127.0.0.1:7946", &a), 0);
    cr_expect_eq(a.family, 4);
    cr_expect_eq(a.port, 7946);
    char text[QV_GOSSIP_ADDR_STRLEN];
    cr_expect_str_eq(qv_gossip_addr_format(&a, text, sizeof(text)), "127.0.0.1:7946");
    cr_expect_eq(qv_gossip_addr_parse("[::1]:1", &a), 0);
    cr_expect_eq(a.family, 6);
    const char *bad[] = {"",         "1.2.3.4",   "1.2.3.4:",  "1.2.3.4:65536", "1.2.3.4:x",
                         "::1:7946", "[::1]7946", "host:7946", ":7946",         "1.2.3.4:-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(qv_gossip_addr_parse(bad[i], &a), QV_EINVAL, "'%s'", bad[i]);
    cr_expect_eq(qv_gossip_addr_resolve("localhost:7946", &a, NULL), 0);
    cr_expect_eq(a.port, 7946);
    qv_status err;
    cr_expect_eq(qv_gossip_addr_resolve("no-such-host.invalid:1", &a, &err), QV_ENOTFOUND);
    cr_expect_eq(qv_gossip_addr_resolve("nocolon", &a, &err), QV_EINVAL);
}
