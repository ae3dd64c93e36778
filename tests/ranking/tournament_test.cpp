// Tournaments (ranking/tournament.hpp): every topology on hand-built judges with known outcomes,
// comparison counts, one judge batch per round across groups, byes, determinism, bad input.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/ranking/tournament.hpp>

#include "support/backends.hpp"

namespace pt = posttrain;
namespace rk = posttrain::ranking;
using pt::index_t;

namespace {

// A noiseless judge: the score of a row is its quality.
struct quality_judge {
    const std::vector<double>* q;
    rk::scores operator()(index_t a, index_t b) const { return {(*q)[std::size_t(a)], (*q)[std::size_t(b)]}; }
};

// Every match a tie.
struct tie_judge {
    rk::scores operator()(index_t, index_t) const { return {5.0, 5.0}; }
};

// A batched judge that records its batches; quality plus seeded Gaussian noise per call and side.
struct recording_judge {
    const std::vector<double>* q;
    double sigma = 0.0;
    std::mt19937_64 rng{7};
    std::vector<std::size_t> batch_sizes;
    std::vector<std::vector<rk::match>> batches;
    void operator()(std::span<const rk::match> m, std::span<rk::scores> out) {
        batch_sizes.push_back(m.size());
        batches.emplace_back(m.begin(), m.end());
        std::normal_distribution<double> noise(0.0, 1.0);
        for (std::size_t k = 0; k < m.size(); ++k)
            out[k] = {(*q)[std::size_t(m[k].first)] + sigma * noise(rng), (*q)[std::size_t(m[k].second)] + sigma * noise(rng)};
    }
};

std::vector<double> random_qualities(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> d(0.0, 1.0);
    std::vector<double> q(n);
    for (auto& x : q) x = d(rng);
    return q;
}

const std::vector<rk::topology> all_topologies = {
    rk::single_elimination_options::arenarl(),
    rk::single_elimination_options{},
    rk::round_robin_options{},
    rk::anchor_options{},
    rk::swiss_options{.seed = 3},
    rk::swiss_options{.variant = rk::swiss_variant::qqr_reference, .seed = 3},
    rk::double_elimination_options{.seed = 5},
};

index_t expected_comparisons(const rk::topology& t, index_t n) {
    if (n < 2) return 0;
    switch (t.index()) {
        case 0: return 2 * n - 2;          // single elimination: N - 1 seeding + N - 1 matches
        case 1: return n * (n - 1) / 2;    // round robin
        case 2: return n - 1;              // anchor
        case 4: return 2 * n - 2;          // double elimination: N - 1 winners-bracket matches, N - 2 in the
                                           // losers bracket, one grand final
        default: return -1;                // Swiss: rounds * floor(N / 2), checked separately
    }
}

}  // namespace

TEST_CASE("single elimination: a noiseless judge recovers the true order; rewards by position") {
    const std::vector<double> q{1, 4, 3, 2};
    std::vector<double> rewards(4), adv(4);
    const auto res = rk::single_elimination(pt::exec::seq, pt::uniform_groups{4}, quality_judge{&q}, rewards, adv);
    // Seeding: everyone plays row 0, so seeds are 1 (4), 2 (3), 3 (2), 0 (1); the bracket pairs seed 1
    // with seed 4 and seed 2 with seed 3.
    REQUIRE(res.comparisons.size() == 6);
    CHECK(res.comparisons[0].first == 1);
    CHECK(res.comparisons[0].second == 0);
    CHECK(res.comparisons[0].round == 0);
    CHECK((res.comparisons[3].first == 1 && res.comparisons[3].second == 0 && res.comparisons[3].round == 1));
    CHECK((res.comparisons[4].first == 2 && res.comparisons[4].second == 3));
    CHECK((res.comparisons[5].first == 1 && res.comparisons[5].second == 2 && res.comparisons[5].round == 2));
    CHECK(res.rounds == 3);
    CHECK(res.order == std::vector<index_t>{1, 2, 3, 0});
    CHECK(res.tier == std::vector<index_t>{2, 0, 1, 2});
    CHECK(rewards == std::vector<double>{0.0, 1.0, 1.0 - 1.0 / 3.0, 1.0 - 2.0 / 3.0});
    // The z-score of 0, 1/3, 2/3, 1 with the sample std.
    double mean = 0.5, sd = std::sqrt((0.25 + 1.0 / 36 + 1.0 / 36 + 0.25) / 3);
    CHECK(adv[1] == doctest::Approx((1.0 - mean) / (sd + 1e-6)).epsilon(1e-14));
    CHECK(res.points[0] == 1.0);   // the anchor's mean seeding score, then one lost match scoring 1
    CHECK(res.points[1] == 4.0);
}

