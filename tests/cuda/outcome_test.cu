// GRPO and RLOO on exec::cuda against the host oracle (exec::seq): uniform and ragged layouts,
// float and double, group sizes 0..5000 (uniform tiles with register teams of 1..32 lanes, ragged
// tiles with looping teams and their deferred fallback, block per group in registers and
// looping), empty, singleton and zero-variance groups, NaN rewards, every framework preset; plus
// run-to-run determinism, the policy's workspace, status word, validation and DLPack inputs.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.cuh>
#include <posttrain/advantage/rloo.cuh>

#include "support.cuh"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::index_t;
using pt::test::device_vec;

namespace {

// Rewards per group: continuous, binary (often zero-variance) or constant, plus optional NaNs.
template <class T>
std::vector<T> make_rewards(const std::vector<std::int64_t>& offsets, std::uint64_t seed, bool with_nan) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.5, 2.0);
    std::vector<T> r(static_cast<std::size_t>(offsets.back()));
    for (std::size_t g = 0; g + 1 < offsets.size(); ++g) {
        const int pattern = static_cast<int>(rng() % 3);
        const double c = normal(rng);
        for (auto i = offsets[g]; i < offsets[g + 1]; ++i) {
            double v = pattern == 0 ? normal(rng) : pattern == 1 ? double(rng() % 2) : c;
            if (with_nan && rng() % 11 == 0) v = std::nan("");
            r[static_cast<std::size_t>(i)] = static_cast<T>(v);
        }
    }
    return r;
}

std::vector<std::int64_t> uniform_offsets(index_t k, index_t groups) {
    std::vector<std::int64_t> off(static_cast<std::size_t>(groups) + 1);
    for (index_t g = 0; g <= groups; ++g) off[static_cast<std::size_t>(g)] = g * k;
    return off;
}

std::vector<std::int64_t> offsets_from_sizes(const std::vector<index_t>& sizes) {
    std::vector<std::int64_t> off{0};
    for (index_t s : sizes) off.push_back(off.back() + s);
    return off;
}

template <class Options>
adv::nonfinite nonfinite_of(const Options& o) {
    return o.nonfinite_rewards;
}

template <class Options, class Policy, class R, class G, class A>
auto call(const Policy& p, const R& r, const G& g, A&& a, const Options& o) {
    if constexpr (std::is_same_v<Options, adv::grpo_options>) return adv::grpo(p, r, g, a, o);
    else return adv::rloo(p, r, g, a, o);
}
template <class Options, class R, class G, class A>
void call_stats(const R& r, const G& g, A&& a, const Options& o, pt::device_view<index_t, 1> stats) {
    if constexpr (std::is_same_v<Options, adv::grpo_options>) adv::grpo(pt::exec::cuda, r, g, a, o, stats);
    else adv::rloo(pt::exec::cuda, r, g, a, o, stats);
}

// Under zero_variance::arithmetic a constant group's advantages are rounding residues,
// (c - fl(mean)) / (0 + eps): their value depends on the summation order, which differs between
// backends. Those rows may differ by a few ulps of the group's magnitude divided by epsilon.
template <class T, class Options>
std::vector<double> arithmetic_slack(const std::vector<T>& r, const std::vector<std::int64_t>& offsets, const Options& o) {
    std::vector<double> slack(r.size(), 0.0);
    if (o.zero_variance_groups != adv::zero_variance::arithmetic) return slack;
    double eps = 0;
    if constexpr (std::is_same_v<Options, adv::grpo_options>) eps = o.std_scale == adv::scale::group ? o.epsilon : 0.0;
    for (std::size_t g = 0; g + 1 < offsets.size(); ++g) {
        double lo = 1e300, hi = -1e300;
        for (auto i = offsets[g]; i < offsets[g + 1]; ++i)
            if (r[std::size_t(i)] == r[std::size_t(i)]) {
                lo = std::min<double>(lo, r[std::size_t(i)]);
                hi = std::max<double>(hi, r[std::size_t(i)]);
            }
        if (lo != hi) continue;
        const double residue = 64 * 2.220446049250313e-16 * std::fabs(lo) * double(offsets[g + 1] - offsets[g]);
        for (auto i = offsets[g]; i < offsets[g + 1]; ++i) slack[std::size_t(i)] = eps > 0 ? residue / eps : residue;
    }
    return slack;
}

