// Rating models (ranking/ratings.hpp): win counts against round_robin, Bradley-Terry (closed form,
// recovered ground truth, undefeated / disconnected players, the prior, convergence reporting), Elo
// hand-computed, strength advantages, bad input, and every host backend bitwise equal to seq.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>
#include <posttrain/ranking/rank_rewards.hpp>
#include <posttrain/ranking/ratings.hpp>
#include <posttrain/ranking/tournament.hpp>

#include "support/backends.hpp"

namespace pt = posttrain;
namespace rk = posttrain::ranking;
using pt::index_t;
using pt::test::bitwise_equal;

namespace {

rk::comparison rec(index_t g, index_t a, index_t b, double sa, double sb) { return {g, a, b, sa, sb, 0}; }

// A judge whose scores are quality plus noise rounded to integers, so ties happen.
struct rounded_judge {
    const std::vector<double>* q;
    std::uint64_t seed = 3;
    rk::scores operator()(index_t a, index_t b) const {
        std::mt19937_64 rng(seed ^ std::uint64_t(a * 1000003 + b));
        std::normal_distribution<double> noise(0.0, 1.0);
        return {std::round(2 * (*q)[std::size_t(a)] + noise(rng)), std::round(2 * (*q)[std::size_t(b)] + noise(rng))};
    }
};

// Games between every pair of a group of n rows: `games` per pair, i winning with probability
// sigmoid(theta_i - theta_j) (ties never happen here).
std::vector<rk::comparison> simulate(const std::vector<double>& theta, index_t n, index_t games, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::vector<rk::comparison> out;
    const index_t groups = index_t(theta.size()) / n;
    for (index_t g = 0; g < groups; ++g)
        for (index_t i = 0; i < n; ++i)
            for (index_t j = i + 1; j < n; ++j)
                for (index_t k = 0; k < games; ++k) {
                    const index_t a = g * n + i, b = g * n + j;
                    const double pa = 1.0 / (1.0 + std::exp(theta[std::size_t(b)] - theta[std::size_t(a)]));
                    const bool a_wins = u(rng) < pa;
                    // alternate who is listed first: order must not matter to the fit
                    if (k % 2) out.push_back(rec(g, b, a, a_wins ? 0 : 1, a_wins ? 1 : 0));
                    else out.push_back(rec(g, a, b, a_wins ? 1 : 0, a_wins ? 0 : 1));
                }
    return out;
}

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
    auto ranks = [](const std::vector<double>& v) {
        std::vector<std::size_t> o(v.size());
        for (std::size_t i = 0; i < o.size(); ++i) o[i] = i;
        std::sort(o.begin(), o.end(), [&](std::size_t a, std::size_t b) { return v[a] < v[b]; });
        std::vector<double> r(v.size());
        for (std::size_t k = 0; k < o.size(); ++k) r[o[k]] = double(k);
        return r;
    };
    const auto rx = ranks(x), ry = ranks(y);
    const double n = double(x.size());
    double d2 = 0;
    for (std::size_t i = 0; i < x.size(); ++i) d2 += (rx[i] - ry[i]) * (rx[i] - ry[i]);
    return 1.0 - 6.0 * d2 / (n * (n * n - 1.0));
}

// Random ragged layout (sizes 0..9) with random records inside groups, some ties.
struct random_case {
    std::vector<std::int64_t> offsets;
    std::vector<rk::comparison> records;
};
random_case random_records(index_t groups, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    random_case c;
    c.offsets.push_back(0);
    for (index_t g = 0; g < groups; ++g) c.offsets.push_back(c.offsets.back() + std::int64_t(rng() % 10));
    for (index_t g = 0; g < groups; ++g) {
        const index_t lo = c.offsets[std::size_t(g)], n = c.offsets[std::size_t(g) + 1] - lo;
        if (n < 2) continue;
        const index_t m = index_t(rng() % std::uint64_t(3 * n * n));
        for (index_t k = 0; k < m; ++k) {
            const index_t a = lo + index_t(rng() % std::uint64_t(n));
            index_t b = lo + index_t(rng() % std::uint64_t(n - 1));
            if (b >= a) ++b;
            c.records.push_back(rec(g, a, b, double(rng() % 3), double(rng() % 3)));
        }
    }
    return c;
}

}  // namespace

