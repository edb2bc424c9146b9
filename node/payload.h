/* Private to node/: payload validation, the per-collection payload index (CRoaring bitmaps per
 * field value) and the compiler from a quiver.v1.Filter to the bitmap of allowed points.
 *
 * Every top-level payload field is indexed: strings by value (keyword match), integers by value
 * (match) and as numbers (ranges), doubles as numbers (and by value when integral), booleans, plus
 * per field the points that have it, have it explicitly null, and have a non-null value. Range
 * conditions read a sorted array of a field's distinct numbers, rebuilt lazily after changes.
 * Points are the collection's internal 32-bit ids (iids). Not thread-safe except where noted: the
 * collection serialises writers against readers with its rwlock; qv__pidx_compile may run in
 * several readers at once. */
#ifndef QV_NODE_PAYLOAD_H
#define QV_NODE_PAYLOAD_H

#include "common/common.h"
#include "quiver/v1/common.pb-c.h"

#include <roaring/roaring.h>

#define QV_PAYLOAD_MAX_KEYS   256
#define QV_PAYLOAD_MAX_KEY    256
#define QV_PAYLOAD_MAX_BYTES  65536
#define QV_PAYLOAD_MAX_DEPTH  8
#define QV_PAYLOAD_MAX_LIST   10000
#define QV_FILTER_MAX_DEPTH   16
#define QV_FILTER_MAX_CONDS   1024
#define QV_FILTER_MAX_VALUES  1024
#define QV_FILTER_MAX_HAS_IDS 10000

/* Checks a payload against the limits of common.proto (keys, UTF-8, finite doubles, nesting,
 * list sizes, serialised size). QV_EINVAL with a message naming the key. */
int qv__payload_validate(const Quiver__V1__Payload *p, qv_status *err);

/* True when s[0..len) is valid UTF-8. */
bool qv__utf8_valid(const char *s, size_t len);

/* Checks every string field of a serialised message of type d (recursively through nested and map
 * messages) on the wire, before protobuf-c turns it into C strings that would silently end at an
 * embedded NUL: each must be valid UTF-8 without NUL. Returns 0, or QV_EINVAL with the field's
 * name. Malformed wire data is left to the unpacker (returns 0). */
int qv__proto_strings_check(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                            qv_status *err);

/* CRoaring 0.2 does not accept NULL in roaring_bitmap_free. */
static inline void qv__bm_free(roaring_bitmap_t *b)
{
    if (b != NULL)
        roaring_bitmap_free(b);
}

typedef struct qv_pidx qv_pidx;

qv_pidx *qv__pidx_create(void);
void qv__pidx_free(qv_pidx *px);
/* Indexes (or un-indexes) the payload of point iid. p may be NULL (empty payload). Add returns 0
 * or QV_ERESOURCE; on failure the index may hold part of the payload, so the caller treats it as
 * fatal for the collection. */
int qv__pidx_add(qv_pidx *px, uint32_t iid, const Quiver__V1__Payload *p);
void qv__pidx_remove(qv_pidx *px, uint32_t iid, const Quiver__V1__Payload *p);
/* Number of indexed fields and bytes held by the bitmaps (for metrics). */
void qv__pidx_stats(qv_pidx *px, size_t *fields, size_t *bytes);

/* Resolves a point id to its iid; false when the point does not exist. */
typedef bool (*qv_pidx_id_fn)(const Quiver__V1__PointId *id, uint32_t *iid, void *user);

/* Validates a filter (limits and shape, see common.proto) without evaluating it. */
int qv__filter_validate(const Quiver__V1__Filter *f, qv_status *err);

/* Evaluates a (validated) filter into a new bitmap of allowed iids, a subset of `live`. A field
 * that no point of the collection ever had is QV_EINVAL ("unknown field"). Thread-safe against
 * other compiles. */
int qv__pidx_compile(qv_pidx *px, const Quiver__V1__Filter *f, const roaring_bitmap_t *live,
                     qv_pidx_id_fn idfn, void *user, roaring_bitmap_t **out, qv_status *err);

#endif