// Runs one configuration on both paths and compares advantages and group counters.
template <class T, class Options>
void compare(const std::vector<std::int64_t>& offsets, index_t uniform_k, const Options& o, const std::string& what,
             std::uint64_t seed = 1) {
    const bool nan_ok = nonfinite_of(o) != adv::nonfinite::raise;
    const std::vector<T> r = make_rewards<T>(offsets, seed, nan_ok);
    const index_t n = static_cast<index_t>(r.size());
    std::vector<T> want(r.size());
    pt::group_stats_result hs;
    if (uniform_k > 0) hs = call(pt::exec::seq, r, pt::uniform_groups{uniform_k}, want, o);
    else hs = call(pt::exec::seq, r, pt::ragged(offsets), want, o);

    device_vec<T> dr(r), da(r.size(), T(-12345));
    device_vec<index_t> stats(5, 0);
    device_vec<std::int64_t> doff(offsets);
    if (uniform_k > 0) call_stats(dr.cview(), pt::uniform_groups{uniform_k}, da.view(), o, stats.view());
    else call_stats(dr.cview(), pt::ragged(doff.cview()), da.view(), o, stats.view());
    const double tol = sizeof(T) == 8 ? 1e-12 : 1e-6;
    pt::test::close_to(da.host(), want, tol, what + " (N=" + std::to_string(n) + ")", arithmetic_slack(r, offsets, o));
    const std::vector<index_t> s = stats.host();
    PT_CHECK_MSG(s[0] == hs.groups, what);
    PT_CHECK_MSG(s[1] == hs.empty_groups, what);
    PT_CHECK_MSG(s[2] == hs.singleton_groups, what);
    PT_CHECK_MSG(s[3] == hs.zero_variance_groups, what);  // a NaN makes a group non-constant on both paths
    PT_CHECK_MSG(s[4] == hs.ignored_rows, what);
}

struct named_grpo {
    const char* name;
    adv::grpo_options o;
};

std::vector<named_grpo> grpo_variants() {
    adv::grpo_options loo;
    loo.leave_one_out = true;
    adv::grpo_options batch;
    batch.std_scale = adv::scale::batch;
    adv::grpo_options pop;
    pop.ddof = pt::ddof::population;
    adv::grpo_options raw_batch = adv::grpo_options::verl();
    raw_batch.std_scale = adv::scale::batch;
    return {{"default", {}},
            {"verl", adv::grpo_options::verl()},
            {"verl(no std)", adv::grpo_options::verl(false)},
            {"trl", adv::grpo_options::trl()},
            {"trl(batch)", adv::grpo_options::trl(adv::scale::batch)},
            {"openrlhf", adv::grpo_options::openrlhf()},
            {"dr_grpo", adv::grpo_options::dr_grpo()},
            {"leave_one_out", loo},
            {"batch", batch},
            {"verl raw singleton + batch", raw_batch},
            {"population", pop}};
}

struct named_rloo {
    const char* name;
    adv::rloo_options o;
};

std::vector<named_rloo> rloo_variants() {
    return {{"default", {}},
            {"verl", adv::rloo_options::verl()},
            {"verl_vectorized", adv::rloo_options::verl_vectorized()},
            {"openrlhf", adv::rloo_options::openrlhf()},
            {"trl", adv::rloo_options::trl()}};
}

// Tile kernel with teams of 1, 2, 4, 8 and 32 lanes (sizes 1..256), block kernel with registers
// (257..4096) and looping (5000).
const index_t group_sizes[] = {1, 2, 4, 7, 16, 32, 33, 256, 257, 1000, 4096, 5000};

template <class T>
void uniform_matrix(const char* type) {
    for (index_t k : group_sizes) {
        const index_t groups = k >= 1000 ? 7 : 20000 / k / 4 + 3;  // several tiles, the last one partial
        const auto off = uniform_offsets(k, groups);
        for (const auto& v : grpo_variants())
            compare<T>(off, k, v.o, std::string("grpo ") + type + " uniform k=" + std::to_string(k) + " " + v.name, k);
        for (const auto& v : rloo_variants())
            compare<T>(off, k, v.o, std::string("rloo ") + type + " uniform k=" + std::to_string(k) + " " + v.name, k);
    }
}