TEST_CASE("single elimination: ties go to the first-listed player, so an all-ties judge still gives a strict order") {
    std::vector<double> rewards(4), adv(4);
    const auto res = rk::single_elimination(pt::exec::seq, pt::uniform_groups{4}, tie_judge{}, rewards, adv);
    // Seeds keep index order; bracket (0, 3), (1, 2); final (0, 1); the first-round losers keep their
    // match order since their mean points tie.
    CHECK(res.order == std::vector<index_t>{0, 1, 3, 2});
    CHECK(rewards == std::vector<double>{1.0, 1.0 - 1.0 / 3.0, 0.0, 1.0 - 2.0 / 3.0});
    CHECK(adv[0] > 1.0);
    CHECK(res.zscore.zero_variance_groups == 0);
}

TEST_CASE("single elimination: drop-and-repair versus textbook byes") {
    const std::vector<double> q{0, 5, 4, 3, 2};  // row 0 is the weakest anchor; seeds 1..4 are rows 1..4
    std::vector<double> r(5);
    SUBCASE("drop and repair (ArenaRL): no byes for the top seeds, the odd player out advances") {
        const auto res = rk::single_elimination(pt::exec::seq, pt::uniform_groups{5}, quality_judge{&q}, r, pt::none,
                                                rk::single_elimination_options::arenarl());
        CHECK(res.comparisons.size() == 8);
        // Seed order for 8 slots is 1 8 4 5 2 7 3 6; dropping 6..8 leaves 1 4 5 2 3: matches (1,4), (5,2).
        // Seeds 1..5 are rows 1, 2, 3, 4, 0 (the anchor scored 0 in every seeding match).
        CHECK((res.comparisons[4].first == 1 && res.comparisons[4].second == 4));
        CHECK((res.comparisons[5].first == 0 && res.comparisons[5].second == 2));
        REQUIRE(res.byes.size() >= 1);
        CHECK(res.byes[0].row == 3);  // seed 3, the odd one out in round one
        CHECK(res.order.front() == 1);
    }
    SUBCASE("standard (the default): seeds 1, 2, 3 skip round one; seed 4 plays seed 5") {
        const auto res = rk::single_elimination(pt::exec::seq, pt::uniform_groups{5}, quality_judge{&q}, r, pt::none);
        CHECK(res.comparisons.size() == 8);
        CHECK((res.comparisons[4].first == 4 && res.comparisons[4].second == 0));
        std::vector<index_t> bye_rows;
        for (const auto& b : res.byes) bye_rows.push_back(b.row);
        CHECK(bye_rows == std::vector<index_t>{1, 2, 3});
        CHECK(res.order == std::vector<index_t>{1, 2, 3, 4, 0});
    }
}

TEST_CASE("round robin and anchor: min-rank rewards; all ties give zero advantages") {
    const std::vector<double> q{1, 3, 3, 0};
    std::vector<double> r(4), a(4);
    auto rr = rk::round_robin(pt::exec::seq, pt::uniform_groups{4}, quality_judge{&q}, r, a);
    CHECK(rr.comparisons.size() == 6);
    CHECK(rr.points == std::vector<double>{1.0, 2.5, 2.5, 0.0});
    CHECK(rr.tier == std::vector<index_t>{2, 0, 0, 3});  // min-rank - 1
    CHECK(r == std::vector<double>{(4.0 - 3.0) / 3.0, 1.0, 1.0, 0.0});
    CHECK(rr.order == std::vector<index_t>{1, 2, 0, 3});

    auto an = rk::anchor(pt::exec::seq, pt::uniform_groups{4}, quality_judge{&q}, r, a, {.anchor = 3});
    CHECK(an.comparisons.size() == 3);
    for (const auto& c : an.comparisons) CHECK(c.second == 3);
    CHECK(an.points == std::vector<double>{1.0, 3.0, 3.0, 0.0});

    (void)rk::round_robin(pt::exec::seq, pt::uniform_groups{4}, tie_judge{}, r, a);
    CHECK(r == std::vector<double>(4, 0.0));
    CHECK(a == std::vector<double>(4, 0.0));
    (void)rk::anchor(pt::exec::seq, pt::uniform_groups{4}, tie_judge{}, r, a);
    CHECK(a == std::vector<double>(4, 0.0));
}

