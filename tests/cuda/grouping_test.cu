// grouping::from_ids / from_dense_ids on exec::cuda against the host overloads (bitwise: permutation,
// offsets, group count, group ids) for random 64-bit, dense, hashed, negative, extreme, 32-bit and
// unsigned ids, all-equal ids, N = 0, N = 1 and N = 10^7; GRPO and RLOO over the device permuted
// layout against the host GRPO/RLOO over the host grouping (device count and host count, tile and
// block kernels, empty/singleton/large groups, NaN rewards, the framework presets, float and
// double); the workspace path against cudaMallocAsync, run-to-run bits, CUDA-graph capture and
// replay (support.cuh graph_case), status bits for ids out of range and broken layouts, validated(),
// DLPack ids and the host-detectable misuse; the values of a layout with a permutation entry out of
// range (0 on the staged and the global paths, the same bits every run), GRPO over from_dense_ids
// with ids out of range (the last group skipped), strided ids/permutation/group ids/rewards/
// advantages, the N + 1 offsets from_ids hands on, outputs aliasing the layout and a misaligned
// workspace (invalid_argument). Under QUICK=1 (the compute-sanitizer runs) sizes shrink
// to a few thousand rows and the option matrix to a few presets.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.cuh>
#include <posttrain/advantage/rloo.cuh>
#include <posttrain/cuda/grouping.cuh>

#include "support.cuh"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::index_t;
using pt::test::device_vec;
using pt::test::quick_size;