// Ragged layouts: the hybrid warp + block path, the block-only path, and tiny groups with an outlier.
std::vector<std::pair<const char*, std::vector<std::int64_t>>> ragged_layouts() {
    std::mt19937_64 rng(7);
    std::vector<index_t> mixed;
    const index_t choices[] = {0, 1, 2, 7, 32, 33, 1000, 5000, 0, 1, 2, 3};
    for (int i = 0; i < 60; ++i) mixed.push_back(choices[rng() % 12]);
    std::vector<index_t> large = {5000, 0, 3000, 1025, 1, 4096, 0, 2000};
    std::vector<index_t> tiny;
    for (int i = 0; i < 3000; ++i) tiny.push_back(static_cast<index_t>(rng() % 4));
    tiny[1234] = 5000;
    std::vector<index_t> all_empty = {0, 0, 0};
    // Mean ~16 (ragged tiles, teams of 2 lanes for float, 4 for double), with empty groups.
    std::vector<index_t> small;
    for (int i = 0; i < 3000; ++i) small.push_back(static_cast<index_t>(rng() % 32));
    // Mean ~50 (teams of 8 or 16 lanes) with a 500-row group inside a staged tile.
    std::vector<index_t> medium;
    for (int i = 0; i < 600; ++i) medium.push_back(static_cast<index_t>(rng() % 100));
    medium[100] = 500;
    return {{"mixed", offsets_from_sizes(mixed)},
            {"large", offsets_from_sizes(large)},
            {"tiny+outlier", offsets_from_sizes(tiny)},
            {"small", offsets_from_sizes(small)},
            {"medium", offsets_from_sizes(medium)},
            {"all empty", offsets_from_sizes(all_empty)},
            {"no groups", {0}}};
}

template <class T>
void ragged_matrix(const char* type) {
    for (const auto& [name, off] : ragged_layouts()) {
        for (const auto& v : grpo_variants())
            compare<T>(off, 0, v.o, std::string("grpo ") + type + " ragged " + name + " " + v.name, off.size());
        for (const auto& v : rloo_variants())
            compare<T>(off, 0, v.o, std::string("rloo ") + type + " ragged " + name + " " + v.name, off.size());
    }
}

}  // namespace

PT_TEST("grpo/rloo uniform float") { uniform_matrix<float>("float"); }
PT_TEST("grpo/rloo uniform double") { uniform_matrix<double>("double"); }
PT_TEST("grpo/rloo ragged float") { ragged_matrix<float>("float"); }
PT_TEST("grpo/rloo ragged double") { ragged_matrix<double>("double"); }

PT_TEST("run-to-run determinism: bit-identical advantages") {
    std::mt19937_64 rng(11);
    std::vector<index_t> sizes;
    for (int i = 0; i < 5000; ++i) sizes.push_back(static_cast<index_t>(rng() % 32));
    sizes[77] = 3000;
    const auto off = offsets_from_sizes(sizes);
    const auto r = make_rewards<float>(off, 9, false);
    device_vec<float> dr(r), a1(r.size()), a2(r.size()), u1(4096 * 8), u2(4096 * 8);
    device_vec<std::int64_t> doff(off);
    const auto ur = make_rewards<float>(uniform_offsets(4096, 8), 10, false);
    device_vec<float> dur(ur);
    for (auto* a : {&a1, &a2}) adv::grpo(pt::exec::cuda, dr.cview(), pt::ragged(doff.cview()), a->view());
    for (auto* a : {&u1, &u2}) adv::grpo(pt::exec::cuda, dur.cview(), pt::uniform_groups{4096}, a->view());
    const auto h1 = a1.host(), h2 = a2.host(), v1 = u1.host(), v2 = u2.host();
    PT_CHECK(std::memcmp(h1.data(), h2.data(), h1.size() * sizeof(float)) == 0);
    PT_CHECK(std::memcmp(v1.data(), v2.data(), v1.size() * sizeof(float)) == 0);
}

PT_TEST("grpo mixed precision: float rewards, double advantages") {
    const auto off = uniform_offsets(16, 100);
    const auto r = make_rewards<float>(off, 3, false);
    std::vector<double> want(r.size());
    (void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{16}, want);
    device_vec<float> dr(r);
    device_vec<double> da(r.size());
    adv::grpo(pt::exec::cuda, dr.cview(), pt::uniform_groups{16}, da.view());
    pt::test::close_to(da.host(), want, 1e-12, "float -> double");
}

PT_TEST("grpo strided views and a caller stream") {
    const auto off = uniform_offsets(8, 64);
    const auto r = make_rewards<double>(off, 4, false);
    std::vector<double> want(r.size());
    (void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{8}, want);
    std::vector<double> spread(r.size() * 2, 0.0);
    for (std::size_t i = 0; i < r.size(); ++i) spread[2 * i] = r[i];
    device_vec<double> dr(spread), da(r.size() * 3, 0.0);
    const index_t n = static_cast<index_t>(r.size());
    const index_t ext[1] = {n}, s2[1] = {2}, s3[1] = {3};
    cudaStream_t stream;
    POSTTRAIN_CUDA_CHECK(cudaStreamCreate(&stream));
    adv::grpo(pt::exec::cuda.on(stream), pt::device_view<const double, 1>(dr.data(), ext, s2), pt::uniform_groups{8},
              pt::device_view<double, 1>(da.data(), ext, s3));
    POSTTRAIN_CUDA_CHECK(cudaStreamSynchronize(stream));
    POSTTRAIN_CUDA_CHECK(cudaStreamDestroy(stream));
    const auto h = da.host();
    std::vector<double> got(r.size());
    for (std::size_t i = 0; i < r.size(); ++i) got[i] = h[3 * i];
    pt::test::close_to(got, want, 1e-12, "strided");
}

