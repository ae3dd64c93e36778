// Extreme but valid inputs across the sampling module: ranges that overflow max - min, subnormal
// weights, huge bucket counts, infinite PF-PPO weights, negative lengths, all-zero alias tables.

#include <cmath>
#include <cstdint>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/sampling/filters.hpp>
#include <posttrain/sampling/samplers.hpp>
#include <posttrain/sampling/scores.hpp>

namespace pt = posttrain;
namespace sp = posttrain::sampling;
using pt::index_t;

TEST_CASE("min-max weights: a range wider than DBL_MAX, and float32 ties decided in float32") {
    const std::vector<double> v{-1e308, 0.0, 1e308};
    std::vector<double> w(3);
    const auto r = sp::minmax_weights(pt::exec::seq, v, w);
    CHECK(!r.all_equal);
    CHECK(w[0] == 0.0);
    CHECK(w[1] == doctest::Approx(0.5));
    CHECK(w[2] == 1.0);
    const std::vector<double> close{1.0, 1.0 + 1e-12};
    std::vector<double> wc(2);
    sp::minmax_options o;
    o.arithmetic = sp::precision::float32;
    const auto rc = sp::minmax_weights(pt::exec::seq, close, wc, o);
    CHECK(rc.all_equal);  // equal once rounded to float32: the all-equal rule applies, no 0 / 0
    CHECK(wc == std::vector<double>{1.0, 1.0});
}

TEST_CASE("weighted draws without replacement: a subnormal weight is still drawn before any zero weight") {
    const std::vector<double> w{0.0, 5e-324, 1.0};
    for (std::uint64_t seed = 0; seed < 20; ++seed) {
        std::vector<index_t> idx(2);
        (void)sp::sample_without_replacement(pt::exec::seq, w, idx, {.seed = seed});
        CHECK(idx[0] != 0);
        CHECK(idx[1] != 0);
    }
}

TEST_CASE("stratified sampling: scores spanning the whole double range; bucket counts are bounded") {
    const std::vector<double> s{-1e308, -1.0, 0.0, 1.0, 1e308};
    std::vector<index_t> idx(5);
    const auto r = sp::stratified_sample(pt::exec::seq, s, idx, {.buckets = 4});
    index_t total = 0;
    for (index_t b : r.bucket_size) total += b;
    CHECK(total == 5);
    CHECK(r.bucket_size.front() == 1);
    CHECK(r.bucket_size.back() == 1);
    CHECK_THROWS_WITH_AS((void)sp::stratified_sample(pt::exec::seq, s, idx, {.buckets = index_t(1) << 62}),
                         doctest::Contains("options.buckets"), pt::invalid_argument);
}

TEST_CASE("PF-PPO: a weight that is not finite is refused under the caller's name") {
    const std::vector<double> s{0.0, 1.0, 2.0};
    std::vector<double> w(3);
    sp::pf_ppo_options o;
    o.weight_pow = -1.0;  // |0|^-1 = inf
    try {
        sp::pf_ppo_weights(pt::exec::seq, s, w, o);
        FAIL("expected invalid_argument");
    } catch (const pt::invalid_argument& e) {
        CHECK(e.function() == "posttrain::sampling::pf_ppo_weights");
        CHECK(e.argument() == "options.weight_pow");
    }
}

TEST_CASE("lengths are counts: negative ones are refused by every length filter") {
    const std::vector<std::int64_t> len{3, -1};
    std::vector<std::uint8_t> t(2);
    CHECK_THROWS_WITH_AS((void)sp::truncated_by_length(pt::exec::seq, len, t, 4), doctest::Contains("lengths"),
                         pt::invalid_argument);
}

TEST_CASE("an all-zero alias table under zero_weights::error is refused") {
    const auto table = sp::make_alias_table(std::vector<double>{0.0, 0.0});
    std::vector<index_t> idx(3);
    CHECK(sp::sample_with_replacement(pt::exec::seq, table, idx).uniform_fallback);
    CHECK_THROWS_AS((void)sp::sample_with_replacement(pt::exec::seq, table, idx, {.all_zero = sp::zero_weights::error}),
                    pt::invalid_argument);
}
