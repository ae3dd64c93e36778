// tensor_view: extents, strides, contiguity, const conversion, row(), overlap checks.

#include <doctest/doctest.h>

#include <type_traits>
#include <vector>

#include <posttrain/core/view.hpp>

namespace pt = posttrain;

TEST_CASE("view: row-major constructor sets extents and strides") {
    std::vector<float> buf(24);
    pt::tensor_view<float, 3> v(buf.data(), 2, 3, 4);
    CHECK(v.rank == 3);
    CHECK(v.extent(0) == 2);
    CHECK(v.extent(1) == 3);
    CHECK(v.extent(2) == 4);
    CHECK(v.stride(0) == 12);
    CHECK(v.stride(1) == 4);
    CHECK(v.stride(2) == 1);
    CHECK(v.size() == 24);
    CHECK_FALSE(v.empty());
    CHECK(v.is_contiguous());
    CHECK(&v(1, 2, 3) == &buf[23]);
}

TEST_CASE("view: rank 0 is a scalar") {
    double x = 3.5;
    pt::tensor_view<double, 0> v(&x);
    CHECK(v.size() == 1);
    CHECK(v() == 3.5);
    CHECK(v.is_contiguous());
}

TEST_CASE("view: default view is empty") {
    pt::tensor_view<float, 1> v;
    CHECK(v.data() == nullptr);
    CHECK(v.size() == 0);
    CHECK(v.empty());
}

TEST_CASE("view: explicit strides, contiguity and broadcast") {
    std::vector<int> buf(20);
    for (int i = 0; i < 20; ++i) buf[i] = i;
    SUBCASE("column-major is not row-contiguous") {
        const pt::index_t e[2] = {4, 5}, s[2] = {1, 4};
        pt::tensor_view<int, 2> v(buf.data(), e, s);
        CHECK_FALSE(v.is_contiguous());
        CHECK(v(2, 3) == 14);
    }
    SUBCASE("padded rows are not contiguous") {
        const pt::index_t e[2] = {2, 3}, s[2] = {5, 1};
        pt::tensor_view<int, 2> v(buf.data(), e, s);
        CHECK_FALSE(v.is_contiguous());
        CHECK(v(1, 2) == 7);
    }
    SUBCASE("extent-1 dimensions may have any stride") {
        const pt::index_t e[2] = {1, 5}, s[2] = {1000, 1};
        pt::tensor_view<int, 2> v(buf.data(), e, s);
        CHECK(v.is_contiguous());
    }
    SUBCASE("stride 0 broadcasts") {
        const pt::index_t e[1] = {4}, s[1] = {0};
        pt::tensor_view<int, 1> v(buf.data() + 3, e, s);
        CHECK_FALSE(v.is_contiguous());
        CHECK(v(0) == 3);
        CHECK(v(3) == 3);
    }
}

TEST_CASE("view: only T -> const T converts") {
    static_assert(std::is_convertible_v<pt::tensor_view<float, 1>, pt::tensor_view<const float, 1>>);
    static_assert(!std::is_convertible_v<pt::tensor_view<const float, 1>, pt::tensor_view<float, 1>>);
    static_assert(!std::is_convertible_v<pt::tensor_view<float, 1>, pt::tensor_view<double, 1>>);
    static_assert(!std::is_convertible_v<pt::tensor_view<float, 1>, pt::tensor_view<const float, 2>>);
    static_assert(!std::is_convertible_v<pt::tensor_view<float, 1>, pt::device_view<const float, 1>>);
    static_assert(std::is_trivially_copyable_v<pt::tensor_view<float, 2>>);
    static_assert(std::is_same_v<pt::device_view<float, 1>::space, pt::device_space>);
    static_assert(std::is_same_v<pt::tensor_view<const float, 1>::value_type, float>);

    std::vector<float> buf(6, 1.0f);
    const pt::index_t e[2] = {2, 3}, s[2] = {1, 2};
    pt::tensor_view<float, 2> w(buf.data(), e, s);
    pt::tensor_view<const float, 2> r = w;
    CHECK(r.data() == w.data());
    CHECK(r.extent(1) == 3);
    CHECK(r.stride(1) == 2);
}

TEST_CASE("view: row() of a rank-2 view") {
    std::vector<double> buf(12);
    for (int i = 0; i < 12; ++i) buf[i] = i;
    SUBCASE("row-major") {
        pt::tensor_view<double, 2> v(buf.data(), 3, 4);
        auto r = v.row(2);
        static_assert(decltype(r)::rank == 1);
        CHECK(r.extent(0) == 4);
        CHECK(r.stride(0) == 1);
        CHECK(r(0) == 8);
        CHECK(r(3) == 11);
    }
    SUBCASE("column-major") {
        const pt::index_t e[2] = {3, 4}, s[2] = {1, 3};
        pt::tensor_view<double, 2> v(buf.data(), e, s);
        auto r = v.row(1);
        CHECK(r.stride(0) == 3);
        CHECK(r(2) == 7);
        r(2) = -1;
        CHECK(buf[7] == -1);
    }
}

TEST_CASE("view: make_view and 64-bit extents") {
    std::vector<float> buf(5);
    auto v = pt::make_view(buf.data(), 5);
    static_assert(std::is_same_v<decltype(v), pt::tensor_view<float, 1>>);
    CHECK(v.size() == 5);
    // A view describing more than 2^31 elements (never dereferenced) keeps exact sizes.
    const pt::index_t big = (pt::index_t{1} << 33) + 7;
    pt::tensor_view<const float, 2> huge(buf.data(), big, 3);
    CHECK(huge.extent(0) == big);
    CHECK(huge.stride(0) == 3);
    CHECK(huge.size() == big * 3);
}

TEST_CASE("view: views_overlap") {
    std::vector<float> buf(10);
    pt::tensor_view<float, 1> a(buf.data(), 5), b(buf.data() + 5, 5), c(buf.data() + 4, 2), empty(buf.data(), 0);
    CHECK_FALSE(pt::views_overlap(a, b));
    CHECK(pt::views_overlap(a, c));
    CHECK(pt::views_overlap(c, b));
    CHECK_FALSE(pt::views_overlap(a, empty));
    CHECK_FALSE(pt::views_overlap(empty, a));
    // Interleaved strided views share a byte range: reported as overlapping (conservative).
    const pt::index_t e[1] = {5}, s[1] = {2};
    pt::tensor_view<float, 1> even(buf.data(), e, s), odd(buf.data() + 1, e, s);
    CHECK(pt::views_overlap(even, odd));
}
