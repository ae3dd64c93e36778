// credit::gigpo and its parts: hand values, reduction to GRPO when no state repeats, singleton step
// groups, the two episode statistics, anchor-state and similarity groups (difflib ratios checked
// against Python's), seq == par bitwise, 10^6 steps on one thread, and bad input.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/credit/gigpo.hpp>

#include "rollouts.hpp"
#include "support/backends.hpp"

namespace pt = posttrain;
namespace cr = posttrain::credit;
namespace adv = posttrain::advantage;
using pt::index_t;
using pt::test::bitwise_equal;

TEST_CASE("gigpo: hand example (defaults: per-trajectory episode statistics, mean_norm, omega 1)") {
    // Two trajectories of one task; they meet in state 5 at their first steps.
    std::vector<std::int64_t> g{0, 0, 0, 0, 0}, t{0, 1, 0, 1, 1}, s{5, 5, 6, 7, 8};
    std::vector<double> r{0, 0, 1, 0, 2}, ep{1, 0, 1, 0, 0}, a(5);
    const auto res = cr::gigpo(pt::exec::seq, cr::steps(g, t, s, r), ep, a, {.gamma = 0.5});
    // Episode: returns 1 and 0, mean 0.5. Step returns (gamma 0.5): 0.5, 0.5, 1, 1, 2; state 5 holds
    // rows 0 and 1 with equal returns (zero variance -> 0); the other states are singletons (0).
    CHECK(a == std::vector<double>{0.5, -0.5, 0.5, -0.5, -0.5});
    CHECK(res.trajectories == 2);
    CHECK(res.episode_groups == 1);
    CHECK(res.step.groups == 4);
    CHECK(res.step.singleton_groups == 3);
    CHECK(res.step.zero_variance_groups == 1);
    // gamma 0.95: returns 0.95 and 1.805 in state 5, mean 1.3775.
    (void)cr::gigpo(pt::exec::seq, cr::steps(g, t, s, r), ep, a);
    CHECK(a[0] == doctest::Approx(0.5 - 0.4275));
    CHECK(a[1] == doctest::Approx(-0.5 + 0.4275));
    CHECK(a[2] == 0.5);
}

TEST_CASE_TEMPLATE("gigpo: without repeated states it is GRPO of the episode returns", B, POSTTRAIN_HOST_BACKENDS) {
    auto b = pt::test::make_rollouts(50, 6, 7, 4, 3);
    for (index_t i = 0; i < b.size(); ++i) b.state[std::size_t(i)] = i;  // every state unique
    for (auto norm : {cr::gigpo_norm::mean_norm, cr::gigpo_norm::mean_std_norm}) {
        cr::gigpo_options o{.norm = norm};
        std::vector<double> a(b.reward.size());
        const auto res = cr::gigpo(B::policy(), b.records(), b.episode, a, o);
        CHECK(res.step.singleton_groups == b.size());
        // GRPO over one score per trajectory, grouped by episode group.
        std::vector<double> scores, ga;
        std::vector<std::int64_t> groups;
        std::vector<std::int64_t> seen;
        for (index_t i = 0; i < b.size(); ++i)
            if (b.step[std::size_t(i)] == 0) {
                scores.push_back(b.episode[std::size_t(i)]);
                groups.push_back(b.group[std::size_t(i)]);
                seen.push_back(b.traj[std::size_t(i)]);
            }
        ga.resize(scores.size());
        (void)adv::grpo(pt::exec::seq, scores, pt::grouping::from_ids(pt::exec::seq, groups), ga,
                        {.std_scale = norm == cr::gigpo_norm::mean_norm ? adv::scale::none : adv::scale::group});
        for (index_t i = 0; i < b.size(); ++i) {
            const auto k = std::size_t(std::find(seen.begin(), seen.end(), b.traj[std::size_t(i)]) - seen.begin());
            CHECK(a[std::size_t(i)] == ga[k]);
        }
    }
}

