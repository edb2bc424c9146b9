/* The thread pool: every task runs once, shutdown drains, limits hold. */
#include "common/common.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>

static atomic_int counter;

static void bump(void *arg)
{
    atomic_fetch_add(&counter, (int)(intptr_t)arg);
}

Test(pool, every_submitted_task_runs_exactly_once_before_destroy_returns)
{
    atomic_store(&counter, 0);
    qv_pool *pool;
    cr_assert_eq(qv_pool_create("t", 4, 0, &pool), 0);
    cr_assert_eq(qv_pool_threads(pool), 4u);
    for (int i = 0; i < 10000; i++)
        cr_assert_eq(qv_pool_submit(pool, bump, (void *)(intptr_t)1), 0);
    qv_pool_destroy(pool);
    cr_assert_eq(atomic_load(&counter), 10000);
}

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
} gate;

static void wait_gate(void *arg)
{
    gate *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    atomic_fetch_add(&counter, 1);
}

Test(pool, full_queue_refuses_tasks_with_resource_exhausted)
{
    atomic_store(&counter, 0);
    gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
    qv_pool *pool;
    cr_assert_eq(qv_pool_create("t", 1, 2, &pool), 0);
    cr_assert_eq(qv_pool_submit(pool, wait_gate, &g), 0); /* taken by the worker */
    /* Wait until the worker has dequeued it, so the queue is empty. */
    for (int i = 0; i < 1000 && qv_pool_queued(pool) > 0; i++)
        qv_sleep_ms(1);
    cr_assert_eq(qv_pool_submit(pool, wait_gate, &g), 0);
    cr_assert_eq(qv_pool_submit(pool, wait_gate, &g), 0);
    cr_assert_eq(qv_pool_submit(pool, wait_gate, &g), QV_ERESOURCE);
    cr_assert_eq(qv_pool_queued(pool), 2u);
    pthread_mutex_lock(&g.mu);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    qv_pool_destroy(pool);
    cr_assert_eq(atomic_load(&counter), 3);
}

static qv_pool *shared_pool;

static void resubmit(void *arg)
{
    intptr_t left = (intptr_t)arg;
    atomic_fetch_add(&counter, 1);
    if (left > 0)
        cr_assert_eq(qv_pool_submit(shared_pool, resubmit, (void *)(left - 1)), 0);
}

Test(pool, tasks_may_submit_tasks)
{
    atomic_store(&counter, 0);
    cr_assert_eq(qv_pool_create("t", 2, 0, &shared_pool), 0);
    cr_assert_eq(qv_pool_submit(shared_pool, resubmit, (void *)(intptr_t)99), 0);
    for (int i = 0; i < 5000 && atomic_load(&counter) < 100; i++)
        qv_sleep_ms(1);
    qv_pool_destroy(shared_pool);
    cr_assert_eq(atomic_load(&counter), 100);
}

Test(pool, bad_arguments_are_rejected)
{
    qv_pool *pool = NULL;
    cr_assert_eq(qv_pool_create("t", 0, 0, &pool), QV_EINVAL);
    cr_assert_null(pool);
    cr_assert_eq(qv_pool_create("t", 1, 0, NULL), QV_EINVAL);
    cr_assert_eq(qv_pool_create("t", 1, 0, &pool), 0);
    cr_assert_eq(qv_pool_submit(pool, NULL, NULL), QV_EINVAL);
    qv_pool_destroy(pool);
    qv_pool_destroy(NULL);
}
