/*
 * quiverctl collections create | list | describe | drop (quiver.v1.Collections), see ctl.h.
 *
 * A collection's JSON document uses the field names of the proto's CollectionConfig and
 * CollectionInfo, flattened: index parameters as hnsw_m, ivf_nlist... (ctl_collection_json).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli/ctl.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define METRICS "l2|cosine|dot"
#define INDEXES "hnsw|hnsw-int8|flat|ivf-flat|ivf-pq"

static bool is_hnsw(const char *index)
{
    return strncmp(index, "hnsw", 4) == 0;
}

static bool is_ivf(const char *index)
{
    return strncmp(index, "ivf", 3) == 0;
}

static void collection_json(FILE *o, const qv_collection_info *c)
{
    bool first = true;
    fputc('{', o);
    ctl_json_kv_str(o, &first, "name", c->name);
    ctl_json_kv_u64(o, &first, "dimension", c->dimension);
    ctl_json_kv_str(o, &first, "metric", c->metric);
    ctl_json_kv_str(o, &first, "index", c->index);
    ctl_json_kv_u64(o, &first, "hnsw_m", c->hnsw_m);
    ctl_json_kv_u64(o, &first, "hnsw_ef_construction", c->hnsw_ef_construction);
    ctl_json_kv_u64(o, &first, "hnsw_ef_search", c->hnsw_ef_search);
    ctl_json_kv_u64(o, &first, "ivf_nlist", c->ivf_nlist);
    ctl_json_kv_u64(o, &first, "ivf_nprobe", c->ivf_nprobe);
    ctl_json_kv_u64(o, &first, "shard_count", c->shards);
    ctl_json_kv_u64(o, &first, "replication_factor", c->replication_factor);
    ctl_json_kv_str(o, &first, "partitioning", c->partitioning);
    ctl_json_kv_bool(o, &first, "on_disk_payload", c->on_disk_payload);
    ctl_json_kv_u64(o, &first, "created_at_unix_ms", c->created_at_unix_ms);
    ctl_json_kv_u64(o, &first, "uid", c->uid);
    ctl_json_kv_str(o, &first, "status", c->status);
    ctl_json_kv_str(o, &first, "status_message", c->status_message);
    ctl_json_kv_u64(o, &first, "points_count", c->points_count);
    ctl_json_kv_u64(o, &first, "indexed_points_count", c->indexed_points_count);
    ctl_json_kv_u64(o, &first, "memory_bytes", c->memory_bytes);
    ctl_json_kv_u64(o, &first, "disk_bytes", c->disk_bytes);
    fputc('}', o);
}

/* ---- create -----------------------------------------------------------------------------------
 */

static size_t create_opts(qv_opt *o, cmdopts *v)
{
    size_t n = 0;
    o[n++] = (qv_opt){.name = "dim",
                      .type = QV_OPT_UINT,
                      .target = &v->dim,
                      .help = "vector dimension (required)",
                      .min = 1,
                      .max = 65536};
    o[n++] = (qv_opt){.name = "metric",
                      .type = QV_OPT_ENUM,
                      .target = &v->metric,
                      .choices = METRICS,
                      .help = "distance metric (required)"};
    o[n++] = (qv_opt){.name = "index",
                      .type = QV_OPT_ENUM,
                      .target = &v->index,
                      .choices = INDEXES,
                      .help = "index type (default: hnsw)"};
    o[n++] = (qv_opt){.name = "m",
                      .type = QV_OPT_UINT,
                      .target = &v->m,
                      .help = "HNSW: links per node (default: the server's)",
                      .min = 1,
                      .max = UINT32_MAX};
    o[n++] = (qv_opt){.name = "ef-construction",
                      .type = QV_OPT_UINT,
                      .target = &v->ef_construction,
                      .help = "HNSW: candidate list size while building",
                      .min = 1,
                      .max = UINT32_MAX};
    o[n++] = (qv_opt){.name = "ef-search",
                      .type = QV_OPT_UINT,
                      .target = &v->ef_search,
                      .help = "HNSW: default candidate list size of a search",
                      .min = 1,
                      .max = UINT32_MAX};
    o[n++] = (qv_opt){.name = "nlist",
                      .type = QV_OPT_UINT,
                      .target = &v->nlist,
                      .help = "IVF: number of lists (k-means cells)",
                      .min = 1,
                      .max = UINT32_MAX};
    o[n++] = (qv_opt){.name = "nprobe",
                      .type = QV_OPT_UINT,
                      .target = &v->nprobe,
                      .help = "IVF: default number of lists a search visits",
                      .min = 1,
                      .max = UINT32_MAX};
    o[n++] = (qv_opt){.name = "shards",
                      .type = QV_OPT_UINT,
                      .target = &v->shards,
                      .help = "number of shards, fixed at creation (default 1)",
                      .min = 1,
                      .max = 1024};
    o[n++] = (qv_opt){.name = "replication",
                      .type = QV_OPT_UINT,
                      .target = &v->replication,
                      .help = "replicas per shard (default: the server's, usually 1)",
                      .min = 1,
                      .max = 7};
    o[n++] = (qv_opt){.name = "on-disk-payload",
                      .type = QV_OPT_BOOL,
                      .target = &v->on_disk_payload,
                      .def = "false",
                      .help = "keep payloads on disk only (less memory, slower filters)"};
    o[n++] = (qv_opt){.name = "if-not-exists",
                      .type = QV_OPT_BOOL,
                      .target = &v->if_not_exists,
                      .def = "false",
                      .help = "succeed when an identical collection already exists"};
    return n;
}