namespace {

template <class T>
pt::device_view<T, 1> dview(T* p, index_t n) {
    return pt::device_view<T, 1>(p, n);
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// What from_ids wrote, brought back to the host.
struct device_grouping {
    std::vector<index_t> permutation, offsets;  // offsets: the first count + 1 entries
    index_t count = -1;
    std::vector<std::int64_t> ids;              // the first count entries
};

// Runs the CUDA from_ids (with a caller workspace of exactly from_ids_workspace_bytes when asked).
template <class Id>
device_grouping cuda_from_ids(const std::vector<Id>& ids, bool workspace, cudaStream_t stream = nullptr) {
    const index_t n = static_cast<index_t>(ids.size());
    device_vec<Id> d_ids(ids);
    device_vec<index_t> perm(ids.size(), -7), off(ids.size() + 1, -7), count(1, -7);
    device_vec<std::int64_t> gids(ids.size(), -7);
    auto policy = pt::exec::cuda.on(stream);
    const std::size_t bytes = pt::grouping::from_ids_workspace_bytes(n, static_cast<int>(sizeof(Id)));
    device_vec<unsigned char> ws(workspace ? bytes : 0);
    if (workspace) policy = policy.with(ws.data(), bytes);
    (void)pt::grouping::from_ids(policy, dview<const Id>(d_ids.data(), n), perm.view(), off.view(), count.view(),
                                 gids.view());
    device_grouping g;
    g.permutation = perm.host();
    g.count = count.host()[0];
    const auto o = off.host();
    const auto gi = gids.host();
    if (g.count >= 0 && g.count <= n) {
        g.offsets.assign(o.begin(), o.begin() + g.count + 1);
        g.ids.assign(gi.begin(), gi.begin() + g.count);
    }
    return g;
}

template <class Id>
void check_from_ids(const std::vector<Id>& ids, const std::string& what) {
    const pt::grouping_result want = pt::grouping::from_ids(pt::exec::seq, ids);
    for (bool ws : {false, true}) {
        const device_grouping got = cuda_from_ids(ids, ws);
        const std::string w = what + (ws ? " (workspace)" : " (cudaMallocAsync)") + " N=" + std::to_string(ids.size());
        PT_CHECK_MSG(got.count == want.num_groups(), w + ": count " + std::to_string(got.count) + " vs " +
                                                         std::to_string(want.num_groups()));
        PT_CHECK_MSG(same_bits(got.permutation, want.permutation), w + ": permutation");
        PT_CHECK_MSG(same_bits(got.offsets, want.offsets), w + ": offsets");
        PT_CHECK_MSG(same_bits(got.ids, want.ids), w + ": group ids");
    }
}

// n rows over groups of `group` rows (the last one partial), ids from make_id(group index), shuffled.
template <class Id, class Make>
std::vector<Id> shuffled_ids(index_t n, index_t group, std::uint64_t seed, Make make_id) {
    std::vector<Id> ids(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = make_id(i / group);
    std::mt19937_64 rng(seed);
    std::shuffle(ids.begin(), ids.end(), rng);
    return ids;
}

}  // namespace

PT_TEST("from_ids: int64 random, dense, hashed, negative, extreme") {
    std::mt19937_64 rng(1);
    std::vector<std::uint64_t> salt(100000);
    for (auto& s : salt) s = rng();
    for (index_t n : {index_t{2}, index_t{17}, index_t{1000}, index_t{4097}, quick_size(100000, 3000)}) {
        check_from_ids(shuffled_ids<std::int64_t>(n, 16, 2, [&](index_t g) { return static_cast<std::int64_t>(salt[std::size_t(g)]); }),
                       "int64 random 64-bit");
        check_from_ids(shuffled_ids<std::int64_t>(n, 16, 3, [](index_t g) { return static_cast<std::int64_t>(g); }),
                       "int64 dense");
        check_from_ids(shuffled_ids<std::int64_t>(n, 5, 4, [](index_t g) { return pt::grouping::hash_id("prompt-" + std::to_string(g)); }),
                       "int64 hashed strings");
        check_from_ids(shuffled_ids<std::int64_t>(n, 3, 5, [](index_t g) { return static_cast<std::int64_t>(g % 2001) - 1000; }),
                       "int64 negative");
    }
    std::vector<std::int64_t> extreme = {std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::min(), 0, -1, 1,
                                         std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max(), -1};
    check_from_ids(extreme, "int64 extremes");
    // Group sizes 1..5000 (one id per size), interleaved.
    std::vector<std::int64_t> sized;
    for (index_t s : {1, 2, 31, 300, 5000, 1, 1}) sized.insert(sized.end(), static_cast<std::size_t>(s), static_cast<std::int64_t>(rng()));
    std::shuffle(sized.begin(), sized.end(), rng);
    check_from_ids(sized, "int64 mixed group sizes");
}

PT_TEST("from_ids: int32, uint32, uint64 ids") {
    std::mt19937_64 rng(6);
    for (index_t n : {index_t{3}, index_t{1000}, quick_size(70000, 2000)}) {
        check_from_ids(shuffled_ids<std::int32_t>(n, 7, 7, [&](index_t g) { return static_cast<std::int32_t>(g * 2654435761u) ; }),
                       "int32 (negative and positive)");
        check_from_ids(shuffled_ids<std::uint32_t>(n, 4, 8, [](index_t g) { return static_cast<std::uint32_t>(0xFFFFFFFFu - g * 3); }),
                       "uint32 near the top");
        check_from_ids(shuffled_ids<std::uint64_t>(n, 16, 9, [](index_t g) { return (std::uint64_t{1} << 63) + static_cast<std::uint64_t>(g) * 977; }),
                       "uint64 with the high bit set");
        check_from_ids(shuffled_ids<std::uint64_t>(n, 16, 10, [](index_t g) { return static_cast<std::uint64_t>(g) * 0x9E3779B97F4A7C15ull; }),
                       "uint64 spread");
    }
    std::vector<std::int32_t> ext32 = {std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max(), 0, -1,
                                       std::numeric_limits<std::int32_t>::min()};
    check_from_ids(ext32, "int32 extremes");
}

PT_TEST("from_ids: all equal, N = 0, N = 1") {
    check_from_ids(std::vector<std::int64_t>(5000, 42), "int64 all equal");
    check_from_ids(std::vector<std::int32_t>(3, -5), "int32 all equal");
    check_from_ids(std::vector<std::int64_t>{}, "int64 empty");
    check_from_ids(std::vector<std::uint64_t>{}, "uint64 empty");
    check_from_ids(std::vector<std::int64_t>{-9}, "int64 single");
    check_from_ids(std::vector<std::uint32_t>{7}, "uint32 single");
}

PT_TEST("from_ids: N = 10^7, hashed and dense") {
    const index_t n = quick_size(10'000'000, 5000);
    std::mt19937_64 rng(12);
    std::vector<std::uint64_t> salt(static_cast<std::size_t>(n / 16 + 1));
    for (auto& s : salt) s = rng();
    check_from_ids(shuffled_ids<std::int64_t>(n, 16, 13, [&](index_t g) { return static_cast<std::int64_t>(salt[std::size_t(g)]); }),
                   "int64 hashed, large");
    check_from_ids(shuffled_ids<std::int64_t>(n, 16, 14, [](index_t g) { return static_cast<std::int64_t>(g); }), "int64 dense, large");
}

namespace {

template <class Id>
void check_dense(const std::vector<Id>& ids, index_t groups, const std::string& what) {
    const pt::grouping_result want = pt::grouping::from_dense_ids(pt::exec::seq, ids, groups);
    const index_t n = static_cast<index_t>(ids.size());
    for (bool ws : {false, true}) {
        device_vec<Id> d_ids(ids);
        device_vec<index_t> perm(ids.size(), -7), off(static_cast<std::size_t>(groups) + 1, -7), count(1, -7);
        device_vec<std::uint32_t> status(1, 0u);
        const std::size_t bytes = pt::grouping::from_dense_ids_workspace_bytes(n, groups);
        device_vec<unsigned char> buf(ws ? bytes : 0);
        auto policy = pt::exec::cuda.with_status(status.data());
        if (ws) policy = policy.with(buf.data(), bytes);
        const pt::device_permuted_groups layout =
            pt::grouping::from_dense_ids(policy, dview<const Id>(d_ids.data(), n), groups, perm.view(), off.view(), count.view());
        const std::string w = what + (ws ? " (workspace)" : "") + " N=" + std::to_string(n) + " G=" + std::to_string(groups);
        PT_CHECK_MSG(same_bits(perm.host(), want.permutation), w + ": permutation");
        PT_CHECK_MSG(same_bits(off.host(), want.offsets), w + ": offsets");
        PT_CHECK_MSG(count.host()[0] == groups, w + ": count");
        PT_CHECK_MSG(status.host()[0] == 0u, w + ": status");
        PT_CHECK_MSG(layout.count.size() == 0 && layout.offsets.extent(0) == groups + 1, w + ": a host-counted layout");
    }
}

}  // namespace

PT_TEST("from_dense_ids: against the host, empty groups kept") {
    std::mt19937_64 rng(15);
    for (index_t n : {index_t{0}, index_t{1}, index_t{5}, index_t{1000}, quick_size(100000, 3000)}) {
        for (index_t groups : {index_t{1}, index_t{7}, index_t{1000}, quick_size(70000, 2000)}) {
            std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
            for (auto& v : ids) v = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(groups));
            check_dense(ids, groups, "int64");
            std::vector<std::int32_t> ids32(ids.begin(), ids.end());
            check_dense(ids32, groups, "int32");
        }
    }
    check_dense(std::vector<std::int64_t>{}, 0, "no rows, no groups");
    check_dense(std::vector<std::uint64_t>(3000, 4), 5, "uint64 all one id");
    const index_t n = quick_size(10'000'000, 5000);
    check_dense(shuffled_ids<std::int64_t>(n, 16, 16, [](index_t g) { return static_cast<std::int64_t>(g); }), n / 16 + 1,
                "int64 large");
}

PT_TEST("from_dense_ids: ids out of range set the status bit and stay out of every group") {
    const std::vector<std::int64_t> ids = {2, -1, 0, 5, 2, 1, 9, 0};
    const index_t n = 8, groups = 3;
    device_vec<std::int64_t> d_ids(ids);
    device_vec<index_t> perm(8, -7), off(4, -7);
    device_vec<std::uint32_t> status(1, 0u);
    (void)pt::grouping::from_dense_ids(pt::exec::cuda.with_status(status.data()), d_ids.cview(), groups, perm.view(), off.view());
    PT_CHECK((status.host()[0] & pt::status_id_out_of_range) != 0);
    PT_CHECK(same_bits(off.host(), std::vector<index_t>{0, 2, 3, 5}));
    PT_CHECK(same_bits(perm.host(), std::vector<index_t>{2, 7, 5, 0, 4, 1, 3, 6}));
    PT_CHECK_THROWS(pt::grouping::from_dense_ids(pt::exec::seq, ids, groups), pt::invalid_argument);
    (void)n;
}

namespace {

// Rewards per group (continuous, binary or constant, optional NaNs), each row by its group.
template <class T>
std::vector<T> grouped_rewards(const pt::grouping_result& g, std::uint64_t seed, bool with_nan) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.5, 2.0);
    std::vector<T> r(g.permutation.size());
    for (index_t k = 0; k < g.num_groups(); ++k) {
        const int pattern = static_cast<int>(rng() % 3);
        const double c = normal(rng);
        for (index_t j = g.offsets[std::size_t(k)]; j < g.offsets[std::size_t(k) + 1]; ++j) {
            double v = pattern == 0 ? normal(rng) : pattern == 1 ? double(rng() % 2) : c;
            if (with_nan && rng() % 11 == 0) v = std::nan("");
            r[static_cast<std::size_t>(g.permutation[std::size_t(j)])] = static_cast<T>(v);
        }
    }
    return r;
}

