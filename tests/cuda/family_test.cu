// The rest of the outcome family on exec::cuda against the host oracle (exec::seq): GRPO under
// statistics::float32_one_pass (bit for bit), group_mean_std, GPG, pass@k, OPO and GDPO, on uniform (1..300 rows),
// ragged (with empty and singleton groups) and permuted layouts, float and double, every preset;
// the group counters, the status bits, exact workspaces, misuse, and CUDA-graph capture.
//
// Constant groups hold dyadic values (multiples of 1/8), so that every backend's sum of a constant
// group is exact and their zero-variance residues (which zero_variance::arithmetic divides by
// epsilon) are all exactly 0: the comparisons need no slack for summation order.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/gdpo.cuh>
#include <posttrain/advantage/gpg.cuh>
#include <posttrain/advantage/grpo.cuh>
#include <posttrain/advantage/opo.cuh>
#include <posttrain/advantage/passk.cuh>

#include "support.cuh"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::index_t;
using pt::test::device_vec;

namespace {

// A group layout in its three forms: uniform (k > 0), ragged CSR offsets, or a permutation of the
// rows with offsets over it. rows[g] lists group g's rows in group order.
struct layout_case {
    std::string name;
    index_t n = 0;
    index_t k = 0;
    std::vector<std::int64_t> off;  // ragged and permuted: G + 1 offsets (over positions when permuted)
    std::vector<index_t> perm;      // permuted: position -> row
    std::vector<std::vector<index_t>> rows;
};

layout_case uniform_case(index_t k, index_t groups) {
    layout_case c;
    c.name = "uniform k=" + std::to_string(k);
    c.k = k;
    c.n = k * groups;
    for (index_t g = 0; g < groups; ++g) {
        c.rows.emplace_back();
        for (index_t j = 0; j < k; ++j) c.rows.back().push_back(g * k + j);
    }
    return c;
}

layout_case sized_case(const std::string& name, const std::vector<index_t>& sizes, bool permuted, std::uint64_t seed) {
    layout_case c;
    c.name = name;
    c.off = {0};
    for (index_t s : sizes) c.off.push_back(c.off.back() + s);
    c.n = c.off.back();
    std::vector<index_t> order(static_cast<std::size_t>(c.n));
    std::iota(order.begin(), order.end(), index_t{0});
    if (permuted) {
        std::mt19937_64 rng(seed);
        std::shuffle(order.begin(), order.end(), rng);
        c.perm = order;
    }
    for (std::size_t g = 0; g + 1 < c.off.size(); ++g) {
        c.rows.emplace_back();
        for (auto j = c.off[g]; j < c.off[g + 1]; ++j) c.rows.back().push_back(order[std::size_t(j)]);
    }
    return c;
}

std::vector<layout_case> layouts() {
    std::vector<layout_case> out;
    for (index_t k : {1, 2, 3, 4, 8, 16, 64, 65, 300}) out.push_back(uniform_case(k, k >= 64 ? 9 : 2000 / k + 3));
    std::mt19937_64 rng(7);
    std::vector<index_t> mixed, small, medium;
    const index_t choices[] = {0, 1, 2, 7, 32, 33, 1000, 0, 1, 3};
    for (int i = 0; i < 60; ++i) mixed.push_back(choices[rng() % 10]);
    for (int i = 0; i < 3000; ++i) small.push_back(static_cast<index_t>(rng() % 16));
    for (int i = 0; i < 400; ++i) medium.push_back(static_cast<index_t>(rng() % 100));
    out.push_back(sized_case("ragged mixed", mixed, false, 0));
    out.push_back(sized_case("ragged small", small, false, 0));
    out.push_back(sized_case("ragged medium", medium, false, 0));
    out.push_back(sized_case("ragged all empty", {0, 0, 0}, false, 0));
    out.push_back(sized_case("permuted mixed", mixed, true, 3));
    out.push_back(sized_case("permuted small", small, true, 4));
    return out;
}

// Calls host(groups) with the host form of the layout and device(groups) with its device form.
template <class Host, class Device>
void on_layout(const layout_case& c, Host&& host, Device&& device) {
    if (c.k > 0) {
        host(pt::uniform_groups{c.k});
        device(pt::uniform_groups{c.k});
    } else if (c.perm.empty()) {
        device_vec<std::int64_t> d(c.off);
        host(pt::ragged(c.off));
        device(pt::ragged(d.cview()));
    } else {
        std::vector<index_t> off(c.off.begin(), c.off.end());
        const index_t G = static_cast<index_t>(off.size()) - 1;
        device_vec<index_t> dp(c.perm), doff(off);
        host(pt::permuted_groups{pt::tensor_view<const index_t, 1>(c.perm.data(), c.n),
                                 pt::tensor_view<const index_t, 1>(off.data(), G + 1)});
        device(pt::device_permuted_groups{dp.cview(), doff.cview(), {}});
    }
}

// Rewards per group: continuous, binary (0/1, often zero-variance), or a dyadic constant; NaNs
// (one row in `nan_every`) when asked.
template <class T>
std::vector<T> group_rewards(const layout_case& c, std::uint64_t seed, int nan_every = 0) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.5, 2.0);
    std::vector<T> r(static_cast<std::size_t>(c.n));
    for (const auto& rows : c.rows) {
        const int pattern = static_cast<int>(rng() % 3);
        const double constant = std::round(normal(rng) * 8) / 8;
        for (index_t row : rows) {
            double v = pattern == 0 ? normal(rng) : pattern == 1 ? double(rng() % 2) : constant;
            if (nan_every > 0 && rng() % std::uint64_t(nan_every) == 0) v = std::nan("");
            r[std::size_t(row)] = static_cast<T>(v);
        }
    }
    return r;
}