TEST_CASE("gigpo: a singleton step group gives A^S = 0 exactly; omega scales the step level") {
    std::vector<std::int64_t> g{0, 0, 0}, t{0, 1, 2}, s{1, 2, 2};
    std::vector<double> returns{3.5, 1.0, 2.0}, a(3);
    const auto groups = cr::anchor_state_groups(pt::exec::seq, cr::steps(g, t, s));
    (void)cr::step_advantages(pt::exec::seq, groups, returns, a, {.norm = cr::gigpo_norm::mean_std_norm});
    CHECK(a[0] == 0.0);
    CHECK(a[1] == doctest::Approx(-0.5 / (std::sqrt(0.5) + 1e-6)));
    std::vector<double> ep{1, 1, 0}, full(3);
    (void)cr::gigpo(pt::exec::seq, cr::steps(g, t, s), ep, returns, full, {.step_weight = 0.5});
    // Episode: mean 2/3; step: state 2 holds returns 1 and 2 (mean 1.5).
    CHECK(full[0] == doctest::Approx(1.0 / 3));
    CHECK(full[1] == doctest::Approx(1.0 / 3 - 0.25));
    CHECK(full[2] == doctest::Approx(-2.0 / 3 + 0.25));
}

TEST_CASE("gigpo: episode statistics per trajectory (paper) or across steps (verl-agent)") {
    // Trajectory 0 (return 1) has three steps, trajectory 1 (return 0) one.
    std::vector<std::int64_t> g{0, 0, 0, 0}, t{0, 0, 0, 1}, s{1, 2, 3, 4};
    std::vector<double> ep{1, 1, 1, 0}, a(4);
    (void)cr::episode_advantages(pt::exec::seq, cr::steps(g, t, s), ep, a);
    CHECK(a == std::vector<double>{0.5, 0.5, 0.5, -0.5});
    (void)cr::episode_advantages(pt::exec::seq, cr::steps(g, t, s), ep, a, {.episode = cr::episode_stats::across_steps});
    CHECK(a == std::vector<double>{0.25, 0.25, 0.25, -0.75});
    // One trajectory in its group: 0 by default, the raw return under verl-agent's preset.
    std::vector<std::int64_t> g1{0}, t1{0}, s1{0};
    std::vector<double> ep1{2.0}, a1(1);
    (void)cr::episode_advantages(pt::exec::seq, cr::steps(g1, t1, s1), ep1, a1);
    CHECK(a1[0] == 0.0);
    (void)cr::episode_advantages(pt::exec::seq, cr::steps(g1, t1, s1), ep1, a1, cr::gigpo_options::verl_agent());
    CHECK(a1[0] == 2.0);
    (void)cr::episode_advantages(pt::exec::seq, cr::steps(g1, t1, s1), ep1, a1,
                                 cr::gigpo_options::verl_agent(cr::gigpo_norm::mean_std_norm));
    CHECK(a1[0] == 2.0 / double(1.0f + 1e-6f));
}

TEST_CASE("gigpo: anchor-state groups are exact, per episode group, canonical by first occurrence") {
    std::vector<std::int64_t> g{0, 1, 0, 1, 0}, t{0, 1, 2, 3, 4}, s{7, 7, 9, 7, 7};
    const auto groups = cr::anchor_state_groups(pt::exec::seq, cr::steps(g, t, s));
    CHECK(groups.group_of == std::vector<index_t>{0, 1, 2, 1, 0});
    CHECK(groups.ids == std::vector<std::int64_t>{0, 1, 2});
    // The exact sort fallback (taken when two distinct tuples share a hash) gives the same grouping.
    const auto b = pt::test::make_rollouts(30, 5, 6, 3, 9);
    auto group = [](cr::id_view ids) { return pt::grouping::from_ids(pt::exec::seq, ids); };
    const auto hashed = cr::detail::group_by_columns({cr::id_view(b.group.data(), b.size()), cr::id_view(b.state.data(), b.size())},
                                                     b.size(), group);
    const auto sorted = cr::detail::group_by_columns({cr::id_view(b.group.data(), b.size()), cr::id_view(b.state.data(), b.size())},
                                                     b.size(), group, true);
    CHECK(hashed.group_of == sorted.group_of);
    CHECK(hashed.permutation == sorted.permutation);
    CHECK(hashed.offsets == sorted.offsets);
}

