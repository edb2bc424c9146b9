/* Private to node/: an open-addressing hash map from byte strings to pointers. Not thread-safe:
 * its owner locks. Keys are copied. */
#ifndef QV_NODE_HMAP_H
#define QV_NODE_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct qv_hmap_slot {
    uint8_t *key; /* NULL: empty */
    uint32_t klen;
    uint32_t hash;
    void *val;
} qv_hmap_slot;

typedef struct qv_hmap {
    qv_hmap_slot *slots;
    size_t cap; /* power of two, or 0 */
    size_t len;
} qv_hmap;

/* Returns a pointer to the value slot for key, or NULL when absent. */
void **qv__hmap_get(const qv_hmap *m, const void *key, size_t klen);
/* Sets key -> val, replacing an existing value (returned through *old when non-NULL). Returns 0
 * or -1 when out of memory (map unchanged). */
int qv__hmap_put(qv_hmap *m, const void *key, size_t klen, void *val, void **old);
/* Removes key; returns its value (NULL when absent). */
void *qv__hmap_del(qv_hmap *m, const void *key, size_t klen);
/* Calls fn for every entry (order unspecified); fn must not modify the map. */
void qv__hmap_each(const qv_hmap *m,
                   void (*fn)(const uint8_t *key, size_t klen, void *val, void *u), void *u);
/* Frees the map's storage and keys (not the values). */
void qv__hmap_free(qv_hmap *m);

#endif
