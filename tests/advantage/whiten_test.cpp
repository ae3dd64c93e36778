#include <cmath>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/whiten.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::test::matrix;

TEST_CASE_TEMPLATE("masked statistics: hand-computed values and seq-bitwise results", B, POSTTRAIN_HOST_BACKENDS) {
    // x = [[1, 2, 99], [3, 99, 99]], mask = [[1, 1, 0], [1, 0, 0]] -> valid {1, 2, 3}
    std::vector<double> x{1, 2, 99, 3, 99, 99}, m{1, 1, 0, 1, 0, 0};
    CHECK(adv::masked_mean(B::policy(), matrix(x, 2, 3), matrix(m, 2, 3)) == doctest::Approx(2.0));
    CHECK(adv::masked_var(B::policy(), matrix(x, 2, 3), matrix(m, 2, 3)) == doctest::Approx(1.0));
    CHECK(adv::masked_var(B::policy(), matrix(x, 2, 3), matrix(m, 2, 3), {.ddof = pt::ddof::population}) ==
          doctest::Approx(2.0 / 3));
    std::vector<double> out(6);
    const auto st = adv::masked_whiten(B::policy(), matrix(x, 2, 3), matrix(m, 2, 3), matrix(out, 2, 3), {.epsilon = 0.0});
    CHECK(st.mean == doctest::Approx(2.0));
    CHECK(out[0] == doctest::Approx(-1.0));
    CHECK(out[3] == doctest::Approx(1.0));
    CHECK(out[2] == doctest::Approx(97.0));  // masked positions are transformed too (verl)
    (void)adv::masked_whiten(B::policy(), matrix(x, 2, 3), matrix(m, 2, 3), matrix(out, 2, 3), {.epsilon = 0.0, .mask_output = true});
    CHECK(out[2] == 0.0);
    std::vector<double> rows(2);
    adv::masked_row_mean(B::policy(), matrix(x, 2, 3), matrix(m, 2, 3), rows);
    CHECK(rows[0] == doctest::Approx(1.5));
    CHECK(rows[1] == doctest::Approx(3.0));

    // Large random batch: par must equal seq bit for bit.
    const auto big = pt::test::random_rewards(600 * 50, 4);
    const auto bm = pt::test::random_mask(600, 50, 5);
    std::vector<double> w1(big.size()), w2(big.size());
    (void)adv::masked_whiten(B::policy(), matrix(big, 600, 50), matrix(bm, 600, 50), matrix(w1, 600, 50));
    (void)adv::masked_whiten(pt::exec::seq, matrix(big, 600, 50), matrix(bm, 600, 50), matrix(w2, 600, 50));
    CHECK(pt::test::bitwise_equal(w1, w2));
}

TEST_CASE("masked statistics: degenerate masks") {
    std::vector<double> x{1, 2, 3, 4}, m0{0, 0, 0, 0}, m1{0, 1, 0, 0}, out(4, 7.0);
    const auto st = adv::masked_whiten(pt::exec::seq, matrix(x, 2, 2), matrix(m1, 2, 2), matrix(out, 2, 2));
    CHECK(st.count == 1.0);
    for (double v : out) CHECK(v == 0.0);  // too few valid tokens: zeros, reported through count
    CHECK_THROWS_WITH_AS((void)adv::masked_whiten(pt::exec::seq, matrix(x, 2, 2), matrix(m0, 2, 2), matrix(out, 2, 2),
                                                  adv::whiten_options::verl()),
                         doctest::Contains("posttrain::advantage::masked_whiten: argument 'mask': too few valid tokens"),
                         pt::invalid_argument);
    CHECK(adv::masked_var(pt::exec::seq, matrix(x, 2, 2), matrix(m0, 2, 2)) == 0.0);
    // masked_normalize: per row, fully masked rows give 0.
    std::vector<double> mixed{0, 0, 1, 1};
    adv::masked_normalize(pt::exec::seq, matrix(x, 2, 2), matrix(mixed, 2, 2), matrix(out, 2, 2));
    CHECK(out[0] == 0.0);
    CHECK(out[1] == 0.0);
    CHECK(out[2] == doctest::Approx(-1.0).epsilon(1e-6));
    CHECK(out[3] == doctest::Approx(1.0).epsilon(1e-6));
}

