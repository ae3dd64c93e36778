// Standard-library adapters: std::vector, std::array, std::span, through as_view and through grpo.

#include <doctest/doctest.h>

#include <array>
#include <span>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>

namespace pt = posttrain;

namespace {
constexpr pt::detail::where here{"posttrain::test_fn", "x"};
const std::vector<double> rewards4{1, 2, 3, 5};
// GRPO of {1,2 | 3,5} with the library defaults (sample std, eps 1e-6): +-1/sqrt(2) / (1 + eps*sqrt(2)).
double expected_abs(double gap) { return (gap / 2) / (std::sqrt(gap * gap / 2) + 1e-6); }
}  // namespace

TEST_CASE("adapt std: vector") {
    std::vector<float> v{1, 2, 3};
    auto w = pt::as_view<float, 1>(v, here);
    static_assert(std::is_same_v<decltype(pt::tensor_traits<std::vector<float>>::view(v)), pt::tensor_view<float, 1>>);
    CHECK(w.data() == v.data());
    CHECK(w.extent(0) == 3);
    CHECK(w.stride(0) == 1);
    const auto& cv = v;
    static_assert(std::is_same_v<pt::static_view_t<decltype(cv)>, pt::tensor_view<const float, 1>>);
    std::vector<float> empty;
    CHECK(pt::as_view<const float, 1>(empty, here).size() == 0);
}

TEST_CASE("adapt std: array and span") {
    std::array<double, 4> a{1, 2, 3, 4};
    CHECK(pt::as_view<const double, 1>(a, here).extent(0) == 4);
    const std::array<double, 4>& ca = a;
    static_assert(std::is_same_v<pt::static_view_t<decltype(ca)>, pt::tensor_view<const double, 1>>);

    std::span<double> s(a.data() + 1, 2);
    auto w = pt::as_view<double, 1>(s, here);
    w(0) = 20;
    CHECK(a[1] == 20);
    // A const span still writes (it is a reference type), a span of const does not.
    const std::span<double> cs = s;
    static_assert(std::is_same_v<pt::static_view_t<decltype(cs)>, pt::tensor_view<double, 1>>);
    std::span<const double> sc(a);
    static_assert(std::is_same_v<pt::static_view_t<decltype(sc)>, pt::tensor_view<const double, 1>>);
    std::span<double, 4> fixed(a);
    CHECK(pt::as_view<double, 1>(fixed, here).extent(0) == 4);
}

TEST_CASE("adapt std: grpo through vector, array and span") {
    std::vector<double> out_v(4);
    auto res = pt::advantage::grpo(pt::exec::seq, rewards4, pt::uniform_groups{2}, out_v);
    CHECK(res.groups == 2);
    CHECK(out_v[0] == doctest::Approx(-expected_abs(1)));
    CHECK(out_v[1] == doctest::Approx(expected_abs(1)));
    CHECK(out_v[3] == doctest::Approx(expected_abs(2)));

    std::array<float, 4> in_a{1, 2, 3, 5};
    std::array<float, 4> out_a{};
    (void)pt::advantage::grpo(pt::exec::seq, in_a, pt::uniform_groups{2}, out_a);
    CHECK(out_a[2] == doctest::Approx(-expected_abs(2)));

    std::vector<float> big_out(8, -7.0f);
    (void)pt::advantage::grpo(pt::exec::seq, std::span<const float>(in_a), pt::uniform_groups{2},
                              std::span<float>(big_out).subspan(2, 4));
    CHECK(big_out[0] == -7.0f);
    CHECK(big_out[2] == doctest::Approx(-expected_abs(1)));
    CHECK(big_out[5] == doctest::Approx(expected_abs(2)));
    CHECK(big_out[6] == -7.0f);
}
