#include <cmath>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>
#include <posttrain/advantage/unlikeliness.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::test::bitwise_equal;

namespace {
// [N, T] row-major helpers.
pt::tensor_view<const double, 2> mat(const std::vector<double>& v, pt::index_t n, pt::index_t t) {
    return pt::tensor_view<const double, 2>(v.data(), n, t);
}
}  // namespace

TEST_CASE("unlikeliness: hand-computed ranks, multipliers and GRPO on the shaped rewards") {
    // One group of four, two tokens each. Mean log-probs: -1, -0.5, -2, -0.25 -> ascending ranks 1, 2, 0, 3.
    const std::vector<double> r{1, 1, 0, 1};
    const std::vector<double> lp{-1, -1, -0.5, -0.5, -2, -2, -0.25, -0.25};
    const std::vector<double> m(8, 1.0);
    std::vector<double> shaped(4);
    const auto res = adv::unlikeliness_rewards(pt::exec::seq, r, mat(lp, 4, 2), mat(m, 4, 2), pt::uniform_groups{4}, shaped);
    CHECK(res.groups == 1);
    CHECK(res.empty_responses == 0);
    CHECK(shaped[0] == doctest::Approx(1 - 0.25 * 1 / 4.0));
    CHECK(shaped[1] == doctest::Approx(1 - 0.25 * 2 / 4.0));
    CHECK(shaped[2] == 0.0);                                  // incorrect samples are untouched
    CHECK(shaped[3] == doctest::Approx(1 - 0.25 * 3 / 4.0));  // the most likely correct one: 1 - beta (n-1)/n
    // The rare correct sample now gets the largest advantage.
    std::vector<double> a(4);
    (void)adv::grpo(pt::exec::seq, shaped, pt::uniform_groups{4}, a);
    CHECK(a[0] > a[1]);
    CHECK(a[1] > a[3]);
    CHECK(a[2] < 0);
}

TEST_CASE("unlikeliness: beta 0 is plain GRPO; sum vs mean likelihood; ties keep row order") {
    const std::vector<double> r{1, 0, 1};
    // Row 0: mean -1 sum -1 (one token); row 2: mean -0.75 sum -1.5 (two tokens).
    const std::vector<double> lp{-1, 9, 0, 0, -1, -0.5};
    const std::vector<double> m{1, 0, 1, 1, 1, 1};
    std::vector<double> s(3);
    (void)adv::unlikeliness_rewards(pt::exec::seq, r, mat(lp, 3, 2), mat(m, 3, 2), pt::uniform_groups{3}, s, {.beta = 0});
    CHECK(s == r);
    // mean: ascending -1 (row 0), -0.75 (row 2), 0 (row 1) -> ranks 0, 2, 1
    (void)adv::unlikeliness_rewards(pt::exec::seq, r, mat(lp, 3, 2), mat(m, 3, 2), pt::uniform_groups{3}, s, {.beta = 0.3});
    CHECK(s[0] == doctest::Approx(1.0));
    CHECK(s[2] == doctest::Approx(1 - 0.3 / 3.0));
    // sum: ascending -1.5 (row 2), -1 (row 0), 0 (row 1) -> ranks 1, 2, 0
    (void)adv::unlikeliness_rewards(pt::exec::seq, r, mat(lp, 3, 2), mat(m, 3, 2), pt::uniform_groups{3}, s,
                                    {.beta = 0.3, .likelihood = adv::sequence_likelihood::sum});
    CHECK(s[0] == doctest::Approx(1 - 0.3 / 3.0));
    CHECK(s[2] == doctest::Approx(1.0));
    // Ties: equal likelihoods rank in row order.
    const std::vector<double> same(6, -1.0), ones(6, 1.0), r1{1, 1, 1};
    (void)adv::unlikeliness_rewards(pt::exec::seq, r1, mat(same, 3, 2), mat(ones, 3, 2), pt::uniform_groups{3}, s, {.beta = 0.3});
    CHECK(s[0] == doctest::Approx(1.0));
    CHECK(s[1] == doctest::Approx(1 - 0.1));
    CHECK(s[2] == doctest::Approx(1 - 0.2));
}

TEST_CASE("unlikeliness: an empty response ranks as most likely (NaN last); singleton groups keep their reward") {
    const std::vector<double> r{1, 1, 1};
    const std::vector<double> lp{-1, -1, -3, -3, 5, 5};
    const std::vector<double> m{1, 1, 1, 1, 0, 0};  // row 2 has no valid token (its garbage is ignored)
    std::vector<double> s(3);
    const auto res = adv::unlikeliness_rewards(pt::exec::seq, r, mat(lp, 3, 2), mat(m, 3, 2), pt::uniform_groups{3}, s);
    CHECK(res.empty_responses == 1);
    CHECK(s[1] == doctest::Approx(1.0));
    CHECK(s[0] == doctest::Approx(1 - 0.25 / 3));
    CHECK(s[2] == doctest::Approx(1 - 0.25 * 2 / 3));
    (void)adv::unlikeliness_rewards(pt::exec::seq, r, mat(lp, 3, 2), mat(m, 3, 2), pt::uniform_groups{1}, s);
    CHECK(s == r);
}

TEST_CASE("unlikeliness: the official float32 multiplier") {
    const std::vector<double> r{1, 1, 1};
    const std::vector<double> lp{-1, -2, -3}, m(3, 1.0);
    std::vector<double> s(3);
    (void)adv::unlikeliness_rewards(pt::exec::seq, r, mat(lp, 3, 1), mat(m, 3, 1), pt::uniform_groups{3}, s,
                                    adv::unlikeliness_options::official(0.3));
    // rank 2 (row 0): 1 - float(2/3) * float(0.3) in float32
    CHECK(s[0] == double(1.0f - float(2.0 / 3.0) * 0.3f));
    CHECK(s[2] == 1.0);
}

