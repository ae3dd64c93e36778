#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/sampling/diversity.hpp>
#include <posttrain/sampling/scores.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace smp = posttrain::sampling;
using pt::test::bitwise_equal;

namespace {
const double nan_v = std::numeric_limits<double>::quiet_NaN();
}

TEST_CASE("pass_rate and outcome_variance: hand-computed groups, P in {0, 1} gives OVS 0") {
    // 4 prompts x 4 rollouts: p = 3/4, 0, 1, 1/4.
    const std::vector<double> r{1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0};
    std::vector<double> p(4), v(4);
    const auto a = smp::pass_rate(pt::exec::seq, r, pt::uniform_groups{4}, p);
    const auto b = smp::outcome_variance(pt::exec::seq, r, pt::uniform_groups{4}, v);
    CHECK(p == std::vector<double>{0.75, 0.0, 1.0, 0.25});
    CHECK(v == std::vector<double>{0.1875, 0.0, 0.0, 0.1875});
    CHECK(a.groups == 4);
    CHECK(a.zero_variance_groups == 2);
    CHECK(b.zero_variance_groups == 2);
    CHECK(b.empty_groups == 0);
}

TEST_CASE("outcome_variance: empty groups give 0 and are counted; fractional rewards use p(1-p) of the mean") {
    const std::vector<double> r{0.5, 0.25, 1.0};
    const std::vector<std::int64_t> off{0, 2, 2, 3};
    std::vector<double> v(3);
    const auto res = smp::outcome_variance(pt::exec::seq, r, pt::ragged(off), v);
    CHECK(v[0] == doctest::Approx(0.375 * 0.625));
    CHECK(v[1] == 0.0);
    CHECK(v[2] == 0.0);
    CHECK(res.empty_groups == 1);
    CHECK(res.zero_variance_groups == 1);
}

TEST_CASE("outcome_variance: NaN rewards raise by default, propagate or are ignored on request") {
    const std::vector<double> r{1, nan_v, 0, 0};
    std::vector<double> v(2);
    CHECK_THROWS_AS((void)smp::outcome_variance(pt::exec::seq, r, pt::uniform_groups{2}, v), pt::invalid_argument);
    (void)smp::outcome_variance(pt::exec::seq, r, pt::uniform_groups{2}, v, {.nonfinite_rewards = smp::nonfinite::propagate});
    CHECK(std::isnan(v[0]));
    CHECK(v[1] == 0.0);
    const auto res =
        smp::outcome_variance(pt::exec::seq, r, pt::uniform_groups{2}, v, {.nonfinite_rewards = smp::nonfinite::ignore});
    CHECK(v[0] == 0.0);  // p = 1 over the one valid row
    CHECK(res.ignored_rows == 1);
    CHECK(res.zero_variance_groups == 2);
}

TEST_CASE("outcome_variance: the float32 preset rounds like torch (float32 mean, float32 p(1-p))") {
    const std::vector<double> r{0.1, 0.7, 0.3};
    std::vector<float> v(1);
    (void)smp::outcome_variance(pt::exec::seq, r, pt::uniform_groups{3}, v, smp::outcome_options::mmr1());
    const float p = ((0.0f + 0.1f) + 0.7f + 0.3f) / 3.0f;
    const float want = p * (1.0f - p);
    CHECK(v[0] == want);
}

TEST_CASE("outcome scores: bad layouts and outputs are invalid_argument") {
    const std::vector<double> r{1, 0, 1};
    std::vector<double> v(2);
    CHECK_THROWS_AS((void)smp::pass_rate(pt::exec::seq, r, pt::uniform_groups{2}, v), pt::invalid_argument);
    const std::vector<std::int64_t> bad{0, 2, 1, 3};
    std::vector<double> v3(3);
    CHECK_THROWS_AS((void)smp::pass_rate(pt::exec::seq, r, pt::ragged(bad), v3), pt::invalid_argument);
    std::vector<double> v1(1);
    CHECK_THROWS_AS((void)smp::pass_rate(pt::exec::seq, r, pt::uniform_groups{2}, v1), pt::invalid_argument);
}