TEST_CASE("swiss: rounds, rotating byes, and the standard variant finds the unbeaten best") {
    std::vector<double> q(8);
    for (std::size_t i = 0; i < 8; ++i) q[i] = double((i * 5) % 8);  // a permutation of 0..7
    std::vector<double> r(8);
    const auto res = rk::swiss(pt::exec::seq, pt::uniform_groups{8}, quality_judge{&q}, r, pt::none, {.seed = 11});
    CHECK(res.rounds == 3);
    CHECK(res.comparisons.size() == 12);
    const index_t best = index_t(std::max_element(q.begin(), q.end()) - q.begin());
    CHECK(res.order.front() == best);
    CHECK(res.points[std::size_t(best)] == 3.0);
    CHECK(r[std::size_t(best)] == 1.0);

    std::vector<double> q5{1, 2, 3, 4, 5};
    std::vector<double> r5(5);
    const auto odd = rk::swiss(pt::exec::seq, pt::uniform_groups{5}, quality_judge{&q5}, r5, pt::none, {.seed = 2});
    CHECK(odd.rounds == 3);
    CHECK(odd.byes.size() == 3);
    std::vector<index_t> bye_rows;
    for (const auto& b : odd.byes) bye_rows.push_back(b.row);
    std::sort(bye_rows.begin(), bye_rows.end());
    CHECK(std::adjacent_find(bye_rows.begin(), bye_rows.end()) == bye_rows.end());  // never twice

    const auto capped = rk::swiss(pt::exec::seq, pt::uniform_groups{3}, quality_judge{&q5}, pt::none,
                                  std::vector<double>(3), {.rounds = 10});
    CHECK(capped.rounds == 2);  // capped at N - 1
}

TEST_CASE("double elimination: a grand final between the brackets' champions; determinism under a seed") {
    const auto q = random_qualities(9, 4);
    std::vector<double> r1(9), r2(9), r3(9);
    const auto a = rk::double_elimination(pt::exec::seq, pt::uniform_groups{9}, quality_judge{&q}, r1, pt::none, {.seed = 1});
    const auto b = rk::double_elimination(pt::exec::seq, pt::uniform_groups{9}, quality_judge{&q}, r2, pt::none, {.seed = 1});
    CHECK(a.comparisons.size() == 16);
    CHECK(r1 == r2);
    CHECK(a.order == b.order);
    // A noiseless judge never loses the best row a match: it wins the winners bracket and the final.
    const index_t best = index_t(std::max_element(q.begin(), q.end()) - q.begin());
    CHECK(a.order.front() == best);
    bool differs = false;
    for (std::uint64_t seed = 2; seed < 12 && !differs; ++seed) {
        const auto c = rk::double_elimination(pt::exec::seq, pt::uniform_groups{9}, quality_judge{&q}, r3, pt::none, {.seed = seed});
        for (std::size_t k = 0; k < c.comparisons.size(); ++k)
            differs |= c.comparisons[k].first != a.comparisons[k].first || c.comparisons[k].second != a.comparisons[k].second;
    }
    CHECK(differs);
}

