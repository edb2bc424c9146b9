/* A fixed-size thread pool with one FIFO queue (a singly linked list of task nodes). */
#define _GNU_SOURCE
#include "common/common.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct task {
    struct task *next;
    qv_task_fn fn;
    void *arg;
} task;

struct qv_pool {
    pthread_mutex_t mu;
    pthread_cond_t has_work;
    task *head, *tail;
    task *free_list; /* recycled nodes, so a busy pool does not malloc per task */
    size_t queued;
    size_t max_queue;
    bool stopping;
    unsigned nthreads;
    pthread_t *threads;
    char name[16];
};

static void *worker_main(void *p)
{
    qv_pool *pool = p;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (pool->head == NULL && !pool->stopping)
            pthread_cond_wait(&pool->has_work, &pool->mu);
        task *t = pool->head;
        if (t == NULL)
            break; /* stopping and drained */
        pool->head = t->next;
        if (pool->head == NULL)
            pool->tail = NULL;
        pool->queued--;
        qv_task_fn fn = t->fn;
        void *arg = t->arg;
        t->next = pool->free_list;
        pool->free_list = t;
        pthread_mutex_unlock(&pool->mu);
        fn(arg);
        pthread_mutex_lock(&pool->mu);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

int qv_pool_create(const char *name, unsigned threads, size_t max_queue, qv_pool **out)
{
    if (out == NULL || threads == 0 || threads > 4096)
        return QV_EINVAL;
    *out = NULL;
    qv_pool *pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        return QV_ERESOURCE;
    pool->threads = calloc(threads, sizeof(pthread_t));
    if (pool->threads == NULL)
        goto fail_threads;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->has_work, NULL);
    pool->max_queue = max_queue;
    snprintf(pool->name, sizeof(pool->name), "%s", name ? name : "pool");

    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&pool->threads[i], NULL, worker_main, pool) != 0)
            goto fail_start;
        char tname[16];
        snprintf(tname, sizeof(tname), "%.10s-%u", pool->name, i);
        pthread_setname_np(pool->threads[i], tname);
        pool->nthreads++;
    }
    *out = pool;
    return 0;

fail_start:
    qv_pool_destroy(pool);
    return QV_ERESOURCE;
fail_threads:
    free(pool);
    return QV_ERESOURCE;
}

int qv_pool_submit(qv_pool *pool, qv_task_fn fn, void *arg)
{
    if (pool == NULL || fn == NULL)
        return QV_EINVAL;
    pthread_mutex_lock(&pool->mu);
    if (pool->stopping) {
        pthread_mutex_unlock(&pool->mu);
        return QV_EUNAVAIL;
    }
    if (pool->max_queue != 0 && pool->queued >= pool->max_queue) {
        pthread_mutex_unlock(&pool->mu);
        return QV_ERESOURCE;
    }
    task *t = pool->free_list;
    if (t != NULL) {
        pool->free_list = t->next;
    } else {
        t = malloc(sizeof(*t));
        if (t == NULL) {
            pthread_mutex_unlock(&pool->mu);
            return QV_ERESOURCE;
        }
    }
    t->fn = fn;
    t->arg = arg;
    t->next = NULL;
    if (pool->tail != NULL)
        pool->tail->next = t;
    else
        pool->head = t;
    pool->tail = t;
    pool->queued++;
    pthread_cond_signal(&pool->has_work);
    pthread_mutex_unlock(&pool->mu);
    return 0;
}

size_t qv_pool_queued(qv_pool *pool)
{
    pthread_mutex_lock(&pool->mu);
    size_t n = pool->queued;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

unsigned qv_pool_threads(const qv_pool *pool)
{
    return pool->nthreads;
}

void qv_pool_destroy(qv_pool *pool)
{
    if (pool == NULL)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->has_work);
    pthread_mutex_unlock(&pool->mu);
    for (unsigned i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    /* Workers drained the queue before leaving; only recycled nodes remain. */
    while (pool->free_list != NULL) {
        task *t = pool->free_list;
        pool->free_list = t->next;
        free(t);
    }
    pthread_cond_destroy(&pool->has_work);
    pthread_mutex_destroy(&pool->mu);
    free(pool->threads);
    free(pool);
}
