// hnswlib_bench: the hnswlib anchor of bench/ann_compare.sh, measured exactly like
// `quiver-bench ann` measures Quiver's HNSW.
//
// Reads base.fvecs / query.fvecs / gt.ivecs (written by `quiver-bench ann --export-dir`), builds
// hnswlib::HierarchicalNSW<float> (Debian's libhnswlib-dev 0.6.2 headers) with every core
// (ParallelFor over addPoint, as hnswlib's own bindings do), then for each search thread count T
// and each ef runs the query set --repeat times over T threads, each thread taking single queries
// (searchKnn) from a shared counter, and keeps the best wall-clock QPS with its latency p50/p99.
// Prints one JSON line per point with the same fields as quiver-bench, "index":"hnswlib".
//
// Build (bench/ann_compare.sh does this):
//   g++ -O3 -march=native -std=c++17 -pthread -Wall -o build/bench/hnswlib_bench
//       bench/hnswlib_bench.cpp
#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Matrix {
    size_t n = 0, dim = 0;
    std::vector<float> f;  // fvecs
    std::vector<int32_t> i;  // ivecs
};

// Reads an fvecs (is_int = false) or ivecs file; throws with a message on any inconsistency.
Matrix read_vecs(const std::string &path, bool is_int)
{
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in)
        throw std::runtime_error(path + ": cannot open");
    const uint64_t size = static_cast<uint64_t>(in.tellg());
    in.seekg(0);
    int32_t d = 0;
    if (size < 4 || !in.read(reinterpret_cast<char *>(&d), 4))
        throw std::runtime_error(path + ": empty or truncated");
    if (d <= 0 || d > 65536)
        throw std::runtime_error(path + ": bad dimension " + std::to_string(d));
    const uint64_t row = 4 + 4 * static_cast<uint64_t>(d);
    if (size % row != 0)
        throw std::runtime_error(path + ": truncated or trailing bytes");
    Matrix m;
    m.n = size / row;
    m.dim = static_cast<size_t>(d);
    if (is_int)
        m.i.resize(m.n * m.dim);
    else
        m.f.resize(m.n * m.dim);
    in.seekg(0);
    for (size_t r = 0; r < m.n; r++) {
        int32_t rd = 0;
        char *dst = is_int ? reinterpret_cast<char *>(&m.i[r * m.dim])
                           : reinterpret_cast<char *>(&m.f[r * m.dim]);
        if (!in.read(reinterpret_cast<char *>(&rd), 4) || rd != d ||
            !in.read(dst, static_cast<std::streamsize>(4 * m.dim)))
            throw std::runtime_error(path + ": row " + std::to_string(r) + " is malformed");
    }
    return m;
}

std::vector<uint32_t> parse_list(const std::string &s)
{
    std::vector<uint32_t> out;
    size_t pos = 0;
    while (pos < s.size()) {
        size_t end = s.find(',', pos);
        if (end == std::string::npos)
            end = s.size();
        unsigned long v = std::stoul(s.substr(pos, end - pos));
        if (v == 0)
            throw std::runtime_error("list values must be positive: " + s);
        out.push_back(static_cast<uint32_t>(v));
        pos = end + 1;
    }
    if (out.empty())
        throw std::runtime_error("empty list");
    return out;
}

void normalize(std::vector<float> &v, size_t dim)
{
    for (size_t r = 0; r < v.size() / dim; r++) {
        double s = 0;
        for (size_t j = 0; j < dim; j++)
            s += static_cast<double>(v[r * dim + j]) * v[r * dim + j];
        if (s > 0) {
            const float inv = static_cast<float>(1.0 / std::sqrt(s));
            for (size_t j = 0; j < dim; j++)
                v[r * dim + j] *= inv;
        }
    }
}

// Runs fn(i) for i in [start, end) over num_threads threads pulling from a shared counter (the
// ParallelFor of hnswlib's Python bindings, without its exception plumbing).
template <class Function>
void parallel_for(size_t start, size_t end, size_t num_threads, Function fn)
{
    std::atomic<size_t> next(start);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < num_threads; t++)
        threads.emplace_back([&] {
            for (;;) {
                size_t i = next.fetch_add(1);
                if (i >= end)
                    break;
                fn(i);
            }
        });
    for (auto &th : threads)
        th.join();
}

double now_s()
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

double pct_us(const std::vector<double> &sorted_s, double p)
{
    if (sorted_s.empty())
        return 0;
    size_t i = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted_s.size())));
    i = i == 0 ? 0 : i - 1;
    return sorted_s[std::min(i, sorted_s.size() - 1)] * 1e6;
}