static int cmd_create(qv_client *c, const globals *g, const cmdopts *o, int npos, char **pos)
{
    const char *me = ctl_cmd_collections_create.name;
    if (o->dim == 0)
        return ctl_usage_error(me, "--dim is required");
    if (o->metric == NULL)
        return ctl_usage_error(me, "--metric is required (" METRICS ")");
    const char *index = o->index != NULL ? o->index : "hnsw";
    if (!is_hnsw(index) && (o->m || o->ef_construction || o->ef_search))
        return ctl_usage_error(me, "--m, --ef-construction and --ef-search are for HNSW indexes");
    if (!is_ivf(index) && (o->nlist || o->nprobe))
        return ctl_usage_error(me, "--nlist and --nprobe are for IVF indexes");
    qv_collection_spec spec = {
        .name = pos[0],
        .dimension = (uint32_t)o->dim,
        .metric = o->metric,
        .index = o->index,
        .hnsw_m = (uint32_t)o->m,
        .hnsw_ef_construction = (uint32_t)o->ef_construction,
        .hnsw_ef_search = (uint32_t)o->ef_search,
        .ivf_nlist = (uint32_t)o->nlist,
        .ivf_nprobe = (uint32_t)o->nprobe,
        .shards = (uint32_t)o->shards,
        .replication_factor = (uint32_t)o->replication,
        .on_disk_payload = o->on_disk_payload,
        .if_not_exists = o->if_not_exists,
    };
    qv_collection_info info;
    bool created = false;
    qv_status err = qv_status_ok();
    if (qv_client_collection_create(c, &spec, &info, &created, &err) != 0) {
        ctl_print_failure(&err);
        return EXIT_FAIL;
    }
    if (g->json) {
        fputs("{\"created\":", stdout);
        fputs(created ? "true" : "false", stdout);
        fputs(",\"collection\":", stdout);
        collection_json(stdout, &info);
        fputs("}\n", stdout);
    } else {
        /* Names are checked by the server ([A-Za-z0-9_-]), but the terminal stays safe anyway. */
        ctl_table t = {.ncols = 1};
        if (created)
            ctl_table_add(&t,
                          "created collection %s: dimension %" PRIu32 ", %s, %s, %" PRIu32
                          " shard(s) x %" PRIu32 " replica(s), status %s",
                          info.name, info.dimension, info.metric, info.index, info.shards,
                          info.replication_factor, info.status);
        else
            ctl_table_add(&t, "collection %s already exists with this configuration (unchanged)",
                          info.name);
        ctl_table_finish(&t);
    }
    qv_collection_info_free(&info);
    return EXIT_OK;
}

