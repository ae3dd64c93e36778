// Rank -> reward -> advantage (ranking/rank_rewards.hpp): both tie rules by hand, the z-score as
// GRPO's, layouts, seq == par, bad input.

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>
#include <posttrain/ranking/rank_rewards.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace rk = posttrain::ranking;
using pt::index_t;

TEST_CASE("rank rewards: min-rank and average-position ties, by hand") {
    // Scores 3, 1, 3, 0, 1: min-ranks 1, 3, 1, 5, 3; M = 5.
    const std::vector<double> s{3, 1, 3, 0, 1};
    std::vector<double> r(5);
    rk::rank_rewards(pt::exec::seq, s, pt::uniform_groups{5}, r);
    CHECK(r == std::vector<double>{1.0, (5.0 - 3.0) / 4.0, 1.0, 0.0, (5.0 - 3.0) / 4.0});
    // Positions 0..4 reward 1, 3/4, 1/2, 1/4, 0; ties share their positions' mean.
    rk::rank_rewards(pt::exec::seq, s, pt::uniform_groups{5}, r, {rk::tie_rule::average_position});
    CHECK(r == std::vector<double>{(1.0 + 0.75) / 2, (0.5 + 0.25) / 2, (1.0 + 0.75) / 2, 0.0, (0.5 + 0.25) / 2});
    // Everyone tied: min-rank gives all 0 (M = 1); average-position gives everyone 1/2.
    const std::vector<double> same(4, 2.0);
    std::vector<double> r4(4);
    rk::rank_rewards(pt::exec::seq, same, pt::uniform_groups{4}, r4);
    CHECK(r4 == std::vector<double>(4, 0.0));
    rk::rank_rewards(pt::exec::seq, same, pt::uniform_groups{4}, r4, {rk::tie_rule::average_position});
    for (double x : r4) CHECK(x == doctest::Approx(0.5).epsilon(1e-15));
    // A group of one row gets 0; a strict order gets 1 - k / (N - 1).
    CHECK(rk::detail::position_reward(0, 1) == 0.0);
    CHECK(rk::detail::position_reward(2, 5) == 0.5);
}

TEST_CASE("rank rewards: one large tied group costs linear time and shares one reward") {
    const std::vector<double> s(200000, 1.0);
    std::vector<double> r(s.size());
    rk::rank_rewards(pt::exec::seq, s, pt::uniform_groups{index_t(s.size())}, r, {rk::tie_rule::average_position});
    for (double x : r) REQUIRE(x == r[0]);
    CHECK(r[0] == doctest::Approx(0.5).epsilon(1e-12));
}

TEST_CASE_TEMPLATE("rank advantages: the z-score of the rank rewards, as GRPO's; seq == par", B, POSTTRAIN_HOST_BACKENDS) {
    const auto off = pt::test::random_offsets(3000, 20, 31);
    std::vector<double> s(std::size_t(off.back()));
    std::mt19937_64 rng(5);
    for (auto& x : s) x = double(rng() % 7);  // many ties
    for (auto rule : {rk::tie_rule::min_rank, rk::tie_rule::average_position}) {
        std::vector<double> r(s.size()), a(s.size()), want(s.size()), a_seq(s.size());
        rk::rank_rewards(B::policy(), s, pt::ragged(off), r, {rule});
        const auto res = rk::rank_advantages(B::policy(), s, pt::ragged(off), a, {rule, {1e-6, pt::ddof::sample}});
        pt::advantage::grpo_options g;
        g.epsilon = 1e-6;
        (void)pt::advantage::grpo(pt::exec::seq, r, pt::ragged(off), want, g);
        CHECK(pt::test::bitwise_equal(a, want));
        (void)rk::rank_advantages(pt::exec::seq, s, pt::ragged(off), a_seq, {rule});
        CHECK(pt::test::bitwise_equal(a, a_seq));
        CHECK(res.groups == index_t(off.size()) - 1);
        for (double x : r) CHECK((x >= 0.0 && x <= 1.0));
    }
}

TEST_CASE("rank rewards: float outputs, permuted layouts, bad input") {
    const std::vector<std::int64_t> ids{2, 1, 2, 1};
    const auto g = pt::grouping::from_ids(pt::exec::seq, ids);
    const std::vector<float> s{0.5f, 3.0f, 1.5f, 2.0f};
    std::vector<float> r(4);
    rk::rank_rewards(pt::exec::seq, s, g, r);
    CHECK(r == std::vector<float>{0.0f, 1.0f, 1.0f, 0.0f});

    std::vector<double> bad{1.0, std::nan(""), 2.0};
    std::vector<double> out(3);
    CHECK_THROWS_WITH_AS(rk::rank_rewards(pt::exec::seq, bad, pt::uniform_groups{3}, out), doctest::Contains("scores"),
                         pt::invalid_argument);
    std::vector<double> short_out(2);
    CHECK_THROWS_WITH_AS(rk::rank_rewards(pt::exec::seq, std::vector<double>{1, 2, 3}, pt::uniform_groups{3}, short_out),
                         doctest::Contains("rewards"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)rk::rank_advantages(pt::exec::seq, std::vector<double>{1, 2, 3}, pt::uniform_groups{3}, out,
                                                   {rk::tie_rule::min_rank, {-1.0}}),
                         doctest::Contains("epsilon"), pt::invalid_argument);
    CHECK_THROWS_AS(rk::rank_rewards(pt::exec::seq, std::vector<double>{1, 2, 3}, pt::uniform_groups{2}, out),
                    pt::invalid_argument);
    try {
        (void)rk::rank_advantages(pt::exec::seq, std::vector<double>{1, 2, 3}, pt::uniform_groups{3}, short_out);
        FAIL("expected invalid_argument");
    } catch (const pt::invalid_argument& e) {
        CHECK(e.function() == "posttrain::ranking::rank_advantages");
        CHECK(e.argument() == "advantages");
    }
}
