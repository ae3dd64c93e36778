// exec::thrust(thrust::omp::par) against exec::seq for the ranking module: win_counts, bradley_terry
// (with the prior and the pure ML fit), elo, strength_advantages, rank_rewards (both tie rules) and
// rank_advantages over uniform, ragged and from_ids layouts with thousands of groups. The per-group
// math is shared, so ratings and rewards are compared bitwise; advantages within 1e-12 (same_bits).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <thrust/system/omp/execution_policy.h>

#include <posttrain/adapt/std.hpp>
#include <posttrain/ranking/rank_rewards.hpp>
#include <posttrain/ranking/ratings.hpp>
#include <posttrain/thrust/groups.hpp>
#include <posttrain/thrust/ranking.hpp>

#include "support/backends.hpp"

namespace pt = posttrain;
namespace rk = posttrain::ranking;
using pt::index_t;
using pt::test::bitwise_equal;

namespace {

const auto omp = pt::exec::thrust(thrust::omp::par);

// Groups given by sizes; `group_of` the group of each row (group order = row order here, the
// from_ids case permutes rows afterwards). Records: a round robin plus random extra games, scores
// in {0, 1, 2} so ties occur, listed in a shuffled order across groups.
struct batch {
    std::vector<index_t> sizes;
    std::vector<std::int64_t> offsets;
    std::vector<index_t> group_of;
    std::vector<rk::comparison> records;
    std::vector<double> scores;  // a score per row for the rank transforms (many ties)
};

batch make_batch(const std::vector<index_t>& sizes, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    batch b;
    b.sizes = sizes;
    b.offsets.push_back(0);
    for (index_t s : sizes) b.offsets.push_back(b.offsets.back() + s);
    for (std::size_t g = 0; g < sizes.size(); ++g)
        for (index_t j = 0; j < sizes[g]; ++j) b.group_of.push_back(index_t(g));
    for (std::size_t g = 0; g < sizes.size(); ++g) {
        const index_t lo = b.offsets[g], n = sizes[g];
        for (index_t i = 0; i < n; ++i)
            for (index_t j = i + 1; j < n; ++j)
                b.records.push_back({index_t(g), lo + i, lo + j, double(rng() % 3), double(rng() % 3), 0});
        for (index_t k = 0; n >= 2 && k < n; ++k) {
            const index_t a = lo + index_t(rng() % std::uint64_t(n));
            index_t c = lo + index_t(rng() % std::uint64_t(n - 1));
            if (c >= a) ++c;
            b.records.push_back({index_t(g), a, c, double(rng() % 3), double(rng() % 3), 1});
        }
    }
    std::shuffle(b.records.begin(), b.records.end(), rng);
    std::normal_distribution<double> d(0.0, 1.0);
    for (std::size_t i = 0; i < b.group_of.size(); ++i) b.scores.push_back(rng() % 4 == 0 ? 1.0 : std::round(4 * d(rng)) / 4);
    return b;
}

// Everything the ranking module computes for one layout, each output under its name.
using named = std::vector<std::pair<std::string, std::vector<double>>>;

template <class Policy, class Groups>
named run_all(const Policy& p, const std::vector<rk::comparison>& records, const std::vector<double>& scores,
              const Groups& groups, bool ml) {
    const auto n = scores.size();
    std::vector<double> w(n), t1(n), t0(n), e(n), sa(n), sl(n), rm(n), ra(n), am(n), aa(n);
    std::vector<float> tf(n);
    rk::win_counts(p, records, groups, w);
    const auto f1 = rk::bradley_terry(p, records, groups, t1);
    const auto ff = rk::bradley_terry(p, records, groups, tf, {.prior_games = 2.5, .tolerance = 1e-6});
    rk::elo(p, records, groups, e, rk::elo_options::lmsys());
    const auto s1 = rk::strength_advantages(p, t1, groups, sa);
    const auto s2 = rk::strength_advantages(p, t1, groups, sl, {.reward = rk::strength_reward::log_strength});
    rk::rank_rewards(p, scores, groups, rm, {rk::tie_rule::min_rank});
    rk::rank_rewards(p, scores, groups, ra, {rk::tie_rule::average_position});
    const auto z1 = rk::rank_advantages(p, scores, groups, am);
    const auto z2 = rk::rank_advantages(p, scores, groups, aa, {.ties = rk::tie_rule::average_position, .zscore = {.epsilon = 0.0}});
    named out = {{"win_counts", w}, {"bradley_terry", t1}, {"bradley_terry float", std::vector<double>(tf.begin(), tf.end())},
                 {"elo", e}, {"strength_advantages", sa}, {"strength_advantages log_strength", sl},
                 {"rank_rewards min_rank", rm}, {"rank_rewards average_position", ra}, {"rank_advantages", am},
                 {"rank_advantages average_position", aa}};
    if (ml) {
        const auto f0 = rk::bradley_terry(p, records, groups, t0, {.prior_games = 0.0});
        out.push_back({"bradley_terry prior 0", t0});
        out.push_back({"bradley_terry prior 0 result", {double(f0.iterations), double(f0.unconverged_groups)}});
    }
    for (const auto& r : {f1, ff})
        out.push_back({"rating_result", {double(r.groups), double(r.iterations), double(r.unconverged_groups)}});
    for (const auto& r : {s1, s2, z1, z2})
        out.push_back({"group_stats_result",
                       {double(r.groups), double(r.empty_groups), double(r.singleton_groups), double(r.zero_variance_groups)}});
    return out;
}

// Every output bitwise equal, except the advantages of strength_advantages / rank_advantages: their
// z-score is advantage::grpo, whose Thrust path sums a group in another order than the host's
// eight-lane fixed_order_sum (thrust/outcome.hpp), so those agree within 1e-12 relative (they are
// often bitwise equal too). The rewards and ratings before the z-score are compared bitwise.
bool same_bits(const named& got, const named& want) {
    bool ok = got.size() == want.size();
    for (std::size_t k = 0; ok && k < got.size(); ++k) {
        const auto& a = got[k].second;
        const auto& b = want[k].second;
        if (bitwise_equal(a, b)) continue;
        const bool zscored = got[k].first.find("advantages") != std::string::npos;
        double worst = 0;
        bool close = a.size() == b.size();
        for (std::size_t i = 0; close && i < a.size(); ++i) {
            const double d = std::fabs(a[i] - b[i]);
            worst = std::max(worst, d);
            close = d <= 1e-12 * std::max(1.0, std::fabs(b[i]));
        }
        if (zscored && close) continue;
        MESSAGE(got[k].first << " differs from exec::seq (largest difference " << worst << ")");
        ok = false;
    }
    return ok;
}

std::vector<index_t> ragged_sizes(index_t groups, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<index_t> s(static_cast<std::size_t>(groups));
    for (auto& x : s) x = index_t(rng() % 12);  // 0 (empty) and 1 (singleton) included
    return s;
}

}  // namespace