const command ctl_cmd_collections_create = {
    "collections create",
    "NAME",
    1,
    1,
    "create a collection",
    "Creates collection NAME (quiver.v1.Collections/Create) with vectors of --dim floats compared\n"
    "by --metric (l2: squared Euclidean distance; cosine: 1 - cosine similarity; dot: negated\n"
    "inner product; smaller is closer for all three). --index picks the index (default hnsw;\n"
    "hnsw-int8 quantises vectors to 8 bits, flat scans exactly, ivf-flat clusters into --nlist\n"
    "lists); index parameters left out take the server's defaults. --shards is fixed at\n"
    "creation. Returns once every shard has a leader. Names: 1..64 characters from\n"
    "[A-Za-z0-9_-], starting with a letter or digit.\n"
    "An existing collection of the same name is an error (ALREADY_EXISTS, exit 1) unless\n"
    "--if-not-exists is given and its configuration is identical.\n"
    "\n"
    "  quiverctl collections create fashion --dim 784 --metric l2 --index hnsw --m 16\n",
    create_opts,
    cmd_create};

/* ---- list -------------------------------------------------------------------------------------
 */

static int cmd_list(qv_client *c, const globals *g, const cmdopts *o, int npos, char **pos)
{
    char **names = NULL;
    qv_collection_info *infos = NULL;
    size_t n = 0;
    qv_status err = qv_status_ok();
    if (qv_client_collection_list(c, &names, &infos, &n, &err) != 0) {
        ctl_print_failure(&err);
        return EXIT_FAIL;
    }
    int code = EXIT_OK;
    if (g->json) {
        fputs("{\"collections\":[", stdout);
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                fputc(',', stdout);
            collection_json(stdout, &infos[i]);
        }
        fputs("]}\n", stdout);
    } else {
        static const char *const head[] = {"NAME",   "DIMENSION", "METRIC", "INDEX",
                                           "SHARDS", "REPLICAS",  "POINTS", "STATUS"};
        ctl_table t = {.ncols = sizeof(head) / sizeof(head[0])};
        for (size_t i = 0; i < t.ncols; i++)
            ctl_table_add(&t, "%s", head[i]);
        for (size_t i = 0; i < n; i++) {
            const qv_collection_info *ci = &infos[i];
            ctl_table_add(&t, "%s", ci->name);
            ctl_table_add(&t, "%" PRIu32, ci->dimension);
            ctl_table_add(&t, "%s", ci->metric);
            ctl_table_add(&t, "%s", ci->index);
            ctl_table_add(&t, "%" PRIu32, ci->shards);
            ctl_table_add(&t, "%" PRIu32, ci->replication_factor);
            ctl_table_add(&t, "%" PRIu64, ci->points_count);
            ctl_table_add(&t, "%s", ci->status);
        }
        code = ctl_table_finish(&t);
    }
    qv_collection_list_free(names, infos, n);
    return code;
}

const command ctl_cmd_collections_list = {
    "collections list",
    "",
    0,
    0,
    "list collections with their configuration and size",
    "Lists every collection (quiver.v1.Collections/List), sorted by name, one row each: name,\n"
    "dimension, metric, index type, shards, replicas per shard, points and status (creating,\n"
    "ready, training, indexing, degraded, dropping). Sizes come from gossip and may be a few\n"
    "seconds old. With --json: {\"collections\": [ ... ]}, each as `collections describe`.\n",
    NULL,
    cmd_list};

/* ---- describe ---------------------------------------------------------------------------------
 */