TEST_CASE_TEMPLATE("outcome scores: par is bitwise equal to seq, any layout", B, POSTTRAIN_HOST_BACKENDS) {
    const auto off = pt::test::random_offsets(5000, 17, 3);
    const auto r = pt::test::random_rewards(std::size_t(off.back()), 5, true);
    for (auto o : {smp::outcome_options{}, smp::outcome_options::mmr1()}) {
        std::vector<double> got(off.size() - 1), want(off.size() - 1);
        const auto a = smp::outcome_variance(B::policy(), r, pt::ragged(off), got, o);
        const auto b = smp::outcome_variance(pt::exec::seq, r, pt::ragged(off), want, o);
        CHECK(bitwise_equal(got, want));
        CHECK(a.zero_variance_groups == b.zero_variance_groups);
        CHECK(a.empty_groups == b.empty_groups);
    }
}

TEST_CASE("combine_metrics: weighted sum, float64 and MMR1's float32 order") {
    const std::vector<double> m{0.25, 0.5, 1.0,   // metric 0
                                0.5, 0.0, 4.0};  // metric 1
    const std::vector<double> w{0.8, -0.5};
    std::vector<double> out(3);
    smp::combine_metrics(pt::exec::seq, pt::tensor_view<const double, 2>(m.data(), 2, 3), w, out);
    CHECK(out[0] == doctest::Approx(0.8 * 0.25 - 0.25));
    CHECK(out[1] == doctest::Approx(0.4));
    CHECK(out[2] == doctest::Approx(0.8 - 2.0));
    std::vector<float> out32(3);
    smp::combine_metrics(pt::exec::seq, pt::tensor_view<const double, 2>(m.data(), 2, 3), w, out32,
                         smp::combine_options::mmr1());
    CHECK(out32[0] == 0.25f * 0.8f + 0.5f * -0.5f);

    std::vector<double> short_w{1.0};
    CHECK_THROWS_AS(smp::combine_metrics(pt::exec::seq, pt::tensor_view<const double, 2>(m.data(), 2, 3), short_w, out),
                    pt::invalid_argument);
    std::vector<double> nan_w{1.0, nan_v};
    CHECK_THROWS_AS(smp::combine_metrics(pt::exec::seq, pt::tensor_view<const double, 2>(m.data(), 2, 3), nan_w, out),
                    pt::invalid_argument);
    std::vector<double> m_nan = m;
    m_nan[4] = nan_v;
    CHECK_THROWS_AS(smp::combine_metrics(pt::exec::seq, pt::tensor_view<const double, 2>(m_nan.data(), 2, 3), w, out),
                    pt::invalid_argument);
}

TEST_CASE("variance_promotion_score: alpha OVS + beta TDS, presets, in place") {
    std::vector<double> ovs{0.25, 0.0, 0.1875}, tds{0.5, 1.0, 0.0}, vps(3);
    smp::variance_promotion_score(pt::exec::seq, ovs, tds, vps);  // paper main setting 0.8 / 0.2
    CHECK(vps[0] == doctest::Approx(0.8 * 0.25 + 0.2 * 0.5));
    CHECK(vps[1] == doctest::Approx(0.2));
    smp::variance_promotion_score(pt::exec::seq, ovs, tds, vps, smp::vps_options::paper_ablation());
    CHECK(vps[1] == doctest::Approx(0.5));
    smp::variance_promotion_score(pt::exec::seq, ovs, tds, ovs, {.alpha = 1.0, .beta = 1.0});  // in place
    CHECK(ovs == std::vector<double>{0.75, 1.0, 0.1875});
    CHECK_THROWS_AS(smp::variance_promotion_score(pt::exec::seq, ovs, tds, vps, {.alpha = nan_v}), pt::invalid_argument);
    std::vector<double> short_tds{0.5};
    CHECK_THROWS_AS(smp::variance_promotion_score(pt::exec::seq, ovs, short_tds, vps), pt::invalid_argument);
}

