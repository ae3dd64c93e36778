// Numeric helpers: stable softplus / log-sigmoid / sigmoid, and the fixed summation order.

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <posttrain/core/numeric.hpp>

namespace pt = posttrain;
namespace num = posttrain::numeric;

TEST_CASE_TEMPLATE("numeric: softplus and log_sigmoid are stable at +-1000", T, float, double) {
    CHECK(num::softplus(T(1000)) == T(1000));
    CHECK(num::softplus(T(-1000)) == T(0));
    CHECK(num::log_sigmoid(T(1000)) == T(0));
    CHECK(num::log_sigmoid(T(-1000)) == T(-1000));
    CHECK(std::isfinite(num::softplus(T(1000))));
    CHECK(num::sigmoid(T(1000)) == T(1));
    CHECK(num::sigmoid(T(-1000)) == T(0));
    CHECK(num::softplus(T(0)) == doctest::Approx(std::log(2.0)));
    CHECK(num::log_sigmoid(T(0)) == doctest::Approx(-std::log(2.0)));
    CHECK(num::sigmoid(T(0)) == T(0.5));
    // Tiny arguments keep their relative precision: softplus(-40) = exp(-40) to first order.
    CHECK(double(num::softplus(T(-40))) == doctest::Approx(std::exp(-40.0)).epsilon(1e-6));
    CHECK(double(num::log_sigmoid(T(40))) == doctest::Approx(-std::exp(-40.0)).epsilon(1e-6));
}

TEST_CASE("numeric: softplus matches the naive formula where that is exact enough") {
    for (double x = -20; x <= 20; x += 0.25) {
        CAPTURE(x);
        CHECK(num::softplus(x) == doctest::Approx(std::log1p(std::exp(x))).epsilon(1e-14));
        CHECK(num::sigmoid(x) == doctest::Approx(1.0 / (1.0 + std::exp(-x))).epsilon(1e-14));
        CHECK(num::log_sigmoid(x) == doctest::Approx(std::log(1.0 / (1.0 + std::exp(-x)))).epsilon(1e-12));
    }
}

TEST_CASE("numeric: is_finite") {
    CHECK(num::is_finite(1.0));
    CHECK(num::is_finite(-std::numeric_limits<float>::max()));
    CHECK_FALSE(num::is_finite(std::numeric_limits<double>::infinity()));
    CHECK_FALSE(num::is_finite(-std::numeric_limits<float>::infinity()));
    CHECK_FALSE(num::is_finite(std::numeric_limits<double>::quiet_NaN()));
    CHECK(num::is_finite(42));
}

TEST_CASE("numeric: fixed_order_sum uses eight lanes combined pairwise") {
    // The documented order, written out: lane l sums j = l mod 8, then ((0+4)+(2+6))+((1+5)+(3+7)).
    auto reference = [](const std::vector<double>& x) {
        double lane[8] = {};
        for (std::size_t j = 0; j < x.size(); ++j) lane[j % 8] += x[j];
        return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
    };
    for (std::size_t n : {0u, 1u, 7u, 8u, 9u, 15u, 16u, 17u, 1000u, 4099u}) {
        CAPTURE(n);
        std::vector<double> x(n);
        for (std::size_t j = 0; j < n; ++j) x[j] = std::sin(double(j) * 1.7) * std::pow(10.0, double(j % 13) - 6.0);
        const double got = pt::detail::fixed_order_sum(pt::index_t(n), [&](pt::index_t j) { return x[std::size_t(j)]; });
        const double want = reference(x);
        CHECK(std::memcmp(&got, &want, sizeof got) == 0);
    }
    // An order-sensitive input: left-to-right summation loses the small terms, the lanes do not.
    std::vector<double> y{1e16, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1e16};
    const double s = pt::detail::fixed_order_sum(pt::index_t(y.size()), [&](pt::index_t j) { return y[std::size_t(j)]; });
    CHECK(s == reference(y));
    CHECK(pt::detail::is_nan(std::nan("")));
    CHECK_FALSE(pt::detail::is_nan(0.0));
}