PT_TEST("grpo scale::batch with a caller workspace, and a too-small one") {
    adv::grpo_options o;
    o.std_scale = adv::scale::batch;
    const std::size_t bytes = adv::grpo_workspace_bytes(4096, o);
    PT_CHECK(bytes > 0);
    PT_CHECK(adv::grpo_workspace_bytes(4096, adv::grpo_options{}) == 0);
    PT_CHECK(adv::rloo_workspace_bytes(4096) == 0);
    const auto off = uniform_offsets(16, 256);
    const auto r = make_rewards<double>(off, 5, false);
    std::vector<double> want(r.size());
    (void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{16}, want, o);
    device_vec<double> dr(r), da(r.size());
    device_vec<unsigned char> ws(bytes);
    adv::grpo(pt::exec::cuda.with(pt::device_view<std::byte, 1>(reinterpret_cast<std::byte*>(ws.data()), index_t(bytes))),
              dr.cview(), pt::uniform_groups{16}, da.view(), o);
    pt::test::close_to(da.host(), want, 1e-12, "batch with workspace");
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda.with(ws.data(), bytes - 1), dr.cview(), pt::uniform_groups{16}, da.view(), o),
                    pt::invalid_argument);
}

PT_TEST("status word: non-finite rewards under nonfinite::raise") {
    std::vector<float> r = {1, 2, 3, 4, std::nanf(""), 6, 7, 8};
    device_vec<float> dr(r), da(r.size());
    device_vec<std::uint32_t> status(1, 0u);
    adv::grpo(pt::exec::cuda.with_status(status.data()), dr.cview(), pt::uniform_groups{4}, da.view());
    PT_CHECK((status.host()[0] & pt::status_nonfinite_input) != 0);
    std::vector<float> clean = {1, 2, 3, 4, 5, 6, 7, 8};
    device_vec<float> dc(clean);
    device_vec<std::uint32_t> status2(1, 0u);
    adv::grpo(pt::exec::cuda.with_status(status2.data()), dc.cview(), pt::uniform_groups{4}, da.view());
    PT_CHECK(status2.host()[0] == 0u);
}

PT_TEST("bad ragged offsets: status bit on the device, invalid_argument when validated") {
    const std::vector<std::int64_t> bad = {0, 3, 2, 8};      // decreasing
    const std::vector<std::int64_t> short_end = {0, 3, 6};   // offsets[G] != N
    const std::vector<std::int64_t> wild = {0, 1000000, 8};  // out of range
    std::vector<double> r(8, 1.0);
    r[1] = 2.0;
    device_vec<double> dr(r), da(r.size(), 0.0);
    for (const auto* off : {&bad, &short_end, &wild}) {
        device_vec<std::int64_t> doff(*off);
        device_vec<std::uint32_t> status(1, 0u);
        adv::grpo(pt::exec::cuda.with_status(status.data()), dr.cview(), pt::ragged(doff.cview()), da.view());
        PT_CHECK((status.host()[0] & pt::status_invalid_groups) != 0);
        PT_CHECK_THROWS(adv::grpo(pt::exec::cuda.validated(), dr.cview(), pt::ragged(doff.cview()), da.view()),
                        pt::invalid_argument);
    }
    const std::vector<std::int64_t> good = {0, 3, 3, 8};
    device_vec<std::int64_t> doff(good);
    device_vec<std::uint32_t> status(1, 0u);
    adv::grpo(pt::exec::cuda.validated().with_status(status.data()), dr.cview(), pt::ragged(doff.cview()), da.view());
    PT_CHECK(status.host()[0] == 0u);
    const std::vector<std::int64_t> none = {0};
    device_vec<std::int64_t> dnone(none);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), pt::ragged(dnone.cview()), da.view()), pt::invalid_argument);
}

