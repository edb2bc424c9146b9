/*
 * common/gossip/gossip_internal.h - private to common/gossip (and its tests and fuzzer).
 *
 * Map of the module:
 *   codec.c   byte readers/writers, the plaintext wire format (packet header, the messages of a
 *             datagram, the push-pull stream), every length checked against what remains
 *   crypto.c  keys, keyring, the sealed envelope (XChaCha20-Poly1305), the replay window
 *   swim.c    the protocol core (qv__swim): members, probes, suspicion, dissemination, push-pull.
 *             It never blocks and does no I/O of its own: it is driven through qv__io.
 *   gossip.c  the public handle (qv_gossip): locking, subscribers and events, snapshots, config
 *   net.c     the real driver: UDP + TCP on one port, one epoll thread
 *   sim.c     the simulated driver: many members, virtual time, seeded faults
 */
#ifndef QV_GOSSIP_INTERNAL_H
#define QV_GOSSIP_INTERNAL_H

#include "common/gossip/gossip.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------------------------------
 * Wire constants
 * ------------------------------------------------------------------------------------------- */
#define QV__ENV_VERSION   1 /* first byte of every sealed envelope */
#define QV__WIRE_VERSION  1 /* first byte of every plaintext */
#define QV__NONCE_BYTES   24
#define QV__TAG_BYTES     16
#define QV__ENV_HDR       (1 + 4 + QV__NONCE_BYTES)
#define QV__ENV_OVERHEAD  (QV__ENV_HDR + QV__TAG_BYTES)
#define QV__MIN_PACKET    256 /* smallest max_packet_bytes accepted */
#define QV__STREAM_MIN    4096
#define QV__REPLAY_WINDOW 1024 /* sequence numbers remembered per sender */

/* What a sealed buffer is for; bound into the authenticated data, never sent. */
enum {
    QV__PURPOSE_PACKET = 'P',
    QV__PURPOSE_STREAM_REQ = 'S',
    QV__PURPOSE_STREAM_REPLY = 'R',
};

/* Message types inside a datagram. */
enum {
    QV__MSG_PING = 1,
    QV__MSG_PING_REQ = 2,
    QV__MSG_ACK = 3,
    QV__MSG_NACK = 4,
    QV__MSG_ALIVE = 5,
    QV__MSG_SUSPECT = 6,
    QV__MSG_DEAD = 7,
    QV__MSG_LEAVE = 8,
    QV__MSG_STATE = 9,
    QV__MSG__MAX = 9,
};

/* Stream kinds and flags. */
enum {
    QV__STREAM_PP_REQ = 1,
    QV__STREAM_PP_REPLY = 2,
};
#define QV__PP_FLAG_JOIN    0x01
#define QV__PINGREQ_NACK    0x01
#define QV__STATE_BLOB_OMIT 0x01
#define QV__REC_FLAG_DRAIN  0x01
#define QV__PP_MAX_ENTRIES  (1u << 20)
#define QV__LOAD_WIRE_BYTES 48

/* ---------------------------------------------------------------------------------------------
 * Byte buffers (codec.c). A writer either has a fixed capacity (err is set when a write does not
 * fit; later writes are ignored) or grows up to `limit` bytes. A reader sets err on the first
 * read past the end; later reads return zeros.
 * ------------------------------------------------------------------------------------------- */
typedef struct qv__wbuf {
    uint8_t *p;
    size_t len, cap, limit;
    bool growable;
    bool err;
} qv__wbuf;

typedef struct qv__rbuf {
    const uint8_t *p;
    size_t len, off;
    bool err;
} qv__rbuf;

void qv__w_fixed(qv__wbuf *w, uint8_t *buf, size_t cap);
void qv__w_growable(qv__wbuf *w, size_t limit);
void qv__w_free(qv__wbuf *w);
void qv__w_u8(qv__wbuf *w, uint8_t v);
void qv__w_u16(qv__wbuf *w, uint16_t v);
void qv__w_u32(qv__wbuf *w, uint32_t v);
void qv__w_u64(qv__wbuf *w, uint64_t v);
void qv__w_bytes(qv__wbuf *w, const void *b, size_t n);
void qv__w_str8(qv__wbuf *w, const char *s);
void qv__w_put_u16_at(qv__wbuf *w, size_t at, uint16_t v);
void qv__w_put_u8_at(qv__wbuf *w, size_t at, uint8_t v);

