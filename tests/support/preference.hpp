#pragma once
// Helpers shared by the preference tests (tests/preference/*_test.cpp): central finite differences,
// seeded random vectors, and checks that bad input raises posttrain::invalid_argument naming the
// function and the argument. One version of each, so that every test checks the same way.

#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/core/error.hpp>

namespace posttrain::test {

// How close a finite difference fd must be to the analytic gradient g: |fd - g| <= rel * |g| + abs.
// Tests whose losses are less smooth (or scaled) pass their own.
struct fd_tolerance {
    double rel = 1e-6;
    double abs = 1e-9;
};

// Checks grad against central differences (f(x + h) - f(x - h)) / 2h, h = 1e-6, of the scalar f at every
// coordinate of x (x is perturbed in place and restored; f reads it). Where a mask is given, its zero
// positions are not differenced: their gradient must be exactly 0 instead (padding never gets any).
inline void check_gradient(std::vector<double>& x, const std::vector<double>& grad, const std::function<double()>& f,
                           const std::vector<double>* mask = nullptr, fd_tolerance tol = {}) {
    for (std::size_t j = 0; j < x.size(); ++j) {
        if (mask && (*mask)[j] == 0) {
            CHECK(grad[j] == 0.0);
            continue;
        }
        const double h = 1e-6, x0 = x[j];
        x[j] = x0 + h;
        const double up = f();
        x[j] = x0 - h;
        const double down = f();
        x[j] = x0;
        const double fd = (up - down) / (2 * h);
        CHECK_MESSAGE(std::fabs(fd - grad[j]) <= tol.rel * std::fabs(grad[j]) + tol.abs,
                      "coordinate " << j << ": fd " << fd << " analytic " << grad[j]);
    }
}

// |got - want| <= abs + rel * |want|: for comparisons against a reference value (want) computed another way.
inline bool close(double got, double want, double rel = 1e-6, double abs = 1e-10) {
    return std::fabs(got - want) <= abs + rel * std::fabs(want);
}

// n values drawn uniformly from [lo, hi) by a generator seeded with seed (the same vector on every run).
inline std::vector<double> uniform(std::size_t n, double lo, double hi, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> d(lo, hi);
    std::vector<double> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// Runs call, which must throw posttrain::invalid_argument whose message contains fn (e.g.
// "posttrain::preference::kto") and every one of needles (the argument's name, what is wrong with it).
// One CHECK per string; an empty needle is trivially found.
template <class Call, class... Needles>
void expect_error(Call&& call, const std::string& fn, const Needles&... needles) {
    try {
        call();
    } catch (const posttrain::invalid_argument& e) {
        const std::string what = e.what();
        CHECK_MESSAGE(what.find(fn) != std::string::npos, what);
        for (const std::string& needle : std::initializer_list<std::string>{std::string(needles)...})
            CHECK_MESSAGE(what.find(needle) != std::string::npos, what);
        return;
    }
    FAIL("no exception; expected one from " << fn);
}

// The message of the posttrain::invalid_argument that f throws, or "" when it throws none: for
// CHECK(mentions(error_of(...), fn, arg)) as one assertion.
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const posttrain::invalid_argument& e) {
        return e.what();
    }
    return "";
}

// Whether an error message names both the function and the argument.
inline bool mentions(const std::string& what, const char* fn, const char* arg) {
    return what.find(fn) != std::string::npos && what.find(arg) != std::string::npos;
}

}  // namespace posttrain::test