TEST_CASE("win_counts: a win scores 1, a tie 0.5 each; rows without records get 0") {
    const std::vector<rk::comparison> r = {rec(0, 0, 1, 3, 1), rec(0, 1, 2, 2, 2), rec(0, 2, 0, 0, 1), rec(1, 4, 5, 1, 7)};
    std::vector<double> w(7, -1.0);
    const std::vector<std::int64_t> offsets{0, 4, 7};
    rk::win_counts(pt::exec::seq, r, pt::ragged(offsets), w);
    CHECK(w == std::vector<double>{2.0, 0.5, 0.5, 0.0, 0.0, 1.0, 0.0});
}

TEST_CASE_TEMPLATE("win_counts + rank_rewards(min_rank) reproduce round_robin's rewards and advantages", B,
                   POSTTRAIN_HOST_BACKENDS) {
    std::mt19937_64 rng(5);
    std::normal_distribution<double> d(0.0, 1.0);
    std::vector<double> q(6 * 7);
    for (auto& x : q) x = d(rng);
    const pt::uniform_groups groups{7};
    std::vector<double> rr_rewards(q.size()), rr_adv(q.size());
    const auto t = rk::round_robin(pt::exec::seq, groups, rounded_judge{&q}, rr_rewards, rr_adv);
    bool any_tie = false;
    for (const auto& c : t.comparisons) any_tie |= c.first_score == c.second_score;
    CHECK(any_tie);
    std::vector<double> wins(q.size()), rewards(q.size()), adv(q.size());
    rk::win_counts(B::policy(), t.comparisons, groups, wins);
    CHECK(bitwise_equal(wins, t.points));
    rk::rank_rewards(B::policy(), wins, groups, rewards, {rk::tie_rule::min_rank});
    CHECK(bitwise_equal(rewards, rr_rewards));
    (void)rk::rank_advantages(B::policy(), wins, groups, adv);
    CHECK(bitwise_equal(adv, rr_adv));
}

TEST_CASE("bradley_terry: two players, prior 0: theta_1 - theta_2 = log(w1 / w2), mean 0") {
    // 5 wins for row 0, 2 for row 1, one tie (half each): w1 = 5.5, w2 = 2.5.
    std::vector<rk::comparison> r;
    for (int k = 0; k < 5; ++k) r.push_back(rec(0, 0, 1, 1, 0));
    for (int k = 0; k < 2; ++k) r.push_back(rec(0, 1, 0, 1, 0));
    r.push_back(rec(0, 0, 1, 4, 4));
    std::vector<double> theta(2);
    const auto res = rk::bradley_terry(pt::exec::seq, r, pt::uniform_groups{2}, theta, {.prior_games = 0.0});
    CHECK(res.groups == 1);
    CHECK(res.unconverged_groups == 0);
    CHECK(res.iterations >= 1);
    CHECK(theta[0] - theta[1] == doctest::Approx(std::log(5.5 / 2.5)).epsilon(1e-12));
    CHECK(theta[0] + theta[1] == doctest::Approx(0.0).scale(1.0).epsilon(1e-12));
}