// As outcome_test's arithmetic_slack, over the rows of each permuted group: under
// zero_variance::arithmetic a constant group's advantages are rounding residues divided by epsilon.
template <class T, class Options>
std::vector<double> permuted_slack(const std::vector<T>& r, const pt::grouping_result& g, const Options& o) {
    std::vector<double> slack(r.size(), 0.0);
    if (o.zero_variance_groups != adv::zero_variance::arithmetic) return slack;
    double eps = 0;
    if constexpr (std::is_same_v<Options, adv::grpo_options>) eps = o.std_scale == adv::scale::group ? o.epsilon : 0.0;
    for (index_t k = 0; k < g.num_groups(); ++k) {
        const auto b = g.offsets[std::size_t(k)], e = g.offsets[std::size_t(k) + 1];
        double lo = 1e300, hi = -1e300;
        for (auto j = b; j < e; ++j) {
            const double v = r[std::size_t(g.permutation[std::size_t(j)])];
            if (v == v) {
                lo = std::min(lo, v);
                hi = std::max(hi, v);
            }
        }
        if (lo != hi) continue;
        const double residue = 64 * 2.220446049250313e-16 * std::fabs(lo) * double(e - b);
        for (auto j = b; j < e; ++j) slack[std::size_t(g.permutation[std::size_t(j)])] = eps > 0 ? residue / eps : residue;
    }
    return slack;
}

template <class Options, class Policy, class R, class G, class A>
auto call(const Policy& p, const R& r, const G& g, A&& a, const Options& o) {
    if constexpr (std::is_same_v<Options, adv::grpo_options>) return adv::grpo(p, r, g, a, o);
    else return adv::rloo(p, r, g, a, o);
}
template <class Options, class R, class G, class A>
void call_stats(const pt::exec::cuda_policy& p, const R& r, const G& g, A&& a, const Options& o,
                pt::device_view<index_t, 1> stats) {
    if constexpr (std::is_same_v<Options, adv::grpo_options>) adv::grpo(p, r, g, a, o, stats);
    else adv::rloo(p, r, g, a, o, stats);
}

// How the device layout is made: from_ids (device count, assumed or stated group size), or
// from_dense_ids (host count).
enum class layout_source { ids_assumed, ids_stated_small, ids_stated_large, dense };

// Ids: group k has id salt[k] (from_ids) or k (dense); returns the host grouping of the same ids.
template <class T, class Options>
void compare_outcome(const std::vector<index_t>& sizes, layout_source how, const Options& o, const std::string& what,
                     std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::int64_t> ids;
    for (std::size_t k = 0; k < sizes.size(); ++k) ids.insert(ids.end(), static_cast<std::size_t>(sizes[k]), static_cast<std::int64_t>(k));
    std::shuffle(ids.begin(), ids.end(), rng);
    const index_t n = static_cast<index_t>(ids.size()), groups = static_cast<index_t>(sizes.size());
    if (how != layout_source::dense)  // spread the ids over 64 bits (order-preserving, so groups keep their index)
        for (auto& v : ids) v = v * 0x0000100000000001ll - (std::int64_t{1} << 62);
    const pt::grouping_result hg = how == layout_source::dense ? pt::grouping::from_dense_ids(pt::exec::seq, ids, groups)
                                                             : pt::grouping::from_ids(pt::exec::seq, ids);
    const bool nan_ok = o.nonfinite_rewards != adv::nonfinite::raise;
    const std::vector<T> r = grouped_rewards<T>(hg, seed, nan_ok);
    std::vector<T> want(r.size());
    const pt::group_stats_result hs = call(pt::exec::seq, r, hg, want, o);

    device_vec<std::int64_t> d_ids(ids);
    device_vec<index_t> perm(ids.size()), off(how == layout_source::dense ? sizes.size() + 1 : ids.size() + 1), count(1);
    device_vec<T> dr(r), da(r.size(), T(-12345));
    device_vec<index_t> stats(5, 0);
    device_vec<std::uint32_t> status(1, 0u);
    const auto policy = pt::exec::cuda.with_status(status.data());
    pt::device_permuted_groups layout =
        how == layout_source::dense
            ? pt::grouping::from_dense_ids(policy, d_ids.cview(), groups, perm.view(), off.view())
            : pt::grouping::from_ids(policy, d_ids.cview(), perm.view(), off.view(), count.view());
    if (how == layout_source::ids_stated_small) layout.expected_group_size = 2;
    if (how == layout_source::ids_stated_large) layout.expected_group_size = 1000;  // the block kernel
    call_stats(policy, dr.cview(), layout, da.view(), o, stats.view());
    const double tol = sizeof(T) == 8 ? 1e-12 : 1e-6;
    const std::string w = what + " (N=" + std::to_string(n) + ")";
    pt::test::close_to(da.host(), want, tol, w, permuted_slack(r, hg, o));
    const std::vector<index_t> s = stats.host();
    PT_CHECK_MSG(s[0] == hs.groups, w + ": groups");
    PT_CHECK_MSG(s[1] == hs.empty_groups, w + ": empty");
    PT_CHECK_MSG(s[2] == hs.singleton_groups, w + ": singleton");
    PT_CHECK_MSG(s[3] == hs.zero_variance_groups, w + ": zero variance");
    PT_CHECK_MSG(s[4] == hs.ignored_rows, w + ": ignored rows");
    const std::uint32_t allowed = pt::status_nonfinite_input | pt::status_singleton_group;
    PT_CHECK_MSG((status.host()[0] & ~allowed) == 0u, w + ": status");
}