TEST_CASE("minmax_weights: scaling, the all-equal guard and MMR1's float32 form") {
    const std::vector<double> v{1, 3, 5, 2};
    std::vector<double> w(4);
    const auto res = smp::minmax_weights(pt::exec::seq, v, w);
    CHECK(w == std::vector<double>{0.0, 0.5, 1.0, 0.25});
    CHECK(res.min == 1.0);
    CHECK(res.max == 5.0);
    CHECK(!res.all_equal);

    const std::vector<double> same{0.1875, 0.1875, 0.1875};
    std::vector<double> ws(3, -1.0);
    CHECK(smp::minmax_weights(pt::exec::seq, same, ws).all_equal);
    CHECK(ws == std::vector<double>{1.0, 1.0, 1.0});  // uniform fallback: every weight 1
    (void)smp::minmax_weights(pt::exec::seq, same, ws, smp::minmax_options::mmr1());
    CHECK(ws == std::vector<double>{0.0, 0.0, 0.0});  // MMR1: all zero (its sampler then fails)

    // float32 + 1e-8: max - min rounds up by an ulp, so the top weight is 0.99999994 (quirk M6).
    const std::vector<float> f{0.1875f, 0.0f, 0.234375f};
    std::vector<float> wf(3);
    (void)smp::minmax_weights(pt::exec::seq, f, wf, smp::minmax_options::mmr1());
    CHECK(wf[1] == 0.0f);
    CHECK(wf[2] == 0.99999994f);

    // In place is allowed.
    std::vector<double> inplace{2, 4, 6};
    (void)smp::minmax_weights(pt::exec::seq, inplace, inplace);
    CHECK(inplace == std::vector<double>{0.0, 0.5, 1.0});
}

TEST_CASE("minmax_weights: bad input") {
    std::vector<double> empty, w0;
    CHECK_THROWS_AS((void)smp::minmax_weights(pt::exec::seq, empty, w0), pt::invalid_argument);
    const std::vector<double> v{1, nan_v, 3};
    std::vector<double> w(3);
    CHECK_THROWS_AS((void)smp::minmax_weights(pt::exec::seq, v, w), pt::invalid_argument);
    const auto res = smp::minmax_weights(pt::exec::seq, v, w, {.nonfinite_values = smp::nonfinite::propagate});
    CHECK(std::isnan(res.min));
    CHECK(std::isnan(w[0]));
    CHECK_THROWS_AS((void)smp::minmax_weights(pt::exec::seq, v, w, {.epsilon = -1.0}), pt::invalid_argument);
    std::vector<double> w2(2);
    CHECK_THROWS_AS((void)smp::minmax_weights(pt::exec::seq, v, w2), pt::invalid_argument);
    // A partial overlap of input and output is refused.
    std::vector<double> buf{1, 2, 3, 4};
    CHECK_THROWS_AS((void)smp::minmax_weights(pt::exec::seq, pt::tensor_view<const double, 1>(buf.data(), 3),
                                              pt::tensor_view<double, 1>(buf.data() + 1, 3)),
                    pt::invalid_argument);
}

TEST_CASE_TEMPLATE("minmax_weights: par is bitwise equal to seq across reduction chunks", B, POSTTRAIN_HOST_BACKENDS) {
    const auto v = pt::test::random_rewards(100000, 9);
    std::vector<double> got(v.size()), want(v.size());
    const auto a = smp::minmax_weights(B::policy(), v, got);
    const auto b = smp::minmax_weights(pt::exec::seq, v, want);
    CHECK(bitwise_equal(got, want));
    CHECK(a.min == b.min);
    CHECK(a.max == b.max);
}

TEST_CASE_TEMPLATE("ema_update: momentum blends, 0 replaces, 1 freezes; seq == par", B, POSTTRAIN_HOST_BACKENDS) {
    std::vector<double> s{1.0, 0.0, 0.5}, f{0.0, 1.0, 0.5};
    smp::ema_update(B::policy(), s, f, {.momentum = 0.25});
    CHECK(s == std::vector<double>{0.25, 0.75, 0.5});
    smp::ema_update(B::policy(), s, f, {.momentum = 1.0});
    CHECK(s == std::vector<double>{0.25, 0.75, 0.5});
    smp::ema_update(B::policy(), s, f);  // default momentum 0: replace
    CHECK(s == f);

    const auto big_s = pt::test::random_rewards(70000, 1), big_f = pt::test::random_rewards(70000, 2);
    for (auto o : {smp::ema_options{.momentum = 0.3}, smp::ema_options{.momentum = 0.9, .arithmetic = smp::precision::float32}}) {
        std::vector<double> x = big_s, y = big_s;
        smp::ema_update(B::policy(), x, big_f, o);
        smp::ema_update(pt::exec::seq, y, big_f, o);
        CHECK(bitwise_equal(x, y));
    }
}