double tol_of(std::size_t bytes) { return bytes == 8 ? 1e-12 : 1e-6; }

// Equal bits, except that any NaN matches any NaN: the device's float arithmetic makes its one
// canonical NaN (0x7fffffff), the host's another (0x7fc00000), and the payload is not semantics.
bool bitwise_equal(const std::vector<double>& got, const std::vector<double>& want) {
    if (got.size() != want.size()) return false;
    for (std::size_t i = 0; i < got.size(); ++i) {
        if (std::isnan(got[i]) && std::isnan(want[i])) continue;
        if (std::memcmp(&got[i], &want[i], sizeof(double)) != 0) return false;
    }
    return true;
}

void check_counters(const device_vec<index_t>& stats, const pt::group_stats_result& h, const std::string& what) {
    const std::vector<index_t> s = stats.host();
    PT_CHECK_MSG(s[0] == h.groups, what + ": groups " + std::to_string(s[0]) + " vs " + std::to_string(h.groups));
    PT_CHECK_MSG(s[1] == h.empty_groups, what + ": empty");
    PT_CHECK_MSG(s[2] == h.singleton_groups, what + ": singleton");
    PT_CHECK_MSG(s[3] == h.zero_variance_groups, what + ": zero-variance");
    PT_CHECK_MSG(s[4] == h.ignored_rows, what + ": ignored rows");
}

pt::device_view<std::byte, 1> bytes_of(const device_vec<unsigned char>& ws, std::size_t bytes) {
    return pt::device_view<std::byte, 1>(reinterpret_cast<std::byte*>(ws.data()), index_t(bytes));
}

// ---- statistics::float32_one_pass -----------------------------------------------------------------

template <class T>
void float32_matrix() {
    adv::grpo_options zero = adv::grpo_options::verl_vectorized();
    zero.zero_variance_groups = adv::zero_variance::zero;
    zero.singleton_groups = adv::singleton::nan;
    const std::pair<const char*, adv::grpo_options> variants[] = {
        {"verl_vectorized", adv::grpo_options::verl_vectorized()},
        {"verl_vectorized(no std)", adv::grpo_options::verl_vectorized(false)},
        {"verl_vectorized(eps 1e-2)", adv::grpo_options::verl_vectorized(true, 1e-2)},
        {"zero-variance zero, nan singletons", zero}};
    for (const auto& c : layouts())
        for (const auto& [name, o] : variants) {
            const std::string what = std::string("float32_one_pass ") + (sizeof(T) == 8 ? "double " : "float ") + c.name + " " + name;
            const auto r = group_rewards<T>(c, c.n + 1, 13);  // NaNs propagate (verl)
            std::vector<T> want(r.size());
            pt::group_stats_result h;
            device_vec<T> dr(r), da(r.size(), T(-7));
            device_vec<index_t> stats(5, 0);
            on_layout(
                c, [&](auto g) { h = adv::grpo(pt::exec::seq, r, g, want, o); },
                [&](auto g) { adv::grpo(pt::exec::cuda, dr.cview(), g, da.view(), o, stats.view()); });
            // The host's one function in the host's order: equal bit for bit.
            const auto got = pt::test::as_double(da.host()), exp = pt::test::as_double(want);
            PT_CHECK_MSG(bitwise_equal(got, exp), what);
            if (!bitwise_equal(got, exp)) pt::test::close_to(got, exp, 0.0, what);
            check_counters(stats, h, what);
        }
}

// ---- group_mean_std -------------------------------------------------------------------------------