void qv__r_init(qv__rbuf *r, const uint8_t *p, size_t len);
uint8_t qv__r_u8(qv__rbuf *r);
uint16_t qv__r_u16(qv__rbuf *r);
uint32_t qv__r_u32(qv__rbuf *r);
uint64_t qv__r_u64(qv__rbuf *r);
const uint8_t *qv__r_bytes(qv__rbuf *r, size_t n);
static inline size_t qv__r_left(const qv__rbuf *r)
{
    return r->err ? 0 : r->len - r->off;
}

/* ---------------------------------------------------------------------------------------------
 * Decoded forms (codec.c)
 * ------------------------------------------------------------------------------------------- */

/* A state record on the wire; blob points into the decoded buffer (or is owned by a member). */
typedef struct qv__record {
    uint8_t role;
    bool draining;
    char grpc[QV_GOSSIP_GRPC_ADDR_MAX + 1];
    char version[QV_GOSSIP_VERSION_MAX + 1];
    qv_gossip_load load;
    const uint8_t *blob;
    uint32_t blob_len;
} qv__record;

/* The plaintext header that starts every datagram and stream message. */
typedef struct qv__hdr {
    char name[QV_GOSSIP_NAME_MAX + 1]; /* sender */
    uint64_t epoch;                    /* sender's boot epoch (wall ms at start) */
    uint64_t seq;                      /* sender's message counter within the epoch */
} qv__hdr;

/* One message of a datagram; which fields matter depends on type. */
typedef struct qv__msg {
    uint8_t type;                      /* QV__MSG_*; 0 for an unknown type (skipped) */
    uint32_t seq;                      /* PING, PING_REQ, ACK, NACK */
    char name[QV_GOSSIP_NAME_MAX + 1]; /* PING/PING_REQ: target; others: the subject */
    char from[QV_GOSSIP_NAME_MAX + 1]; /* SUSPECT, DEAD: who says so */
    uint64_t inc;                      /* ALIVE..LEAVE: incarnation; STATE: record version */
    qv_gossip_addr addr;               /* ALIVE: its address; PING_REQ: the target's */
    uint8_t flags;                     /* PING_REQ: QV__PINGREQ_NACK; STATE: QV__STATE_BLOB_OMIT */
    qv__record rec;                    /* STATE */
} qv__msg;

/* One member in a push-pull stream. */
typedef struct qv__pp_entry {
    char name[QV_GOSSIP_NAME_MAX + 1];
    qv_gossip_addr addr;
    uint64_t inc;
    uint8_t state;        /* qv_gossip_state */
    uint64_t rec_version; /* 0: no record follows */
    bool blob_omitted;
    qv__record rec;
} qv__pp_entry;

bool qv__name_valid(const char *s, size_t len);

/* Encoders never fail on their own; a fixed writer's err says when space ran out. */
void qv__hdr_encode(qv__wbuf *w, const qv__hdr *h);
/* Appends one message: type, u16 body length, body. */
void qv__msg_encode(qv__wbuf *w, const qv__msg *m);
void qv__record_encode(qv__wbuf *w, const qv__record *rec, bool omit_blob);
void qv__pp_begin_encode(qv__wbuf *w, const qv__hdr *h, uint8_t kind, uint8_t flags,
                         uint32_t count);
void qv__pp_entry_encode(qv__wbuf *w, const qv__pp_entry *e);

/* Decoders return 0 or QV_EINVAL (malformed: short, bad length, bad value); QV_EUNIMPL for an
 * unknown wire version. */
int qv__hdr_decode(qv__rbuf *r, qv__hdr *h);
/* Datagram plaintext: header, u8 count, then `count` messages. */
int qv__packet_begin(qv__rbuf *r, qv__hdr *h, uint32_t *count);
int qv__msg_decode(qv__rbuf *r, qv__msg *m);
/* Decodes a whole datagram plaintext without acting on it; 0 when every message decodes and no
 * bytes follow the last one. */
int qv__packet_validate(const uint8_t *p, size_t len, qv__hdr *h);
/* Stream plaintext: header, u8 kind, u8 flags, u32 count, then `count` entries. */
int qv__pp_begin(qv__rbuf *r, qv__hdr *h, uint8_t *kind, uint8_t *flags, uint32_t *count);
int qv__pp_entry_decode(qv__rbuf *r, qv__pp_entry *e);
int qv__pp_validate(const uint8_t *p, size_t len, qv__hdr *h, uint8_t *kind);

/* ---------------------------------------------------------------------------------------------
 * Keyring, envelope, replay window (crypto.c)
 * ------------------------------------------------------------------------------------------- */
