/*
 * common/gossip/gossip.h - cluster membership and state dissemination: SWIM with the Lifeguard
 * refinements, over encrypted UDP datagrams plus TCP push-pull.
 *
 * Every Quiver process runs one qv_gossip. Each period it probes one member (ping; on timeout,
 * ping-req through `indirect_checks` others), suspects members that do not answer, and declares
 * them dead when the suspicion is not refuted in time. Suspicion timeouts start long and shrink as
 * independent confirmations arrive; a member whose own messages come late (local health) probes
 * more slowly and waits longer. Every member publishes a small versioned state record (role, gRPC
 * address, load, an opaque blob) that travels piggybacked on protocol datagrams; records too big
 * for a datagram travel by the periodic TCP push-pull of full state, which also heals partitions.
 * Every datagram and stream is sealed with XChaCha20-Poly1305 under a cluster key (a keyring for
 * rotation). docs/gossip.md describes the protocol, the defaults, the detection bound and caveats.
 *
 * Two drivers run the same protocol core:
 *   - qv_gossip_start(): real UDP + TCP sockets on one port, one thread running an epoll loop.
 *   - the simulator (qv_gossip_sim_*): many members in one process, in virtual time, with seeded
 *     loss, delay, partitions, pauses and kills; fully deterministic for a given seed.
 * Every other function works on both kinds of qv_gossip.
 *
 * Thread safety: a real qv_gossip may be used from any thread; its state is behind one mutex and
 * its I/O happens on its own thread. A simulated qv_gossip belongs to the thread driving its
 * simulator. Subscriber callbacks run on the gossip thread (real) or inside qv_gossip_sim_run_for
 * (simulated), one at a time, without any gossip lock held.
 */
#ifndef QV_GOSSIP_H
#define QV_GOSSIP_H

#include "common/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest member name, in bytes: printable ASCII without spaces (0x21..0x7e). */
#define QV_GOSSIP_NAME_MAX 64
/* Longest gRPC address and version string in a state record, NUL excluded. */
#define QV_GOSSIP_GRPC_ADDR_MAX 255
#define QV_GOSSIP_VERSION_MAX   31
/* Longest "HOST:PORT" text an address formats to, NUL included. */
#define QV_GOSSIP_ADDR_STRLEN 64
/* Size of a cluster key. */
#define QV_GOSSIP_KEY_BYTES 32
/* Most keys a keyring holds. */
#define QV_GOSSIP_KEYRING_MAX 8

/* Member states; the values are quiver.v1.MemberState's. */
typedef enum qv_gossip_state {
    QV_GOSSIP_ALIVE = 1,
    QV_GOSSIP_SUSPECT = 2,
    QV_GOSSIP_DEAD = 3,
    QV_GOSSIP_LEFT = 4,
} qv_gossip_state;

/* What a member runs as; the values are quiver.v1.NodeMode's. */
typedef enum qv_gossip_role {
    QV_GOSSIP_ROLE_UNSPECIFIED = 0,
    QV_GOSSIP_ROLE_DEV = 1,
    QV_GOSSIP_ROLE_NODE = 2,
    QV_GOSSIP_ROLE_ROUTER = 3,
} qv_gossip_role;

/* "ALIVE", "SUSPECT", "DEAD", "LEFT"; "UNKNOWN" for other values. */
const char *qv_gossip_state_name(int state);

/* ---------------------------------------------------------------------------------------------
 * Addresses
 * ------------------------------------------------------------------------------------------- */

/* An IPv4 or IPv6 address and port. family is 4 or 6; ip holds 4 or 16 bytes, network order. */
typedef struct qv_gossip_addr {
    uint8_t family;
    uint16_t port;
    uint8_t ip[16];
} qv_gossip_addr;

/* Parses a numeric "1.2.3.4:7946" or "[::1]:7946". Returns 0 or QV_EINVAL. No DNS. */
int qv_gossip_addr_parse(const char *text, qv_gossip_addr *out);

