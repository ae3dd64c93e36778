// exec::thrust(thrust::omp::par) against exec::seq: grouping::from_ids, and GRPO / RLOO over
// uniform, ragged and permuted (from_ids) layouts, float and double, every preset. Double results
// agree within 1e-12 relative; the paths differ only in summation order.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <thrust/system/omp/execution_policy.h>

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/gpg.hpp>
#include <posttrain/advantage/grpo.hpp>
#include <posttrain/advantage/rloo.hpp>
#include <posttrain/thrust/outcome.hpp>

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::index_t;

namespace {

const auto omp = pt::exec::thrust(thrust::omp::par);

std::vector<std::int64_t> offsets_from_sizes(const std::vector<index_t>& sizes) {
    std::vector<std::int64_t> off{0};
    for (index_t s : sizes) off.push_back(off.back() + s);
    return off;
}

// Per-group patterns: continuous, binary (often zero-variance), constant; NaNs when allowed.
template <class T>
std::vector<T> make_rewards(std::size_t n, const std::vector<index_t>& group_of, std::uint64_t seed, bool with_nan) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.5, 2.0);
    const index_t groups = group_of.empty() ? 0 : *std::max_element(group_of.begin(), group_of.end()) + 1;
    std::vector<int> pattern(static_cast<std::size_t>(groups));
    std::vector<double> level(static_cast<std::size_t>(groups));
    for (index_t g = 0; g < groups; ++g) {
        pattern[std::size_t(g)] = int(rng() % 3);
        level[std::size_t(g)] = normal(rng);
    }
    std::vector<T> r(n);
    for (std::size_t i = 0; i < n; ++i) {
        const auto g = std::size_t(group_of[i]);
        double v = pattern[g] == 0 ? normal(rng) : pattern[g] == 1 ? double(rng() % 2) : level[g];
        if (with_nan && rng() % 11 == 0) v = std::nan("");
        r[i] = static_cast<T>(v);
    }
    return r;
}

// Rows of constant groups under zero_variance::arithmetic hold rounding residues that depend on the
// summation order; allow a few ulps of the group's magnitude divided by epsilon there.
template <class T>
double slack_for(const std::vector<T>& r, const std::vector<index_t>& group_of, std::size_t i, double eps) {
    double lo = 1e300, hi = -1e300;
    index_t count = 0;
    for (std::size_t k = 0; k < r.size(); ++k)
        if (group_of[k] == group_of[i] && r[k] == r[k]) {
            lo = std::min<double>(lo, r[k]);
            hi = std::max<double>(hi, r[k]);
            ++count;
        }
    if (lo != hi) return 0.0;
    const double residue = 64 * 2.220446049250313e-16 * std::fabs(lo) * double(count);
    return eps > 0 ? residue / eps : residue;
}

template <class T, class Options, class Groups>
void compare(const std::vector<T>& r, const Groups& groups, const std::vector<index_t>& group_of, const Options& o,
             const std::string& what) {
    std::vector<T> want(r.size()), got(r.size(), T(-12345));
    pt::group_stats_result hs, ts;
    if constexpr (std::is_same_v<Options, adv::grpo_options>) {
        hs = adv::grpo(pt::exec::seq, r, groups, want, o);
        ts = adv::grpo(omp, r, groups, got, o);
    } else {
        hs = adv::rloo(pt::exec::seq, r, groups, want, o);
        ts = adv::rloo(omp, r, groups, got, o);
    }
    INFO(what);
    CHECK(ts.groups == hs.groups);
    CHECK(ts.empty_groups == hs.empty_groups);
    CHECK(ts.singleton_groups == hs.singleton_groups);
    CHECK(ts.zero_variance_groups == hs.zero_variance_groups);  // a NaN makes a group non-constant on both paths
    CHECK(ts.ignored_rows == hs.ignored_rows);
    double eps = 0;
    bool exact = false;  // statistics::float32_one_pass runs the host's one function in the host's order
    if constexpr (std::is_same_v<Options, adv::grpo_options>) {
        eps = o.std_scale == adv::scale::group ? o.epsilon : 0.0;
        exact = o.stats == adv::statistics::float32_one_pass;
    }
    const double tol = sizeof(T) == 8 ? 1e-12 : 1e-6;
    int bad = 0;
    for (std::size_t i = 0; i < r.size() && bad < 5; ++i) {
        const double g = got[i], w = want[i];
        double allowed = tol * std::max(1.0, std::fabs(w));
        if (o.zero_variance_groups == adv::zero_variance::arithmetic) allowed += slack_for(r, group_of, i, eps);
        if (exact) allowed = 0;
        const bool ok = (std::isnan(w) && std::isnan(g)) || g == w || std::fabs(g - w) <= allowed;
        if (!ok) {
            ++bad;
            FAIL_CHECK("index " << i << ": got " << g << ", want " << w);
        }
    }
}