TEST_CASE("thrust ranking: uniform layout, 4000 groups of 8, bitwise equal to seq") {
    const batch b = make_batch(std::vector<index_t>(4000, 8), 1);
    const pt::uniform_groups groups{8};
    const auto want = run_all(pt::exec::seq, b.records, b.scores, groups, false);
    CHECK(same_bits(run_all(omp, b.records, b.scores, groups, false), want));
}

TEST_CASE("thrust ranking: ragged layout with empty and singleton groups, bitwise equal to seq") {
    const batch b = make_batch(ragged_sizes(3000, 2), 3);
    const auto groups = pt::ragged(b.offsets);
    CHECK(same_bits(run_all(omp, b.records, b.scores, groups, false), run_all(pt::exec::seq, b.records, b.scores, groups, false)));
}

TEST_CASE("thrust ranking: from_ids layout (host and Thrust grouping), bitwise equal to seq") {
    const batch b = make_batch(ragged_sizes(2000, 5), 7);
    // Rows permuted: row perm[i] takes the place of row i, ids hashed per group.
    const index_t n = b.offsets.back();
    std::vector<index_t> perm(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) perm[std::size_t(i)] = i;
    std::mt19937_64 rng(9);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
    std::vector<double> scores(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) {
        ids[std::size_t(perm[std::size_t(i)])] = std::int64_t(b.group_of[std::size_t(i)]) * 2654435761LL - 77;
        scores[std::size_t(perm[std::size_t(i)])] = b.scores[std::size_t(i)];
    }
    const auto host = pt::grouping::from_ids(pt::exec::seq, ids);
    const auto dev = pt::grouping::from_ids(omp, ids);
    std::vector<rk::comparison> records = b.records;
    for (auto& r : records) {
        r.first = perm[std::size_t(r.first)];
        r.second = perm[std::size_t(r.second)];
        r.group = host.group_of[std::size_t(r.first)];
    }
    const auto want = run_all(pt::exec::seq, records, scores, host, false);
    CHECK(same_bits(run_all(omp, records, scores, host, false), want));
    CHECK(same_bits(run_all(omp, records, scores, dev, false), want));
}

