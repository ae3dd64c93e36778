// Step-GRPO, HRPO, TP-GRPO thought spans and process rewards, steps_to_tokens: hand-computed values,
// agreement with grpo per step column, edge cases, bad input, seq == par bitwise.
#include <cmath>
#include <cstdint>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/step_rewards.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::test::matrix;

TEST_CASE_TEMPLATE("step_grpo: each step column is grpo over the rows that have it", B, POSTTRAIN_HOST_BACKENDS) {
    // group 0 = rows 0..2, group 1 = rows 3..4; 3 steps
    std::vector<double> r{1, 0, 5, 0, 1, 7, 1, 9, 9, 2, 2, 2, 4, 3, 2};
    std::vector<std::uint8_t> m{1, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 0};
    std::vector<double> a(15);
    std::vector<std::int64_t> off{0, 3, 5};
    const auto res = adv::step_grpo(B::policy(), matrix(r, 5, 3), pt::tensor_view<const std::uint8_t, 2>(m.data(), 5, 3),
                                    pt::ragged(off), matrix(a, 5, 3));
    CHECK(res.normalized_columns == 5);  // group 0: steps 0, 1 (step 2 nowhere); group 1: steps 0, 1, 2
    CHECK(res.singleton_columns == 1);   // group 1, step 2: only row 3
    std::vector<double> c0{1, 0, 1}, a0(3), c1{0, 1}, a1(2);
    (void)adv::grpo(pt::exec::seq, c0, pt::uniform_groups{3}, a0);
    (void)adv::grpo(pt::exec::seq, c1, pt::uniform_groups{2}, a1);
    CHECK(a[0] == a0[0]);
    CHECK(a[3] == a0[1]);
    CHECK(a[6] == a0[2]);
    CHECK(a[1] == a1[0]);
    CHECK(a[4] == a1[1]);
    CHECK(a[2] == 0.0);  // masked
    CHECK(a[7] == 0.0);
    CHECK(a[0] == doctest::Approx((1.0 / 3) / (std::sqrt(1.0 / 3) + 1e-6)));
    CHECK(a[9] == doctest::Approx(-1 / (std::sqrt(2.0) + 1e-6)));  // group 1, step 0: 2 vs 4
    CHECK(a[10] == doctest::Approx(a[9]));  // group 1, step 1: 2 vs 3
    CHECK(a[11] == 0.0);  // singleton column: singleton::zero
    // returns-to-go with gamma 0.5: row 0 -> [1 + 0.5 * 0, 0], row 1 -> [0 + 0.5 * 1, 1], row 2 -> [1, -]
    adv::step_grpo_options rtg;
    rtg.returns_to_go = true;
    rtg.gamma = 0.5;
    (void)adv::step_grpo(B::policy(), matrix(r, 5, 3), pt::tensor_view<const std::uint8_t, 2>(m.data(), 5, 3), pt::ragged(off),
                         matrix(a, 5, 3), rtg);
    std::vector<double> g0{1, 0.5, 1};
    (void)adv::grpo(pt::exec::seq, g0, pt::uniform_groups{3}, a0);
    CHECK(a[3] == a0[1]);
    // Group 1, row 3: steps 2, 2, 2 -> G = [2 + 0.5(2 + 0.5*2), 2 + 0.5*2, 2]; row 4: 4, 3 -> [4 + 1.5, 3].
    std::vector<double> g1{2 + 0.5 * 3, 5.5}, b1(2);
    (void)adv::grpo(pt::exec::seq, g1, pt::uniform_groups{2}, b1);
    CHECK(a[9] == b1[0]);
}

