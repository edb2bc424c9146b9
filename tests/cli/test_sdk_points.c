/*
 * Tests for the collection and point calls of sdk/c (libquiver).
 *
 * Suite sdk_points: against a live `quiver-node --dev` (one per test, tests/cli/node_fixture.h),
 * written against the contract of proto/quiver/v1/collections.proto and points.proto. Point
 * tests use a FLAT L2 collection of dimension 2 with point i at (i, 0), so that exact distances
 * (squared L2: (i - q)^2) and orders can be asserted.
 * Suite sdk_points_offline: what the SDK refuses before sending anything. The client points at a
 * port nobody listens on, so QV_EINVAL (rather than QV_EUNAVAIL) proves nothing was sent.
 *
 * Criterion ignores LeakSanitizer's report at exit, so each test ends with an explicit leak check
 * (expect_no_leaks).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "sdk/c/json_internal.h"
#include "tests/cli/node_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ----------------------------------------------------------------------------------
 */

static qv_client *live_client(void)
{
    return node_fixture_connect(node_fixture_target());
}

/* Waits until the collection has left CREATING (points calls answer UNAVAILABLE until then). */
static void wait_usable(qv_client *c, const char *name)
{
    qv_status err = qv_status_ok();
    for (int i = 0; i < 200; i++) {
        qv_collection_info info;
        int rc = qv_client_collection_describe(c, name, &info, &err);
        cr_assert_eq(rc, 0, "describe %s: %d %s", name, rc, err.msg);
        bool creating = strcmp(info.status, "creating") == 0;
        qv_collection_info_free(&info);
        if (!creating)
            return;
        usleep(50 * 1000);
    }
    cr_assert_fail("collection %s still creating after 10 s", name);
}

static void create_collection(qv_client *c, const char *name, uint32_t dim, const char *metric,
                              const char *index)
{
    qv_collection_spec spec = {.name = name, .dimension = dim, .metric = metric, .index = index};
    qv_status err = qv_status_ok();
    bool created = false;
    int rc = qv_client_collection_create(c, &spec, NULL, &created, &err);
    cr_assert_eq(rc, 0, "create %s: %d %s", name, rc, err.msg);
    cr_assert(created);
    wait_usable(c, name);
}

/* The payload of point i on the line. price is a double even when whole ("3.0"). */
static void line_payload(int i, char *buf, size_t len)
{
    snprintf(buf, len, "{\"color\":\"%s\",\"label\":%d,\"price\":%.1f}", i % 2 ? "blue" : "red",
             i % 3, i * 1.5);
}

/* Creates `name` (FLAT, L2, dim 2) holding points 0..n-1, point i at (i, 0) with line_payload. */
static void seed_line(qv_client *c, const char *name, int n)
{
    create_collection(c, name, 2, "l2", "flat");
    float *vecs = calloc((size_t)n * 2, sizeof(float));
    char(*payloads)[96] = calloc((size_t)n, sizeof(*payloads));
    qv_point *pts = calloc((size_t)n, sizeof(*pts));
    for (int i = 0; i < n; i++) {
        vecs[2 * i] = (float)i;
        line_payload(i, payloads[i], sizeof(payloads[i]));
        pts[i] = (qv_point){.id = {.num = (uint64_t)i},
                            .vector = &vecs[2 * i],
                            .dim = 2,
                            .payload_json = payloads[i]};
    }
    qv_status err = qv_status_ok();
    qv_write_result res;
    int rc = qv_client_upsert(c, name, pts, (size_t)n, true, &res, &err);
    cr_assert_eq(rc, 0, "upsert into %s: %d %s", name, rc, err.msg);
    cr_assert(res.applied, "wait = true must report the write applied");
    cr_assert_eq(res.points, (uint64_t)n);
    cr_assert_gt(res.log_index, 0);
    free(pts);
    free(payloads);
    free(vecs);
}

/* The numeric ids of a result, in order, as "a,b,c" (for one readable assertion). */
static void ids_text(const qv_search_result *r, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < r->n && used < len; i++) {
        char id[QV_POINT_ID_TEXT_MAX];
        used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? "," : "",
                                 qv_point_id_format(&r->points[i].id, id, sizeof(id)));
    }
}

static int entry_cmp(const void *a, const void *b)
{
    const Quiver__V1__Payload__FieldsEntry *const *x = a, *const *y = b;
    return strcmp((*x)->key, (*y)->key);
}

/* Payload JSON with its keys sorted: protobuf maps keep no order, so a payload read back is
 * compared as a set of keys. */
static char *sorted_payload(const char *json)
{
    Quiver__V1__Payload *p = NULL;
    qv_status err = qv_status_ok();
    cr_assert_eq(qv__sdk_json_parse_payload(json, strlen(json), &p, &err), 0, "%s: %s", json,
                 err.msg);
    qsort(p->fields, p->n_fields, sizeof(*p->fields), entry_cmp);
    char *out = NULL;
    cr_assert_eq(qv__sdk_json_format_payload(p, &out, NULL, &err), 0, "%s", err.msg);
    quiver__v1__payload__free_unpacked(p, NULL);
    return out;
}