TEST_CASE("ema_update: float32 form and bad input") {
    std::vector<float> s{0.2f}, f{0.7f};
    smp::ema_update(pt::exec::seq, s, f, {.momentum = 0.3, .arithmetic = smp::precision::float32});
    const float a = 0.3f * 0.2f, b = float(1.0 - 0.3) * 0.7f;
    CHECK(s[0] == a + b);
    CHECK_THROWS_AS(smp::ema_update(pt::exec::seq, s, f, {.momentum = 1.5}), pt::invalid_argument);
    CHECK_THROWS_AS(smp::ema_update(pt::exec::seq, s, f, {.momentum = nan_v}), pt::invalid_argument);
    std::vector<float> f2{0.1f, 0.2f};
    CHECK_THROWS_AS(smp::ema_update(pt::exec::seq, s, f2), pt::invalid_argument);
    std::vector<float> fn{std::numeric_limits<float>::quiet_NaN()};
    CHECK_THROWS_AS(smp::ema_update(pt::exec::seq, s, fn), pt::invalid_argument);
    CHECK_THROWS_AS(smp::ema_update(pt::exec::seq, s, s), pt::invalid_argument);  // state may not alias fresh
}

// The example of docs/algorithms/vps.md, compiled here.
TEST_CASE("docs/algorithms/vps.md example") {
    // 3 prompts x 4 rollouts: verifier outcomes, and each rollout's token ids (flat + offsets).
    const std::vector<double> rewards = {1, 0, 1, 1,   0, 0, 0, 0,   1, 0, 0, 1};
    const std::vector<std::int64_t> tokens = {7, 8, 9,  7, 8, 9,  7, 8, 9,  7, 8, 9,        // prompt 0: all alike
                                              1, 2,  3, 4,  5, 6,  7, 8,                    // prompt 1: all different
                                              4, 4, 2,  4, 4, 3,  4, 2, 2,  3, 4, 4};       // prompt 2: in between
    const std::vector<std::int64_t> offsets = {0, 3, 6, 9, 12, 14, 16, 18, 20, 23, 26, 29, 32};
    const pt::uniform_groups per_prompt{4};

    std::vector<double> ovs(3), tds(3), vps(3), weights(3);
    (void)smp::outcome_variance(pt::exec::seq, rewards, per_prompt, ovs);  // p(1 - p): 0.1875 0 0.25
    (void)smp::self_bleu_diversity(pt::exec::par, tokens, pt::ragged(offsets), per_prompt, tds);  // 1 - self-BLEU
    smp::variance_promotion_score(pt::exec::seq, ovs, tds, vps);           // 0.8 OVS + 0.2 TDS
    const auto range = smp::minmax_weights(pt::exec::seq, vps, weights);   // min -> 0, max -> 1

    std::vector<double> state = weights;                                  // first estimate: stored as is
    smp::ema_update(pt::exec::seq, state, weights, {.momentum = 0.9});    // later ones: blended

    CHECK(ovs == std::vector<double>{0.1875, 0.0, 0.25});
    CHECK(tds[0] == 0.0);
    CHECK(tds[1] == 1.0);
    CHECK((tds[2] > 0.0 && tds[2] < 1.0));
    CHECK(!range.all_equal);
    CHECK(weights[0] == 0.0);
    CHECK(state == weights);
}

TEST_CASE("outcome scores: an output over the layout's offsets is refused before anything is written") {
    const std::vector<double> r{1, 0, 1, 1};
    std::vector<std::int64_t> off{0, 2, 4};
    const auto before = off;
    const pt::ragged_groups<std::int64_t> groups{pt::tensor_view<const std::int64_t, 1>(off.data(), 3)};
    const pt::tensor_view<double, 1> over(reinterpret_cast<double*>(off.data() + 1), 2);
    CHECK_THROWS_WITH_AS((void)smp::pass_rate(pt::exec::seq, r, groups, over),
                         "posttrain::sampling::pass_rate: argument 'pass_rate': overlaps the layout's 'offsets'; pass a separate buffer",
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)smp::outcome_variance(pt::exec::seq, r, groups, over),
                         doctest::Contains("argument 'variance': overlaps the layout's 'offsets'"), pt::invalid_argument);
    CHECK(off == before);
}
