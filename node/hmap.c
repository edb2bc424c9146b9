/* Open-addressing hash map (linear probing, backward-shift deletion) from byte strings to
 * pointers. */
#include "node/hmap.h"

#include <stdlib.h>
#include <string.h>

static uint32_t hash_bytes(const void *key, size_t len)
{
    /* FNV-1a, then a final mix so that linear probing sees spread-out low bits. */
    const uint8_t *p = key;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    return h;
}

static size_t find(const qv_hmap *m, const void *key, size_t klen, uint32_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const qv_hmap_slot *s = &m->slots[i];
        if (s->key == NULL)
            return i;
        if (s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0)
            return i;
    }
}

void **qv__hmap_get(const qv_hmap *m, const void *key, size_t klen)
{
    if (m->cap == 0)
        return NULL;
    size_t i = find(m, key, klen, hash_bytes(key, klen));
    return m->slots[i].key != NULL ? &m->slots[i].val : NULL;
}

static int grow(qv_hmap *m)
{
    size_t ncap = m->cap == 0 ? 16 : m->cap * 2;
    qv_hmap_slot *ns = calloc(ncap, sizeof(*ns));
    if (ns == NULL)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        qv_hmap_slot *s = &m->slots[i];
        if (s->key == NULL)
            continue;
        size_t j = s->hash & (ncap - 1);
        while (ns[j].key != NULL)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

int qv__hmap_put(qv_hmap *m, const void *key, size_t klen, void *val, void **old)
{
    if (old != NULL)
        *old = NULL;
    if ((m->len + 1) * 4 > m->cap * 3 && grow(m) != 0)
        return -1;
    uint32_t h = hash_bytes(key, klen);
    size_t i = find(m, key, klen, h);
    qv_hmap_slot *s = &m->slots[i];
    if (s->key != NULL) {
        if (old != NULL)
            *old = s->val;
        s->val = val;
        return 0;
    }
    uint8_t *k = malloc(klen > 0 ? klen : 1);
    if (k == NULL)
        return -1;
    memcpy(k, key, klen);
    s->key = k;
    s->klen = (uint32_t)klen;
    s->hash = h;
    s->val = val;
    m->len++;
    return 0;
}

void *qv__hmap_del(qv_hmap *m, const void *key, size_t klen)
{
    if (m->cap == 0)
        return NULL;
    size_t mask = m->cap - 1;
    size_t i = find(m, key, klen, hash_bytes(key, klen));
    if (m->slots[i].key == NULL)
        return NULL;
    void *val = m->slots[i].val;
    free(m->slots[i].key);
    m->slots[i].key = NULL;
    m->len--;
    /* Backward-shift: move later members of the probe run into the hole when allowed. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j].key != NULL; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            m->slots[hole] = m->slots[j];
            m->slots[j].key = NULL;
            hole = j;
        }
    }
    return val;
}

void qv__hmap_each(const qv_hmap *m,
                   void (*fn)(const uint8_t *key, size_t klen, void *val, void *u), void *u)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key != NULL)
            fn(m->slots[i].key, m->slots[i].klen, m->slots[i].val, u);
}

void qv__hmap_free(qv_hmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof(*m));
}