TEST_CASE("bradley_terry: the fit satisfies the likelihood equations, with and without the prior") {
    std::mt19937_64 rng(17);
    std::normal_distribution<double> d(0.0, 1.0);
    std::vector<double> truth(6);
    for (auto& x : truth) x = d(rng);
    const auto r = simulate(truth, 6, 5, 23);
    for (double prior : {0.0, 1.0, 3.5}) {
        std::vector<double> theta(6);
        const auto res = rk::bradley_terry(pt::exec::seq, r, pt::uniform_groups{6}, theta, {.prior_games = prior});
        REQUIRE(res.unconverged_groups == 0);
        // W_i = sum over i's games of p_i / (p_i + p_j), plus prior/2 = prior * p_i / (p_i + 1)
        for (index_t i = 0; i < 6; ++i) {
            double won = 0.5 * prior, expected = prior * std::exp(theta[std::size_t(i)]) / (std::exp(theta[std::size_t(i)]) + 1.0);
            for (const auto& x : r) {
                if (x.first != i && x.second != i) continue;
                const index_t j = x.first == i ? x.second : x.first;
                const double si = x.first == i ? x.first_score : x.second_score, sj = x.first == i ? x.second_score : x.first_score;
                won += si > sj ? 1.0 : si < sj ? 0.0 : 0.5;
                expected += 1.0 / (1.0 + std::exp(theta[std::size_t(j)] - theta[std::size_t(i)]));
            }
            CHECK(expected == doctest::Approx(won).epsilon(1e-7));
        }
    }
}

TEST_CASE("bradley_terry: recovers known strengths from simulated comparisons") {
    const index_t n = 8, groups = 20;
    std::mt19937_64 rng(101);
    std::normal_distribution<double> d(0.0, 1.0);
    std::vector<double> truth(std::size_t(n * groups));
    for (auto& x : truth) x = d(rng);
    const auto r = simulate(truth, n, 60, 7);
    std::vector<double> theta(truth.size());
    const auto res = rk::bradley_terry(pt::exec::seq, r, pt::uniform_groups{n}, theta, {.prior_games = 0.0});
    CHECK(res.unconverged_groups == 0);
    double worst = 0, rho = 0;
    for (index_t g = 0; g < groups; ++g) {
        std::vector<double> t(truth.begin() + g * n, truth.begin() + (g + 1) * n), e(theta.begin() + g * n, theta.begin() + (g + 1) * n);
        double mean_t = 0, mean_e = 0;
        for (index_t i = 0; i < n; ++i) mean_t += t[std::size_t(i)] / double(n), mean_e += e[std::size_t(i)] / double(n);
        CHECK(mean_e == doctest::Approx(0.0).scale(1.0).epsilon(1e-12));
        for (index_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs((e[std::size_t(i)] - mean_e) - (t[std::size_t(i)] - mean_t)));
        rho += spearman(t, e) / double(groups);
    }
    // 60 games per pair: the standard error of a log-strength is about 0.1.
    CHECK(worst < 0.5);
    CHECK(rho > 0.9);
}