TEST_CASE_TEMPLATE("hrpo_advantages and steps_to_tokens", B, POSTTRAIN_HOST_BACKENDS) {
    std::vector<double> base{1, -1}, ar{0, 2, 1, 4}, out(4), norm(4);
    std::vector<std::uint8_t> m{1, 1, 1, 0};
    const pt::tensor_view<const std::uint8_t, 2> M(m.data(), 2, 2);
    (void)adv::hrpo_advantages(B::policy(), base, matrix(ar, 2, 2), M, pt::uniform_groups{2}, matrix(out, 2, 2));
    (void)adv::step_grpo(B::policy(), matrix(ar, 2, 2), M, pt::uniform_groups{2}, matrix(norm, 2, 2));
    CHECK(out[0] == doctest::Approx(1 + norm[0]));
    CHECK(out[2] == doctest::Approx(-1 + norm[2]));
    CHECK(out[1] == doctest::Approx(1.0));  // a singleton action column normalises to 0
    CHECK(out[3] == 0.0);                   // no action
    adv::hrpo_options raw;
    raw.normalize_actions = false;
    raw.action_weight = 0.5;
    (void)adv::hrpo_advantages(B::policy(), base, matrix(ar, 2, 2), M, pt::uniform_groups{2}, matrix(out, 2, 2), raw);
    CHECK(out == std::vector<double>{1, 2, -0.5, 0});

    std::vector<std::int64_t> ts{0, 0, 1, -1, 1, 1, 0, -1};
    std::vector<double> tok(8);
    adv::steps_to_tokens(B::policy(), matrix(out, 2, 2), pt::tensor_view<const std::int64_t, 2>(ts.data(), 2, 4), matrix(tok, 2, 4));
    CHECK(tok == std::vector<double>{1, 1, 2, 0, 0, 0, -0.5, 0});
}

TEST_CASE_TEMPLATE("thought_spans and tp_grpo_advantages by hand", B, POSTTRAIN_HOST_BACKENDS) {
    // row 0 (correct): steps 1 1 0 0 1 ; row 1 (incorrect): 0 1 1 -1 -1 ; row 2 (incorrect): all padding
    std::vector<std::int64_t> lab{1, 1, 0, 0, 1, 0, 1, 1, -1, -1, -1, -1, -1, -1, -1};
    const pt::tensor_view<const std::int64_t, 2> L(lab.data(), 3, 5);
    std::vector<std::int64_t> th(15), cnt(3);
    const auto total = adv::thought_spans(B::policy(), L, pt::tensor_view<std::int64_t, 2>(th.data(), 3, 5), cnt);
    CHECK(total == 5);
    CHECK(th == std::vector<std::int64_t>{0, 0, 1, 1, 2, 0, 1, 1, -1, -1, -1, -1, -1, -1, -1});
    CHECK(cnt == std::vector<std::int64_t>{3, 2, 0});

    std::vector<double> base{0.5, -0.25, -0.25}, out(15);
    std::vector<std::uint8_t> ok{1, 0, 0};
    const auto res = adv::tp_grpo_advantages(B::policy(), base, ok, L, matrix(out, 3, 5));
    CHECK(res.accuracy == doctest::Approx(1.0 / 3));
    CHECK(res.thoughts == 5);
    CHECK(res.penalized_thoughts == 1);
    CHECK(res.rewarded_thoughts == 1);
    CHECK(out[0] == 0.5);                                           // right thought, right answer: outcome only
    CHECK(out[2] == doctest::Approx(0.5 - (1.0 / 3) / 2));          // wrong thought of 2 steps: -acc / 2 each
    CHECK(out[3] == out[2]);
    CHECK(out[5] == -0.25);                                         // wrong thought in a wrong answer
    CHECK(out[6] == doctest::Approx(-0.25 + (2.0 / 3) / 2));        // right thought in a wrong answer: (1 - acc) / 2
    CHECK(out[8] == 0.0);                                           // padding
    CHECK(out[10] == 0.0);
    adv::tp_grpo_options fixed;
    fixed.accuracy = 0.8;
    fixed.per_thought = false;
    fixed.scale = 2;
    (void)adv::tp_grpo_advantages(B::policy(), base, ok, L, matrix(out, 3, 5), fixed);
    CHECK(out[2] == doctest::Approx(0.5 - 1.6));
    CHECK(out[7] == doctest::Approx(-0.25 + 0.4));
}