typedef struct qv__keyring {
    qv_gossip_key keys[QV_GOSSIP_KEYRING_MAX];
    uint32_t ids[QV_GOSSIP_KEYRING_MAX];
    size_t n;
} qv__keyring;

int qv__crypto_init(void);
uint32_t qv__key_id(const qv_gossip_key *key);
/* Replaces the keyring. Returns 0 or QV_EINVAL (n out of 1..QV_GOSSIP_KEYRING_MAX). */
int qv__keyring_set(qv__keyring *kr, const qv_gossip_key *keys, size_t n);
void qv__keyring_wipe(qv__keyring *kr);

/* Seals pt into out (capacity >= ptlen + QV__ENV_OVERHEAD) under the primary key:
 * version | key id (u32 LE) | nonce | ciphertext+tag, with (version, key id, purpose) as the
 * authenticated data. Returns the sealed length. */
size_t qv__seal(const qv__keyring *kr, uint8_t purpose, const uint8_t nonce[QV__NONCE_BYTES],
                const uint8_t *pt, size_t ptlen, uint8_t *out);

/* Opens a sealed buffer into pt (capacity >= len). Returns 0 with *ptlen set, or -1 with *drop
 * set to the reason (TRUNCATED, VERSION, UNKNOWN_KEY, AUTH). */
int qv__open(const qv__keyring *kr, uint8_t purpose, const uint8_t *in, size_t len, uint8_t *pt,
             size_t *ptlen, qv_gossip_drop *drop);

/* Anti-replay state for one sender: the newest (epoch, seq) seen and a bitmap of the
 * QV__REPLAY_WINDOW sequence numbers below it. */
typedef struct qv__replay {
    uint64_t epoch;
    uint64_t top; /* highest seq accepted in this epoch */
    uint64_t bits[QV__REPLAY_WINDOW / 64];
    bool used;
} qv__replay;

/* Accepts (and records) or rejects (epoch, seq): a newer epoch resets the window; an older epoch
 * is rejected unless allow_old_epoch (the sender restarted after we declared it dead, possibly
 * with a clock that stepped back); within the epoch, a seq above top advances the window, one
 * inside it is accepted once, one below it is rejected. Returns true when accepted. */
bool qv__replay_accept(qv__replay *w, uint64_t epoch, uint64_t seq, bool allow_old_epoch);

/* ---------------------------------------------------------------------------------------------
 * The protocol core (swim.c)
 * ------------------------------------------------------------------------------------------- */
typedef struct qv__member qv__member;
typedef struct qv__bcast qv__bcast;

#define QV__FWD_MAX       64   /* ping-reqs this member forwards at once */
#define QV__PP_MAX        16   /* push-pulls in flight */
#define QV__BC_LEVELS     64   /* transmit levels of the broadcast queue */
#define QV__BC_MAX        8192 /* broadcasts queued at most */
#define QV__SUSP_FROM_MAX 16   /* confirmers remembered per suspicion */

/* What the core needs from its driver. All callbacks run with the handle's lock held. */
typedef struct qv__io {
    void *ctx;
    uint64_t (*now_ms)(void *ctx);
    void (*random)(void *ctx, void *buf, size_t len); /* nonces */
    /* Sends one datagram; returns 0 or a negative code (counted as SEND_FAILED). */
    int (*send_packet)(void *ctx, const qv_gossip_addr *to, const uint8_t *buf, size_t len);
    /* Starts a stream exchange: sends buf, later calls qv__swim_on_stream_done(id) exactly once
     * unless it returns an error now. */
    int (*stream_start)(void *ctx, uint64_t id, const qv_gossip_addr *to, const uint8_t *buf,
                        size_t len);
    int (*resolve)(void *ctx, const char *text, qv_gossip_addr *out);
    /* An event about a member (never self); may be NULL. */
    void (*event)(void *ctx, int type, const qv__member *m);
    /* An API call changed the core's next deadline; may be NULL. */
    void (*wake)(void *ctx);
} qv__io;

struct qv__member {
    char name[QV_GOSSIP_NAME_MAX + 1];
    uint64_t hash;
    qv_gossip_addr addr;
    uint64_t inc;
    uint8_t state;
    bool is_self;
    uint64_t state_change_ms;
    uint64_t last_update_ms;
    /* state record */
    uint64_t rec_version;
    qv__record rec; /* rec.blob owned (malloc) */
    bool blob_stale;
    /* suspicion (state == SUSPECT) */
    uint64_t susp_start_ms, susp_min_ms, susp_max_ms, susp_deadline_ms;
    uint64_t susp_probed_ms; /* when we last probed it ourselves while suspect */
    uint32_t susp_k, susp_n;
    uint64_t susp_from[QV__SUSP_FROM_MAX]; /* hashes of confirmers (+ the originator) */
    uint32_t susp_nfrom;
    /* queued broadcasts about it: [0] membership, [1] state record */
    qv__bcast *bc[2];
};