TEST_CASE("comparison counts for N = 1 .. 33 and the edge cases N = 1 and N = 2") {
    for (index_t n = 1; n <= 33; ++n) {
        const auto q = random_qualities(std::size_t(n), std::uint64_t(n));
        for (const auto& t : all_topologies) {
            CAPTURE(n);
            CAPTURE(t.index());
            std::vector<double> r(std::size_t(n), -1.0), a(std::size_t(n), -1.0);
            const auto res = rk::tournament(pt::exec::seq, pt::uniform_groups{n}, quality_judge{&q}, r, a, t);
            const index_t want = expected_comparisons(t, n);
            if (t.index() == 3) {
                index_t rounds = 0;
                while ((index_t(1) << rounds) < n) ++rounds;
                CHECK(index_t(res.comparisons.size()) == std::min(rounds, std::max<index_t>(n - 1, 0)) * (n / 2));
            } else {
                CHECK(index_t(res.comparisons.size()) == want);
            }
            // Every row appears once in the order; rewards lie in [0, 1].
            std::vector<index_t> sorted = res.order;
            std::sort(sorted.begin(), sorted.end());
            for (index_t i = 0; i < n; ++i) CHECK(sorted[std::size_t(i)] == i);
            for (double x : r) CHECK((x >= 0.0 && x <= 1.0));
            if (n == 1) {
                CHECK(r[0] == 0.0);
                CHECK(a[0] == 0.0);
                CHECK(res.rounds == 0);
            }
            if (n == 2 && t.index() == 0) CHECK(res.rounds == 2);  // the seeding match, then the final
        }
    }
}

TEST_CASE_TEMPLATE("tournaments: one judge batch per round across groups; the same as group by group; seq == par",
                   B, POSTTRAIN_HOST_BACKENDS) {
    // Ragged groups of every size from 0 to 12, each its own qualities.
    std::vector<std::int64_t> off{0};
    for (index_t n = 0; n <= 12; ++n) off.push_back(off.back() + n);
    const auto q = random_qualities(std::size_t(off.back()), 9);
    for (const auto& t : all_topologies) {
        CAPTURE(t.index());
        recording_judge judge{&q, 0.3, std::mt19937_64{7}, {}, {}};
        std::vector<double> r(q.size()), a(q.size());
        const auto res = rk::tournament(B::policy(), pt::ragged(off), judge, r, a, t);
        CHECK(index_t(judge.batch_sizes.size()) == res.rounds);
        // Round k's comparisons are exactly batch k.
        std::size_t at = 0;
        for (std::size_t k = 0; k < judge.batches.size(); ++k)
            for (const auto& m : judge.batches[k]) {
                CHECK(res.comparisons[at].first == m.first);
                CHECK(res.comparisons[at].round == index_t(k));
                ++at;
            }
        // Each group alone, with a noiseless judge, equals the batched run with a noiseless judge.
        std::vector<double> r_all(q.size()), r_one;
        const auto all = rk::tournament(B::policy(), pt::ragged(off), quality_judge{&q}, r_all, pt::none, t);
        for (std::size_t g = 0; g + 1 < off.size(); ++g) {
            const index_t lo = off[g], n = off[g + 1] - off[g];
            std::vector<double> qg(q.begin() + lo, q.begin() + lo + n);
            r_one.assign(std::size_t(n), 0.0);
            rk::topology tg = t;
            // The seeded shuffles are per group: group g of the batch draws what group 0 of a lone run
            // would draw only with the same group index, so compare seeded topologies by shape only.
            if (t.index() == 3 || t.index() == 4) continue;
            const auto one = rk::tournament(pt::exec::seq, pt::uniform_groups{std::max<index_t>(n, 1)}, quality_judge{&qg},
                                            r_one, pt::none, tg);
            for (index_t j = 0; j < n; ++j) CHECK(r_one[std::size_t(j)] == r_all[std::size_t(lo + j)]);
        }
        // Bitwise equal to seq.
        recording_judge oracle_judge{&q, 0.3, std::mt19937_64{7}, {}, {}};
        std::vector<double> r_seq(q.size()), a_seq(q.size());
        const auto oracle = rk::tournament(pt::exec::seq, pt::ragged(off), oracle_judge, r_seq, a_seq, t);
        CHECK(pt::test::bitwise_equal(r, r_seq));
        CHECK(pt::test::bitwise_equal(a, a_seq));
        CHECK(res.order == oracle.order);
    }
}