// float mean, double std, float count: the outputs' dtypes are independent.
template <class T>
void group_mean_std_matrix() {
    adv::group_mean_std_options torch_like;
    torch_like.singleton_unit = false;
    adv::group_mean_std_options pop = torch_like;
    pop.ddof = pt::ddof::population;
    const std::pair<const char*, adv::group_mean_std_options> variants[] = {
        {"default", {}}, {"verl", adv::group_mean_std_options::verl()}, {"singletons as torch", torch_like},
        {"population", pop}};
    for (const auto& c : layouts())
        for (const auto& [name, o] : variants) {
            const std::string what = std::string("group_mean_std ") + (sizeof(T) == 8 ? "double " : "float ") + c.name + " " + name;
            const auto r = group_rewards<T>(c, c.n + 6);
            const std::size_t G = c.rows.size();
            std::vector<float> want_mean(G), want_count(G);
            std::vector<double> want_std(G);
            device_vec<T> dr(r);
            device_vec<float> dmean(G, -7.0f), dcount(G, -7.0f);
            device_vec<double> dstd(G, -7.0);
            on_layout(
                c, [&](auto g) { adv::group_mean_std(pt::exec::seq, r, g, want_mean, want_std, want_count, o); },
                [&](auto g) { adv::group_mean_std(pt::exec::cuda, dr.cview(), g, dmean.view(), dstd.view(), dcount.view(), o); });
            const double tol = o.stats == adv::statistics::float32_one_pass ? 0.0 : tol_of(sizeof(T));
            pt::test::close_to(dmean.host(), want_mean, tol, what + " mean");
            pt::test::close_to(dstd.host(), want_std, tol, what + " std");
            pt::test::close_to(dcount.host(), want_count, 0.0, what + " count");
        }
}

// ---- GPG ------------------------------------------------------------------------------------------

template <class T>
void gpg_matrix() {
    adv::gpg_options given;
    given.alpha = 1.75;
    given.f_norm = 0.5;
    adv::gpg_options doubled = adv::gpg_options::verl();  // verl's conventions, alpha in double
    doubled.float32_alpha = false;
    const std::pair<const char*, adv::gpg_options> variants[] = {
        {"default", {}}, {"verl", adv::gpg_options::verl()}, {"verl(f_norm 3)", adv::gpg_options::verl(3.0)},
        {"alpha given", given}, {"double alpha", doubled}};
    for (const auto& c : layouts())
        for (const auto& [name, o] : variants) {
            const std::string what = std::string("gpg ") + (sizeof(T) == 8 ? "double " : "float ") + c.name + " " + name;
            const auto r = group_rewards<T>(c, c.n + 2, o.nonfinite_rewards == adv::nonfinite::raise ? 0 : 17);
            std::vector<T> want(r.size());
            pt::group_stats_result h;
            device_vec<T> dr(r), da(r.size(), T(-7));
            device_vec<index_t> stats(5, 0);
            on_layout(
                c, [&](auto g) { h = adv::gpg(pt::exec::seq, r, g, want, o); },
                [&](auto g) { adv::gpg(pt::exec::cuda, dr.cview(), g, da.view(), o, stats.view()); });
            pt::test::close_to(da.host(), want, tol_of(sizeof(T)), what);
            check_counters(stats, h, what);
        }
}

// ---- pass@k ---------------------------------------------------------------------------------------

template <class T>
void passk_matrix() {
    adv::passk_options raw;
    raw.singleton_groups = adv::singleton::raw;
    raw.nonfinite_rewards = adv::nonfinite::propagate;
    adv::passk_options nan_single;
    nan_single.singleton_groups = adv::singleton::nan;
    nan_single.norm_by_std = false;
    const std::pair<const char*, adv::passk_options> variants[] = {
        {"default", {}}, {"raw singletons, NaNs", raw}, {"nan singletons, no std", nan_single},
        {"verl(no std)", adv::passk_options::verl(false)}, {"verl", adv::passk_options::verl(true, 1e-3)}};
    for (const auto& c : layouts())
        for (const auto& [name, o] : variants) {
            const bool has_singleton = std::any_of(c.rows.begin(), c.rows.end(), [](const auto& g) { return g.size() == 1; });
            if (o.singleton_groups == adv::singleton::error && has_singleton) continue;  // the host throws (tested below)
            const std::string what = std::string("passk ") + (sizeof(T) == 8 ? "double " : "float ") + c.name + " " + name;
            const auto r = group_rewards<T>(c, c.n + 3, o.nonfinite_rewards == adv::nonfinite::raise ? 0 : 19);
            std::vector<T> want(r.size());
            pt::group_stats_result h;
            device_vec<T> dr(r), da(r.size(), T(-7));
            device_vec<index_t> stats(5, 0);
            on_layout(
                c, [&](auto g) { h = adv::grpo_passk(pt::exec::seq, r, g, want, o); },
                [&](auto g) { adv::grpo_passk(pt::exec::cuda, dr.cview(), g, da.view(), o, stats.view()); });
            const auto got = da.host();
            pt::test::close_to(got, want, tol_of(sizeof(T)), what);
            // The credited row is the host's: zero exactly where the host wrote zero.
            bool same_rows = true;
            for (std::size_t i = 0; i < got.size(); ++i) same_rows &= (got[i] == T(0)) == (want[i] == T(0));
            PT_CHECK_MSG(same_rows, what + ": credited rows");
            check_counters(stats, h, what);
        }
}