TEST_CASE("gigpo: difflib ratios equal Python's SequenceMatcher(None, a, b).ratio()") {
    CHECK(cr::sequence_matcher_ratio("abcd", "bcde") == 0.75);
    CHECK(cr::sequence_matcher_ratio("hall; 2 doors", "hall; 2 doors.") == 0.9629629629629629);
    CHECK(cr::sequence_matcher_ratio("", "") == 1.0);
    CHECK(cr::sequence_matcher_ratio("a", "") == 0.0);
    CHECK(cr::sequence_matcher_ratio("private Thread currentThread;", "private volatile Thread currentThread;") == 0.8656716417910447);
    CHECK(cr::sequence_matcher_ratio("café au lait", "cafe au lait") == 0.9166666666666666);  // code points, not bytes
    CHECK(cr::sequence_matcher_ratio("héllo wörld", "hello world") == 0.8181818181818182);
    // autojunk (len(b) >= 200): popular elements start no match but extend one.
    std::string a = "Q", b = "Q";
    for (int i = 0; i < 20; ++i) a += "ab";
    for (int i = 0; i < 150; ++i) b += "ab";
    a += "R";
    b += "R";
    CHECK(cr::sequence_matcher_ratio(a, b) == 0.2441860465116279);
    std::string c, d = "xyz";
    for (int i = 0; i < 15; ++i) c += "the quick brown fox ";
    for (int i = 0; i < 12; ++i) d += "the quick brown cat ";
    d += "jumps";
    CHECK(cr::sequence_matcher_ratio(c, d) == 0.0036496350364963502);
    CHECK(cr::sequence_matcher_ratio(c, d, false) == 0.7481751824817519);
}

TEST_CASE_TEMPLATE("gigpo: similarity groups join the first cluster whose representative is similar", B, POSTTRAIN_HOST_BACKENDS) {
    std::vector<std::string> obs{"room A; key", "room A; key.", "goal", "room A; key!", "goal", "room B"};
    std::vector<std::int64_t> g{0, 0, 0, 0, 1, 0}, t{0, 1, 2, 3, 4, 5}, s(6, 0);
    const auto groups = cr::similarity_groups(B::policy(), cr::steps(g, t, s), cr::ratio_similarity(obs, 0.9));
    // "room A; key." and "room A; key!" join row 0's cluster; "goal" in group 1 is its own cluster.
    CHECK(groups.group_of == std::vector<index_t>{0, 0, 1, 0, 2, 3});
    const auto exact = cr::similarity_groups(B::policy(), cr::steps(g, t, s), cr::ratio_similarity(obs, 1.0));
    CHECK(exact.num_groups() == 6);
    CHECK_THROWS_AS(cr::ratio_similarity(obs, 0.0), pt::invalid_argument);
}

TEST_CASE("gigpo: seq == par bitwise, both overloads, both episode statistics") {
    const auto b = pt::test::make_rollouts(4000, 8, 10, 6, 21);
    for (auto o : {cr::gigpo_options{}, cr::gigpo_options::verl_agent(cr::gigpo_norm::mean_std_norm, 0.7)}) {
        std::vector<double> a(b.reward.size()), c(b.reward.size());
        const auto r1 = cr::gigpo(pt::exec::seq, b.records(), b.episode, a, o);
        const auto r2 = cr::gigpo(pt::exec::par.with_threads(4), b.records(), b.episode, c, o);
        CHECK(bitwise_equal(a, c));
        CHECK(r1.step.groups == r2.step.groups);
        std::vector<float> af(b.reward.size()), cf(b.reward.size());
        (void)cr::gigpo(pt::exec::seq, b.records(), b.episode, b.reward, af, o);
        (void)cr::gigpo(pt::exec::par.with_threads(4), b.records(), b.episode, b.reward, cf, o);
        CHECK(bitwise_equal(af, cf));
    }
}