TEST_CASE("tournaments over a permuted (from_ids) layout judge the caller's rows") {
    const std::vector<std::int64_t> ids{7, 3, 7, 3, 7, 3, 7};
    const auto g = pt::grouping::from_ids(pt::exec::seq, ids);
    const std::vector<double> q{1, 10, 2, 30, 3, 20, 4};
    std::vector<double> r(7);
    const auto res = rk::round_robin(pt::exec::seq, g, quality_judge{&q}, r, pt::none);
    for (const auto& c : res.comparisons) CHECK(ids[std::size_t(c.first)] == ids[std::size_t(c.second)]);
    CHECK(res.comparisons.size() == 3 + 6);
    // Group of id 3 (rows 1, 3, 5): 3 > 5 > 1. Group of id 7: 6 > 4 > 2 > 0.
    CHECK(res.order == std::vector<index_t>{3, 5, 1, 6, 4, 2, 0});
    CHECK(r[3] == 1.0);
    CHECK(r[0] == 0.0);
}

TEST_CASE("judges: bidirectional sums both orders and cancels a position bias; with_fallback scores failures as a tie") {
    const std::vector<double> q{2, 7, 4};
    long calls = 0;
    auto biased = [&](index_t a, index_t b) {
        ++calls;
        return rk::scores{q[std::size_t(a)] + 1.5, q[std::size_t(b)]};
    };
    auto bi = rk::bidirectional(biased);
    std::vector<rk::match> m{{0, 0, 1}, {0, 2, 1}};
    std::vector<rk::scores> s(2);
    bi(m, s);
    CHECK(calls == 4);
    CHECK(s[0].first == 2 + 1.5 + 2);
    CHECK(s[0].second == 7 + 7 + 1.5);
    CHECK(s[1].first - s[1].second == doctest::Approx(2 * (4.0 - 7.0)));

    int attempts = 0;
    auto flaky = [&](index_t a, index_t b) {
        ++attempts;
        if (a == 0) throw std::runtime_error("timeout");
        if (b == 0) return rk::scores{std::nan(""), 1.0};
        return rk::scores{q[std::size_t(a)], q[std::size_t(b)]};
    };
    auto safe = rk::with_fallback(flaky, {5, 5}, 2);
    std::vector<rk::match> m2{{0, 1, 2}, {0, 0, 1}, {0, 2, 0}};
    std::vector<rk::scores> s2(3);
    safe(m2, s2);
    CHECK(s2[0].first == 7.0);
    CHECK(s2[1].first == 5.0);
    CHECK(s2[2].second == 5.0);
    CHECK(safe.failures() == 2);  // a pairwise judge that throws fails only that match
    CHECK(attempts == 1 + 3 + 3);  // match 0 answered at once; the two failures asked three times each
    // ArenaRL's judge: each direction retried, then (5, 5); summed, a double failure is (10, 10).
    auto arena = rk::bidirectional(rk::with_fallback([](index_t, index_t) { return rk::scores{std::nan(""), 0}; }, {5, 5}, 10));
    std::vector<rk::scores> s3(1);
    arena(std::vector<rk::match>{{0, 0, 1}}, s3);
    CHECK(s3[0].first == 10.0);
    CHECK(s3[0].second == 10.0);
}

TEST_CASE("judges: with_cache answers repeated matches from memory and from earlier records") {
    const std::vector<double> q = random_qualities(6, 3);
    long calls = 0;
    auto counting = [&](index_t a, index_t b) {
        ++calls;
        return rk::scores{q[std::size_t(a)], q[std::size_t(b)]};
    };
    std::vector<double> r1(6), r2(6);
    const auto rr = rk::round_robin(pt::exec::seq, pt::uniform_groups{6}, counting, r1, pt::none);
    CHECK(calls == 15);
    // The anchor round asks (i, 0): round robin asked (0, i), a different question; nothing is cached.
    auto cached = rk::with_cache(counting, rr.comparisons);
    (void)rk::anchor(pt::exec::seq, pt::uniform_groups{6}, cached, r2, pt::none);
    CHECK(cached.misses() == 5);
    // Round robin again: every match is known.
    (void)rk::round_robin(pt::exec::seq, pt::uniform_groups{6}, cached, r2, pt::none);
    CHECK(cached.misses() == 5);
    CHECK(calls == 20);
    CHECK(r1 == r2);
}