std::vector<std::pair<const char*, std::vector<index_t>>> size_mixes(bool dense) {
    std::mt19937_64 rng(21);
    const index_t many = quick_size(3000, 200);
    std::vector<index_t> sixteen(static_cast<std::size_t>(many), 16);
    std::vector<index_t> small;
    for (index_t i = 0; i < many; ++i) small.push_back(1 + static_cast<index_t>(rng() % 31));
    std::vector<index_t> mixed;
    const index_t choices[] = {1, 2, 7, 32, 33, 300, 1000, 5000, 1, 2, 3, 16};
    for (int i = 0; i < 60; ++i) mixed.push_back(choices[rng() % 12]);
    std::vector<index_t> outlier(static_cast<std::size_t>(many), 4);
    outlier[77] = 5000;
    std::vector<std::pair<const char*, std::vector<index_t>>> out = {
        {"groups of 16", sixteen}, {"sizes 1..31", small}, {"mixed 1..5000", mixed}, {"tiny + outlier", outlier}};
    if (dense) {  // from_dense_ids keeps empty groups
        std::vector<index_t> holes;
        for (index_t i = 0; i < many; ++i) holes.push_back(static_cast<index_t>(rng() % 24));
        out.push_back({"with empty groups", holes});
    }
    return out;
}

std::vector<std::pair<const char*, adv::grpo_options>> grpo_variants() {
    adv::grpo_options loo;
    loo.leave_one_out = true;
    adv::grpo_options batch;
    batch.std_scale = adv::scale::batch;
    adv::grpo_options pop;
    pop.ddof = pt::ddof::population;
    return {{"default", {}},
            {"verl", adv::grpo_options::verl()},
            {"trl", adv::grpo_options::trl()},
            {"openrlhf", adv::grpo_options::openrlhf()},
            {"dr_grpo", adv::grpo_options::dr_grpo()},
            {"leave_one_out", loo},
            {"batch", batch},
            {"population", pop}};
}

std::vector<std::pair<const char*, adv::rloo_options>> rloo_variants() {
    return {{"default", {}}, {"verl", adv::rloo_options::verl()}, {"openrlhf", adv::rloo_options::openrlhf()}};
}

template <class T>
void outcome_matrix(const char* type) {
    const std::pair<layout_source, const char*> hows[] = {{layout_source::ids_assumed, "from_ids"},
                                                        {layout_source::ids_stated_small, "from_ids size 2"},
                                                        {layout_source::ids_stated_large, "from_ids size 1000"},
                                                        {layout_source::dense, "from_dense_ids"}};
    std::uint64_t seed = 100;
    for (const auto& [how, how_name] : hows)
        for (const auto& [mix, sizes] : size_mixes(how == layout_source::dense)) {
            for (const auto& [name, o] : grpo_variants()) {
                if (pt::test::quick() && std::string(name) != "default" && std::string(name) != "batch") continue;
                compare_outcome<T>(sizes, how, o, std::string("grpo ") + type + " " + how_name + " " + mix + " " + name, ++seed);
            }
            for (const auto& [name, o] : rloo_variants()) {
                if (pt::test::quick() && std::string(name) != "default") continue;
                compare_outcome<T>(sizes, how, o, std::string("rloo ") + type + " " + how_name + " " + mix + " " + name, ++seed);
            }
        }
}

}  // namespace

PT_TEST("grpo/rloo over from_ids layouts, float") { outcome_matrix<float>("float"); }
PT_TEST("grpo/rloo over from_ids layouts, double") { outcome_matrix<double>("double"); }

PT_TEST("from_ids / from_dense_ids + grpo: run-to-run bits, CUDA-graph capture and replay, the host's result") {
    const index_t n = quick_size(index_t{1} << 20, 4096);
    std::mt19937_64 rng(31);
    auto hashed = [&](std::uint64_t mult) {
        return shuffled_ids<std::int64_t>(n, 16, rng(), [&](index_t g) { return static_cast<std::int64_t>(g * mult); });
    };
    auto dense = [&] { return shuffled_ids<std::int64_t>(n, 16, rng(), [](index_t g) { return static_cast<std::int64_t>(g); }); };
    auto rewards_set = [&] {
        std::vector<float> r(static_cast<std::size_t>(n));
        for (auto& v : r) v = static_cast<float>(rng() % 1000) / 7.0f;
        return r;
    };
    pt::test::input_sets<std::int64_t> ids(hashed(0x9E3779B97F4A7C15ull), hashed(0xD1B54A32D192ED03ull));
    pt::test::input_sets<std::int64_t> dense_ids(dense(), dense());
    pt::test::input_sets<float> rewards(rewards_set(), rewards_set());
    const index_t dense_groups = n / 16;
    device_vec<index_t> perm(static_cast<std::size_t>(n)), off(static_cast<std::size_t>(n) + 1), count(1);
    device_vec<index_t> dense_off(static_cast<std::size_t>(dense_groups) + 1);
    device_vec<float> da(static_cast<std::size_t>(n));

    pt::test::graph_case c;
    c.name = "from_ids + grpo";
    c.workspace = pt::grouping::from_ids_workspace_bytes(n);  // grpo's defaults take no scratch
    c.outputs = {pt::test::out_of(perm), pt::test::out_of(off), pt::test::out_of(count), pt::test::out_of(da)};
    c.load = [&](int k) {
        ids.load(k);
        rewards.load(k);
    };
    c.call = [&](const pt::exec::cuda_policy& p) {
        pt::device_permuted_groups layout = pt::grouping::from_ids(p, ids.dev.cview(), perm.view(), off.view(), count.view());
        layout.expected_group_size = 16;
        adv::grpo(p, rewards.dev.cview(), layout, da.view());
    };
    pt::test::graph_replay_both(c);

    pt::test::graph_case d;
    d.name = "from_dense_ids + rloo";
    d.workspace = pt::grouping::from_dense_ids_workspace_bytes(n, dense_groups);
    d.outputs = {pt::test::out_of(perm), pt::test::out_of(dense_off), pt::test::out_of(da)};
    d.load = [&](int k) {
        dense_ids.load(k);
        rewards.load(k);
    };
    d.call = [&](const pt::exec::cuda_policy& p) {
        adv::rloo(p, rewards.dev.cview(),
                  pt::grouping::from_dense_ids(p, dense_ids.dev.cview(), dense_groups, perm.view(), dense_off.view()), da.view());
    };
    pt::test::graph_replay_both(d);

    // And the bits are the host's grouping, the advantages the host's GRPO (input set 0).
    c.load(0);
    c.call(pt::exec::cuda);
    const pt::grouping_result hg = pt::grouping::from_ids(pt::exec::seq, ids.set[0]);
    std::vector<float> want(static_cast<std::size_t>(n));
    (void)adv::grpo(pt::exec::seq, rewards.set[0], hg, want);
    PT_CHECK(same_bits(perm.host(), hg.permutation));
    PT_CHECK(count.host()[0] == hg.num_groups());
    pt::test::close_to(da.host(), want, 1e-6, "from_ids + grpo, set 0");
}