/* Resolves "HOST:PORT" (numeric, or a name through getaddrinfo, which may block) to its first
 * IPv4 (else IPv6) address. Returns 0, QV_EINVAL (malformed) or QV_ENOTFOUND (does not resolve),
 * with a message in *err (may be NULL). */
int qv_gossip_addr_resolve(const char *text, qv_gossip_addr *out, qv_status *err);

/* Writes "1.2.3.4:7946" / "[::1]:7946" into buf (at least QV_GOSSIP_ADDR_STRLEN bytes is always
 * enough); returns buf. */
char *qv_gossip_addr_format(const qv_gossip_addr *addr, char *buf, size_t len);

/* True when both name the same family, ip and port. */
bool qv_gossip_addr_equal(const qv_gossip_addr *a, const qv_gossip_addr *b);

/* ---------------------------------------------------------------------------------------------
 * Cluster keys
 *
 * A key is 32 random bytes, written as 64 hex digits or as standard base64 (44 characters with
 * the '=' padding). A key list (file or QUIVER_CLUSTER_KEY) holds one or more keys separated by
 * commas, white space or new lines; '#' starts a comment that runs to the end of its line. The
 * first key is the primary (it seals everything sent); every key is accepted when opening.
 * ------------------------------------------------------------------------------------------- */
typedef struct qv_gossip_key {
    uint8_t bytes[QV_GOSSIP_KEY_BYTES];
} qv_gossip_key;

/* Parses one key (hex or base64, surrounding white space ignored). Returns 0 or QV_EINVAL. */
int qv_gossip_key_parse(const char *text, qv_gossip_key *out);

/* Parses a key list into keys[0..max). Returns 0 with *n >= 1, or QV_EINVAL (no key, a malformed
 * key, a duplicate, more than max keys) with a message that never contains key material. */
int qv_gossip_keys_parse(const char *text, qv_gossip_key *keys, size_t max, size_t *n,
                         qv_status *err);

/* Reads and parses a key list file. A file readable by group or others is accepted with a
 * warning in the log. Returns 0, QV_ENOTFOUND (unreadable), QV_EINVAL (see above). */
int qv_gossip_keys_load_file(const char *path, qv_gossip_key *keys, size_t max, size_t *n,
                             qv_status *err);

/* Fills *out from the kernel's CSPRNG. Returns 0 or QV_EUNAVAIL. */
int qv_gossip_key_generate(qv_gossip_key *out);

/* Writes the key as 64 lower-case hex digits plus NUL into buf[65]. */
void qv_gossip_key_to_hex(const qv_gossip_key *key, char buf[65]);

/* ---------------------------------------------------------------------------------------------
 * State records: what each member publishes about itself
 * ------------------------------------------------------------------------------------------- */
typedef struct qv_gossip_load {
    float cpu;                  /* 0.0..1.0 of all cores over the last minute */
    uint64_t memory_bytes;      /* resident memory */
    uint64_t disk_used_bytes;   /* under the data directory */
    uint64_t disk_free_bytes;   /* on the data directory's file system */
    uint32_t replicas;          /* shard replicas held */
    uint32_t leaders;           /* shard replicas held as leader */
    uint32_t inflight_requests; /* requests in progress */
    float search_qps;           /* searches per second over the last minute */
    uint32_t search_p95_us;     /* 95th-percentile search latency */
} qv_gossip_load;

/* A state record as the owner sets it. Strings and the blob are copied by qv_gossip_set_record.
 * grpc_addr (<= 255 bytes) and version (<= 31 bytes) may be NULL (empty); floats must be
 * finite. The blob is opaque to gossip (shard summaries); blob_len <= config.max_record_bytes. */
typedef struct qv_gossip_record {
    qv_gossip_role role;
    bool draining;
    const char *grpc_addr;
    const char *version;
    qv_gossip_load load;
    const uint8_t *blob;
    size_t blob_len;
} qv_gossip_record;