struct qv__bcast {
    qv__bcast *prev, *next; /* in the list of its transmit level */
    qv__member *about;
    uint8_t cls;
    uint32_t transmits;
    uint16_t len;
    uint8_t *msg; /* encoded message, type + len + body */
};

typedef struct qv__fwd {
    bool used;
    bool want_nack;
    uint32_t our_seq, origin_seq;
    qv_gossip_addr origin;
    uint64_t deadline_ms;
} qv__fwd;

typedef struct qv__pp {
    bool used;
    bool join;
    uint64_t id;
    uint64_t deadline_ms;
} qv__pp;

typedef struct qv__replay_slot {
    uint64_t hash;
    uint64_t last_ms;
    qv__replay w;
} qv__replay_slot;

typedef struct qv__swim {
    qv_gossip_config cfg; /* defaults applied; name points to self->name; keys NULL */
    qv__io io;
    qv__keyring ring;
    uint64_t now;
    uint64_t rng[4];
    uint64_t hash_seed;
    uint64_t boot_epoch;
    uint64_t rec_base; /* first record version of this life: boot_epoch << 20 */
    uint64_t tx_seq;
    uint32_t probe_seq;
    uint64_t stream_id;

    qv__member *self;
    qv__member **members; /* also the randomized round-robin probe order */
    size_t nmembers, cap;
    size_t probe_pos;
    qv__member **index; /* open addressing by hash; NULL empty */
    size_t index_cap;
    qv__member **suspects;
    size_t nsuspects, suspects_cap;
    size_t nlive; /* ALIVE + SUSPECT, self included */

    qv__bcast *levels[QV__BC_LEVELS];
    size_t nbcast;

    struct {
        bool active;
        bool indirect_sent;
        bool acked;
        char target[QV_GOSSIP_NAME_MAX + 1];
        uint32_t seq;
        uint64_t start_ms, direct_deadline_ms, end_ms;
        uint32_t expected_nacks, nacks;
    } probe;
    qv__fwd fwd[QV__FWD_MAX];
    qv__pp pp[QV__PP_MAX];

    char **seeds;
    size_t nseeds;
    bool join_active, joined;
    uint64_t join_backoff_ms;
    char pull_target[QV_GOSSIP_NAME_MAX + 1];

    uint32_t health;
    bool leaving;
    bool alive_reply; /* the datagram being handled held stale news about us */
    uint64_t next_probe_ms, next_gossip_ms, next_pp_ms, next_reconnect_ms, next_reap_ms,
        next_join_ms, next_pull_ms;
    uint64_t next_stranger_ms; /* earliest push-pull with an unknown sender */

    qv__replay_slot *replay;
    size_t replay_cap, replay_n;

    qv_gossip_stats stats;
    uint8_t *tx_pt;   /* plaintext being built, max_packet_bytes */
    uint8_t *tx_wire; /* sealed datagram being sent, max_packet_bytes */
    uint8_t *rx_pt;   /* plaintext of the datagram being handled, max_packet_bytes */
} qv__swim;

/* Applies defaults to *cfg and checks it. Returns 0 or QV_EINVAL with a message. */
int qv__config_check(qv_gossip_config *cfg, qv_status *err);

/* Sets up a core for member cfg->name at self_addr (cfg validated by qv__config_check). seed
 * feeds the PRNG; boot_epoch orders restarts. Returns 0, QV_EINVAL or QV_ERESOURCE. */
int qv__swim_init(qv__swim *s, const qv_gossip_config *cfg, const qv_gossip_addr *self_addr,
                  const qv__io *io, uint64_t seed, uint64_t boot_epoch);
void qv__swim_destroy(qv__swim *s);

/* Driver entry points. */
void qv__swim_on_packet(qv__swim *s, const qv_gossip_addr *from, const uint8_t *buf, size_t len);
/* The plaintext half of on_packet (after opening), used by the fuzzer. */
void qv__swim_on_plain(qv__swim *s, const qv_gossip_addr *from, const uint8_t *pt, size_t len);
/* Answers a stream request: on 0, *reply holds the sealed reply (malloc'd, caller frees). */
int qv__swim_on_stream_request(qv__swim *s, const qv_gossip_addr *from, const uint8_t *buf,
                               size_t len, uint8_t **reply, size_t *reply_len);
