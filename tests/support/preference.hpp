#pragma once
// Helpers shared by the preference tests (tests/preference/*_test.cpp): central finite differences
// (gradient.hpp), seeded random vectors, and checks that bad input raises posttrain::invalid_argument naming the
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

#include "gradient.hpp"

namespace posttrain::test {

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