std::vector<std::pair<const char*, adv::grpo_options>> grpo_variants() {
    adv::grpo_options loo, batch, pop;
    loo.leave_one_out = true;
    batch.std_scale = adv::scale::batch;
    pop.ddof = pt::ddof::population;
    return {{"default", {}},          {"verl", adv::grpo_options::verl()},
            {"verl(no std)", adv::grpo_options::verl(false)}, {"trl", adv::grpo_options::trl()},
            {"trl(batch)", adv::grpo_options::trl(adv::scale::batch)}, {"openrlhf", adv::grpo_options::openrlhf()},
            {"dr_grpo", adv::grpo_options::dr_grpo()}, {"leave_one_out", loo},
            {"batch", batch},         {"population", pop},
            {"verl_vectorized", adv::grpo_options::verl_vectorized()},
            {"verl_vectorized(no std)", adv::grpo_options::verl_vectorized(false)}};
}

std::vector<std::pair<const char*, adv::rloo_options>> rloo_variants() {
    return {{"default", {}},
            {"verl", adv::rloo_options::verl()},
            {"verl_vectorized", adv::rloo_options::verl_vectorized()},
            {"openrlhf", adv::rloo_options::openrlhf()},
            {"trl", adv::rloo_options::trl()}};
}

template <class T, class Groups>
void all_variants(const Groups& groups, const std::vector<index_t>& group_of, const std::string& what) {
    const std::size_t n = group_of.size();
    for (const auto& [name, o] : grpo_variants())
        compare<T>(make_rewards<T>(n, group_of, n + 1, o.nonfinite_rewards != adv::nonfinite::raise), groups, group_of, o,
                   "grpo " + what + " " + name);
    for (const auto& [name, o] : rloo_variants())
        compare<T>(make_rewards<T>(n, group_of, n + 2, o.nonfinite_rewards != adv::nonfinite::raise), groups, group_of, o,
                   "rloo " + what + " " + name);
}

std::vector<index_t> group_of_offsets(const std::vector<std::int64_t>& off) {
    std::vector<index_t> g;
    for (std::size_t k = 0; k + 1 < off.size(); ++k)
        for (auto i = off[k]; i < off[k + 1]; ++i) g.push_back(index_t(k));
    return g;
}

}  // namespace

TEST_CASE_TEMPLATE("thrust omp grpo/rloo, uniform groups", T, float, double) {
    for (index_t k : {1, 2, 7, 32, 33, 1000}) {
        const index_t groups = k >= 1000 ? 3 : 600 / k + 2;
        std::vector<index_t> group_of;
        for (index_t i = 0; i < k * groups; ++i) group_of.push_back(i / k);
        all_variants<T>(pt::uniform_groups{k}, group_of, "uniform k=" + std::to_string(k));
    }
}

TEST_CASE_TEMPLATE("thrust omp grpo/rloo, ragged groups with empty ones", T, float, double) {
    std::mt19937_64 rng(3);
    std::vector<index_t> sizes;
    const index_t choices[] = {0, 1, 2, 7, 32, 33, 1000, 0, 1, 3};
    for (int i = 0; i < 40; ++i) sizes.push_back(choices[rng() % 10]);
    const auto off = offsets_from_sizes(sizes);
    all_variants<T>(pt::ragged(off), group_of_offsets(off), "ragged");
    const std::vector<std::int64_t> empty_only = {0, 0, 0};
    all_variants<T>(pt::ragged(empty_only), group_of_offsets(empty_only), "all empty");
}

TEST_CASE_TEMPLATE("thrust omp grpo/rloo, unsorted ids", T, float, double) {
    std::mt19937_64 rng(5);
    std::vector<std::int64_t> ids(3000);
    for (auto& id : ids) id = std::int64_t(rng() % 97) * 1000003 - 40000000;  // negative and positive ids
    const auto g = pt::grouping::from_ids(omp, ids);
    all_variants<T>(g, g.group_of, "ids");
}