TEST_CASE("thrust ranking: the maximum-likelihood fit, and its errors, as on the host") {
    // Dense round robins with many games: strongly connected in every group.
    std::vector<rk::comparison> records;
    std::mt19937_64 rng(21);
    const index_t groups = 500, k = 6;
    for (index_t g = 0; g < groups; ++g)
        for (index_t i = 0; i < k; ++i)
            for (index_t j = 0; j < k; ++j)
                if (i != j) records.push_back({g, g * k + i, g * k + j, double(rng() % 3), double(rng() % 3), 0});
    std::vector<double> scores(static_cast<std::size_t>(groups * k), 0.0);
    const pt::uniform_groups layout{k};
    CHECK(same_bits(run_all(omp, records, scores, layout, true), run_all(pt::exec::seq, records, scores, layout, true)));

    // Group 2's row 13 never lost: both paths raise the same message.
    std::vector<rk::comparison> bad = records;
    for (auto& r : bad) {
        if (r.first == 13) r.first_score = 9, r.second_score = 0;
        if (r.second == 13) r.first_score = 0, r.second_score = 9;
    }
    std::vector<double> out(scores.size());
    std::string host_msg, omp_msg;
    try {
        (void)rk::bradley_terry(pt::exec::seq, bad, layout, out, {.prior_games = 0.0});
    } catch (const std::invalid_argument& e) {
        host_msg = e.what();
    }
    try {
        (void)rk::bradley_terry(omp, bad, layout, out, {.prior_games = 0.0});
    } catch (const std::invalid_argument& e) {
        omp_msg = e.what();
    }
    CHECK(host_msg.find("group 2: row 13 never lost") != std::string::npos);
    CHECK(omp_msg == host_msg);
    bad[0].second = bad[0].first;
    CHECK_THROWS_WITH_AS(rk::win_counts(omp, bad, layout, out), doctest::Contains("compares row"), std::invalid_argument);
    std::vector<double> nan_scores = scores;
    nan_scores[4] = std::nan("");
    CHECK_THROWS_WITH_AS(rk::rank_rewards(omp, nan_scores, layout, out), doctest::Contains("posttrain::ranking::rank_rewards"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS((void)rk::rank_advantages(omp, nan_scores, layout, out),
                         doctest::Contains("posttrain::ranking::rank_advantages"), std::invalid_argument);
}

TEST_CASE("thrust ranking: N = 0 and records without groups") {
    std::vector<double> none;
    std::vector<rk::comparison> no_records;
    const std::vector<std::int64_t> empty{0};
    rk::win_counts(omp, no_records, pt::ragged(empty), none);
    const auto r = rk::bradley_terry(omp, no_records, pt::ragged(empty), none);
    CHECK(r.groups == 0);
    rk::rank_rewards(omp, none, pt::ragged(empty), none);
    const auto z = rk::rank_advantages(omp, none, pt::ragged(empty), none);
    CHECK(z.groups == 0);
}