// ---- OPO ------------------------------------------------------------------------------------------

template <class T>
std::vector<T> lengths_for(const layout_case& c, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<T> len(static_cast<std::size_t>(c.n));
    for (const auto& rows : c.rows) {
        const bool empty_responses = rng() % 7 == 0;  // every length 0: the plain mean
        for (index_t row : rows) len[std::size_t(row)] = empty_responses ? T(0) : T(double(rng() % 300));
    }
    return len;
}

template <class T>
void opo_matrix() {
    adv::opo_options nan_single;
    nan_single.singleton_groups = adv::singleton::nan;
    const std::pair<const char*, adv::opo_options> variants[] = {
        {"default", {}}, {"verl", adv::opo_options::verl()}, {"nan singletons", nan_single}};
    for (const auto& c : layouts())
        for (const auto& [name, o] : variants) {
            const std::string what = std::string("opo ") + (sizeof(T) == 8 ? "double " : "float ") + c.name + " " + name;
            const auto r = group_rewards<T>(c, c.n + 4, o.nonfinite_rewards == adv::nonfinite::raise ? 0 : 23);
            const auto len = lengths_for<double>(c, c.n + 5);  // lengths in another type than the rewards
            std::vector<T> want(r.size());
            pt::group_stats_result h;
            device_vec<T> dr(r), da(r.size(), T(-7));
            device_vec<double> dl(len);
            device_vec<index_t> stats(5, 0);
            on_layout(
                c, [&](auto g) { h = adv::opo(pt::exec::seq, r, len, g, want, o); },
                [&](auto g) { adv::opo(pt::exec::cuda, dr.cview(), dl.cview(), g, da.view(), o, stats.view()); });
            pt::test::close_to(da.host(), want, tol_of(sizeof(T)), what);
            check_counters(stats, h, what);
        }
}

// ---- GDPO -----------------------------------------------------------------------------------------

// [N, K] rewards: component k of row i at i * s0 + k * s1 (row-major when s1 == 1, else column-major).
template <class T>
struct reward_matrix {
    std::vector<T> data;
    index_t n, K, s0, s1;
    T& at(index_t i, index_t k) { return data[std::size_t(i * s0 + k * s1)]; }
    pt::tensor_view<const T, 2> host() const {
        const index_t e[2] = {n, K}, s[2] = {s0, s1};
        return pt::tensor_view<const T, 2>(data.data(), e, s);
    }
    pt::device_view<const T, 2> device(const device_vec<T>& d) const {
        const index_t e[2] = {n, K}, s[2] = {s0, s1};
        return pt::device_view<const T, 2>(d.data(), e, s);
    }
};

template <class T>
reward_matrix<T> gdpo_rewards(const layout_case& c, index_t K, bool column_major, int nan_every, std::uint64_t seed) {
    reward_matrix<T> m{std::vector<T>(std::size_t(c.n * K)), c.n, K, column_major ? 1 : K, column_major ? c.n : 1};
    for (index_t k = 0; k < K; ++k) {
        const auto col = group_rewards<T>(c, seed + std::uint64_t(k), nan_every);
        for (index_t i = 0; i < c.n; ++i) m.at(i, k) = col[std::size_t(i)];
    }
    if (nan_every > 0 && c.n > 3)  // a row with every component NaN: unscorable
        for (index_t k = 0; k < K; ++k) m.at(c.n / 2, k) = T(std::nan(""));
    return m;
}

std::vector<std::pair<std::string, adv::gdpo_options>> gdpo_variants(index_t K) {
    std::vector<double> w;
    for (index_t k = 0; k < K; ++k) w.push_back(0.25 + 0.5 * double(k % 5));
    adv::gdpo_options unnormalized = adv::gdpo_options::gdpo(w);
    unnormalized.batch_normalize = false;
    adv::gdpo_options pop = adv::gdpo_options::gdpo();
    pop.batch_ddof = pt::ddof::population;
    pop.component.std_scale = adv::scale::none;
    return {{"gdpo", adv::gdpo_options::gdpo()},
            {"gdpo weighted", adv::gdpo_options::gdpo(w)},
            {"gdpo unnormalized", unnormalized},
            {"gdpo population, centred components", pop},
            {"trl normalize_then_sum", adv::gdpo_options::trl(adv::aggregation::normalize_then_sum, adv::scale::group, w)},
            {"trl normalize_then_sum batch", adv::gdpo_options::trl(adv::aggregation::normalize_then_sum, adv::scale::batch)},
            {"trl sum_then_normalize", adv::gdpo_options::trl(adv::aggregation::sum_then_normalize, adv::scale::group, w)},
            {"trl sum_then_normalize batch", adv::gdpo_options::trl(adv::aggregation::sum_then_normalize, adv::scale::batch)},
            {"trl sum_then_normalize none", adv::gdpo_options::trl(adv::aggregation::sum_then_normalize, adv::scale::none)}};
}