TEST_CASE_TEMPLATE("thrust omp gpg: the gain path of the shared transform, every option", T, float, double) {
    adv::gpg_options given;
    given.alpha = 1.75;
    given.f_norm = 0.5;
    adv::gpg_options doubled = adv::gpg_options::verl();
    doubled.float32_alpha = false;
    const std::vector<std::pair<const char*, adv::gpg_options>> variants = {
        {"default", {}}, {"verl", adv::gpg_options::verl()}, {"verl(f_norm 3)", adv::gpg_options::verl(3.0)},
        {"alpha given", given}, {"double alpha", doubled}};
    std::mt19937_64 rng(8);
    std::vector<index_t> sizes;
    const index_t choices[] = {0, 1, 2, 7, 32, 33, 1000, 0, 1, 3};
    for (int i = 0; i < 40; ++i) sizes.push_back(choices[rng() % 10]);
    const auto off = offsets_from_sizes(sizes);
    const auto group_of = group_of_offsets(off);
    for (const auto& [name, o] : variants) {
        const auto r = make_rewards<T>(group_of.size(), group_of, 77, o.nonfinite_rewards != adv::nonfinite::raise);
        std::vector<T> want(r.size()), got(r.size(), T(-12345));
        const auto hs = adv::gpg(pt::exec::seq, r, pt::ragged(off), want, o);
        const auto ts = adv::gpg(omp, r, pt::ragged(off), got, o);
        INFO(name);
        CHECK(ts.groups == hs.groups);
        CHECK(ts.zero_variance_groups == hs.zero_variance_groups);
        for (std::size_t i = 0; i < r.size(); ++i) {
            const double g = got[i], w = want[i];
            const double allowed = (sizeof(T) == 8 ? 1e-12 : 1e-6) * std::max(1.0, std::fabs(w)) + slack_for(r, group_of, i, 0.0) * 8;
            CHECK(((std::isnan(g) && std::isnan(w)) || std::fabs(g - w) <= allowed));
        }
    }
}

TEST_CASE("thrust omp from_ids equals the host radix sort") {
    std::mt19937_64 rng(11);
    for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(17), std::size_t(5000)}) {
        std::vector<std::int64_t> ids(n);
        for (auto& id : ids) id = std::int64_t(rng() % 50) - 25;
        if (n > 3) ids[2] = INT64_MIN;
        const auto h = pt::grouping::from_ids(pt::exec::seq, ids);
        const auto t = pt::grouping::from_ids(omp, ids);
        CHECK(t.permutation == h.permutation);
        CHECK(t.offsets == h.offsets);
        CHECK(t.ids == h.ids);
        CHECK(t.group_of == h.group_of);
    }
    std::vector<std::uint64_t> uids = {5, 0xFFFFFFFFFFFFFFF0ull, 5, 1, 0xFFFFFFFFFFFFFFF0ull};
    const auto h = pt::grouping::from_ids(pt::exec::seq, uids);
    const auto t = pt::grouping::from_ids(omp, uids);
    CHECK(t.permutation == h.permutation);
    CHECK(t.offsets == h.offsets);
    CHECK(t.ids == h.ids);
}

TEST_CASE("thrust omp errors match the host") {
    std::vector<double> r = {1, 2, 3, std::nan("")}, a(4);
    CHECK_THROWS_AS((void)adv::grpo(omp, r, pt::uniform_groups{2}, a), pt::invalid_argument);
    std::vector<double> clean = {1, 2, 3, 4};
    adv::grpo_options err;
    err.singleton_groups = adv::singleton::error;
    const std::vector<std::int64_t> off = {0, 1, 4};
    CHECK_THROWS_AS((void)adv::grpo(omp, clean, pt::ragged(off), a, err), pt::invalid_argument);
    CHECK_THROWS_AS((void)adv::grpo(omp, clean, pt::uniform_groups{3}, a), pt::invalid_argument);
    adv::grpo_options f32_loo = adv::grpo_options::verl_vectorized();
    f32_loo.leave_one_out = true;  // float32_one_pass reproduces verl's group_mean_std only
    CHECK_THROWS_AS((void)adv::grpo(omp, clean, pt::uniform_groups{2}, a, f32_loo), pt::invalid_argument);
}