PT_TEST("host-detectable misuse throws before launching") {
    device_vec<float> dr(std::vector<float>(8, 1.0f)), da(8), small(7);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), pt::uniform_groups{3}, da.view()), pt::invalid_argument);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), pt::uniform_groups{4}, small.view()), pt::invalid_argument);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), pt::uniform_groups{4}, dr.view()), pt::invalid_argument);
    adv::grpo_options f32_batch = adv::grpo_options::verl_vectorized();
    f32_batch.std_scale = adv::scale::batch;  // float32_one_pass reproduces verl's group_mean_std only
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), pt::uniform_groups{4}, da.view(), f32_batch), pt::invalid_argument);
    adv::grpo_options err;
    err.singleton_groups = adv::singleton::error;
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), pt::uniform_groups{1}, da.view(), err), pt::invalid_argument);
    // The counters or the status word over the rewards or the advantages (written with atomics while
    // other blocks read and write them).
    const adv::grpo_options o;
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), pt::uniform_groups{4}, da.view(), o,
                              pt::device_view<pt::index_t, 1>(reinterpret_cast<pt::index_t*>(da.data()), 5)),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda.with_status(reinterpret_cast<std::uint32_t*>(dr.data() + 2)), dr.cview(),
                              pt::uniform_groups{4}, da.view()),
                    pt::invalid_argument);
    device_vec<pt::index_t> counters(5);
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda.with_status(reinterpret_cast<std::uint32_t*>(counters.data())), dr.cview(),
                              pt::uniform_groups{4}, da.view(), o, counters.view()),
                    pt::invalid_argument);
    // The policy's workspace over an output, its status word over an input or the layout, or the
    // status word inside the workspace: refused, naming the policy and what it overlaps.
    using pt::test::refuses_policy;
    adv::grpo_options batch;
    batch.std_scale = adv::scale::batch;
    device_vec<std::byte> big(adv::grpo_workspace_bytes(8, batch) + 256);
    PT_CHECK(refuses_policy([&] { adv::grpo(pt::exec::cuda.with(da.data(), 8 * sizeof(float)), dr.cview(), pt::uniform_groups{4},
                                            da.view(), batch); },
                            "workspace", "advantages"));
    PT_CHECK(refuses_policy([&] { adv::grpo(pt::exec::cuda.with_status(reinterpret_cast<std::uint32_t*>(dr.data() + 2)), dr.cview(),
                                            pt::uniform_groups{4}, da.view()); },
                            "status word", "rewards"));
    device_vec<std::int64_t> bounds(std::vector<std::int64_t>{0, 4, 8});
    PT_CHECK(refuses_policy([&] { adv::grpo(pt::exec::cuda.with_status(reinterpret_cast<std::uint32_t*>(bounds.data() + 1)),
                                            dr.cview(), pt::ragged(bounds.cview()), da.view()); },
                            "status word", "offsets"));
    PT_CHECK(refuses_policy([&] { adv::grpo(pt::exec::cuda.with(big.data(), big.size())
                                                .with_status(reinterpret_cast<std::uint32_t*>(big.data() + 64)),
                                            dr.cview(), pt::uniform_groups{4}, da.view(), batch); },
                            "status word", "workspace"));
    // Ragged singletons under singleton::error: reported on the device.
    device_vec<std::int64_t> off(std::vector<std::int64_t>{0, 1, 8});
    device_vec<std::uint32_t> status(1, 0u);
    adv::grpo(pt::exec::cuda.with_status(status.data()), dr.cview(), pt::ragged(off.cview()), da.view(), err);
    PT_CHECK((status.host()[0] & pt::status_singleton_group) != 0);
}

PT_TEST("DLPack tensors on a CUDA device, and a CPU one rejected") {
    std::vector<float> r = {1, 2, 3, 4, 5, 7, 7, 7};
    std::vector<float> want(r.size());
    (void)adv::rloo(pt::exec::seq, r, pt::uniform_groups{4}, want);
    device_vec<float> dr(r), da(r.size());
    std::int64_t shape[1] = {8};
    DLTensor in{};
    in.data = dr.data();
    in.device = {kDLCUDA, 0};
    in.ndim = 1;
    in.dtype = {kDLFloat, 32, 1};
    in.shape = shape;
    DLTensor out = in;
    out.data = da.data();
    adv::rloo(pt::exec::cuda, in, pt::uniform_groups{4}, out);
    pt::test::close_to(da.host(), want, 1e-6, "dlpack");
    DLTensor cpu = in;
    cpu.device = {kDLCPU, 0};
    PT_CHECK_THROWS(adv::rloo(pt::exec::cuda, cpu, pt::uniform_groups{4}, out), pt::invalid_argument);
}