/* ---------------------------------------------------------------------------------------------
 * Configuration
 *
 * Every numeric field left 0 takes its default (qv_gossip_config_default fills them in). The
 * defaults follow hashicorp/memberlist's DefaultLANConfig; docs/gossip.md explains each one.
 * ------------------------------------------------------------------------------------------- */
typedef struct qv_gossip_config {
    /* Unique member name (1..64 printable ASCII bytes, no spaces). Required. Copied. */
    const char *name;

    /* Real transport only. bind_addr: "HOST:PORT" for both the UDP and the TCP socket; port 0
     * picks a port free for both. advertise_addr: what other members send to; NULL means the
     * bound address, which then must not be a wildcard (0.0.0.0, ::). bind_fallback: when the
     * port is taken, bind a free one instead (with a warning) rather than fail. */
    const char *bind_addr;
    const char *advertise_addr;
    bool bind_fallback;

    /* Keyring: keys[0] is the primary. At least one key is required. Copied. */
    const qv_gossip_key *keys;
    size_t nkeys;

    uint32_t probe_interval_ms;     /* 1000: one probe per period */
    uint32_t probe_timeout_ms;      /* 500: wait for a direct ack before asking others */
    uint32_t indirect_checks;       /* 3: members asked to ping-req a silent target */
    uint32_t suspicion_mult;        /* 4: min suspicion = mult * max(1, log10 n) * interval */
    uint32_t suspicion_max_mult;    /* 6: max suspicion = this * min suspicion */
    uint32_t awareness_max;         /* 8: local health scales timeouts by 1..this */
    uint32_t retransmit_mult;       /* 4: each update is sent mult * ceil(log10(n+1)) times */
    uint32_t gossip_interval_ms;    /* 200: piggyback-only gossip to gossip_nodes members */
    uint32_t gossip_nodes;          /* 3 */
    uint32_t gossip_to_dead_ms;     /* 30000: dead members still get gossip this long */
    uint32_t push_pull_interval_ms; /* 30000: full-state exchange with one random member
                                       (scaled up beyond 32 members like memberlist) */
    uint32_t reconnect_interval_ms; /* 10000: push-pull with one random dead member (heals
                                       partitions once both sides declared the other dead) */
    uint32_t tcp_timeout_ms;        /* 10000: connect + exchange limit of one push-pull */
    uint32_t join_retry_ms;         /* 1000: first retry of unanswered seeds (doubles to 30 s) */
    uint64_t dead_reclaim_ms;       /* 3600000: dead/left members are forgotten after this */
    uint32_t max_packet_bytes;      /* 1400: largest datagram sent or accepted (MTU-safe) */
    uint32_t max_stream_bytes;      /* 16 MiB: largest push-pull frame sent or accepted */
    uint32_t max_record_bytes;      /* 16384: largest state record blob */
    uint32_t piggyback_record_max;  /* 512: a record message larger than this travels
                                       without its blob (the blob follows by push-pull) */
    uint64_t seed;                  /* PRNG seed; 0: random (real) or derived (simulator) */
} qv_gossip_config;

/* Fills every zero numeric field of *cfg with its default; other fields are left alone. */
void qv_gossip_config_default(qv_gossip_config *cfg);

/* Suspicion timeout (ms) with `confirmations` independent confirmations received, in a cluster of
 * n members, per Lifeguard: max when none, shrinking logarithmically to min at k =
 * suspicion_mult - 2 confirmations (k = 0, always min, when n - 2 < k). Zero config fields are
 * taken as their defaults. */
uint64_t qv_gossip_suspicion_timeout_ms(const qv_gossip_config *cfg, size_t n,
                                        uint32_t confirmations);

/* The documented detection bound (ms) for a cluster of n members with a healthy majority: the
 * time within which every live member declares a crashed member dead,
 *   4 * probe_interval + max suspicion timeout + retransmits * gossip_interval,
 * where retransmits = retransmit_mult * ceil(log10(n+1)). See docs/gossip.md. */