template <class T>
void gdpo_case(const layout_case& c, index_t K, bool column_major, const std::string& name, const adv::gdpo_options& o) {
    const std::string what = "gdpo " + std::string(sizeof(T) == 8 ? "double " : "float ") + c.name + " K=" +
                             std::to_string(K) + (column_major ? " column-major " : " ") + name;
    const bool nan_ok = o.component.nonfinite_rewards != adv::nonfinite::raise;
    const auto m = gdpo_rewards<T>(c, K, column_major, nan_ok ? 11 : 0, std::uint64_t(c.n + K));
    std::vector<T> want(std::size_t(c.n));
    std::vector<double> want_sum(std::size_t(c.n));
    pt::group_stats_result h;
    device_vec<T> dr(m.data), da(std::size_t(c.n), T(-7));
    device_vec<double> dsum(std::size_t(c.n), -7.0);
    device_vec<index_t> stats(5, 0);
    const std::size_t bytes = adv::gdpo_workspace_bytes(c.n, o);
    device_vec<unsigned char> ws(bytes);
    on_layout(
        c, [&](auto g) { h = adv::gdpo(pt::exec::seq, m.host(), g, want, want_sum, o); },
        [&](auto g) {
            adv::gdpo(pt::exec::cuda.with(bytes_of(ws, bytes)), m.device(dr), g, da.view(), dsum.view(), o, stats.view());
        });
    pt::test::close_to(dsum.host(), want_sum, 1e-12, what + " (combined)");
    pt::test::close_to(da.host(), want, tol_of(sizeof(T)), what);
    check_counters(stats, h, what);
}

template <class T>
void gdpo_matrix() {
    const auto all = layouts();
    for (const auto& c : all)
        for (index_t K : {1, 3})
            for (const auto& [name, o] : gdpo_variants(K)) gdpo_case<T>(c, K, K == 3, name, o);
    // More components than one launch takes weights for (32), on a few layouts.
    for (const char* pick : {"uniform k=16", "ragged mixed", "permuted small"})
        for (const auto& c : all)
            if (c.name == pick)
                for (const auto& [name, o] : gdpo_variants(40)) gdpo_case<T>(c, 40, false, name, o);
}

}  // namespace

PT_TEST("grpo float32_one_pass: bit for bit the host's, float") { float32_matrix<float>(); }
PT_TEST("grpo float32_one_pass: bit for bit the host's, double") { float32_matrix<double>(); }
PT_TEST("group_mean_std float") { group_mean_std_matrix<float>(); }
PT_TEST("group_mean_std double") { group_mean_std_matrix<double>(); }
PT_TEST("gpg float") { gpg_matrix<float>(); }
PT_TEST("gpg double") { gpg_matrix<double>(); }
PT_TEST("passk float") { passk_matrix<float>(); }
PT_TEST("passk double") { passk_matrix<double>(); }
PT_TEST("opo float") { opo_matrix<float>(); }
PT_TEST("opo double") { opo_matrix<double>(); }
PT_TEST("gdpo float") { gdpo_matrix<float>(); }
PT_TEST("gdpo double") { gdpo_matrix<double>(); }

PT_TEST("gdpo: under nonfinite::ignore a NaN group z-score of a finite reward is left out, as the host's nansum") {
    // Column 0 holds an inf (its group's z-scores are NaN though only one reward is not finite) and
    // a singleton under singleton::nan; column 1 is finite. Rows 4 and 5: every component NaN.
    const std::vector<double> m = {INFINITY, 0.0,  1.0, 1.0,  2.0, 0.5,  3.0, -1.0,
                                   std::nan(""), std::nan(""),  std::nan(""), std::nan(""),  7.0, 2.0};
    const index_t n = 7;
    const std::vector<std::int64_t> off = {0, 2, 4, 6, 7};
    device_vec<double> dm(m);
    device_vec<std::int64_t> doff(off);
    for (auto o : {adv::gdpo_options::trl(adv::aggregation::normalize_then_sum, adv::scale::group, {1.0, 2.0}),
                   adv::gdpo_options::trl(adv::aggregation::sum_then_normalize, adv::scale::group, {1.0, 2.0})}) {
        o.component.singleton_groups = adv::singleton::nan;
        std::vector<double> want(static_cast<std::size_t>(n)), want_sum(static_cast<std::size_t>(n));
        (void)adv::gdpo(pt::exec::seq, pt::tensor_view<const double, 2>(m.data(), n, 2), pt::ragged(off), want, want_sum, o);
        device_vec<double> da(std::size_t(n), -7.0), ds(std::size_t(n), -7.0);
        adv::gdpo(pt::exec::cuda, pt::device_view<const double, 2>(dm.data(), n, 2), pt::ragged(doff.cview()), da.view(),
                  ds.view(), o);
        const std::string what = o.mode == adv::aggregation::normalize_then_sum ? "normalize_then_sum" : "sum_then_normalize";
        pt::test::close_to(ds.host(), want_sum, 1e-12, "gdpo NaN z-scores " + what + " (combined)");
        pt::test::close_to(da.host(), want, 1e-12, "gdpo NaN z-scores " + what);
    }
}