/* The plaintext half of a stream request/reply, used by the fuzzer; reply may be NULL. */
int qv__swim_on_stream_plain(qv__swim *s, const uint8_t *pt, size_t len, bool is_reply,
                             uint8_t **reply, size_t *reply_len);
/* Completes stream `id`: rc 0 with the sealed reply, or a negative code. */
void qv__swim_on_stream_done(qv__swim *s, uint64_t id, int rc, const uint8_t *buf, size_t len);
/* Runs whatever is due at now; returns the next deadline (ms, the core's clock). */
uint64_t qv__swim_tick(qv__swim *s);
uint64_t qv__swim_next_deadline(const qv__swim *s);

/* API operations on the core (the caller holds the handle's lock). */
int qv__swim_join(qv__swim *s, const char *const *seeds, size_t n);
int qv__swim_leave(qv__swim *s);
bool qv__swim_leave_done(const qv__swim *s);
int qv__swim_set_record(qv__swim *s, const qv_gossip_record *rec);
qv__member *qv__swim_find(const qv__swim *s, const char *name);

/* Lifeguard math, exposed for tests. */
uint64_t qv__susp_min_ms(const qv_gossip_config *cfg, size_t n);
uint64_t qv__susp_remaining_ms(uint32_t n, uint32_t k, uint64_t min_ms, uint64_t max_ms);
uint32_t qv__retransmit_limit(const qv_gossip_config *cfg, size_t n);

#ifdef QV_DEBUG_CHECKS
/* Checks the core's invariants (index, suspects list, counts, broadcast queue); asserts. */
void qv__swim_check(const qv__swim *s);
#else
static inline void qv__swim_check(const qv__swim *s)
{
    (void)s;
}
#endif

/* ---------------------------------------------------------------------------------------------
 * The public handle (gossip.c), shared by the drivers
 * ------------------------------------------------------------------------------------------- */
typedef struct qv__sub {
    uint64_t id;
    qv_gossip_event_fn fn;
    void *user;
    bool removed;
} qv__sub;

typedef struct qv__event {
    int type;
    uint64_t at_ms;
    qv_gossip_member m; /* blob owned */
} qv__event;

struct qv__net;
struct qv_gossip_sim;

struct qv_gossip {
    pthread_mutex_t mu;  /* the core, the event queue */
    pthread_cond_t cond; /* signalled after every driver step (leave waits on it) */
    qv__swim core;
    qv_gossip_addr self_addr;

    qv__event *evq;
    size_t nev, evcap;

    pthread_mutex_t cb_mu; /* subscribers; held while callbacks run */
    qv__sub *subs;
    size_t nsubs, subcap;
    uint64_t next_sub_id;
    bool dispatching;
    pthread_t dispatch_thread;

    struct qv__net *net;       /* real driver, or NULL */
    struct qv_gossip_sim *sim; /* simulated driver, or NULL */
    size_t sim_index;
};

/* Sets up the handle's locks, queues and core (driver fields are the caller's). */
int qv__gossip_init(qv_gossip *g, const qv_gossip_config *cfg, const qv_gossip_addr *self_addr,
                    const qv__io *io, uint64_t seed, uint64_t boot_epoch, qv_status *err);
void qv__gossip_fini(qv_gossip *g);
/* The io->event implementation: snapshots m into the event queue (lock held). */
void qv__gossip_on_event(qv_gossip *g, int type, const qv__member *m);
/* Calls subscribers for every queued event; lock NOT held. */
void qv__gossip_dispatch(qv_gossip *g);
/* Fills a public member snapshot from a core member (blob copied). Returns 0 or QV_ERESOURCE. */
int qv__member_snapshot(const qv__swim *s, const qv__member *m, qv_gossip_member *out);

/* Drivers. */
int qv__net_start(qv_gossip *g, const qv_gossip_config *cfg, qv_status *err);
void qv__net_stop(qv_gossip *g);
void qv__sim_wake(qv_gossip *g);

/* 64-bit FNV-1a with a seed (hash tables, confirmers). */
uint64_t qv__hash_name(uint64_t seed, const char *s);

/* xoshiro256** */
uint64_t qv__gossip_rng_next(uint64_t st[4]);
void qv__gossip_rng_seed(uint64_t st[4], uint64_t seed);
/* Uniform in [0, n), n > 0. */
uint64_t qv__gossip_rng_below(uint64_t st[4], uint64_t n);

#endif /* QV_GOSSIP_INTERNAL_H */