uint64_t qv_gossip_detection_bound_ms(const qv_gossip_config *cfg, size_t n);

/* ---------------------------------------------------------------------------------------------
 * Lifecycle (real transport)
 * ------------------------------------------------------------------------------------------- */
typedef struct qv_gossip qv_gossip;

/* Validates cfg, binds UDP and TCP on cfg->bind_addr and starts the gossip thread. The member
 * is alone until qv_gossip_join. Errors (message in *err): QV_EINVAL (bad config), QV_EUNAVAIL
 * (address in use or not bindable), QV_ERESOURCE. On error nothing is left running. */
int qv_gossip_start(const qv_gossip_config *cfg, qv_gossip **out, qv_status *err);

/* Leaves gracefully (see qv_gossip_leave) waiting at most leave_timeout_ms (0: no leave, as if
 * crashed), stops the thread, closes the sockets and frees everything. Must not be called from a
 * subscriber callback. NULL and simulated members (owned by their simulator) are ignored. */
void qv_gossip_stop(qv_gossip *g, uint64_t leave_timeout_ms);

/* Starts joining through seeds ("HOST:PORT" texts, copied): a push-pull with every seed at once,
 * then again with backoff (join_retry_ms doubling up to 30 s) while this member knows no other
 * live member. Returns at once: 0, or QV_EINVAL when a seed is malformed or n == 0. Names are
 * resolved on each attempt, on the gossip thread. Seeds equal to this member's own address are
 * skipped. */
int qv_gossip_join(qv_gossip *g, const char *const *seeds, size_t n, qv_status *err);

/* Gossips that this member leaves (others mark it LEFT, not DEAD), stops probing and refuting.
 * Real: blocks until the news has been sent to retransmit-limit members or timeout_ms passed;
 * returns 0 or QV_ETIMEOUT. Simulated: returns 0 at once; run the simulator to send it.
 * QV_EPRECONDITION when already left. */
int qv_gossip_leave(qv_gossip *g, uint64_t timeout_ms);

/* Publishes a new state record for this member (version raised by one); it reaches every member
 * by piggyback (and push-pull for a large blob). Returns 0, QV_EINVAL (string too long, non-finite
 * load, blob larger than max_record_bytes), QV_ERESOURCE. */
int qv_gossip_set_record(qv_gossip *g, const qv_gossip_record *rec);

/* Replaces the keyring (keys[0] becomes primary; 1..QV_GOSSIP_KEYRING_MAX keys, copied). Key
 * rotation: add the new key as a secondary everywhere, then make it primary everywhere, then
 * drop the old one. Returns 0 or QV_EINVAL. */
int qv_gossip_set_keys(qv_gossip *g, const qv_gossip_key *keys, size_t n);

/* This member's name (valid for the life of g) and advertised address. */
const char *qv_gossip_name(const qv_gossip *g);
qv_gossip_addr qv_gossip_local_addr(const qv_gossip *g);

/* ---------------------------------------------------------------------------------------------
 * The member list
 * ------------------------------------------------------------------------------------------- */
typedef struct qv_gossip_member {
    char name[QV_GOSSIP_NAME_MAX + 1];
    qv_gossip_addr addr;
    qv_gossip_state state;
    uint64_t incarnation;
    uint64_t last_update_age_ms; /* since the latest update heard about (or ack from) it */
    bool is_self;
    /* Its state record; record_version 0 means none heard yet (then the rest is zero). */
    uint64_t record_version;
    qv_gossip_role role;
    bool draining;
    char grpc_addr[QV_GOSSIP_GRPC_ADDR_MAX + 1];
    char version[QV_GOSSIP_VERSION_MAX + 1];
    qv_gossip_load load;
    uint8_t *blob; /* owned by the snapshot; NULL when blob_len == 0 */
    size_t blob_len;
    bool blob_stale; /* a newer blob exists; it will come by push-pull */
} qv_gossip_member;