TEST_CASE("gigpo: 10^6 steps on one thread") {
    const auto b = pt::test::make_rollouts(1 << 14, 8, 16, 8, 1);  // ~1.1M steps
    std::vector<double> a(b.reward.size());
    const auto t0 = std::chrono::steady_clock::now();
    const auto res = cr::gigpo(pt::exec::seq, b.records(), b.episode, a);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("gigpo: %lld steps, %lld step groups, one thread: %.1f ms\n", (long long)b.size(), (long long)res.step.groups, ms);
    CHECK(res.trajectories == (1 << 17));
#if defined(__OPTIMIZE__) && !defined(__SANITIZE_ADDRESS__)
    CHECK(ms < 5000.0);  // generous: measured well under a second at -O2 (see the report / docs)
#endif
}

TEST_CASE("gigpo: broadcast to tokens under a mask") {
    std::vector<double> a{0.5, -1.0}, mask{1, 1, 0, 1, 0, 0}, out(6);
    cr::broadcast_to_tokens(pt::exec::seq, a, pt::tensor_view<const double, 2>(mask.data(), 2, 3),
                            pt::tensor_view<double, 2>(out.data(), 2, 3));
    CHECK(out == std::vector<double>{0.5, 0.5, 0.0, -1.0, -0.0, -0.0});
}

TEST_CASE("gigpo: bad input") {
    std::vector<std::int64_t> g{0, 0, 0, 0}, t{1, 2, 1, 2}, s{0, 0, 1, 1};
    std::vector<double> r{0, 0, 1, 0}, ep{1, 0, 1, 0}, a(4);
    const auto recs = cr::steps(g, t, s, r);
    CHECK_THROWS_WITH_AS((void)cr::gigpo(pt::exec::seq, recs, ep, a, {.order = cr::trajectory_order::contiguous}),
                         doctest::Contains("interleaved"), pt::invalid_argument);
    std::vector<std::int64_t> negative{0, -3, 1, 1};
    CHECK_THROWS_WITH_AS((void)cr::gigpo(pt::exec::seq, recs.with_steps(negative), ep, a), doctest::Contains("must be >= 0"),
                         pt::invalid_argument);
    std::vector<double> varying{1, 0, 0.5, 0};
    CHECK_THROWS_WITH_AS((void)cr::gigpo(pt::exec::seq, recs, varying, a),
                         doctest::Contains("must be the same on every step of a trajectory"), pt::invalid_argument);
    std::vector<double> short_a(3);
    CHECK_THROWS_WITH_AS((void)cr::gigpo(pt::exec::seq, recs, ep, short_a), doctest::Contains("advantages"), pt::invalid_argument);
    CHECK_THROWS_AS((void)cr::gigpo(pt::exec::seq, recs, ep, a, {.epsilon = -1}), pt::invalid_argument);
    CHECK_THROWS_AS((void)cr::gigpo(pt::exec::seq, recs, ep, a, {.nonfinite_returns = adv::nonfinite::ignore}), pt::invalid_argument);
    std::vector<double> nan_ep{NAN, 0, NAN, 0};
    CHECK_THROWS_WITH_AS((void)cr::gigpo(pt::exec::seq, recs, nan_ep, a), doctest::Contains("non-finite"), pt::invalid_argument);
    CHECK_THROWS_AS((void)cr::gigpo(pt::exec::seq, recs, ep, ep), pt::invalid_argument);  // output over an input
    std::vector<std::int64_t> short_s{0, 0, 1};
    CHECK_THROWS_WITH_AS((void)cr::gigpo(pt::exec::seq, cr::steps(g, t, short_s, r), ep, a), doctest::Contains("steps.state"),
                         pt::invalid_argument);
    // Step groups over another number of rows.
    std::vector<std::int64_t> three{0, 1, 2};
    const auto wrong = pt::grouping::from_ids(pt::exec::seq, three);
    cr::gigpo_options o;
    o.step_groups = &wrong;
    CHECK_THROWS_WITH_AS((void)cr::gigpo(pt::exec::seq, recs, ep, a, o), doctest::Contains("options.step_groups"),
                         pt::invalid_argument);
}