void usage(FILE *out)
{
    std::fprintf(
        out,
        "usage: hnswlib_bench --base F.fvecs --query F.fvecs --gt F.ivecs [options]\n"
        "  --metric l2|ip|cosine   distance (cosine: vectors normalised, inner product)\n"
        "  --M N                   links per node (default 16)\n"
        "  --ef-construction N     build candidate list (default 200)\n"
        "  --ef LIST               search candidate lists, e.g. 16,32,64 (default 16,32,64,128)\n"
        "  --threads LIST          search thread counts (default 1); the build uses every core\n"
        "  --k N                   neighbours per query (default 10)\n"
        "  --repeat R              runs per point, best QPS kept (default 1)\n"
        "  --dataset NAME          name printed in the JSON lines (default: data)\n"
        "One JSON line per (threads, ef) on stdout, a table on stderr.\n");
}

}  // namespace

int main(int argc, char **argv)
{
    std::string base_path, query_path, gt_path, metric = "l2", dataset = "data";
    std::string ef_list = "16,32,64,128", threads_list = "1";
    size_t M = 16, efc = 200, k = 10, repeat = 1;
    try {
        for (int a = 1; a < argc; a++) {
            std::string opt = argv[a];
            if (opt == "--help" || opt == "-h") {
                usage(stdout);
                return 0;
            }
            if (a + 1 >= argc)
                throw std::runtime_error("option " + opt + " needs a value");
            std::string val = argv[++a];
            if (opt == "--base")
                base_path = val;
            else if (opt == "--query")
                query_path = val;
            else if (opt == "--gt")
                gt_path = val;
            else if (opt == "--metric")
                metric = val;
            else if (opt == "--M")
                M = std::stoul(val);
            else if (opt == "--ef-construction")
                efc = std::stoul(val);
            else if (opt == "--ef")
                ef_list = val;
            else if (opt == "--threads")
                threads_list = val;
            else if (opt == "--k")
                k = std::stoul(val);
            else if (opt == "--repeat")
                repeat = std::stoul(val);
            else if (opt == "--dataset")
                dataset = val;
            else
                throw std::runtime_error("unknown option " + opt);
        }
        if (base_path.empty() || query_path.empty() || gt_path.empty())
            throw std::runtime_error("--base, --query and --gt are required");
        if (metric != "l2" && metric != "ip" && metric != "cosine")
            throw std::runtime_error("--metric must be l2, ip or cosine");
        if (k == 0 || repeat == 0 || M < 2)
            throw std::runtime_error("--k, --repeat must be >= 1 and --M >= 2");
    } catch (const std::exception &e) {
        std::fprintf(stderr, "hnswlib_bench: %s\n", e.what());
        usage(stderr);
        return 2;
    }

    try {
        const std::vector<uint32_t> efs = parse_list(ef_list), tlist = parse_list(threads_list);
        Matrix base = read_vecs(base_path, false), query = read_vecs(query_path, false);
        Matrix gt = read_vecs(gt_path, true);
        if (base.dim != query.dim)
            throw std::runtime_error("base and query dimensions differ");
        if (gt.n < query.n || gt.dim < k)
            throw std::runtime_error("the ground truth has too few rows or columns");
        if (metric == "cosine") {
            normalize(base.f, base.dim);
            normalize(query.f, query.dim);
        }
        const size_t n = base.n, nq = query.n, dim = base.dim;
        const unsigned build_threads = std::max(1u, std::thread::hardware_concurrency());

        std::unique_ptr<hnswlib::SpaceInterface<float>> space;
        if (metric == "l2")
            space.reset(new hnswlib::L2Space(dim));
        else
            space.reset(new hnswlib::InnerProductSpace(dim));
        hnswlib::HierarchicalNSW<float> alg(space.get(), n, M, efc);

        double t0 = now_s();
        parallel_for(0, n, build_threads, [&](size_t i) { alg.addPoint(&base.f[i * dim], i); });
        const double build_s = now_s() - t0;

        // What the index allocates per vector: level-0 block (links + vector + label) plus the
        // upper-level link lists. The second figure adds hnswlib's per-element bookkeeping (the
        // linkLists_ pointer, the level, the per-element lock; not the label hash map).
        uint64_t upper = 0;
        for (size_t i = 0; i < n; i++)
            upper += static_cast<uint64_t>(alg.element_levels_[i]) * alg.size_links_per_element_;
        const double bpv = static_cast<double>(alg.size_data_per_element_) +
                           static_cast<double>(upper) / static_cast<double>(n);
        const double bpv_all =
            bpv + static_cast<double>(sizeof(char *) + sizeof(int) + sizeof(std::mutex));

        std::vector<std::vector<int32_t>> truth(nq);
        for (size_t q = 0; q < nq; q++) {
            truth[q].assign(&gt.i[q * gt.dim], &gt.i[q * gt.dim] + k);
            std::sort(truth[q].begin(), truth[q].end());
        }

        std::fprintf(stderr, "hnswlib %s: %zu base, %zu queries, dim %zu, build %.2f s\n",
                     dataset.c_str(), n, nq, dim, build_s);
        std::fprintf(stderr, "%-8s %3s %-8s %9s %8s %11s %9s %9s\n", "index", "T", "ef", "B/vec",
                     "recall", "qps", "p50_us", "p99_us");
        std::vector<std::vector<hnswlib::labeltype>> found(nq);
        std::vector<double> lat(nq), best_lat;
        for (uint32_t threads : tlist) {
            for (uint32_t ef : efs) {
                alg.setEf(ef);
                double best_qps = 0;
                for (size_t rep = 0; rep < repeat; rep++) {
                    std::atomic<size_t> next(0);
                    std::mutex mu;
                    std::condition_variable cv;
                    bool go = false;
                    std::vector<std::thread> th;
                    for (uint32_t t = 0; t < threads; t++)
                        th.emplace_back([&] {
                            {
                                std::unique_lock<std::mutex> lk(mu);
                                cv.wait(lk, [&] { return go; });
                            }
                            for (;;) {
                                size_t q = next.fetch_add(1, std::memory_order_relaxed);
                                if (q >= nq)
                                    break;
                                double s = now_s();
                                auto res = alg.searchKnn(&query.f[q * dim], k);
                                std::vector<hnswlib::labeltype> ids;
                                ids.reserve(res.size());
                                while (!res.empty()) {
                                    ids.push_back(res.top().second);
                                    res.pop();
                                }
                                lat[q] = now_s() - s;
                                found[q] = std::move(ids);
                            }
                        });
                    double start;
                    {
                        std::lock_guard<std::mutex> lk(mu);
                        go = true;
                        start = now_s();
                    }
                    cv.notify_all();
                    for (auto &t : th)
                        t.join();
                    const double qps = static_cast<double>(nq) / (now_s() - start);
                    if (qps > best_qps) {
                        best_qps = qps;
                        best_lat = lat;
                    }
                }
                double hits_k = 0, hits_10 = 0;
                for (size_t q = 0; q < nq; q++) {
                    // found[q] is farthest first: the last 10 are the 10 closest.
                    const auto &f = found[q];
                    for (size_t j = 0; j < f.size(); j++) {
                        const int32_t id = static_cast<int32_t>(f[j]);
                        const bool in_k =
                            std::binary_search(truth[q].begin(), truth[q].end(), id);
                        hits_k += in_k;
                        if (k >= 10 && f.size() - j <= 10) {
                            const int32_t *t10 = &gt.i[q * gt.dim];
                            hits_10 += std::find(t10, t10 + 10, id) != t10 + 10;
                        }
                    }
                }
                const double rk = hits_k / static_cast<double>(nq * k);
                std::sort(best_lat.begin(), best_lat.end());
                const double p50 = pct_us(best_lat, 0.50), p99 = pct_us(best_lat, 0.99);
                char r10[32];
                if (k >= 10)
                    std::snprintf(r10, sizeof(r10), "%.5f", hits_10 / static_cast<double>(nq * 10));
                else
                    std::snprintf(r10, sizeof(r10), "null");
                std::printf(
                    "{\"bench\":\"ann\",\"system\":\"hnswlib\",\"dataset\":\"%s\",\"metric\":\"%s\","
                    "\"n\":%zu,\"nq\":%zu,\"dim\":%zu,\"k\":%zu,\"index\":\"hnswlib\","
                    "\"mode\":\"single\",\"params\":{\"M\":%zu,\"ef_construction\":%zu},"
                    "\"threads\":%u,\"ef\":%u,\"build_s\":%.3f,\"build_threads\":%u,"
                    "\"bytes_per_vector\":%.1f,\"bytes_per_vector_incl_overhead\":%.1f,"
                    "\"bytes_per_vector_f32_rerank\":null,\"recall_at_10\":%s,"
                    "\"recall_at_k\":%.5f,\"qps\":%.1f,\"latency_p50_us\":%.1f,"
                    "\"latency_p99_us\":%.1f,\"repeat\":%zu,\"version\":\"0.6.2\"}\n",
                    dataset.c_str(), metric.c_str(), n, nq, dim, k, M, efc, threads, ef, build_s,
                    build_threads, bpv, bpv_all, r10, rk, best_qps, p50, p99, repeat);
                std::fflush(stdout);
                std::fprintf(stderr, "%-8s %3u %-8u %9.1f %8.4f %11.0f %9.1f %9.1f\n", "hnswlib",
                             threads, ef, bpv, rk, best_qps, p50, p99);
            }
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "hnswlib_bench: %s\n", e.what());
        return 1;
    }
    return 0;
}