TEST_CASE_TEMPLATE("unlikeliness: seq == par bitwise on ragged groups, in place", B, POSTTRAIN_HOST_BACKENDS) {
    const auto off = pt::test::random_offsets(500, 12, 3);
    const auto N = std::size_t(off.back());
    const auto r = pt::test::random_rewards(N, 5);
    const pt::index_t T = 7;
    std::vector<double> lp(N * T), m(N * T);
    for (std::size_t k = 0; k < lp.size(); ++k) lp[k] = -double((k * 7919) % 101) / 17.0, m[k] = (k % 5) != 0;
    std::vector<double> got(r), want(N);
    (void)adv::unlikeliness_rewards(B::policy(), got, mat(lp, pt::index_t(N), T), mat(m, pt::index_t(N), T), pt::ragged(off), got);
    (void)adv::unlikeliness_rewards(pt::exec::seq, r, mat(lp, pt::index_t(N), T), mat(m, pt::index_t(N), T), pt::ragged(off), want);
    CHECK(bitwise_equal(got, want));
}

TEST_CASE("unlikeliness: bad input names the argument") {
    const std::vector<double> r{1, 0}, lp{-1, -1}, m{1, 1};
    std::vector<double> s(2), short_out(1);
    auto call = [&](auto&& out, adv::unlikeliness_options o) {
        (void)adv::unlikeliness_rewards(pt::exec::seq, r, mat(lp, 2, 1), mat(m, 2, 1), pt::uniform_groups{2}, out, o);
    };
    CHECK_THROWS_WITH_AS(call(s, {.beta = -1}), doctest::Contains("options.beta"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(call(short_out, {}), doctest::Contains("shaped"), pt::invalid_argument);
    const std::vector<double> bad{-1, std::nan("")};
    CHECK_THROWS_WITH_AS((void)adv::unlikeliness_rewards(pt::exec::seq, r, mat(bad, 2, 1), mat(m, 2, 1), pt::uniform_groups{2}, s),
                         doctest::Contains("old_log_probs"), pt::invalid_argument);
    CHECK_THROWS_AS((void)adv::unlikeliness_rewards(pt::exec::seq, r, mat(lp, 2, 1), mat(m, 2, 1), pt::uniform_groups{3}, s),
                    pt::invalid_argument);
}

TEST_CASE("unlikeliness: a non-finite beta is refused by name") {
    const std::vector<double> r{1, 0}, lp{-1, -2}, m{1, 1};
    std::vector<double> s(2);
    for (double beta : {double(INFINITY), double(NAN), -0.1})
        CHECK_THROWS_WITH_AS((void)adv::unlikeliness_rewards(pt::exec::seq, r, mat(lp, 2, 1), mat(m, 2, 1), pt::uniform_groups{2}, s,
                                                             {.beta = beta}),
                             doctest::Contains("options.beta"), pt::invalid_argument);
}

TEST_CASE("unlikeliness: the mask selects tokens, its values are not weights") {
    // Row 0: tokens -1 and -3 (mean -2); row 1: -2.5 and -1 (mean -1.75): row 0 is the less likely.
    // Weighting by mask values (3, 1) in both rows would flip the order (-1.5 vs -2.125).
    const std::vector<double> r{1, 1}, lp{-1, -3, -2.5, -1}, ones{1, 1, 1, 1}, weights{3, 1, 3, 1};
    std::vector<double> a(2), b(2);
    (void)adv::unlikeliness_rewards(pt::exec::seq, r, mat(lp, 2, 2), mat(ones, 2, 2), pt::uniform_groups{2}, a);
    (void)adv::unlikeliness_rewards(pt::exec::seq, r, mat(lp, 2, 2), mat(weights, 2, 2), pt::uniform_groups{2}, b);
    CHECK(a == b);
    CHECK(a[0] == 1.0);  // row 0 is the less likely: rank 0
    CHECK(a[1] == doctest::Approx(1 - 0.25 / 2));
}

TEST_CASE("unlikeliness_rewards: shaped may be the rewards themselves, not partly over them") {
    std::vector<double> buf{1, 1, 1, 1, 9}, lp{-1, -2, -3, -4};
    std::vector<std::int64_t> m(4, 1);
    const pt::tensor_view<const double, 1> r(buf.data(), 4);
    const pt::tensor_view<const double, 2> lpv(lp.data(), 4, 1);
    const pt::tensor_view<const std::int64_t, 2> mv(m.data(), 4, 1);
    CHECK_THROWS_WITH_AS((void)adv::unlikeliness_rewards(pt::exec::seq, r, lpv, mv, pt::uniform_groups{2}, pt::make_view(buf.data() + 1, 4)),
                         doctest::Contains("partly overlaps the input 'rewards'"), pt::invalid_argument);
    std::vector<double> want(4);
    (void)adv::unlikeliness_rewards(pt::exec::seq, r, lpv, mv, pt::uniform_groups{2}, want);
    (void)adv::unlikeliness_rewards(pt::exec::seq, r, lpv, mv, pt::uniform_groups{2}, pt::make_view(buf.data(), 4));  // in place
    CHECK(bitwise_equal(std::vector<double>(buf.begin(), buf.begin() + 4), want));
}