PT_TEST("workspace: exactly from_ids_workspace_bytes works, one byte less throws") {
    const std::vector<std::int32_t> ids = {5, -3, 5, 9, -3, 5};
    device_vec<std::int32_t> d_ids(ids);
    device_vec<index_t> perm(6), off(7), count(1);
    const std::size_t bytes = pt::grouping::from_ids_workspace_bytes(6, 4);
    PT_CHECK(bytes > 0 && bytes <= pt::grouping::from_ids_workspace_bytes(6, 8));
    PT_CHECK(pt::grouping::from_ids_workspace_bytes(0) == 0);
    device_vec<unsigned char> ws(bytes);
    PT_CHECK_THROWS(pt::grouping::from_ids(pt::exec::cuda.with(ws.data(), bytes - 1), d_ids.cview(), perm.view(), off.view(),
                                           count.view()),
                    pt::invalid_argument);
    const std::size_t dense_bytes = pt::grouping::from_dense_ids_workspace_bytes(6, 10);
    device_vec<std::int64_t> d_dense(std::vector<std::int64_t>{1, 0, 9, 1, 2, 2});
    device_vec<index_t> dense_off(11);
    device_vec<unsigned char> dws(dense_bytes);
    PT_CHECK_THROWS(pt::grouping::from_dense_ids(pt::exec::cuda.with(dws.data(), dense_bytes - 1), d_dense.cview(), 10, perm.view(),
                                                 dense_off.view()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pt::grouping::from_ids_workspace_bytes(-1), pt::invalid_argument);
    PT_CHECK_THROWS(pt::grouping::from_ids_workspace_bytes(6, 2), pt::invalid_argument);
}

PT_TEST("host-detectable misuse of from_ids and from_dense_ids") {
    device_vec<std::int64_t> d_ids(std::vector<std::int64_t>{3, 1, 3, 2});
    device_vec<index_t> perm(4), short_perm(3), off(5), short_off(4), count(1), two(2);
    // The policy's workspace over an output, its status word over the ids or an output.
    using pt::test::refuses_policy;
    PT_CHECK(refuses_policy([&] {
        (void)pt::grouping::from_ids(pt::exec::cuda.with(perm.data(), perm.size() * sizeof(index_t)), d_ids.cview(), perm.view(),
                                     off.view(), count.view());
    }, "workspace", "permutation"));
    PT_CHECK(refuses_policy([&] {
        (void)pt::grouping::from_ids(pt::exec::cuda.with_status(reinterpret_cast<std::uint32_t*>(d_ids.data() + 2)), d_ids.cview(),
                                     perm.view(), off.view(), count.view());
    }, "status word", "ids"));
    PT_CHECK(refuses_policy([&] {
        (void)pt::grouping::from_dense_ids(pt::exec::cuda.with_status(reinterpret_cast<std::uint32_t*>(count.data())), d_ids.cview(), 4,
                                           perm.view(), off.view(), count.view());
    }, "status word", "count"));
    PT_CHECK_THROWS(pt::grouping::from_ids(pt::exec::cuda, d_ids.cview(), short_perm.view(), off.view(), count.view()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pt::grouping::from_ids(pt::exec::cuda, d_ids.cview(), perm.view(), short_off.view(), count.view()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pt::grouping::from_ids(pt::exec::cuda, d_ids.cview(), perm.view(), off.view(), two.view()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pt::grouping::from_ids(pt::exec::cuda, d_ids.cview(), perm.view(), off.view(), pt::device_view<index_t, 1>{}),
                    pt::invalid_argument);
    // Overlapping outputs, and strided offsets.
    device_vec<index_t> both(9);
    PT_CHECK_THROWS(pt::grouping::from_ids(pt::exec::cuda, d_ids.cview(), dview(both.data(), 4), dview(both.data() + 3, 5),
                                           count.view()),
                    pt::invalid_argument);
    device_vec<index_t> spread(10);
    const index_t ext[1] = {5}, st[1] = {2};
    PT_CHECK_THROWS(pt::grouping::from_ids(pt::exec::cuda, d_ids.cview(), perm.view(),
                                           pt::device_view<index_t, 1>(spread.data(), ext, st), count.view()),
                    pt::invalid_argument);
    device_vec<std::int64_t> gids(3);
    PT_CHECK_THROWS(pt::grouping::from_ids(pt::exec::cuda, d_ids.cview(), perm.view(), off.view(), count.view(), gids.view()),
                    pt::invalid_argument);
    // Dense: offsets must have num_groups + 1 entries; num_groups in [0, 2^32).
    PT_CHECK_THROWS(pt::grouping::from_dense_ids(pt::exec::cuda, d_ids.cview(), 5, perm.view(), off.view()), pt::invalid_argument);
    PT_CHECK_THROWS(pt::grouping::from_dense_ids(pt::exec::cuda, d_ids.cview(), -1, perm.view(), off.view()), pt::invalid_argument);
    PT_CHECK_THROWS(pt::grouping::from_dense_ids(pt::exec::cuda, d_ids.cview(), index_t{1} << 32, perm.view(), off.view()),
                    pt::invalid_argument);
}

PT_TEST("DLPack ids on a CUDA device, and a CPU tensor rejected") {
    const std::vector<std::int64_t> ids = {7, -2, 7, 7, 0, -2};
    device_vec<std::int64_t> d_ids(ids);
    device_vec<index_t> perm(6), off(7), count(1);
    std::int64_t shape[1] = {6};
    DLTensor t{};
    t.data = d_ids.data();
    t.device = {kDLCUDA, 0};
    t.ndim = 1;
    t.dtype = {kDLInt, 64, 1};
    t.shape = shape;
    (void)pt::grouping::from_ids(pt::exec::cuda, t, perm.view(), off.view(), count.view());
    const pt::grouping_result want = pt::grouping::from_ids(pt::exec::seq, ids);
    PT_CHECK(same_bits(perm.host(), want.permutation));
    PT_CHECK(count.host()[0] == want.num_groups());
    DLTensor cpu = t;
    cpu.device = {kDLCPU, 0};
    PT_CHECK_THROWS(pt::grouping::from_ids(pt::exec::cuda, cpu, perm.view(), off.view(), count.view()), pt::invalid_argument);
}

PT_TEST("broken permuted layouts: status bits on the device, invalid_argument when validated") {
    std::vector<double> r = {1, 2, 3, 4, 5, 6, 7, 9};
    device_vec<double> dr(r), da(r.size(), 0.0);
    const std::vector<index_t> good_off = {0, 3, 8};
    const std::vector<index_t> wild_perm = {0, 1, 2, 3, 4, 5, 6, 100};
    const std::vector<index_t> repeat_perm = {0, 1, 2, 3, 4, 5, 6, 6};
    const std::vector<index_t> good_perm = {7, 0, 3, 1, 2, 4, 5, 6};
    device_vec<index_t> d_off(good_off), d_wild(wild_perm), d_repeat(repeat_perm), d_good(good_perm);
    {  // a permutation entry out of range
        device_vec<std::uint32_t> status(1, 0u);
        adv::grpo(pt::exec::cuda.with_status(status.data()), dr.cview(),
                  pt::device_permuted_groups{d_wild.cview(), d_off.cview(), {}, 0}, da.view());
        PT_CHECK((status.host()[0] & pt::status_invalid_groups) != 0);
        PT_CHECK_THROWS(adv::grpo(pt::exec::cuda.validated(), dr.cview(), pt::device_permuted_groups{d_wild.cview(), d_off.cview(), {}, 0},
                                  da.view()),
                        pt::invalid_argument);
        PT_CHECK_THROWS(adv::grpo(pt::exec::cuda.validated(), dr.cview(),
                                  pt::device_permuted_groups{d_repeat.cview(), d_off.cview(), {}, 0}, da.view()),
                        pt::invalid_argument);
    }
    for (index_t bad_count : {index_t{-1}, index_t{0}, index_t{9}}) {  // device counts out of range, or none for 8 rows
        device_vec<index_t> off9(std::vector<index_t>{0, 3, 8, 8, 8, 8, 8, 8, 8}), cnt(1, bad_count);
        device_vec<std::uint32_t> status(1, 0u);
        adv::grpo(pt::exec::cuda.with_status(status.data()), dr.cview(),
                  pt::device_permuted_groups{d_good.cview(), off9.cview(), cnt.cview(), 0}, da.view());
        PT_CHECK_MSG((status.host()[0] & pt::status_invalid_groups) != 0, "count " + std::to_string(bad_count));
        PT_CHECK_THROWS(adv::grpo(pt::exec::cuda.validated(), dr.cview(),
                                  pt::device_permuted_groups{d_good.cview(), off9.cview(), cnt.cview(), 0}, da.view()),
                        pt::invalid_argument);
    }
    {  // a good layout with a device count of 2 inside a capacity of 8 groups
        device_vec<index_t> off9(std::vector<index_t>{0, 3, 8, -5, 99, -1, 0, 0, 0}), cnt(1, 2);
        device_vec<std::uint32_t> status(1, 0u);
        adv::grpo(pt::exec::cuda.validated().with_status(status.data()), dr.cview(),
                  pt::device_permuted_groups{d_good.cview(), off9.cview(), cnt.cview(), 0}, da.view());
        PT_CHECK(status.host()[0] == 0u);
        const pt::permuted_groups host{pt::tensor_view<const index_t, 1>(good_perm.data(), 8),
                                       pt::tensor_view<const index_t, 1>(good_off.data(), 3)};
        std::vector<double> want(r.size());
        (void)adv::grpo(pt::exec::seq, r, host, want);
        pt::test::close_to(da.host(), want, 1e-12, "device count 2 of 8");
    }
    // Host-visible shape errors.
    device_vec<index_t> short_perm(7), two(2);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), pt::device_permuted_groups{short_perm.cview(), d_off.cview(), {}, 0}, da.view()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), pt::device_permuted_groups{d_good.cview(), d_off.cview(), two.cview(), 0},
                              da.view()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), pt::device_permuted_groups{d_good.cview(), d_off.cview(), {}, -1}, da.view()),
                    pt::invalid_argument);
}