PT_TEST("family: exact workspaces, and one byte less throws") {
    const index_t n = 4096;
    const layout_case c = uniform_case(16, n / 16);
    const auto r = group_rewards<float>(c, 5);
    device_vec<float> dr(r), da(r.size());
    // GPG: scratch only when alpha comes from the batch.
    adv::gpg_options given;
    given.alpha = 2.0;
    PT_CHECK(adv::gpg_workspace_bytes(n, given) == 0);
    const std::size_t gpg_bytes = adv::gpg_workspace_bytes(n, adv::gpg_options::verl());
    PT_CHECK(gpg_bytes > 0);
    device_vec<unsigned char> gws(gpg_bytes);
    std::vector<float> want(r.size());
    (void)adv::gpg(pt::exec::seq, r, pt::uniform_groups{16}, want, adv::gpg_options::verl());
    adv::gpg(pt::exec::cuda.with(bytes_of(gws, gpg_bytes)), dr.cview(), pt::uniform_groups{16}, da.view(),
             adv::gpg_options::verl());
    pt::test::close_to(da.host(), want, 1e-6, "gpg with its workspace");
    PT_CHECK_THROWS(adv::gpg(pt::exec::cuda.with(gws.data(), gpg_bytes - 1), dr.cview(), pt::uniform_groups{16}, da.view(),
                             adv::gpg_options::verl()),
                    pt::invalid_argument);
    PT_CHECK(adv::passk_workspace_bytes(n) == 0);
    PT_CHECK(adv::opo_workspace_bytes(n) == 0);
    // GDPO: one byte less than asked throws, in both modes.
    for (const auto& o : {adv::gdpo_options::gdpo(), adv::gdpo_options::trl(adv::aggregation::sum_then_normalize)}) {
        const auto m = gdpo_rewards<float>(c, 2, false, 0, 9);
        device_vec<float> dm(m.data);
        const std::size_t bytes = adv::gdpo_workspace_bytes(n, o);
        PT_CHECK(bytes >= sizeof(double) * std::size_t(n));
        device_vec<unsigned char> ws(bytes);
        PT_CHECK_THROWS(adv::gdpo(pt::exec::cuda.with(ws.data(), bytes - 1), m.device(dm), pt::uniform_groups{16}, da.view(), o),
                        pt::invalid_argument);
    }
}