/* A snapshot of every known member (itself included, LEFT ones only when include_left), sorted by
 * name. *out is freed with qv_gossip_members_free. Returns 0 or QV_ERESOURCE. */
int qv_gossip_members(qv_gossip *g, bool include_left, qv_gossip_member **out, size_t *n);
void qv_gossip_members_free(qv_gossip_member *members, size_t n);

/* Counts of members: alive (itself included) and known other than LEFT. */
void qv_gossip_counts(qv_gossip *g, size_t *alive, size_t *total);

/* ---------------------------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------------------------- */
typedef enum qv_gossip_event_type {
    QV_GOSSIP_EV_JOIN = 1,    /* a member appeared, or came back after DEAD/LEFT */
    QV_GOSSIP_EV_SUSPECT = 2, /* ALIVE -> SUSPECT */
    QV_GOSSIP_EV_ALIVE = 3,   /* SUSPECT -> ALIVE (refuted) */
    QV_GOSSIP_EV_DEAD = 4,    /* declared dead */
    QV_GOSSIP_EV_LEAVE = 5,   /* left on purpose */
    QV_GOSSIP_EV_STATE = 6,   /* its state record changed */
} qv_gossip_event_type;

/* "join", "suspect", "alive", "dead", "leave", "state". */
const char *qv_gossip_event_name(int type);

/* One event. member is a snapshot taken when the event happened, valid during the callback
 * only; at_ms is the gossip clock (monotonic ms, or virtual time in the simulator). Events about
 * this member itself are not reported. */
typedef struct qv_gossip_event {
    qv_gossip_event_type type;
    const qv_gossip_member *member;
    uint64_t at_ms;
} qv_gossip_event;

typedef void (*qv_gossip_event_fn)(const qv_gossip_event *ev, void *user);

/* Registers fn for every later event. Callbacks must be quick; they may call any qv_gossip
 * function except qv_gossip_stop / qv_gossip_leave with a timeout. Returns 0 with *id set, or
 * QV_ERESOURCE. */
int qv_gossip_subscribe(qv_gossip *g, qv_gossip_event_fn fn, void *user, uint64_t *id);

/* Removes a subscription. When it returns, fn is not running and will not be called again
 * (unless called from fn itself, when the current call simply finishes). Unknown ids are
 * ignored. */
void qv_gossip_unsubscribe(qv_gossip *g, uint64_t id);

/* ---------------------------------------------------------------------------------------------
 * Counters (for /metrics)
 * ------------------------------------------------------------------------------------------- */
typedef enum qv_gossip_drop {
    QV_GOSSIP_DROP_TRUNCATED = 0, /* shorter than the envelope */
    QV_GOSSIP_DROP_OVERSIZED,     /* datagram or stream frame over the limit */
    QV_GOSSIP_DROP_VERSION,       /* unknown envelope or wire version */
    QV_GOSSIP_DROP_UNKNOWN_KEY,   /* key id not in the keyring */
    QV_GOSSIP_DROP_AUTH,          /* authentication failed (wrong key, tampered) */
    QV_GOSSIP_DROP_REPLAY,        /* seen before, too old for the window, or a stale boot */
    QV_GOSSIP_DROP_MALFORMED,     /* authentic but does not decode */
    QV_GOSSIP_DROP_LOOPBACK,      /* claims to come from this member's own name */
    QV_GOSSIP_DROP_SEND_FAILED,   /* the kernel refused a datagram we sent */
    QV_GOSSIP_DROP_STREAM,        /* a stream broke, timed out or was refused */
    QV_GOSSIP_DROP__COUNT
} qv_gossip_drop;

/* Short snake_case name of a drop reason ("auth"), "unknown" for others. */
const char *qv_gossip_drop_name(int reason);