static int cmd_describe(qv_client *c, const globals *g, const cmdopts *o, int npos, char **pos)
{
    qv_collection_info ci;
    qv_status err = qv_status_ok();
    if (qv_client_collection_describe(c, pos[0], &ci, &err) != 0) {
        ctl_print_failure(&err);
        return EXIT_FAIL;
    }
    if (g->json) {
        collection_json(stdout, &ci);
        fputc('\n', stdout);
        qv_collection_info_free(&ci);
        return EXIT_OK;
    }
    char a[64], b[64];
    ctl_table t = {.ncols = 2};
    ctl_table_add(&t, "name");
    ctl_table_add(&t, "%s", ci.name);
    ctl_table_add(&t, "uid");
    ctl_table_add(&t, "%" PRIu64, ci.uid);
    ctl_table_add(&t, "status");
    ctl_table_add(&t, "%s%s%s", ci.status, ci.status_message[0] ? ": " : "", ci.status_message);
    ctl_table_add(&t, "dimension");
    ctl_table_add(&t, "%" PRIu32, ci.dimension);
    ctl_table_add(&t, "metric");
    ctl_table_add(&t, "%s", ci.metric);
    ctl_table_add(&t, "index");
    if (is_hnsw(ci.index))
        ctl_table_add(&t, "%s (m %" PRIu32 ", ef_construction %" PRIu32 ", ef_search %" PRIu32 ")",
                      ci.index, ci.hnsw_m, ci.hnsw_ef_construction, ci.hnsw_ef_search);
    else if (is_ivf(ci.index))
        ctl_table_add(&t, "%s (nlist %" PRIu32 ", nprobe %" PRIu32 ")", ci.index, ci.ivf_nlist,
                      ci.ivf_nprobe);
    else
        ctl_table_add(&t, "%s", ci.index);
    ctl_table_add(&t, "shards");
    ctl_table_add(&t, "%" PRIu32 " x %" PRIu32 " replica(s), %s partitioning", ci.shards,
                  ci.replication_factor, ci.partitioning);
    ctl_table_add(&t, "payloads");
    ctl_table_add(&t, "%s", ci.on_disk_payload ? "on disk" : "in memory and on disk");
    ctl_table_add(&t, "points");
    ctl_table_add(&t, "%" PRIu64 " (%" PRIu64 " indexed)", ci.points_count,
                  ci.indexed_points_count);
    ctl_table_add(&t, "memory");
    ctl_table_add(&t, "%s", ctl_fmt_bytes(ci.memory_bytes, a, sizeof(a)));
    ctl_table_add(&t, "disk");
    ctl_table_add(&t, "%s", ctl_fmt_bytes(ci.disk_bytes, b, sizeof(b)));
    ctl_table_add(&t, "created");
    ctl_table_add(&t, "%s", ctl_fmt_unix_ms(ci.created_at_unix_ms, a, sizeof(a)));
    qv_collection_info_free(&ci);
    return ctl_table_finish(&t);
}

const command ctl_cmd_collections_describe = {
    "collections describe",
    "NAME",
    1,
    1,
    "a collection's configuration, status and sizes",
    "Shows collection NAME (quiver.v1.Collections/Describe): uid (changes when a collection is\n"
    "dropped and created again under the same name), status and why it is not ready, dimension,\n"
    "metric, index and its effective parameters, shards and replicas, where payloads live,\n"
    "points (and how many are in the index yet; the rest are searched exactly), memory and disk\n"
    "summed over replicas, creation time. An unknown NAME is NOT_FOUND (exit 1).\n",
    NULL,
    cmd_describe};

/* ---- drop -------------------------------------------------------------------------------------
 */

static size_t drop_opts(qv_opt *o, cmdopts *v)
{
    o[0] = (qv_opt){.name = "if-exists",
                    .type = QV_OPT_BOOL,
                    .target = &v->if_exists,
                    .def = "false",
                    .help = "succeed (and drop nothing) when the collection does not exist"};
    return 1;
}

static int cmd_drop(qv_client *c, const globals *g, const cmdopts *o, int npos, char **pos)
{
    bool dropped = false;
    qv_status err = qv_status_ok();
    if (qv_client_collection_drop(c, pos[0], o->if_exists, &dropped, &err) != 0) {
        ctl_print_failure(&err);
        return EXIT_FAIL;
    }
    if (g->json) {
        bool first = true;
        fputc('{', stdout);
        ctl_json_kv_str(stdout, &first, "name", pos[0]);
        ctl_json_kv_bool(stdout, &first, "dropped", dropped);
        fputs("}\n", stdout);
        return EXIT_OK;
    }
    ctl_table t = {.ncols = 1};
    if (dropped)
        ctl_table_add(&t, "dropped collection %s", pos[0]);
    else
        ctl_table_add(&t, "collection %s does not exist (nothing dropped)", pos[0]);
    return ctl_table_finish(&t);
}

const command ctl_cmd_collections_drop = {
    "collections drop",
    "NAME",
    1,
    1,
    "drop a collection and its data (irreversible)",
    "Drops collection NAME (quiver.v1.Collections/Drop): its definition at once (later requests\n"
    "get NOT_FOUND), its data on every node in the background. Irreversible; there is no\n"
    "confirmation prompt. An unknown NAME is NOT_FOUND (exit 1) unless --if-exists.\n",
    drop_opts,
    cmd_drop};
