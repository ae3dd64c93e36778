#include <cstdint>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>
#include <posttrain/advantage/rubric.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::test::bitwise_equal;

TEST_CASE("rubric_mix: every branch by hand, with and without group normalisation") {
    const std::vector<double> out{1, 0, 1, 0}, rub{0.2, 0.4, 0.8, 0.0};
    std::vector<double> r(4);
    adv::rubric_mix(pt::exec::seq, out, rub, pt::uniform_groups{4}, r, {.ratio = 0.5});
    CHECK(r == std::vector<double>{0.6, 0.2, 0.9, 0.0});
    adv::rubric_mix(pt::exec::seq, out, rub, pt::uniform_groups{4}, r, {.ratio = 0.5, .normalize = true});
    CHECK(r[0] == doctest::Approx(0.5 + 0.5 * 0.25));
    CHECK(r[1] == doctest::Approx(0.25));
    CHECK(r[2] == doctest::Approx(1.0));
    adv::rubric_mix(pt::exec::seq, out, rub, pt::uniform_groups{4}, r, {.ratio = 0.5, .branch = adv::rubric_branch::only_positive});
    CHECK(r == std::vector<double>{0.6, 0.0, 0.9, 0.0});
    adv::rubric_mix(pt::exec::seq, out, rub, pt::uniform_groups{4}, r, {.ratio = 0.5, .branch = adv::rubric_branch::only_negative});
    CHECK(r == std::vector<double>{1.0, 0.2, 1.0, 0.0});
    // The released script: normalize + only_positive mixes the RAW rubric reward (CaRR's quirk).
    adv::rubric_mix(pt::exec::seq, out, rub, pt::uniform_groups{4}, r, adv::rubric_mix_options::official(0.5));
    CHECK(r == std::vector<double>{0.6, 0.0, 0.9, 0.0});
    // Normalisation is per group; an all-zero group is left unscaled.
    const std::vector<double> rub2{0.2, 0.4, 0.0, 0.0};
    adv::rubric_mix(pt::exec::seq, out, rub2, pt::uniform_groups{2}, r, {.ratio = 0.5, .normalize = true});
    CHECK(r[0] == doctest::Approx(0.75));
    CHECK(r[1] == doctest::Approx(0.5));
    CHECK(r[2] == doctest::Approx(0.5));
    CHECK(r[3] == 0.0);
}

TEST_CASE("rubric_mix composes with GRPO: correct trajectories with better evidence rank higher") {
    const std::vector<double> out{1, 1, 0, 0}, rub{1.0, 0.2, 0.9, 0.1};
    std::vector<double> r(4), a(4);
    adv::rubric_mix(pt::exec::seq, out, rub, pt::uniform_groups{4}, r, adv::rubric_mix_options::official());
    (void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{4}, a);
    CHECK(a[0] > a[1]);
    CHECK(a[1] > 0);
    CHECK(a[2] == a[3]);  // incorrect ones keep the outcome reward alone
}

TEST_CASE_TEMPLATE("rubric_mix: seq == par bitwise, in place", B, POSTTRAIN_HOST_BACKENDS) {
    const auto off = pt::test::random_offsets(400, 10, 9);
    const auto N = std::size_t(off.back());
    const auto out = pt::test::random_rewards(N, 1, true), rub = pt::test::random_rewards(N, 2);
    std::vector<double> got(out), want(N);
    for (auto o : {adv::rubric_mix_options{}, adv::rubric_mix_options::official()}) {
        got = out;
        adv::rubric_mix(B::policy(), got, rub, pt::ragged(off), got, o);
        adv::rubric_mix(pt::exec::seq, out, rub, pt::ragged(off), want, o);
        CHECK(bitwise_equal(got, want));
    }
}

TEST_CASE("rubric_reward: BFS from the answer entity, disconnected and unsupported rubrics") {
    // Rubrics: 0 {E1,E2} supported, 1 {E0,E1} supported, 2 {E2,E3} supported, 3 {E4} supported, 4 {E0} unsupported.
    const std::vector<int> sup{1, 1, 1, 1, 0};
    const std::vector<std::int64_t> off{0, 2, 4, 6, 7, 8}, ent{1, 2, 0, 1, 2, 3, 4, 0};
    std::vector<double> conn(5);
    const auto res = adv::rubric_reward(pt::exec::seq, sup, off, ent, 0, conn);
    CHECK(res.counted == 3);
    CHECK(res.reward == doctest::Approx(3.0 / 5.0));
    CHECK(conn == std::vector<double>{1, 1, 1, 0, 0});
    const auto plain = adv::rubric_reward(pt::exec::seq, sup, off, ent, 0, pt::none, {.connectivity = false});
    CHECK(plain.reward == doctest::Approx(4.0 / 5.0));
    // An unsupported bridge breaks the chain.
    const std::vector<int> sup2{1, 0, 1, 1, 0};
    const auto broken = adv::rubric_reward(pt::exec::seq, sup2, off, ent, 0, conn);
    CHECK(broken.counted == 0);
    // No rubrics: reward 0.
    const std::vector<int> none_sup;
    const std::vector<std::int64_t> off0{0}, ent0;
    CHECK(adv::rubric_reward(pt::exec::seq, none_sup, off0, ent0, 0, pt::none).reward == 0.0);
}

TEST_CASE("rubric: bad input names the argument") {
    const std::vector<double> out{1, 0}, rub{0.5};
    std::vector<double> r(2);
    CHECK_THROWS_WITH_AS(adv::rubric_mix(pt::exec::seq, out, rub, pt::uniform_groups{2}, r), doctest::Contains("rubric"),
                         pt::invalid_argument);
    const std::vector<int> sup{1, 1};
    const std::vector<std::int64_t> bad_off{0, 3, 2}, ent{0, 1};
    CHECK_THROWS_WITH_AS((void)adv::rubric_reward(pt::exec::seq, sup, bad_off, ent, 0, pt::none), doctest::Contains("entity_offsets"),
                         pt::invalid_argument);
    const std::vector<std::int64_t> short_off{0, 2};
    CHECK_THROWS_WITH_AS((void)adv::rubric_reward(pt::exec::seq, sup, short_off, ent, 0, pt::none), doctest::Contains("entity_offsets"),
                         pt::invalid_argument);
}

TEST_CASE("rubric_mix: mixed may be the outcome itself, not partly over it") {
    std::vector<double> buf{1, 0, 1, 0, 9}, rubric{0.5, 1, 0, 0.25};
    const pt::tensor_view<const double, 1> outcome(buf.data(), 4);
    CHECK_THROWS_WITH_AS(adv::rubric_mix(pt::exec::seq, outcome, rubric, pt::uniform_groups{2}, pt::make_view(buf.data() + 1, 4)),
                         doctest::Contains("partly overlaps the input 'outcome'"), pt::invalid_argument);
    std::vector<double> want(4);
    adv::rubric_mix(pt::exec::seq, outcome, rubric, pt::uniform_groups{2}, want);
    adv::rubric_mix(pt::exec::seq, outcome, rubric, pt::uniform_groups{2}, pt::make_view(buf.data(), 4));  // in place
    CHECK(bitwise_equal(std::vector<double>(buf.begin(), buf.begin() + 4), want));
}