TEST_CASE("step rewards: bad input") {
    std::vector<double> r{1, 2}, a(2), wrong(3);
    std::vector<std::uint8_t> m{1, 1};
    const pt::tensor_view<const std::uint8_t, 2> M(m.data(), 1, 2);
    CHECK_THROWS_AS((void)adv::step_grpo(pt::exec::seq, matrix(r, 1, 2), M, pt::uniform_groups{1}, matrix(wrong, 1, 3)),
                    pt::invalid_argument);
    adv::step_grpo_options batch;
    batch.normalization.std_scale = adv::scale::batch;
    CHECK_THROWS_AS((void)adv::step_grpo(pt::exec::seq, matrix(r, 1, 2), M, pt::uniform_groups{1}, matrix(a, 1, 2), batch),
                    pt::invalid_argument);
    r[1] = std::nan("");
    CHECK_THROWS_AS((void)adv::step_grpo(pt::exec::seq, matrix(r, 1, 2), M, pt::uniform_groups{1}, matrix(a, 1, 2)),
                    pt::invalid_argument);
    r[1] = 2;
    CHECK_THROWS_AS((void)adv::step_grpo(pt::exec::seq, matrix(r, 1, 2), M, pt::uniform_groups{2}, matrix(a, 1, 2)),
                    pt::invalid_argument);
    std::vector<std::int64_t> ts{0, 2};
    std::vector<double> tok(2);
    CHECK_THROWS_AS(adv::steps_to_tokens(pt::exec::seq, matrix(r, 1, 2), pt::tensor_view<const std::int64_t, 2>(ts.data(), 1, 2),
                                         matrix(tok, 1, 2)),
                    pt::invalid_argument);
    std::vector<double> base{0}, out(2);
    std::vector<std::int64_t> lab{1, 0};
    std::vector<std::uint8_t> ok{1};
    adv::tp_grpo_options bad;
    bad.accuracy = 1.5;
    CHECK_THROWS_AS((void)adv::tp_grpo_advantages(pt::exec::seq, base, ok, pt::tensor_view<const std::int64_t, 2>(lab.data(), 1, 2),
                                                  matrix(out, 1, 2), bad),
                    pt::invalid_argument);
    std::vector<double> base2{0, 0};
    CHECK_THROWS_AS((void)adv::tp_grpo_advantages(pt::exec::seq, base2, ok, pt::tensor_view<const std::int64_t, 2>(lab.data(), 1, 2),
                                                  matrix(out, 1, 2)),
                    pt::invalid_argument);
    std::vector<double> hb{0}, ho(2);
    CHECK_THROWS_AS((void)adv::hrpo_advantages(pt::exec::seq, hb, matrix(r, 1, 2), M, pt::uniform_groups{1}, matrix(r, 1, 2)),
                    pt::invalid_argument);  // out aliases action_rewards
}

TEST_CASE("step rewards: outputs aliasing a float mask or the outcome advantages are refused by name") {
    std::vector<double> r{1, 2, 3, 4}, fm{1, 1, 1, 1}, a(4), base{0.5, -0.5};
    CHECK_THROWS_WITH_AS((void)adv::step_grpo(pt::exec::seq, matrix(r, 2, 2), matrix(fm, 2, 2), pt::uniform_groups{2}, matrix(fm, 2, 2)),
                         doctest::Contains("step_mask"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)adv::hrpo_advantages(pt::exec::seq, base, matrix(r, 2, 2), matrix(fm, 2, 2), pt::uniform_groups{2},
                                                    matrix(fm, 2, 2)),
                         doctest::Contains("action_mask"), pt::invalid_argument);
    CHECK_NOTHROW((void)adv::step_grpo(pt::exec::seq, matrix(r, 2, 2), matrix(fm, 2, 2), pt::uniform_groups{2}, matrix(a, 2, 2)));
    // tp_grpo: out [N, S] over the outcome advantages' buffer.
    std::vector<double> shared{0.5, -0.5, 0, 0};
    std::vector<std::int64_t> lab{1, 0, 0, 1};
    std::vector<std::uint8_t> ok{1, 0};
    CHECK_THROWS_WITH_AS((void)adv::tp_grpo_advantages(pt::exec::seq, pt::tensor_view<const double, 1>(shared.data(), 2), ok,
                                                       pt::tensor_view<const std::int64_t, 2>(lab.data(), 2, 2), matrix(shared, 2, 2)),
                         doctest::Contains("outcome_advantages"), pt::invalid_argument);
    std::vector<double> fok{1, 0, 0, 0};
    CHECK_THROWS_WITH_AS((void)adv::tp_grpo_advantages(pt::exec::seq, base, pt::tensor_view<const double, 1>(fok.data(), 2),
                                                       pt::tensor_view<const std::int64_t, 2>(lab.data(), 2, 2), matrix(fok, 2, 2)),
                         doctest::Contains("correct"), pt::invalid_argument);
}

