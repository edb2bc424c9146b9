/* uint64 id -> uint32 slot hash map: open addressing, linear probing, backward-shift deletion. */
#define _GNU_SOURCE
#include "index/index_internal.h"

#include <stdlib.h>

/* Keys are ids; the all-ones id is reserved as the empty marker, so it is stored aside. */
#define EMPTY UINT64_MAX

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

void qv__idmap_init(qv__idmap *m)
{
    memset(m, 0, sizeof(*m));
}

void qv__idmap_free(qv__idmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* Slot for EMPTY-valued ids lives at index cap (one extra entry). */
uint32_t qv__idmap_get(const qv__idmap *m, uint64_t id)
{
    if (m->cap == 0)
        return QV__NO_SLOT;
    if (id == EMPTY)
        return m->keys[m->cap] == 0 ? QV__NO_SLOT : m->vals[m->cap];
    size_t mask = m->cap - 1;
    for (size_t i = mix(id) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == id)
            return m->vals[i];
        if (m->keys[i] == EMPTY)
            return QV__NO_SLOT;
    }
}

static int rehash(qv__idmap *m, size_t cap)
{
    uint64_t *keys = malloc((cap + 1) * sizeof(*keys));
    uint32_t *vals = malloc((cap + 1) * sizeof(*vals));
    if (keys == NULL || vals == NULL) {
        free(keys);
        free(vals);
        return QV_ERESOURCE;
    }
    for (size_t i = 0; i < cap; i++)
        keys[i] = EMPTY;
    keys[cap] = 0; /* "EMPTY id present" flag */
    vals[cap] = 0;
    size_t mask = cap - 1;
    if (m->cap != 0) {
        for (size_t j = 0; j < m->cap; j++) {
            if (m->keys[j] == EMPTY)
                continue;
            size_t i = mix(m->keys[j]) & mask;
            while (keys[i] != EMPTY)
                i = (i + 1) & mask;
            keys[i] = m->keys[j];
            vals[i] = m->vals[j];
        }
        keys[cap] = m->keys[m->cap];
        vals[cap] = m->vals[m->cap];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return 0;
}

int qv__idmap_reserve(qv__idmap *m, size_t more)
{
    size_t need = m->count + more;
    size_t cap = m->cap ? m->cap : 16;
    while (need * 10 > cap * 7) /* load factor <= 0.7 */
        cap *= 2;
    return cap == m->cap ? 0 : rehash(m, cap);
}

int qv__idmap_put(qv__idmap *m, uint64_t id, uint32_t slot)
{
    if (qv__idmap_reserve(m, 1) != 0)
        return QV_ERESOURCE;
    if (id == EMPTY) {
        if (m->keys[m->cap] == 0)
            m->count++;
        m->keys[m->cap] = 1;
        m->vals[m->cap] = slot;
        return 0;
    }
    size_t mask = m->cap - 1;
    size_t i = mix(id) & mask;
    while (m->keys[i] != EMPTY && m->keys[i] != id)
        i = (i + 1) & mask;
    if (m->keys[i] == EMPTY)
        m->count++;
    m->keys[i] = id;
    m->vals[i] = slot;
    return 0;
}

bool qv__idmap_del(qv__idmap *m, uint64_t id)
{
    if (m->cap == 0)
        return false;
    if (id == EMPTY) {
        if (m->keys[m->cap] == 0)
            return false;
        m->keys[m->cap] = 0;
        m->count--;
        return true;
    }
    size_t mask = m->cap - 1;
    size_t i = mix(id) & mask;
    while (m->keys[i] != id) {
        if (m->keys[i] == EMPTY)
            return false;
        i = (i + 1) & mask;
    }
    /* Backward-shift: move later entries of the same probe run into the hole. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->keys[j] != EMPTY; j = (j + 1) & mask) {
        size_t home = mix(m->keys[j]) & mask;
        /* Entry j may move to the hole if its home is not in (hole, j] cyclically. */
        bool in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            m->keys[hole] = m->keys[j];
            m->vals[hole] = m->vals[j];
            hole = j;
        }
    }
    m->keys[hole] = EMPTY;
    m->count--;
    return true;
}
