// Errors: invalid_argument and cuda_error messages, and the handler used under -fno-exceptions
// (the handler itself is exercised by the no-exceptions test in tests/headers).

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

#include <posttrain/core/error.hpp>

namespace pt = posttrain;

TEST_CASE("error: invalid_argument names function and argument") {
    const pt::invalid_argument e("posttrain::advantage::grpo", "rewards", "expected length 4, found 3");
    CHECK(std::string(e.what()) == "posttrain::advantage::grpo: argument 'rewards': expected length 4, found 3");
    CHECK(e.function() == "posttrain::advantage::grpo");
    CHECK(e.argument() == "rewards");
    static_assert(std::is_base_of_v<std::invalid_argument, pt::invalid_argument>);
}

TEST_CASE("error: require and raise_invalid_argument") {
    const pt::detail::where w{"f", "x"};
    CHECK_NOTHROW(pt::detail::require(true, w, "never"));
    CHECK_THROWS_WITH_AS(pt::detail::require(false, w, "must be positive"), "f: argument 'x': must be positive",
                         pt::invalid_argument);
    CHECK_THROWS_AS(pt::detail::raise_invalid_argument("f", "x", "bad"), std::invalid_argument);
    CHECK(pt::detail::str(-(std::int64_t{1} << 40)) == "-1099511627776");
}

TEST_CASE("error: cuda_error carries the code") {
    const pt::cuda_error e(2, "posttrain::advantage::grpo", "out of memory");
    CHECK(e.code() == 2);
    CHECK(std::string(e.what()) == "posttrain::advantage::grpo: CUDA error 2: out of memory");
    CHECK_THROWS_AS(pt::detail::raise_cuda_error(700, "f", "illegal address"), pt::cuda_error);
    static_assert(std::is_base_of_v<std::runtime_error, pt::cuda_error>);
}

namespace {
void record(pt::error_kind, const char*) {}
void other(pt::error_kind, const char*) {}
}  // namespace

TEST_CASE("error: set_error_handler returns the previous handler") {
    const pt::error_handler before = pt::set_error_handler(&record);
    // (compared as bools: doctest cannot print function pointers)
    CHECK(static_cast<bool>(pt::set_error_handler(&other) == &record));
    CHECK(static_cast<bool>(pt::set_error_handler(before) == &other));
    CHECK(static_cast<bool>(pt::detail::current_error_handler() == before));
    // With exceptions enabled the handler is not consulted: errors still throw.
    pt::set_error_handler(&record);
    CHECK_THROWS_AS(pt::detail::raise_invalid_argument("f", "x", "bad"), pt::invalid_argument);
    pt::set_error_handler(before);
}

TEST_CASE("error: status bits are distinct") {
    CHECK(pt::status_ok == 0u);
    CHECK((pt::status_nonfinite_input & pt::status_id_out_of_range) == 0u);
    CHECK((pt::status_id_out_of_range & pt::status_empty_reduction) == 0u);
    CHECK((pt::status_nonfinite_input & pt::status_empty_reduction) == 0u);
}