typedef struct qv_gossip_stats {
    uint64_t packets_sent, packets_received; /* datagrams */
    uint64_t bytes_sent, bytes_received;     /* datagram and stream bytes on the wire */
    uint64_t msgs_sent, msgs_received;       /* protocol messages inside datagrams */
    uint64_t streams_sent, streams_received; /* push-pull exchanges started / answered */
    uint64_t dropped[QV_GOSSIP_DROP__COUNT];
    uint64_t probes, probes_failed, indirect_probes;
    uint64_t suspicions_raised; /* by this member's own failed probes */
    uint64_t refutations;       /* this member refuted a suspicion/death about itself */
    uint64_t deaths_declared;   /* by this member's own suspicion timers */
    uint64_t conflicts;         /* another member claimed a known name from another address */
    uint32_t health_score;      /* Lifeguard local health: 0 healthy .. awareness_max - 1 */
} qv_gossip_stats;

/* Copies every counter at one instant into *out (they only grow, except health_score).
 * Thread-safe. */
void qv_gossip_get_stats(qv_gossip *g, qv_gossip_stats *out);

/* ---------------------------------------------------------------------------------------------
 * Simulator: many members in one process, in virtual time
 *
 * Members live at 10.0.x.y:7946 (in order of creation). Each datagram is lost with the loss
 * probability of the sender's link, the receiver's link and the network (independently), and
 * delivered after a uniform delay in [latency_min_ms, latency_max_ms]. Streams (push-pull) are
 * reliable but fail when the peer is dead or partitioned away. A paused member processes nothing
 * (its timers stop; datagrams wait in a bounded inbox, as in a socket buffer) until resumed; a
 * killed member is silent for good. Everything is decided by one seeded PRNG, so a run is a
 * function of its seed and the calls made.
 * ------------------------------------------------------------------------------------------- */
typedef struct qv_gossip_sim qv_gossip_sim;

typedef struct qv_gossip_sim_opts {
    uint64_t seed;
    uint32_t latency_min_ms; /* default 1 (when both are 0: 1..5 ms) */
    uint32_t latency_max_ms; /* default 5 */
    double loss;             /* network-wide datagram loss, 0..1 */
    uint32_t inbox_max;      /* datagrams a paused member buffers; 0: 1024 */
} qv_gossip_sim_opts;

/* opts may be NULL (seed 1, defaults). Returns 0 or QV_EINVAL / QV_ERESOURCE. */
int qv_gossip_sim_create(const qv_gossip_sim_opts *opts, qv_gossip_sim **out);

/* Frees the simulator and every member in it. NULL is ignored. */
void qv_gossip_sim_destroy(qv_gossip_sim *sim);

/* Adds a member (cfg as for qv_gossip_start; bind/advertise are ignored). The member is owned by
 * the simulator. Returns 0, QV_EINVAL or QV_ERESOURCE. */
int qv_gossip_sim_add(qv_gossip_sim *sim, const qv_gossip_config *cfg, qv_gossip **out);

/* Runs every event due within the next ms of virtual time; subscribers are called from here. */
void qv_gossip_sim_run_for(qv_gossip_sim *sim, uint64_t ms);
uint64_t qv_gossip_sim_now_ms(const qv_gossip_sim *sim);

/* Faults. loss values are probabilities in [0, 1]. partition: members in different groups cannot
 * exchange anything (group 0 for everyone is the healed state). */
void qv_gossip_sim_set_loss(qv_gossip_sim *sim, double loss);
void qv_gossip_sim_set_latency(qv_gossip_sim *sim, uint32_t min_ms, uint32_t max_ms);
void qv_gossip_sim_set_link_loss(qv_gossip_sim *sim, qv_gossip *g, double loss);
void qv_gossip_sim_partition(qv_gossip_sim *sim, qv_gossip *g, int group);
void qv_gossip_sim_heal(qv_gossip_sim *sim);
void qv_gossip_sim_pause(qv_gossip_sim *sim, qv_gossip *g);
void qv_gossip_sim_resume(qv_gossip_sim *sim, qv_gossip *g);
void qv_gossip_sim_kill(qv_gossip_sim *sim, qv_gossip *g);

#ifdef __cplusplus
}
#endif

#endif /* QV_GOSSIP_H */