namespace {

// Host GRPO over the permuted layout {permutation, offsets} of r.
template <class T>
std::vector<T> host_permuted_grpo(const std::vector<T>& r, const std::vector<index_t>& permutation,
                                  const std::vector<index_t>& offsets) {
    const pt::permuted_groups host{pt::tensor_view<const index_t, 1>(permutation.data(), static_cast<index_t>(permutation.size())),
                                   pt::tensor_view<const index_t, 1>(offsets.data(), static_cast<index_t>(offsets.size()))};
    std::vector<T> want(r.size());
    (void)adv::grpo(pt::exec::seq, r, host, want);
    return want;
}

template <class T>
void check_wild_entry_reads_zero(const char* type) {
    // Groups {0, 1, 2} and {3, 4, 5, 6, <100>}: position 7 holds no row. The host count gives a mean
    // of 4 rows, hence the staged tile kernel; expected_group_size = 1000 gives the block kernel,
    // which reads global memory.
    const std::vector<T> r = {1, 2, 3, 4, 5, 6, 7, 9};
    const std::vector<index_t> off = {0, 3, 8}, wild = {0, 1, 2, 3, 4, 5, 6, 100}, identity = {0, 1, 2, 3, 4, 5, 6, 7};
    std::vector<T> zeroed = r;
    zeroed[7] = T(0);  // the entry's value in its group ...
    std::vector<T> want = host_permuted_grpo(zeroed, identity, off);
    want[7] = T(-12345);  // ... and row 7, which no valid entry names, is never written
    device_vec<T> dr(r);
    device_vec<index_t> d_off(off), d_wild(wild);
    for (index_t stated : {index_t{0}, index_t{1000}}) {
        const std::string w = std::string("wild entry, ") + type + (stated ? ", block kernel" : ", staged tile kernel");
        std::vector<T> runs[2];
        for (auto& got : runs) {
            device_vec<T> da(r.size(), T(-12345));
            device_vec<std::uint32_t> status(1, 0u);
            adv::grpo(pt::exec::cuda.with_status(status.data()), dr.cview(),
                      pt::device_permuted_groups{d_wild.cview(), d_off.cview(), {}, stated}, da.view());
            got = da.host();
            // Exactly the layout's bit: a stale NaN in shared memory would have added status_nonfinite_input.
            PT_CHECK_MSG(status.host()[0] == pt::status_invalid_groups, w + ": status");
        }
        pt::test::close_to(runs[0], want, sizeof(T) == 8 ? 1e-12 : 1e-6, w);
        PT_CHECK_MSG(same_bits(runs[0], runs[1]), w + ": run-to-run bits");
    }
}

}  // namespace