TEST_CASE("step rewards: seq == par bitwise") {
    using pt::index_t;
    const index_t N = 4096, S = 12;
    std::vector<double> r(static_cast<std::size_t>(N * S)), base(static_cast<std::size_t>(N));
    std::vector<std::uint8_t> m(r.size());
    std::vector<std::int64_t> lab(r.size());
    std::vector<std::uint8_t> ok(static_cast<std::size_t>(N));
    for (std::size_t i = 0; i < r.size(); ++i) {
        r[i] = std::sin(double(i) * 0.1);
        m[i] = (i * 13) % 7 != 0;
        lab[i] = std::int64_t((i * 31) % 5) - 1;
    }
    for (std::size_t i = 0; i < base.size(); ++i) {
        base[i] = std::cos(double(i));
        ok[i] = i % 3 == 0;
    }
    const pt::tensor_view<const std::uint8_t, 2> M(m.data(), N, S);
    const pt::tensor_view<const std::int64_t, 2> L(lab.data(), N, S);
    auto par = pt::exec::par.with_threads(4);
    std::vector<double> a(r.size()), b(r.size());
    (void)adv::step_grpo(pt::exec::seq, matrix(r, N, S), M, pt::uniform_groups{8}, matrix(a, N, S), {.returns_to_go = true, .gamma = 0.9});
    (void)adv::step_grpo(par, matrix(r, N, S), M, pt::uniform_groups{8}, matrix(b, N, S), {.returns_to_go = true, .gamma = 0.9});
    CHECK(pt::test::bitwise_equal(a, b));
    (void)adv::hrpo_advantages(pt::exec::seq, base, matrix(r, N, S), M, pt::uniform_groups{8}, matrix(a, N, S));
    (void)adv::hrpo_advantages(par, base, matrix(r, N, S), M, pt::uniform_groups{8}, matrix(b, N, S));
    CHECK(pt::test::bitwise_equal(a, b));
    (void)adv::tp_grpo_advantages(pt::exec::seq, base, ok, L, matrix(a, N, S));
    (void)adv::tp_grpo_advantages(par, base, ok, L, matrix(b, N, S));
    CHECK(pt::test::bitwise_equal(a, b));
}

TEST_CASE("thought_spans: thoughts may be step_labels itself but not shifted over it; counts checked before anything is written") {
    std::vector<std::int64_t> lab{1, 1, 0, 0, 1, 0, 1, 1, -1, -1, -1};
    const pt::tensor_view<const std::int64_t, 2> L(lab.data(), 2, 5);
    std::vector<std::int64_t> th(10), cnt(2);
    (void)adv::thought_spans(pt::exec::seq, L, pt::tensor_view<std::int64_t, 2>(th.data(), 2, 5), cnt);
    auto same = lab;
    (void)adv::thought_spans(pt::exec::seq, pt::tensor_view<const std::int64_t, 2>(same.data(), 2, 5),
                             pt::tensor_view<std::int64_t, 2>(same.data(), 2, 5), pt::none);
    CHECK(std::vector<std::int64_t>(same.begin(), same.begin() + 10) == th);
    const auto before = lab;
    CHECK_THROWS_WITH_AS((void)adv::thought_spans(pt::exec::seq, pt::tensor_view<const std::int64_t, 2>(lab.data() + 1, 2, 5),
                                                  pt::tensor_view<std::int64_t, 2>(lab.data(), 2, 5), pt::none),
                         doctest::Contains("'thoughts': the output partly overlaps the input 'step_labels'"), pt::invalid_argument);
    std::vector<std::int64_t> th2(10, 7), short_cnt(1);
    CHECK_THROWS_WITH_AS((void)adv::thought_spans(pt::exec::seq, L, pt::tensor_view<std::int64_t, 2>(th2.data(), 2, 5), short_cnt),
                         doctest::Contains("'counts': expected length"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)adv::thought_spans(pt::exec::seq, L, pt::tensor_view<std::int64_t, 2>(th2.data(), 2, 5),
                                                  pt::tensor_view<std::int64_t, 1>(th2.data() + 8, 2)),
                         doctest::Contains("'counts': the output overlaps the input 'thoughts'"), pt::invalid_argument);
    CHECK(lab == before);  // nothing written
    CHECK(th2 == std::vector<std::int64_t>(10, 7));
}