static void expect_payload(const char *got, const char *want)
{
    cr_assert_not_null(got, "no payload, want %s", want);
    char *g = sorted_payload(got), *w = sorted_payload(want);
    cr_expect_str_eq(g, w);
    free(g);
    free(w);
}

static void expect_ids(const qv_search_result *r, const char *want)
{
    char got[512];
    ids_text(r, got, sizeof(got));
    cr_expect_str_eq(got, want);
}

/* ---- live: collections ------------------------------------------------------------------------
 */

TestSuite(sdk_points, .init = node_fixture_start, .fini = node_fixture_stop, .timeout = 120);

Test(sdk_points, collections_are_created_described_listed_and_dropped)
{
    qv_client *c = live_client();
    qv_status err = qv_status_ok();
    qv_collection_spec spec = {.name = "docs", .dimension = 4, .metric = "l2"};
    qv_collection_info info;
    bool created = false;
    int rc = qv_client_collection_create(c, &spec, &info, &created, &err);
    cr_assert_eq(rc, 0, "create: %d %s", rc, err.msg);
    cr_assert(created);
    cr_assert_str_eq(info.name, "docs");
    cr_assert_eq(info.dimension, 4);
    cr_assert_str_eq(info.metric, "l2");
    cr_assert_str_eq(info.index, "hnsw", "the default index is HNSW");
    cr_assert_str_eq(info.partitioning, "hash");
    cr_assert_eq(info.shards, 1, "0 shards means 1");
    cr_assert_geq(info.replication_factor, 1);
    cr_assert_gt(info.hnsw_m, 0, "defaults are resolved in the answer");
    cr_assert_gt(info.created_at_unix_ms, 0);
    cr_assert_neq(info.uid, 0);
    uint64_t uid = info.uid;
    qv_collection_info_free(&info);
    cr_assert_null(info.name);
    qv_collection_info_free(&info); /* twice is fine */
    wait_usable(c, "docs");

    /* The same again: if_not_exists matches, otherwise ALREADY_EXISTS. */
    spec.if_not_exists = true;
    rc = qv_client_collection_create(c, &spec, NULL, &created, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_not(created);
    spec.if_not_exists = false;
    rc = qv_client_collection_create(c, &spec, NULL, &created, &err);
    cr_assert_eq(rc, QV_EEXIST, "rc %d: %s", rc, err.msg);

    /* Another metric and index type, spelled as a user might type them. */
    qv_collection_spec spec2 = {
        .name = "alpha", .dimension = 3, .metric = "COSINE", .index = "Flat"};
    rc = qv_client_collection_create(c, &spec2, NULL, NULL, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);

    rc = qv_client_collection_describe(c, "docs", &info, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_str_eq(info.name, "docs");
    cr_assert_eq(info.uid, uid);
    cr_assert_eq(info.points_count, 0);
    qv_collection_info_free(&info);
    rc = qv_client_collection_describe(c, "alpha", &info, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_str_eq(info.metric, "cosine");
    cr_assert_str_eq(info.index, "flat");
    cr_assert_eq(info.dimension, 3);
    qv_collection_info_free(&info);

    /* Sorted names, with and without descriptions. */
    char **names = NULL;
    qv_collection_info *infos = NULL;
    size_t n = 0;
    rc = qv_client_collection_list(c, &names, NULL, &n, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(names[0], "alpha");
    cr_assert_str_eq(names[1], "docs");
    qv_collection_list_free(names, NULL, n);
    rc = qv_client_collection_list(c, &names, &infos, &n, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(n, 2);
    cr_assert_not_null(infos);
    cr_assert_str_eq(infos[0].name, "alpha");
    cr_assert_str_eq(infos[1].name, "docs");
    cr_assert_eq(infos[1].dimension, 4);
    qv_collection_list_free(names, infos, n);

    /* Drop: gone at once; a second drop is NOT_FOUND unless if_exists. */
    bool dropped = false;
    rc = qv_client_collection_drop(c, "docs", false, &dropped, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert(dropped);
    rc = qv_client_collection_describe(c, "docs", &info, &err);
    cr_assert_eq(rc, QV_ENOTFOUND, "rc %d: %s", rc, err.msg);
    cr_assert_null(info.name, "out-parameters stay zeroed on failure");
    rc = qv_client_collection_drop(c, "docs", true, &dropped, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_not(dropped);
    rc = qv_client_collection_drop(c, "docs", false, &dropped, &err);
    cr_assert_eq(rc, QV_ENOTFOUND, "rc %d: %s", rc, err.msg);
    rc = qv_client_collection_list(c, &names, NULL, &n, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(names[0], "alpha");
    qv_collection_list_free(names, NULL, n);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_points, a_bad_collection_spec_is_the_servers_invalid_argument)
{
    qv_client *c = live_client();
    qv_status err = qv_status_ok();
    /* Syntax of the name and ranges are the server's to judge. */
    qv_collection_spec bad_name = {.name = "no spaces", .dimension = 4, .metric = "l2"};
    int rc = qv_client_collection_create(c, &bad_name, NULL, NULL, &err);
    cr_assert_eq(rc, QV_EINVAL, "rc %d: %s", rc, err.msg);
    qv_collection_spec too_wide = {.name = "wide", .dimension = 65537, .metric = "l2"};
    rc = qv_client_collection_create(c, &too_wide, NULL, NULL, &err);
    cr_assert_eq(rc, QV_EINVAL, "rc %d: %s", rc, err.msg);
    qv_collection_spec wrong_params = {
        .name = "mixed", .dimension = 4, .metric = "l2", .index = "flat", .ivf_nlist = 8};
    rc = qv_client_collection_create(c, &wrong_params, NULL, NULL, &err);
    cr_assert_eq(rc, QV_EINVAL, "IVF parameters with a FLAT index: rc %d: %s", rc, err.msg);
    rc = qv_client_collection_describe(c, "nope", &(qv_collection_info){0}, &err);
    cr_assert_eq(rc, QV_ENOTFOUND, "rc %d: %s", rc, err.msg);
    qv_client_close(c);
    expect_no_leaks();
}

/* ---- live: points -----------------------------------------------------------------------------
 */

Test(sdk_points, upserted_points_are_read_back_by_id_with_payload_and_vector)
{
    qv_client *c = live_client();
    qv_status err = qv_status_ok();
    create_collection(c, "items", 3, "l2", NULL);
    qv_point_id uuid;
    cr_assert_eq(qv_point_id_parse("123E4567-E89B-12D3-A456-426614174000", &uuid, &err), 0);
    float v0[3] = {1, 2, 3}, v1[3] = {-1.5f, 0.25f, 8}, v2[3] = {0, 0, 1};
    qv_point pts[] = {
        {.id = {.num = 7},
         .vector = v0,
         .dim = 3,
         .payload_json = "{\"a\": 1, \"b\": [\"x\", 2.5, null], \"c\": true}"},
        {.id = uuid, .vector = v1, .dim = 3, .payload_json = "{\"name\":\"caf\\u00e9\"}"},
        {.id = {.num = 0}, .vector = v2, .dim = 3}, /* no payload */
    };
    qv_write_result res;
    int rc = qv_client_upsert(c, "items", pts, 3, true, &res, &err);
    cr_assert_eq(rc, 0, "upsert: %d %s", rc, err.msg);
    cr_assert(res.applied);
    cr_assert_eq(res.points, 3);

    qv_point_id want[] = {uuid, {.num = 999}, {.num = 7}, {.num = 0}};
    qv_search_result r;
    rc = qv_client_get(c, "items", want, 4, true, true, &r, &err);
    cr_assert_eq(rc, 0, "get: %d %s", rc, err.msg);
    expect_ids(&r, "123e4567-e89b-12d3-a456-426614174000,7,0"); /* request order, 999 left out */
    cr_assert_str_eq(r.points[0].payload_json, "{\"name\":\"caf\xc3\xa9\"}");
    expect_payload(r.points[1].payload_json, "{\"a\":1,\"b\":[\"x\",2.5,null],\"c\":true}");
    cr_assert_str_eq(r.points[2].payload_json, "{}", "asked for: {} when the point has none");
    cr_assert_eq(r.points[1].dim, 3);
    cr_assert_eq(memcmp(r.points[1].vector, v0, sizeof(v0)), 0);
    cr_assert_eq(memcmp(r.points[0].vector, v1, sizeof(v1)), 0);
    cr_assert_gt(r.points[1].version, 0);
    cr_assert_eq(r.points[1].distance, 0.0f);
    qv_search_result_free(&r);
    cr_assert_null(r.points);

    /* Without payload and vectors: neither comes back. */
    rc = qv_client_get(c, "items", want, 4, false, false, &r, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(r.n, 3);
    cr_assert_null(r.points[0].payload_json);
    cr_assert_null(r.points[0].vector);
    qv_search_result_free(&r);

    /* Writing an id again replaces vector and whole payload. */
    pts[0].payload_json = "{\"z\": -4}";
    rc = qv_client_upsert(c, "items", pts, 1, true, NULL, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    rc = qv_client_get(c, "items", &pts[0].id, 1, true, false, &r, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(r.n, 1);
    cr_assert_str_eq(r.points[0].payload_json, "{\"z\":-4}");
    qv_search_result_free(&r);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_points, search_orders_by_distance_and_applies_text_filters)
{
    qv_client *c = live_client();
    qv_status err = qv_status_ok();
    seed_line(c, "line", 20);
    float q[2] = {0, 0};
    qv_search_result r;

    int rc = qv_client_search(c, "line", q, 2, NULL, &r, &err); /* opts NULL: k = 10 */
    cr_assert_eq(rc, 0, "search: %d %s", rc, err.msg);
    expect_ids(&r, "0,1,2,3,4,5,6,7,8,9");
    for (size_t i = 0; i < r.n; i++)
        cr_expect_float_eq(r.points[i].distance, (float)(i * i), 1e-4, "squared L2 of point %zu",
                           i);
    cr_assert_null(r.points[0].payload_json, "no payload unless asked for");
    cr_assert_not(r.partial);
    qv_search_result_free(&r);

    qv_search_opts o = {.k = 5, .filter_text = "label = 1", .with_payload = true};
    rc = qv_client_search(c, "line", q, 2, &o, &r, &err);
    cr_assert_eq(rc, 0, "search with filter: %d %s", rc, err.msg);
    expect_ids(&r, "1,4,7,10,13");
    char want[96];
    line_payload(4, want, sizeof(want));
    expect_payload(r.points[1].payload_json, want);
    qv_search_result_free(&r);

    o = (qv_search_opts){.k = 10,
                         .filter_text = "label = 1 and price < 10 or color = 'red' and "
                                        "label = 2"};
    rc = qv_client_search(c, "line", q, 2, &o, &r, &err);
    cr_assert_eq(rc, 0, "%d %s", rc, err.msg);
    /* label 1 with i * 1.5 < 10: 1, 4; or red (even) with label 2: 2, 8, 14 */
    expect_ids(&r, "1,2,4,8,14");
    qv_search_result_free(&r);

    /* A range bound, an offset, vectors. */
    o = (qv_search_opts){.k = 10, .has_max_distance = true, .max_distance = 4.5f};
    rc = qv_client_search(c, "line", q, 2, &o, &r, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    expect_ids(&r, "0,1,2");
    qv_search_result_free(&r);
    o = (qv_search_opts){.k = 2, .offset = 2, .with_vectors = true, .exact = true};
    float q9[2] = {9.2f, 0};
    rc = qv_client_search(c, "line", q9, 2, &o, &r, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    expect_ids(&r, "8,11"); /* 9, 10 skipped; then 8 (1.44) before 11 (3.24) */
    cr_assert_eq(r.points[0].dim, 2);
    cr_assert_eq(r.points[0].vector[0], 8.0f);
    qv_search_result_free(&r);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_points, search_batch_answers_each_query_in_order)
{
    qv_client *c = live_client();
    qv_status err = qv_status_ok();
    seed_line(c, "line", 20);
    float qs[4 * 2] = {0, 0, 10.1f, 0, 19, 0, 5.4f, 0};
    qv_search_result r[4];
    qv_search_opts o = {.k = 2, .filter_text = "color = 'blue'"};
    int rc = qv_client_search_batch(c, "line", qs, 4, 2, &o, r, &err);
    cr_assert_eq(rc, 0, "batch: %d %s", rc, err.msg);
    expect_ids(&r[0], "1,3");
    expect_ids(&r[1], "11,9");
    expect_ids(&r[2], "19,17");
    expect_ids(&r[3], "5,7");
    for (int i = 0; i < 4; i++)
        qv_search_result_free(&r[i]);

    o = (qv_search_opts){.k = 1};
    rc = qv_client_search_batch(c, "line", qs, 1, 2, &o, r, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    expect_ids(&r[0], "0");
    qv_search_result_free(&r[0]);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_points, recommend_ranks_by_the_examples_and_never_returns_them)
{
    qv_client *c = live_client();
    qv_status err = qv_status_ok();
    seed_line(c, "line", 20);
    qv_search_result r;
    qv_point_id pos[] = {{.num = 5}};
    qv_search_opts o = {.k = 2};
    int rc = qv_client_recommend(c, "line", pos, 1, NULL, 0, &o, &r, &err);
    cr_assert_eq(rc, 0, "recommend: %d %s", rc, err.msg);
    cr_assert_eq(r.n, 2);
    /* Query (5, 0) without the example itself: 4 and 6, both at distance 1. */
    for (size_t i = 0; i < r.n; i++) {
        cr_assert(r.points[i].id.num == 4 || r.points[i].id.num == 6, "got %llu",
                  (unsigned long long)r.points[i].id.num);
        cr_expect_float_eq(r.points[i].distance, 1.0f, 1e-4);
    }
    qv_search_result_free(&r);

    /* Average-vector strategy: p + (p - n) = 5 + (5 - 0) = (10, 0). */
    qv_point_id neg[] = {{.num = 0}};
    o = (qv_search_opts){.k = 3, .filter_text = "label != 1"};
    rc = qv_client_recommend(c, "line", pos, 1, neg, 1, &o, &r, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    expect_ids(&r, "9,11,8"); /* 10 has label 1; then 9 and 11 (distance 1), 8 (4) */
    qv_search_result_free(&r);

    qv_point_id missing[] = {{.num = 12345}};
    rc = qv_client_recommend(c, "line", missing, 1, NULL, 0, NULL, &r, &err);
    cr_assert_eq(rc, QV_ENOTFOUND, "an example that does not exist: rc %d: %s", rc, err.msg);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_points, scroll_visits_every_point_once_across_pages)
{
    qv_client *c = live_client();
    qv_status err = qv_status_ok();
    seed_line(c, "line", 25);
    bool seen[25] = {false};
    size_t total = 0, pages = 0;
    uint8_t *cursor = NULL;
    size_t cursor_len = 0;
    for (;;) {
        qv_search_result r;
        int rc =
            qv_client_scroll(c, "line", NULL, 7, cursor, cursor_len, pages == 0, false, &r, &err);
        cr_assert_eq(rc, 0, "scroll page %zu: %d %s", pages, rc, err.msg);
        free(cursor);
        cursor = NULL;
        pages++;
        cr_assert_leq(r.n, 7);
        for (size_t i = 0; i < r.n; i++) {
            uint64_t id = r.points[i].id.num;
            cr_assert_lt(id, 25);
            cr_assert_not(seen[id], "point %llu seen twice", (unsigned long long)id);
            seen[id] = true;
            cr_assert((r.points[i].payload_json != NULL) == (pages == 1));
            if (i > 0) /* one shard: ascending ids within the page */
                cr_assert_gt(id, r.points[i - 1].id.num);
        }
        total += r.n;
        if (r.next_cursor == NULL) {
            cr_assert_eq(r.next_cursor_len, 0);
            qv_search_result_free(&r);
            break;
        }
        cursor = malloc(r.next_cursor_len);
        memcpy(cursor, r.next_cursor, r.next_cursor_len);
        cursor_len = r.next_cursor_len;
        qv_search_result_free(&r);
        cr_assert_lt(pages, 10, "scroll does not end");
    }
    cr_assert_eq(total, 25);
    cr_assert_geq(pages, 4, "25 points in pages of 7");

    /* With a filter: label = 0 is 0, 3, ..., 24 (9 points), one page of 100. */
    qv_search_result r;
    int rc = qv_client_scroll(c, "line", "label = 0", 0, NULL, 0, false, true, &r, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    expect_ids(&r, "0,3,6,9,12,15,18,21,24");
    cr_assert_null(r.next_cursor);
    cr_assert_eq(r.points[3].dim, 2);
    cr_assert_eq(r.points[3].vector[0], 9.0f);
    qv_search_result_free(&r);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_points, count_with_and_without_a_filter)
{
    qv_client *c = live_client();
    qv_status err = qv_status_ok();
    seed_line(c, "line", 20);
    uint64_t n = 0;
    int rc = qv_client_count(c, "line", NULL, &n, &err);
    cr_assert_eq(rc, 0, "count: %d %s", rc, err.msg);
    cr_assert_eq(n, 20);
    rc = qv_client_count(c, "line", "", &n, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(n, 20);
    rc = qv_client_count(c, "line", "label = 1", &n, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(n, 7); /* 1, 4, 7, 10, 13, 16, 19 */
    rc = qv_client_count(c, "line", "price >= 15 and color = 'red'", &n, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(n, 5); /* i >= 10 and even: 10, 12, 14, 16, 18 */
    rc = qv_client_count(c, "line", "id in [1, 2, 999]", &n, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(n, 2);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_points, delete_by_ids_and_by_filter)
{
    qv_client *c = live_client();
    qv_status err = qv_status_ok();
    seed_line(c, "line", 20);
    qv_point_id ids[] = {{.num = 0}, {.num = 1}, {.num = 999}};
    qv_write_result res;
    int rc = qv_client_delete_ids(c, "line", ids, 3, true, &res, &err);
    cr_assert_eq(rc, 0, "delete ids: %d %s", rc, err.msg);
    cr_assert(res.applied);
    uint64_t n = 0;
    cr_assert_eq(qv_client_count(c, "line", NULL, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 18, "ids that do not exist are not an error");

    /* label = 2 among 2..19: 2, 5, 8, 11, 14, 17 */
    rc = qv_client_delete_filter(c, "line", "label = 2", true, &res, &err);
    cr_assert_eq(rc, 0, "delete by filter: %d %s", rc, err.msg);
    cr_assert(res.applied);
    cr_assert_eq(res.points, 6, "with wait the deleted count is known");
    cr_assert_eq(qv_client_count(c, "line", NULL, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 12);
    cr_assert_eq(qv_client_count(c, "line", "label = 2", &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 0);

    qv_search_result r;
    qv_point_id gone[] = {{.num = 0}, {.num = 5}, {.num = 3}};
    rc = qv_client_get(c, "line", gone, 3, false, false, &r, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    expect_ids(&r, "3");
    qv_search_result_free(&r);

    /* Deleted points no longer come out of a search. */
    float q[2] = {5, 0};
    qv_search_opts o = {.k = 3};
    rc = qv_client_search(c, "line", q, 2, &o, &r, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    expect_ids(&r, "4,6,3");
    qv_search_result_free(&r);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_points, server_errors_keep_their_code_and_message)
{
    qv_client *c = live_client();
    qv_status err = qv_status_ok();
    seed_line(c, "line", 5);
    float q2[2] = {0, 0}, q3[3] = {0, 0, 0};
    qv_search_result r;
    uint64_t n = 0;

    /* Unknown collection: NOT_FOUND from every call. */
    int rc = qv_client_search(c, "nope", q2, 2, NULL, &r, &err);
    cr_assert_eq(rc, QV_ENOTFOUND, "search: rc %d: %s", rc, err.msg);
    cr_assert_eq(err.code, QV_ENOTFOUND);
    cr_assert_null(r.points);
    qv_point p = {.id = {.num = 1}, .vector = q2, .dim = 2};
    rc = qv_client_upsert(c, "nope", &p, 1, true, NULL, &err);
    cr_assert_eq(rc, QV_ENOTFOUND, "upsert: rc %d: %s", rc, err.msg);
    rc = qv_client_count(c, "nope", NULL, &n, &err);
    cr_assert_eq(rc, QV_ENOTFOUND, "count: rc %d: %s", rc, err.msg);
    rc = qv_client_get(c, "nope", &p.id, 1, false, false, &r, &err);
    cr_assert_eq(rc, QV_ENOTFOUND, "get: rc %d: %s", rc, err.msg);
    rc = qv_client_scroll(c, "nope", NULL, 0, NULL, 0, false, false, &r, &err);
    cr_assert_eq(rc, QV_ENOTFOUND, "scroll: rc %d: %s", rc, err.msg);
    rc = qv_client_delete_ids(c, "nope", &p.id, 1, true, NULL, &err);
    cr_assert_eq(rc, QV_ENOTFOUND, "delete: rc %d: %s", rc, err.msg);

    /* Wrong dimension: INVALID_ARGUMENT, and nothing of the batch is written. */
    rc = qv_client_search(c, "line", q3, 3, NULL, &r, &err);
    cr_assert_eq(rc, QV_EINVAL, "search dim 3 in a dim-2 collection: rc %d: %s", rc, err.msg);
    qv_point mixed[] = {{.id = {.num = 100}, .vector = q2, .dim = 2},
                        {.id = {.num = 101}, .vector = q3, .dim = 3}};
    rc = qv_client_upsert(c, "line", mixed, 2, true, NULL, &err);
    cr_assert_eq(rc, QV_EINVAL, "upsert dim 3: rc %d: %s", rc, err.msg);
    cr_assert_eq(qv_client_count(c, "line", NULL, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 5, "a rejected batch writes nothing");

    /* A malformed text filter: INVALID_ARGUMENT, the message naming the byte offset. '@' sits at
     * byte 6 whatever the parser's approach. */
    qv_search_opts o = {.filter_text = "label @ 3"};
    rc = qv_client_search(c, "line", q2, 2, &o, &r, &err);
    cr_assert_eq(rc, QV_EINVAL, "bad filter: rc %d: %s", rc, err.msg);
    cr_assert(strstr(err.msg, "byte 6") != NULL || strstr(err.msg, "offset 6") != NULL,
              "the message should name byte 6: %s", err.msg);
    rc = qv_client_count(c, "line", "label = ", &n, &err);
    cr_assert_eq(rc, QV_EINVAL, "count with a bad filter: rc %d: %s", rc, err.msg);
    cr_assert_neq(err.msg[0], '\0');
    rc = qv_client_delete_filter(c, "line", "(label = 1", true, NULL, &err);
    cr_assert_eq(rc, QV_EINVAL, "delete with a bad filter: rc %d: %s", rc, err.msg);
    cr_assert_eq(qv_client_count(c, "line", NULL, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 5);

    /* k over the limit is the server's to refuse. */
    o = (qv_search_opts){.k = 10001};
    rc = qv_client_search(c, "line", q2, 2, &o, &r, &err);
    cr_assert_eq(rc, QV_EINVAL, "k 10001: rc %d: %s", rc, err.msg);
    qv_client_close(c);
    expect_no_leaks();
}

/* ---- offline: refused before sending ----------------------------------------------------------
 */

/* A loopback port nobody listens on (bound, then released). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static qv_client *offline_client(void)
{
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", free_port());
    qv_client_opts opts = {.timeout_ms = 3000};
    qv_client *c = NULL;
    qv_status err = qv_status_ok();
    cr_assert_eq(qv_client_connect(target, &opts, &c, &err), 0, "%s", err.msg);
    return c;
}

#define EXPECT_EINVAL(call, needle)                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        cr_expect_eq(rc_, QV_EINVAL, "%s gave %d: %s", #call, rc_, err.msg);                       \
        cr_expect_eq(err.code, QV_EINVAL);                                                         \
        cr_expect_not_null(strstr(err.msg, (needle)), "%s: want '%s' in: %s", #call, (needle),     \
                           err.msg);                                                               \
    } while (0)

TestSuite(sdk_points_offline, .timeout = 60);

Test(sdk_points_offline, collection_calls_check_their_arguments)
{
    qv_client *c = offline_client();
    qv_status err = qv_status_ok();
    qv_collection_info info;
    bool flag = true;
    EXPECT_EINVAL(qv_client_collection_create(c, NULL, NULL, NULL, &err), "NULL argument");
    qv_collection_spec s = {.name = "", .dimension = 4, .metric = "l2"};
    EXPECT_EINVAL(qv_client_collection_create(c, &s, &info, &flag, &err), "empty collection name");
    cr_assert_not(flag, "*created is reset");
    cr_assert_null(info.name);
    s = (qv_collection_spec){.name = "x", .dimension = 0, .metric = "l2"};
    EXPECT_EINVAL(qv_client_collection_create(c, &s, NULL, NULL, &err), "dimension");
    s = (qv_collection_spec){.name = "x", .dimension = 4};
    EXPECT_EINVAL(qv_client_collection_create(c, &s, NULL, NULL, &err), "metric is required");
    s.metric = "euclid";
    EXPECT_EINVAL(qv_client_collection_create(c, &s, NULL, NULL, &err),
                  "unknown metric 'euclid' (expected one of: l2, cosine, dot)");
    s.metric = "dot";
    s.index = "hnsw8";
    EXPECT_EINVAL(qv_client_collection_create(c, &s, NULL, NULL, &err),
                  "unknown index type 'hnsw8' (expected one of: hnsw, hnsw-int8, flat, "
                  "ivf-flat, ivf-pq)");
    s.index = "ivf-pq";
    s.partitioning = "range";
    EXPECT_EINVAL(qv_client_collection_create(c, &s, NULL, NULL, &err),
                  "unknown partitioning 'range' (expected one of: hash, semantic)");
    /* Every spelling accepted passes the checks and is then sent (and cannot arrive). */
    static const char *const indexes[] = {"hnsw", "HNSW-INT8", "flat", "ivf-flat", "Ivf-Pq"};
    for (size_t i = 0; i < 5; i++) {
        s = (qv_collection_spec){.name = "x",
                                 .dimension = 4,
                                 .metric = "Cosine",
                                 .index = indexes[i],
                                 .partitioning = i % 2 ? "semantic" : "hash"};
        int rc = qv_client_collection_create(c, &s, NULL, NULL, &err);
        cr_expect_eq(rc, QV_EUNAVAIL, "%s: rc %d: %s", indexes[i], rc, err.msg);
    }
    EXPECT_EINVAL(qv_client_collection_describe(c, "", &info, &err), "empty collection name");
    EXPECT_EINVAL(qv_client_collection_describe(c, NULL, &info, &err), "empty collection name");
    EXPECT_EINVAL(qv_client_collection_describe(c, "x", NULL, &err), "NULL argument");
    EXPECT_EINVAL(qv_client_collection_drop(c, "", true, &flag, &err), "empty collection name");
    cr_assert_not(flag);
    EXPECT_EINVAL(qv_client_collection_list(c, NULL, NULL, NULL, &err), "NULL argument");
    qv_collection_list_free(NULL, NULL, 0);
    qv_collection_info_free(NULL);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_points_offline, point_calls_check_their_arguments)
{
    qv_client *c = offline_client();
    qv_status err = qv_status_ok();
    float v[2] = {1, 2};
    qv_point pts[3] = {
        {.id = {.num = 5}, .vector = v, .dim = 2, .payload_json = "{\"a\": 1}"},
        {.id = {.num = 6}, .vector = v, .dim = 2},
        {.id = {.num = 7}, .vector = v, .dim = 2, .payload_json = "{\"a\": tru}"},
    };
    qv_write_result res = {.points = 99};
    EXPECT_EINVAL(qv_client_upsert(c, "x", pts, 3, true, &res, &err),
                  "point 2 (id 7): bad payload JSON at byte 6: expected a value");
    cr_assert_eq(res.points, 0, "res is zeroed on failure");
    pts[2].payload_json = "[1]";
    EXPECT_EINVAL(qv_client_upsert(c, "x", pts, 3, true, NULL, &err),
                  "point 2 (id 7): bad payload JSON at byte 0: a payload must be a JSON object");
    pts[2].payload_json = "{\"n\": {\"deep\": 1}}";
    EXPECT_EINVAL(qv_client_upsert(c, "x", pts, 3, true, NULL, &err),
                  "at byte 6: nested objects are not payload values");
    pts[2].payload_json = NULL;
    pts[1].vector = NULL;
    EXPECT_EINVAL(qv_client_upsert(c, "x", pts, 3, true, NULL, &err), "point 1 (id 6): no vector");
    pts[1].vector = v;
    pts[1].dim = 0;
    EXPECT_EINVAL(qv_client_upsert(c, "x", pts, 3, true, NULL, &err), "point 1 (id 6): no vector");
    pts[1].dim = 2;
    pts[1].id = (qv_point_id){.is_uuid = true, .uuid = "not-a-uuid"};
    EXPECT_EINVAL(qv_client_upsert(c, "x", pts, 3, true, NULL, &err), "point 1: malformed UUID");
    pts[1].id = (qv_point_id){.num = 6};
    EXPECT_EINVAL(qv_client_upsert(c, "x", pts, 0, true, NULL, &err), "0 points (1..10000");
    EXPECT_EINVAL(qv_client_upsert(c, "x", pts, 10001, true, NULL, &err), "10001 points (1..10000");
    EXPECT_EINVAL(qv_client_upsert(c, "", pts, 3, true, NULL, &err), "empty collection name");
    EXPECT_EINVAL(qv_client_upsert(c, "x", NULL, 3, true, NULL, &err), "NULL argument");
    /* Valid points pass the checks: the call is sent and cannot arrive. */
    int rc = qv_client_upsert(c, "x", pts, 3, true, NULL, &err);
    cr_assert_eq(rc, QV_EUNAVAIL, "rc %d: %s", rc, err.msg);

    qv_point_id ids[2] = {{.num = 1},
                          {.is_uuid = true, .uuid = "123e4567-e89b-12d3-a456-42661417400"}};
    EXPECT_EINVAL(qv_client_delete_ids(c, "x", ids, 0, true, NULL, &err), "0 ids");
    EXPECT_EINVAL(qv_client_delete_ids(c, "x", ids, 2, true, NULL, &err), "id 1: malformed UUID");
    EXPECT_EINVAL(qv_client_delete_filter(c, "x", "", true, NULL, &err), "empty filter");
    EXPECT_EINVAL(qv_client_delete_filter(c, "x", NULL, true, NULL, &err), "empty filter");

    qv_search_result r = {.n = 77};
    EXPECT_EINVAL(qv_client_search(c, "x", v, 0, NULL, &r, &err), "dim 0");
    cr_assert_eq(r.n, 0, "out is zeroed on failure");
    EXPECT_EINVAL(qv_client_search(c, "x", NULL, 2, NULL, &r, &err), "NULL argument");
    EXPECT_EINVAL(qv_client_search(c, "", v, 2, NULL, &r, &err), "empty collection name");
    qv_search_result rs[2];
    EXPECT_EINVAL(qv_client_search_batch(c, "x", v, 0, 2, NULL, rs, &err), "no queries");
    EXPECT_EINVAL(qv_client_recommend(c, "x", ids, 0, NULL, 0, NULL, &r, &err),
                  "at least one positive example");
    EXPECT_EINVAL(qv_client_recommend(c, "x", ids, 2, NULL, 0, NULL, &r, &err),
                  "positive example 1: malformed UUID");
    EXPECT_EINVAL(qv_client_get(c, "x", ids, 0, true, true, &r, &err), "0 ids");
    EXPECT_EINVAL(qv_client_get(c, "x", ids, 10001, true, true, &r, &err), "10001 ids");
    EXPECT_EINVAL(qv_client_scroll(c, "x", NULL, 0, NULL, 5, false, false, &r, &err),
                  "NULL argument");
    uint64_t n = 5;
    EXPECT_EINVAL(qv_client_count(c, "", NULL, &n, &err), "empty collection name");
    cr_assert_eq(n, 0);
    qv_search_result_free(NULL);
    qv_search_result_free(&r);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_points_offline, point_ids_parse_and_format)
{
    qv_point_id id;
    qv_status err = qv_status_ok();
    char buf[QV_POINT_ID_TEXT_MAX];
    cr_assert_eq(qv_point_id_parse("0", &id, &err), 0);
    cr_assert_not(id.is_uuid);
    cr_assert_eq(id.num, 0);
    cr_assert_eq(qv_point_id_parse("18446744073709551615", &id, &err), 0);
    cr_assert_eq(id.num, UINT64_MAX);
    cr_assert_str_eq(qv_point_id_format(&id, buf, sizeof(buf)), "18446744073709551615");
    cr_assert_eq(qv_point_id_parse("123E4567-e89b-12D3-A456-426614174000", &id, &err), 0);
    cr_assert(id.is_uuid);
    cr_assert_str_eq(id.uuid, "123e4567-e89b-12d3-a456-426614174000");
    cr_assert_str_eq(qv_point_id_format(&id, buf, sizeof(buf)),
                     "123e4567-e89b-12d3-a456-426614174000");
    /* A short buffer gets a truncated, terminated text. */
    char small[5];
    cr_assert_str_eq(qv_point_id_format(&id, small, sizeof(small)), "123e");
    id = (qv_point_id){.num = 123456};
    cr_assert_str_eq(qv_point_id_format(&id, small, sizeof(small)), "1234");

    static const char *const bad[] = {
        "",
        "-1",
        "+1",
        " 1",
        "1 ",
        "12a",
        "18446744073709551616",
        "99999999999999999999999",
        "123e4567e89b12d3a456426614174000",
        "123e4567-e89b-12d3-a456-42661417400",
        "123e4567-e89b-12d3-a456-4266141740000",
        "123e4567-e89b-12d3-a456_426614174000",
        "g23e4567-e89b-12d3-a456-426614174000",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        id = (qv_point_id){.num = 42, .is_uuid = true};
        int rc = qv_point_id_parse(bad[i], &id, &err);
        cr_assert_eq(rc, QV_EINVAL, "'%s' gave %d", bad[i], rc);
        cr_assert_not(id.is_uuid, "'%s' left the id set", bad[i]);
        cr_assert_eq(id.num, 0);
    }
    cr_assert_eq(qv_point_id_parse(NULL, &id, NULL), QV_EINVAL);
    cr_assert_eq(qv_point_id_parse("1", NULL, NULL), QV_EINVAL);
    expect_no_leaks();
}