PT_TEST("broken permuted layouts: an entry outside [0, N) counts as 0 on the staged and the global paths, the same bits every run") {
    check_wild_entry_reads_zero<double>("double");  // staged in place
    check_wild_entry_reads_zero<float>("float");
}

PT_TEST("from_dense_ids with ids out of range + grpo: status_invalid_groups, the last group skipped, the others the host's") {
    // Ids 4 and -2 are outside [0, 3): their rows (2, 5) go after every group, so offsets[3] = 7 < 9
    // and group 2 (rows 7, 8) is not a CSR range ending at N.
    const std::vector<std::int64_t> ids = {1, 0, 4, 1, 0, -2, 1, 2, 2};
    const std::vector<double> r = {0.5, 2, 7, 1.5, -1, 3, 4, 8, 6};
    const index_t groups = 3;
    device_vec<std::int64_t> d_ids(ids);
    device_vec<double> dr(r);
    device_vec<index_t> perm(ids.size(), -7), off(4, -7);
    for (index_t stated : {index_t{0}, index_t{1000}}) {  // tile kernel (its fallback), block kernel
        const std::string w = stated ? "dense ids out of range, block kernel" : "dense ids out of range, tile kernel";
        device_vec<double> da(r.size(), -12345.0);
        device_vec<std::uint32_t> status(1, 0u);
        const auto policy = pt::exec::cuda.with_status(status.data());
        pt::device_permuted_groups layout =
            pt::grouping::from_dense_ids(policy, d_ids.cview(), groups, perm.view(), off.view());
        layout.expected_group_size = stated;
        adv::grpo(policy, dr.cview(), layout, da.view());
        const std::vector<index_t> p = perm.host();
        PT_CHECK_MSG(same_bits(off.host(), std::vector<index_t>{0, 2, 5, 7}), w + ": offsets");
        PT_CHECK_MSG(same_bits(p, std::vector<index_t>{1, 4, 0, 3, 6, 7, 8, 2, 5}), w + ": permutation");
        const std::uint32_t s = status.host()[0];
        PT_CHECK_MSG(s == (pt::status_id_out_of_range | pt::status_invalid_groups), w + ": status " + std::to_string(s));
        // Groups 0 and 1 as on the host; group 2 and the out-of-range rows left as they were.
        std::vector<double> want = host_permuted_grpo(r, p, std::vector<index_t>{0, 2, 5, 9});
        for (index_t row : {7, 8, 2, 5}) want[std::size_t(row)] = -12345.0;
        pt::test::close_to(da.host(), want, 1e-12, w);
    }
}

PT_TEST("strided ids, permutation, group ids, rewards and advantages over a from_ids layout") {
    // Groups of 16 plus a few of 300 (the block kernel under a large stated size).
    std::vector<index_t> sizes(static_cast<std::size_t>(quick_size(500, 60)), 16);
    for (int i = 0; i < 4; ++i) sizes[std::size_t(i) * 7] = 300;
    std::mt19937_64 rng(41);
    std::vector<std::int64_t> ids;
    for (std::size_t k = 0; k < sizes.size(); ++k)
        ids.insert(ids.end(), static_cast<std::size_t>(sizes[k]), static_cast<std::int64_t>(k * 0x9E3779B97F4A7C15ull));
    std::shuffle(ids.begin(), ids.end(), rng);
    const index_t n = static_cast<index_t>(ids.size());
    const pt::grouping_result hg = pt::grouping::from_ids(pt::exec::seq, ids);
    std::vector<float> r = grouped_rewards<float>(hg, 42, false);
    std::vector<float> want(r.size());
    (void)adv::grpo(pt::exec::seq, r, hg, want);

    // ids every 3rd entry, the permutation and group ids every 2nd, rewards every 2nd, advantages every 3rd.
    auto spread = [](const auto& v, index_t step, auto fill) {
        std::vector<std::remove_cvref_t<decltype(v[0])>> out(v.size() * static_cast<std::size_t>(step), fill);
        for (std::size_t i = 0; i < v.size(); ++i) out[i * static_cast<std::size_t>(step)] = v[i];
        return out;
    };
    device_vec<std::int64_t> d_ids(spread(ids, 3, std::int64_t{-1})), gids(2 * ids.size(), -7);
    device_vec<index_t> perm(2 * ids.size(), -7), off(ids.size() + 1, -7), count(1, -7);
    device_vec<float> dr(spread(r, 2, 1e30f));
    const index_t n1[1] = {n}, s2[1] = {2}, s3[1] = {3};
    const pt::device_view<const std::int64_t, 1> ids_v(d_ids.data(), n1, s3);
    const pt::device_view<index_t, 1> perm_v(perm.data(), n1, s2);
    const pt::device_view<std::int64_t, 1> gids_v(gids.data(), n1, s2);
    const pt::device_view<const float, 1> r_v(dr.data(), n1, s2);
    pt::device_permuted_groups layout = pt::grouping::from_ids(pt::exec::cuda, ids_v, perm_v, off.view(), count.view(), gids_v);
    const std::vector<index_t> p = perm.host();
    const std::vector<std::int64_t> g = gids.host();
    PT_CHECK(count.host()[0] == hg.num_groups());
    bool perm_ok = true, gids_ok = true;
    for (index_t i = 0; i < n; ++i) perm_ok &= p[std::size_t(2 * i)] == hg.permutation[std::size_t(i)] && p[std::size_t(2 * i + 1)] == -7;
    for (index_t k = 0; k < hg.num_groups(); ++k) gids_ok &= g[std::size_t(2 * k)] == hg.ids[std::size_t(k)] && g[std::size_t(2 * k + 1)] == -7;
    PT_CHECK_MSG(perm_ok, "strided permutation");
    PT_CHECK_MSG(gids_ok, "strided group ids");
    for (index_t stated : {index_t{0}, index_t{16}, index_t{1000}}) {  // assumed 32, stated 16 (tile kernels), block kernel
        const std::string w = "strided, expected_group_size " + std::to_string(stated);
        layout.expected_group_size = stated;
        device_vec<float> da(3 * ids.size(), -12345.0f);
        device_vec<std::uint32_t> status(1, 0u);
        adv::grpo(pt::exec::cuda.with_status(status.data()), r_v, layout, pt::device_view<float, 1>(da.data(), n1, s3));
        const std::vector<float> got = da.host();
        std::vector<float> rows(r.size());
        bool gaps = true;
        for (index_t i = 0; i < n; ++i) {
            rows[std::size_t(i)] = got[std::size_t(3 * i)];
            gaps &= got[std::size_t(3 * i + 1)] == -12345.0f && got[std::size_t(3 * i + 2)] == -12345.0f;
        }
        pt::test::close_to(rows, want, 1e-6, w);
        PT_CHECK_MSG(gaps, w + ": nothing written between the strided advantages");
        PT_CHECK_MSG(status.host()[0] == 0u, w + ": status");
    }
}