TEST_CASE("tournaments: bad input gives invalid_argument naming the function and the argument") {
    const std::vector<double> q{1, 2, 3, 4};
    std::vector<double> r(4);
    auto nan_judge = [](index_t a, index_t) { return rk::scores{a == 2 ? std::nan("") : 1.0, 1.0}; };
    try {
        (void)rk::single_elimination(pt::exec::seq, pt::uniform_groups{4}, nan_judge, r, pt::none);
        FAIL("expected invalid_argument");
    } catch (const pt::invalid_argument& e) {
        CHECK(e.function() == "posttrain::ranking::single_elimination");
        CHECK(e.argument() == "judge");
        CHECK(std::string(e.what()).find("rows 2 vs 0") != std::string::npos);
    }
    // A batched judge that leaves a verdict unwritten is a failure too, not a score of 0.
    auto lazy = [](std::span<const rk::match>, std::span<rk::scores>) {};
    CHECK_THROWS_AS((void)rk::round_robin(pt::exec::seq, pt::uniform_groups{4}, lazy, r, pt::none), pt::invalid_argument);
    // Wrapped, the failures are ties.
    CHECK_NOTHROW((void)rk::round_robin(pt::exec::seq, pt::uniform_groups{4}, rk::with_fallback(lazy, {5, 5}), r, pt::none));

    CHECK_THROWS_WITH_AS((void)rk::anchor(pt::exec::seq, pt::uniform_groups{0}, quality_judge{&q}, r, pt::none),
                         doctest::Contains("groups"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)rk::anchor(pt::exec::seq, pt::uniform_groups{4}, quality_judge{&q}, r, pt::none, {.anchor = 4}),
                         doctest::Contains("options.anchor"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)rk::single_elimination(pt::exec::seq, pt::uniform_groups{4}, quality_judge{&q}, r, pt::none,
                                                      {.anchor = -1}),
                         doctest::Contains("options.anchor"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)rk::round_robin(pt::exec::seq, pt::uniform_groups{4}, quality_judge{&q}, r, r),
                         doctest::Contains("overlaps"), pt::invalid_argument);
    std::vector<double> short_adv(3);
    CHECK_THROWS_WITH_AS((void)rk::round_robin(pt::exec::seq, pt::uniform_groups{4}, quality_judge{&q}, r, short_adv),
                         doctest::Contains("advantages"), pt::invalid_argument);
    rk::swiss_options bad_hook;
    bad_hook.shuffle = [](index_t, std::span<index_t> p) { p[0] = 99; };
    CHECK_THROWS_WITH_AS((void)rk::swiss(pt::exec::seq, pt::uniform_groups{4}, quality_judge{&q}, r, pt::none, bad_hook),
                         doctest::Contains("options.shuffle"), pt::invalid_argument);
    CHECK_THROWS_AS((void)rk::with_fallback(tie_judge{}, {std::nan(""), 5}), pt::invalid_argument);
    CHECK_THROWS_AS((void)rk::with_fallback(tie_judge{}, {5, 5}, -1), pt::invalid_argument);
}

TEST_CASE("tournaments: rewards or advantages over the layout's buffers are refused before anything is written") {
    // The rewards are written before zscore_into reads the layout again for the advantages: over the
    // offsets they would hand it the rewards' bits as group bounds.
    const std::vector<double> q{0.1, 0.9, 0.5, 0.3};
    std::vector<std::int64_t> off{0, 2, 4, 0};
    const auto before = off;
    const pt::ragged_groups<std::int64_t> groups{pt::tensor_view<const std::int64_t, 1>(off.data(), 3)};
    const pt::tensor_view<double, 1> over(reinterpret_cast<double*>(off.data()), 4);
    std::vector<double> r(4, -1.0), a(4, -1.0);
    CHECK_THROWS_WITH_AS((void)rk::round_robin(pt::exec::seq, groups, quality_judge{&q}, over, a),
                         "posttrain::ranking::round_robin: argument 'rewards': overlaps the layout's 'offsets'; pass a separate buffer",
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)rk::round_robin(pt::exec::seq, groups, quality_judge{&q}, r, over),
                         doctest::Contains("argument 'advantages': overlaps the layout's 'offsets'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)rk::single_elimination(pt::exec::seq, groups, quality_judge{&q}, over, pt::none),
                         doctest::Contains("argument 'rewards': overlaps the layout's 'offsets'"), pt::invalid_argument);
    CHECK(off == before);
    CHECK(r == std::vector<double>(4, -1.0));
    CHECK(a == std::vector<double>(4, -1.0));
}