TEST_CASE("bradley_terry: undefeated, winless, disconnected and unplayed rows under the prior") {
    // group 0: row 0 beats everyone, row 3 loses to everyone, 1 and 2 split
    // group 1: rows 4,5 and 6,7 only play inside their pair; row 8 never plays
    std::vector<rk::comparison> r = {rec(0, 0, 1, 1, 0), rec(0, 0, 2, 1, 0), rec(0, 0, 3, 1, 0), rec(0, 1, 2, 1, 0),
                                     rec(0, 2, 1, 1, 0), rec(0, 1, 3, 1, 0), rec(0, 2, 3, 1, 0), rec(1, 4, 5, 1, 0),
                                     rec(1, 6, 7, 0, 1)};
    const std::vector<std::int64_t> offsets{0, 4, 9};
    const auto groups = pt::ragged(offsets);
    std::vector<double> theta(9);
    const auto res = rk::bradley_terry(pt::exec::seq, r, groups, theta);
    CHECK(res.unconverged_groups == 0);
    for (double t : theta) CHECK(std::isfinite(t));
    CHECK(theta[0] > theta[1]);
    CHECK(theta[1] == doctest::Approx(theta[2]).epsilon(1e-9));
    CHECK(theta[2] > theta[3]);
    CHECK(theta[4] > 0);
    CHECK(theta[5] < 0);
    CHECK(theta[7] == doctest::Approx(theta[4]).epsilon(1e-9));
    CHECK(theta[8] == 0.0);

    // prior 0: the fit does not exist; the message says why and what to do.
    auto prior0 = [&](const std::vector<rk::comparison>& x, const pt::uniform_groups& g, index_t n) {
        std::vector<double> out(static_cast<std::size_t>(n));
        (void)rk::bradley_terry(pt::exec::seq, x, g, out, {.prior_games = 0.0});
    };
    CHECK_THROWS_WITH_AS(prior0({rec(0, 0, 1, 1, 0), rec(0, 1, 2, 1, 0), rec(0, 2, 1, 1, 0)}, pt::uniform_groups{3}, 3),
                         doctest::Contains("group 0: row 0 never lost"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(prior0({rec(0, 0, 1, 1, 0), rec(0, 1, 0, 1, 0), rec(0, 2, 1, 0, 1)}, pt::uniform_groups{3}, 3),
                         doctest::Contains("row 2 never won"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(prior0({rec(0, 0, 1, 1, 1)}, pt::uniform_groups{3}, 3), doctest::Contains("row 2 has no comparisons"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(prior0({rec(0, 0, 1, 1, 1), rec(0, 2, 3, 1, 1)}, pt::uniform_groups{4}, 4),
                         doctest::Contains("disconnected parts"), std::invalid_argument);
    // weakly connected, every row won and lost, but {0, 1} never lost to {2, 3}
    CHECK_THROWS_WITH_AS(prior0({rec(0, 0, 1, 1, 0), rec(0, 1, 0, 1, 0), rec(0, 2, 3, 1, 0), rec(0, 3, 2, 1, 0),
                                 rec(0, 0, 2, 1, 0)},
                                pt::uniform_groups{4}, 4),
                         doctest::Contains("not strongly connected"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(prior0({rec(0, 0, 1, 1, 0)}, pt::uniform_groups{2}, 2), doctest::Contains("options.prior_games > 0"),
                         std::invalid_argument);
    // the message names the caller's rows and the group, here group 1 of a permuted layout
    std::vector<std::int64_t> ids{5, 3, 5, 3};
    const auto byid = pt::grouping::from_ids(pt::exec::seq, ids);  // group 0 = id 3 = rows {1, 3}
    std::vector<double> out(4);
    CHECK_THROWS_WITH_AS((void)rk::bradley_terry(pt::exec::seq, std::vector{rec(0, 1, 3, 0, 1), rec(0, 3, 1, 0, 1),
                                                                             rec(1, 0, 2, 1, 0)},
                                                 byid, out, {.prior_games = 0.0}),
                         doctest::Contains("group 1: row 2 never won"), std::invalid_argument);
    // ties count both ways: a group of all ties has an ML fit (everyone equal)
    std::vector<double> tied(3);
    CHECK_NOTHROW((void)rk::bradley_terry(pt::exec::seq, std::vector{rec(0, 0, 1, 2, 2), rec(0, 1, 2, 2, 2)},
                                          pt::uniform_groups{3}, tied, {.prior_games = 0.0}));
    for (double t : tied) CHECK(t == doctest::Approx(0.0).scale(1.0).epsilon(1e-9));
}

TEST_CASE("bradley_terry: max_iterations reached is reported, not raised; groups of 0 and 1 rows") {
    std::mt19937_64 rng(3);
    std::normal_distribution<double> d(0.0, 2.0);
    std::vector<double> truth(12);
    for (auto& x : truth) x = d(rng);
    const auto r = simulate(truth, 6, 3, 5);
    std::vector<double> theta(12);
    const auto res = rk::bradley_terry(pt::exec::seq, r, pt::uniform_groups{6}, theta, {.max_iterations = 2});
    CHECK(res.iterations == 2);
    CHECK(res.unconverged_groups == 2);
    std::vector<double> one(1, 7.0);
    const std::vector<std::int64_t> offsets{0, 0, 1, 1};
    const auto lone = rk::bradley_terry(pt::exec::seq, std::vector<rk::comparison>{}, pt::ragged(offsets), one,
                                        {.prior_games = 0.0});
    CHECK(lone.groups == 3);
    CHECK(lone.iterations == 0);
    CHECK(one[0] == 0.0);
    std::vector<double> none;
    const auto empty = rk::bradley_terry(pt::exec::seq, std::vector<rk::comparison>{}, pt::uniform_groups{4}, none);
    CHECK(empty.groups == 0);
}

TEST_CASE("bradley_terry: float output, records as a span") {
    std::vector<rk::comparison> r = {rec(0, 0, 1, 1, 0), rec(0, 1, 0, 0, 1), rec(0, 1, 0, 1, 0)};
    std::vector<float> f(2);
    std::vector<double> d(2);
    (void)rk::bradley_terry(pt::exec::seq, std::span<const rk::comparison>(r), pt::uniform_groups{2}, f);
    (void)rk::bradley_terry(pt::exec::seq, r, pt::uniform_groups{2}, d);
    CHECK(f[0] == float(d[0]));
    CHECK(f[1] == float(d[1]));
}

TEST_CASE("elo: hand-computed updates; the lmsys preset") {
    std::vector<rk::comparison> r = {rec(0, 0, 1, 9, 3), rec(0, 1, 0, 8, 2)};
    std::vector<double> e(3);
    rk::elo(pt::exec::seq, r, pt::uniform_groups{3}, e);
    // 1: equal ratings, 0 wins: 1016 / 984. 2: 1 wins at 984 vs 1016: E_1 = 1 / (1 + 10^(32/400)).
    const double e1 = 1.0 / (1.0 + std::pow(10.0, 32.0 / 400.0));  // 0.454078...
    CHECK(e1 == doctest::Approx(0.4540776).epsilon(1e-6));
    CHECK(e[0] == doctest::Approx(1016.0 - 32.0 * (1.0 - e1)));
    CHECK(e[1] == doctest::Approx(984.0 + 32.0 * (1.0 - e1)));
    CHECK(e[0] == doctest::Approx(998.5305).epsilon(1e-7));
    CHECK(e[2] == 1000.0);
    // a tie between equal ratings changes nothing; lmsys: K = 4
    rk::elo(pt::exec::seq, std::vector{rec(0, 0, 1, 5, 5), rec(0, 2, 1, 1, 0)}, pt::uniform_groups{3}, e, rk::elo_options::lmsys());
    CHECK(e[0] == 1000.0);
    CHECK(e[2] == 1002.0);
    CHECK(e[1] == 998.0);
    const auto l = rk::elo_options::lmsys();
    CHECK(l.k == 4.0);
    CHECK(l.initial == 1000.0);
    CHECK(l.scale == 400.0);
    CHECK(l.base == 10.0);
}

TEST_CASE("strength_advantages: expected win rate and log strength, then the group z-score") {
    const std::vector<double> theta = {0.5, -0.5, 2.0, 2.0, 2.0, 1.0};
    const std::vector<std::int64_t> offsets{0, 2, 5, 6};
    const auto groups = pt::ragged(offsets);
    std::vector<double> adv(6), want(6);
    const auto st = rk::strength_advantages(pt::exec::seq, theta, groups, adv);
    const double s = 1.0 / (1.0 + std::exp(-1.0));
    (void)pt::advantage::grpo(pt::exec::seq, std::vector<double>{s, 1.0 - s, 0.5, 0.5, 0.5, 0.5}, groups, want,
                              rk::detail::zscore_as_grpo({}));
    CHECK(bitwise_equal(adv, want));
    CHECK(adv[0] == doctest::Approx((s - 0.5) / (std::sqrt(2.0) * (s - 0.5) + 1e-6)));  // mean 1/2, sample std sqrt(2) (s - 1/2)
    CHECK(st.zero_variance_groups == 1);
    CHECK(st.singleton_groups == 1);
    CHECK(adv[2] == 0.0);
    CHECK(adv[5] == 0.0);
    (void)rk::strength_advantages(pt::exec::seq, theta, groups, adv, {.reward = rk::strength_reward::log_strength});
    (void)pt::advantage::grpo(pt::exec::seq, theta, groups, want, rk::detail::zscore_as_grpo({}));
    CHECK(bitwise_equal(adv, want));
}

TEST_CASE("ratings: bad input names the function and the argument") {
    const pt::uniform_groups g{3};
    std::vector<double> out(6);
    auto bt = [&](std::vector<rk::comparison> r) { (void)rk::bradley_terry(pt::exec::seq, r, g, out); };
    CHECK_THROWS_WITH_AS(bt({rec(0, 0, 7, 1, 0)}),
                         doctest::Contains("posttrain::ranking::bradley_terry: argument 'records': records[0].second = 7 is out of range [0, 6)"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(bt({rec(0, 0, 1, 1, 0), rec(0, 0, 4, 1, 0)}),
                         doctest::Contains("records[1].second = row 4 belongs to group 1, not to the record's group 0"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(bt({rec(2, 0, 1, 1, 0)}), doctest::Contains("records[0].group = 2 is out of range [0, 2)"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(bt({rec(1, 4, 4, 1, 0)}), doctest::Contains("compares row 4 with itself"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(bt({rec(0, 0, 1, std::nan(""), 0)}), doctest::Contains("non-finite score"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(bt({rec(0, -1, 1, 1, 0)}), doctest::Contains("records[0].first = -1 is out of range"),
                         std::invalid_argument);
    std::vector<double> five(5);
    CHECK_THROWS_WITH_AS(rk::win_counts(pt::exec::seq, std::vector<rk::comparison>{}, g, five),
                         doctest::Contains("posttrain::ranking::win_counts: argument 'groups'"), std::invalid_argument);
    CHECK_THROWS_WITH_AS((void)rk::bradley_terry(pt::exec::seq, std::vector<rk::comparison>{}, g, out, {.prior_games = -1}),
                         doctest::Contains("options.prior_games"), std::invalid_argument);
    CHECK_THROWS_WITH_AS((void)rk::bradley_terry(pt::exec::seq, std::vector<rk::comparison>{}, g, out, {.tolerance = std::nan("")}),
                         doctest::Contains("options.tolerance"), std::invalid_argument);
    CHECK_THROWS_WITH_AS((void)rk::bradley_terry(pt::exec::seq, std::vector<rk::comparison>{}, g, out, {.max_iterations = 0}),
                         doctest::Contains("options.max_iterations"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(rk::elo(pt::exec::seq, std::vector<rk::comparison>{}, g, out, {.scale = 0}),
                         doctest::Contains("posttrain::ranking::elo: argument 'options.scale'"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(rk::elo(pt::exec::seq, std::vector<rk::comparison>{}, g, out, {.base = 1}),
                         doctest::Contains("options.base"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(rk::elo(pt::exec::seq, std::vector{rec(0, 0, 1, 1, INFINITY)}, g, out),
                         doctest::Contains("posttrain::ranking::elo: argument 'records': records[0] has a non-finite score"),
                         std::invalid_argument);
    std::vector<double> theta(6, 0.0);
    theta[4] = std::nan("");
    CHECK_THROWS_WITH_AS((void)rk::strength_advantages(pt::exec::seq, theta, g, out),
                         doctest::Contains("posttrain::ranking::strength_advantages: argument 'log_strengths'"), std::invalid_argument);
    theta[4] = 0;
    CHECK_THROWS_WITH_AS((void)rk::strength_advantages(pt::exec::seq, theta, g, five),
                         doctest::Contains("posttrain::ranking::strength_advantages: argument 'advantages'"), std::invalid_argument);
    CHECK_THROWS_WITH_AS((void)rk::strength_advantages(pt::exec::seq, theta, g, out, {.zscore = {.epsilon = -1}}),
                         doctest::Contains("options.zscore.epsilon"), std::invalid_argument);
}

TEST_CASE_TEMPLATE("ratings: every backend equals seq bitwise (ragged and from_ids layouts, many groups)", B,
                   POSTTRAIN_HOST_BACKENDS) {
    const auto c = random_records(3000, 41);
    const index_t n = c.offsets.back();
    const auto nn = static_cast<std::size_t>(n);
    std::vector<std::int64_t> ids(nn);
    for (std::size_t g = 0; g + 1 < c.offsets.size(); ++g)
        for (auto i = c.offsets[g]; i < c.offsets[g + 1]; ++i) ids[std::size_t(i)] = std::int64_t(g) * 7919 % 3001;
    const auto byid = pt::grouping::from_ids(pt::exec::seq, ids);
    // from_ids orders groups by id: renumber the records' groups to match.
    std::vector<rk::comparison> rid = c.records;
    for (auto& x : rid) x.group = byid.group_of[std::size_t(x.first)];
    auto run_all = [&](const auto& policy, const auto& groups, const std::vector<rk::comparison>& r) {
        std::vector<double> w(nn), t1(nn), e(nn), a(nn);
        rk::win_counts(policy, r, groups, w);
        const auto f1 = rk::bradley_terry(policy, r, groups, t1);
        rk::elo(policy, r, groups, e);
        (void)rk::strength_advantages(policy, t1, groups, a);
        std::vector<double> all;
        for (const std::vector<double>* v : {&w, &t1, &e, &a}) all.insert(all.end(), v->begin(), v->end());
        all.push_back(double(f1.iterations));
        all.push_back(double(f1.unconverged_groups));
        return all;
    };
    const auto off = pt::ragged(c.offsets);
    CHECK(bitwise_equal(run_all(B::policy(), off, c.records), run_all(pt::exec::seq, off, c.records)));
    CHECK(bitwise_equal(run_all(B::policy(), byid, rid), run_all(pt::exec::seq, byid, rid)));
    // twice: run to run
    CHECK(bitwise_equal(run_all(B::policy(), off, c.records), run_all(B::policy(), off, c.records)));
}

TEST_CASE("docs example (bradley_terry.md, elo.md, win_counts.md, rank_rewards.md): the printed values") {
    // one group of 4 rollouts; records from a judge: {group, first, second, first_score, second_score, round}
    std::vector<rk::comparison> records = {
        {0, 0, 1, 8, 6, 0}, {0, 0, 2, 7, 7, 0}, {0, 0, 3, 9, 2, 0},
        {0, 1, 2, 5, 6, 0}, {0, 1, 3, 6, 4, 0}, {0, 2, 3, 8, 3, 0}};
    const pt::uniform_groups groups{4};
    std::vector<double> wins(4), theta(4), elo(4), rewards(4), adv(4);
    rk::win_counts(pt::exec::seq, records, groups, wins);
    CHECK(wins == std::vector<double>{2.5, 1.0, 2.5, 0.0});
    rk::rank_rewards(pt::exec::seq, wins, groups, rewards);
    CHECK(rewards[1] == doctest::Approx(1.0 / 3.0));
    (void)rk::rank_advantages(pt::exec::seq, wins, groups, adv);
    CHECK(adv[3] == doctest::Approx(-1.1667).epsilon(1e-4));
    const auto fit = rk::bradley_terry(pt::exec::seq, records, groups, theta);
    CHECK(fit.iterations == 222);
    CHECK(theta[0] == doctest::Approx(1.0288).epsilon(1e-4));
    CHECK(theta[3] == doctest::Approx(-1.7243).epsilon(1e-4));
    (void)rk::strength_advantages(pt::exec::seq, theta, groups, adv);
    CHECK(adv[1] == doctest::Approx(-0.4007).epsilon(1e-3));
    rk::elo(pt::exec::seq, records, groups, elo, rk::elo_options::lmsys());
    CHECK(elo[3] == doctest::Approx(994.0345).epsilon(1e-7));
    rk::elo(pt::exec::seq, records, groups, elo);
    CHECK(elo[0] == doctest::Approx(1030.5612).epsilon(1e-7));
    CHECK_THROWS_WITH_AS((void)rk::bradley_terry(pt::exec::seq, records, groups, theta, {.prior_games = 0}),
                         doctest::Contains("group 0: row 3 never won or tied"), std::invalid_argument);
}