PT_TEST("from_ids hands the outcome kernels N + 1 offsets of a larger buffer") {
    const std::vector<std::int64_t> ids = {4, 9, 4, 4, 9, 1};
    const std::vector<double> r = {1, 2, 3, 5, 8, 13};
    device_vec<std::int64_t> d_ids(ids);
    device_vec<index_t> perm(6), off(64, -7), count(1);
    device_vec<double> dr(r), da(6, -1.0);
    const pt::device_permuted_groups layout = pt::grouping::from_ids(pt::exec::cuda, d_ids.cview(), perm.view(), off.view(), count.view());
    PT_CHECK(layout.offsets.data() == off.data() && layout.offsets.extent(0) == 7);
    adv::grpo(pt::exec::cuda, dr.cview(), layout, da.view());
    std::vector<double> want(r.size());
    (void)adv::grpo(pt::exec::seq, r, pt::grouping::from_ids(pt::exec::seq, ids), want);
    pt::test::close_to(da.host(), want, 1e-12, "from_ids with a 64-entry offsets buffer");
}

PT_TEST("outputs overlapping the layout they are computed over, and a misaligned workspace, throw invalid_argument") {
    const std::vector<index_t> good_perm = {7, 0, 3, 1, 2, 4, 5, 6}, good_off = {0, 3, 8};
    device_vec<double> dr(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 9});
    device_vec<index_t> d_perm(good_perm), d_off(good_off), cnt(1, 2);
    // One buffer of 8 doubles, also seen as index_t layout buffers.
    device_vec<double> buf(8, 0.0);
    index_t* as_index = reinterpret_cast<index_t*>(buf.data());
    using layout_t = pt::device_permuted_groups;
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), layout_t{dview<const index_t>(as_index, 8), d_off.cview(), {}, 0}, buf.view()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), layout_t{d_perm.cview(), dview<const index_t>(as_index + 5, 3), {}, 0}, buf.view()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), layout_t{d_perm.cview(), d_off.cview(), dview<const index_t>(as_index + 7, 1), 0},
                              buf.view()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::rloo(pt::exec::cuda, dr.cview(), pt::ragged(dview<const index_t>(as_index + 2, 3)), buf.view()), pt::invalid_argument);
    // The stats counters, and the status word, over the count.
    device_vec<index_t> stats(5, 0);
    device_vec<double> da(8, 0.0);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), layout_t{d_perm.cview(), d_off.cview(), dview<const index_t>(stats.data() + 4, 1), 0},
                              da.view(), adv::grpo_options{}, stats.view()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda.with_status(reinterpret_cast<std::uint32_t*>(cnt.data())), dr.cview(),
                              layout_t{d_perm.cview(), d_off.cview(), cnt.cview(), 0}, da.view()),
                    pt::invalid_argument);
    // Separate buffers are fine (and leave the counters and the status word consistent).
    device_vec<std::uint32_t> status(1, 0u);
    adv::grpo(pt::exec::cuda.with_status(status.data()), dr.cview(), layout_t{d_perm.cview(), d_off.cview(), cnt.cview(), 0}, da.view(),
              adv::grpo_options{}, stats.view());
    PT_CHECK(status.host()[0] == 0u && stats.host()[0] == 2);

    // A workspace 8 bytes past cudaMalloc's alignment.
    const std::vector<std::int64_t> ids = {3, 1, 3, 2};
    device_vec<std::int64_t> d_ids(ids);
    device_vec<index_t> perm(4), off(5), count(1);
    const std::size_t bytes = pt::grouping::from_ids_workspace_bytes(4);
    device_vec<unsigned char> ws(bytes + 256);
    PT_CHECK_THROWS(pt::grouping::from_ids(pt::exec::cuda.with(ws.data() + 8, bytes), d_ids.cview(), perm.view(), off.view(), count.view()),
                    pt::invalid_argument);
    adv::grpo_options batch;
    batch.std_scale = adv::scale::batch;
    const std::size_t grpo_bytes = adv::grpo_workspace_bytes(8, batch);
    device_vec<unsigned char> gws(grpo_bytes + 256);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda.with(gws.data() + 4, grpo_bytes), dr.cview(), pt::uniform_groups{4}, da.view(), batch),
                    pt::invalid_argument);
    adv::grpo(pt::exec::cuda.with(gws.data() + 256, grpo_bytes), dr.cview(), pt::uniform_groups{4}, da.view(), batch);  // aligned: fine
    (void)pt::grouping::from_ids(pt::exec::cuda.with(ws.data() + 256, bytes), d_ids.cview(), perm.view(), off.view(), count.view());
    PT_CHECK(count.host()[0] == 3);
}