TEST_CASE("masked statistics: masks of any type, shape errors") {
    std::vector<double> x{1, 2, 3, 4};
    std::vector<std::int64_t> mi{1, 1, 0, 1};
    std::vector<unsigned char> mb{1, 1, 0, 1};
    const double a = adv::masked_mean(pt::exec::seq, matrix(x, 2, 2), pt::tensor_view<const std::int64_t, 2>(mi.data(), 2, 2));
    const double b = adv::masked_mean(pt::exec::seq, matrix(x, 2, 2), pt::tensor_view<const unsigned char, 2>(mb.data(), 2, 2));
    CHECK(a == b);
    CHECK(a == doctest::Approx(7.0 / 3));
    std::vector<double> m{1, 1, 1};
    CHECK_THROWS_WITH_AS((void)adv::masked_mean(pt::exec::seq, matrix(x, 2, 2), matrix(m, 1, 3)),
                         doctest::Contains("argument 'mask': shape must match 'values'"), pt::invalid_argument);
}

TEST_CASE("masked statistics: empty masks give 0, centring without scaling") {
    std::vector<double> x{1, 2, 3, 4}, m0{0, 0, 0, 0}, m{1, 1, 1, 0}, out(4), rows(2);
    CHECK(adv::masked_mean(pt::exec::seq, matrix(x, 2, 2), matrix(m0, 2, 2)) == 0.0);
    adv::masked_row_mean(pt::exec::seq, matrix(x, 2, 2), matrix(m0, 2, 2), rows);
    CHECK(rows[0] == 0.0);
    adv::whiten_options centre = adv::whiten_options::openrlhf(/*no_std_norm=*/true);
    (void)adv::masked_whiten(pt::exec::seq, matrix(x, 2, 2), matrix(m, 2, 2), matrix(out, 2, 2), centre);
    CHECK(out[0] == -1.0);
    CHECK(out[3] == 2.0);
}

TEST_CASE("masked statistics: outputs over their inputs are refused, exact in-place transforms allowed") {
    const pt::index_t N = 3, T = 4;
    std::vector<double> x{1, 2, 3, 4, 0, 1, 0, 1, 2, 2, 5, 2}, m{1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 0}, out(12), rows(3);
    const std::vector<double> m0 = m;
    // masked_whiten / masked_normalize: out over the mask, or shifted over the values.
    CHECK_THROWS_AS((void)adv::masked_whiten(pt::exec::seq, matrix(x, N, T), matrix(m, N, T), matrix(m, N, T)), pt::invalid_argument);
    CHECK_THROWS_AS(adv::masked_normalize(pt::exec::seq, matrix(x, N, T), matrix(m, N, T), matrix(m, N, T)), pt::invalid_argument);
    CHECK_THROWS_AS(adv::masked_normalize(pt::exec::seq, pt::tensor_view<const double, 2>(x.data(), N, T - 1),
                                          pt::tensor_view<const double, 2>(m.data(), N, T - 1),
                                          pt::tensor_view<double, 2>(x.data() + 1, N, T - 1)),
                    pt::invalid_argument);
    // masked_row_mean: out over the mask.
    CHECK_THROWS_AS(adv::masked_row_mean(pt::exec::seq, matrix(x, N, T), matrix(m, N, T), pt::tensor_view<double, 1>(m.data(), N)),
                    pt::invalid_argument);
    CHECK(m == m0);
    // In place (the same view) gives what a separate output gets.
    adv::masked_normalize(pt::exec::seq, matrix(x, N, T), matrix(m, N, T), matrix(out, N, T));
    std::vector<double> y = x;
    adv::masked_normalize(pt::exec::seq, matrix(y, N, T), matrix(m, N, T), matrix(y, N, T));
    CHECK(pt::test::bitwise_equal(y, out));
    (void)adv::masked_whiten(pt::exec::seq, matrix(x, N, T), matrix(m, N, T), matrix(out, N, T));
    y = x;
    (void)adv::masked_whiten(pt::exec::seq, matrix(y, N, T), matrix(m, N, T), matrix(y, N, T));
    CHECK(pt::test::bitwise_equal(y, out));
}