PT_TEST("family: status bits where the host would throw") {
    // Non-finite rewards under nonfinite::raise (every estimator), a NaN and a negative length (OPO).
    std::vector<float> r = {1, 2, 3, 4, std::nanf(""), 6, 7, 8};
    device_vec<float> dr(r), da(r.size());
    auto status_of = [&](auto call) {
        device_vec<std::uint32_t> status(1, 0u);
        call(pt::exec::cuda.with_status(status.data()));
        return status.host()[0];
    };
    PT_CHECK(status_of([&](auto p) { adv::gpg(p, dr.cview(), pt::uniform_groups{4}, da.view()); }) & pt::status_nonfinite_input);
    PT_CHECK(status_of([&](auto p) { adv::grpo_passk(p, dr.cview(), pt::uniform_groups{4}, da.view()); }) &
             pt::status_nonfinite_input);
    device_vec<double> stats_out(6, 0.0);
    PT_CHECK(status_of([&](auto p) {
                 adv::group_mean_std(p, dr.cview(), pt::uniform_groups{4}, pt::device_view<double, 1>(stats_out.data(), 2),
                                     pt::device_view<double, 1>(stats_out.data() + 2, 2),
                                     pt::device_view<double, 1>(stats_out.data() + 4, 2));
             }) == pt::status_nonfinite_input);
    std::vector<float> clean = {1, 2, 3, 4, 5, 6, 7, 8};
    device_vec<float> dc(clean);
    device_vec<float> good_len(std::vector<float>(8, 10.0f));
    PT_CHECK(status_of([&](auto p) { adv::opo(p, dr.cview(), good_len.cview(), pt::uniform_groups{4}, da.view()); }) &
             pt::status_nonfinite_input);
    PT_CHECK(status_of([&](auto p) { adv::opo(p, dc.cview(), good_len.cview(), pt::uniform_groups{4}, da.view()); }) == 0u);
    std::vector<float> neg = {10, 10, -1, 10, 10, 10, 10, 10}, nan_len = {10, 10, 10, 10, std::nanf(""), 10, 10, 10};
    device_vec<float> dneg(neg), dnan(nan_len);
    PT_CHECK(status_of([&](auto p) { adv::opo(p, dc.cview(), dneg.cview(), pt::uniform_groups{4}, da.view()); }) ==
             pt::status_invalid_value);
    PT_CHECK(status_of([&](auto p) { adv::opo(p, dc.cview(), dnan.cview(), pt::uniform_groups{4}, da.view()); }) ==
             pt::status_nonfinite_input);
    const std::vector<float> m = {1, 2, 3, 4, 5, std::nanf(""), 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    device_vec<float> dm(m);
    PT_CHECK(status_of([&](auto p) {
                 adv::gdpo(p, pt::device_view<const float, 2>(dm.data(), 8, 2), pt::uniform_groups{4}, da.view(),
                           adv::gdpo_options::gdpo());
             }) &
             pt::status_nonfinite_input);
    PT_CHECK(status_of([&](auto p) {
                 adv::gdpo(p, pt::device_view<const float, 2>(dm.data(), 8, 2), pt::uniform_groups{4}, da.view(),
                           adv::gdpo_options::trl(adv::aggregation::sum_then_normalize, adv::scale::group));
             }) == 0u);  // TRL ignores NaN rewards
    // Ragged singletons under singleton::error: reported, and NaN.
    device_vec<std::int64_t> off(std::vector<std::int64_t>{0, 1, 8});
    const adv::passk_options err = adv::passk_options::verl();
    PT_CHECK(status_of([&](auto p) { adv::grpo_passk(p, dc.cview(), pt::ragged(off.cview()), da.view(), err); }) ==
             pt::status_singleton_group);
    PT_CHECK(std::isnan(da.host()[0]));
    // Invalid ragged offsets: those groups are skipped and reported.
    device_vec<std::int64_t> bad(std::vector<std::int64_t>{0, 5, 3, 8});
    PT_CHECK(status_of([&](auto p) { adv::grpo_passk(p, dc.cview(), pt::ragged(bad.cview()), da.view()); }) &
             pt::status_invalid_groups);
    PT_CHECK(status_of([&](auto p) { adv::opo(p, dc.cview(), good_len.cview(), pt::ragged(bad.cview()), da.view()); }) &
             pt::status_invalid_groups);
    PT_CHECK(status_of([&](auto p) {
                 adv::grpo(p, dc.cview(), pt::ragged(bad.cview()), da.view(), adv::grpo_options::verl_vectorized());
             }) &
             pt::status_invalid_groups);
}

PT_TEST("family: host-detectable misuse throws before launching") {
    device_vec<float> dr(std::vector<float>(8, 1.0f)), da(8), small(7), len(std::vector<float>(8, 1.0f));
    adv::gpg_options zero_norm;
    zero_norm.f_norm = 0;
    PT_CHECK_THROWS(adv::gpg(pt::exec::cuda, dr.cview(), pt::uniform_groups{4}, da.view(), zero_norm), pt::invalid_argument);
    PT_CHECK_THROWS(adv::gpg(pt::exec::cuda, dr.cview(), pt::uniform_groups{3}, da.view()), pt::invalid_argument);
    PT_CHECK_THROWS(adv::grpo_passk(pt::exec::cuda, dr.cview(), pt::uniform_groups{4}, small.view()), pt::invalid_argument);
    PT_CHECK_THROWS(adv::grpo_passk(pt::exec::cuda, dr.cview(), pt::uniform_groups{4}, dr.view()), pt::invalid_argument);
    PT_CHECK_THROWS(adv::grpo_passk(pt::exec::cuda, dr.cview(), pt::uniform_groups{1}, da.view(), adv::passk_options::verl()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::opo(pt::exec::cuda, dr.cview(), small.cview(), pt::uniform_groups{4}, da.view()), pt::invalid_argument);
    // group_mean_std: one entry per group, outputs apart.
    PT_CHECK_THROWS(adv::group_mean_std(pt::exec::cuda, dr.cview(), pt::uniform_groups{4}, pt::device_view<float, 1>(da.data(), 3),
                                        pt::device_view<float, 1>(da.data() + 3, 2), pt::device_view<float, 1>(da.data() + 5, 2)),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::group_mean_std(pt::exec::cuda, dr.cview(), pt::uniform_groups{4}, pt::device_view<float, 1>(da.data(), 2),
                                        pt::device_view<float, 1>(da.data() + 1, 2), pt::device_view<float, 1>(da.data() + 4, 2)),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::opo(pt::exec::cuda, dr.cview(), len.cview(), pt::uniform_groups{4}, len.view()), pt::invalid_argument);
    // float32_one_pass takes only what verl's group_mean_std computes.
    adv::grpo_options loo = adv::grpo_options::verl_vectorized();
    loo.leave_one_out = true;
    PT_CHECK_THROWS(adv::grpo(pt::exec::cuda, dr.cview(), pt::uniform_groups{4}, da.view(), loo), pt::invalid_argument);
    // GDPO: weights per component, outputs apart from the inputs.
    device_vec<float> m(std::vector<float>(16, 1.0f)), combined(8);
    const auto rewards = pt::device_view<const float, 2>(m.data(), 8, 2);
    PT_CHECK_THROWS(adv::gdpo(pt::exec::cuda, rewards, pt::uniform_groups{4}, da.view(), adv::gdpo_options::gdpo({1, 2, 3})),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::gdpo(pt::exec::cuda, rewards, pt::uniform_groups{4}, small.view(), adv::gdpo_options::gdpo()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::gdpo(pt::exec::cuda, rewards, pt::uniform_groups{4}, da.view(), da.view(), adv::gdpo_options::gdpo()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::gdpo(pt::exec::cuda, rewards, pt::uniform_groups{4}, da.view(), small.view(), adv::gdpo_options::gdpo()),
                    pt::invalid_argument);
    PT_CHECK_THROWS(adv::gdpo(pt::exec::cuda, rewards, pt::uniform_groups{4}, pt::device_view<float, 1>(m.data(), 8),
                              adv::gdpo_options::gdpo()),
                    pt::invalid_argument);
}

PT_TEST("family: run-to-run determinism, and CUDA-graph capture and replay") {
    const index_t n = 16 * 512;
    const layout_case c = uniform_case(16, n / 16);
    auto sets = pt::test::input_sets<float>(group_rewards<float>(c, 1), group_rewards<float>(c, 2));
    auto lengths = pt::test::input_sets<float>(lengths_for<float>(c, 3), lengths_for<float>(c, 4));
    const auto m0 = gdpo_rewards<float>(c, 3, false, 0, 5), m1 = gdpo_rewards<float>(c, 3, false, 0, 6);
    auto matrix = pt::test::input_sets<float>(m0.data, m1.data);
    device_vec<float> a(std::size_t(n), 0.0f), s(std::size_t(n), 0.0f);
    device_vec<index_t> stats(5, 0);
    auto graph = [&](const std::string& name, std::size_t ws, auto call) {
        pt::test::graph_case g;
        g.name = name;
        g.workspace = ws;
        g.outputs = {pt::test::out_of(a), pt::test::out_of(s), pt::test::out_of(stats, 0)};
        g.load = [&](int k) {
            sets.load(k);
            lengths.load(k);
            matrix.load(k);
        };
        g.call = call;
        pt::test::graph_replay_both(g);
    };
    const auto groups = pt::uniform_groups{16};
    graph("grpo float32_one_pass", 0, [&](const pt::exec::cuda_policy& p) {
        adv::grpo(p, sets.dev.cview(), groups, a.view(), adv::grpo_options::verl_vectorized(), stats.view());
    });
    graph("gpg, alpha from the batch", adv::gpg_workspace_bytes(n, adv::gpg_options::verl()),
          [&](const pt::exec::cuda_policy& p) {
              adv::gpg(p, sets.dev.cview(), groups, a.view(), adv::gpg_options::verl(), stats.view());
          });
    graph("passk", 0, [&](const pt::exec::cuda_policy& p) {
        adv::grpo_passk(p, sets.dev.cview(), groups, a.view(), adv::passk_options::verl(), stats.view());
    });
    graph("group_mean_std (float32_one_pass)", 0, [&](const pt::exec::cuda_policy& p) {
        adv::group_mean_std(p, sets.dev.cview(), groups, pt::device_view<float, 1>(a.data(), n / 16),
                            pt::device_view<float, 1>(a.data() + n / 16, n / 16),
                            pt::device_view<float, 1>(a.data() + 2 * (n / 16), n / 16), adv::group_mean_std_options::verl());
    });
    graph("opo", 0, [&](const pt::exec::cuda_policy& p) {
        adv::opo(p, sets.dev.cview(), lengths.dev.cview(), groups, a.view(), adv::opo_options::verl(), stats.view());
    });
    for (const auto& o : {adv::gdpo_options::gdpo({1.0, 0.5, 2.0}),
                          adv::gdpo_options::trl(adv::aggregation::normalize_then_sum, adv::scale::batch),
                          adv::gdpo_options::trl(adv::aggregation::sum_then_normalize, adv::scale::batch)})
        graph("gdpo", adv::gdpo_workspace_bytes(n, o), [&, o](const pt::exec::cuda_policy& p) {
            adv::gdpo(p, pt::device_view<const float, 2>(matrix.dev.data(), n, 3), groups, a.view(), s.view(), o,
                      stats.view());
        });
}
