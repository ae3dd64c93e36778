// Eigen adapter: Matrix, Array, Map (with inner/outer strides), Ref, Block; row- and column-major;
// const objects give const views. Each kind is checked through as_view and through a real grpo call.

#include <doctest/doctest.h>

#include <Eigen/Core>
#include <cmath>
#include <type_traits>
#include <vector>

#include <posttrain/adapt/eigen.hpp>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>

namespace pt = posttrain;

namespace {

constexpr pt::detail::where here{"posttrain::test_fn", "x"};

template <class X>
using view_of = pt::static_view_t<X>;

// grpo over groups of two of {1,2 | 3,5 | ...} computed on a std::vector, the reference for every kind.
template <class T>
std::vector<T> reference_grpo(const std::vector<T>& r, pt::index_t k) {
    std::vector<T> a(r.size());
    (void)pt::advantage::grpo(pt::exec::seq, r, pt::uniform_groups{k}, a);
    return a;
}

// Checks a 1-D Eigen-like thing elementwise against a vector.
template <class V, class T>
void check_equal(const V& got, const std::vector<T>& want) {
    REQUIRE(static_cast<std::size_t>(got.size()) == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
        CAPTURE(i);
        CHECK(got(static_cast<Eigen::Index>(i)) == want[i]);
    }
}

}  // namespace

static_assert(std::is_same_v<view_of<Eigen::VectorXf>, pt::tensor_view<float, 1>>);
static_assert(std::is_same_v<view_of<const Eigen::VectorXf>, pt::tensor_view<const float, 1>>);
static_assert(std::is_same_v<view_of<Eigen::RowVectorXd>, pt::tensor_view<double, 1>>);
static_assert(std::is_same_v<view_of<Eigen::ArrayXf>, pt::tensor_view<float, 1>>);
static_assert(std::is_same_v<view_of<Eigen::Vector4d>, pt::tensor_view<double, 1>>);
static_assert(std::is_same_v<view_of<Eigen::MatrixXf>, pt::tensor_view<float, 2>>);
static_assert(std::is_same_v<view_of<Eigen::ArrayXXd>, pt::tensor_view<double, 2>>);
static_assert(std::is_same_v<view_of<Eigen::Map<const Eigen::VectorXf>>, pt::tensor_view<const float, 1>>);
static_assert(std::is_same_v<view_of<Eigen::Ref<const Eigen::MatrixXd>>, pt::tensor_view<const double, 2>>);
static_assert(std::is_same_v<view_of<Eigen::Block<const Eigen::MatrixXf>>, pt::tensor_view<const float, 2>>);
static_assert(pt::static_viewable<Eigen::Block<Eigen::MatrixXf, 1, Eigen::Dynamic>>);
static_assert(pt::static_viewable<Eigen::Matrix<float, 3, 3, Eigen::RowMajor>>);

TEST_CASE("adapt eigen: vectors are rank 1") {
    Eigen::VectorXd v(5);
    v << 1, 2, 3, 4, 5;
    auto w = pt::as_view<double, 1>(v, here);
    CHECK(w.data() == v.data());
    CHECK(w.extent(0) == 5);
    CHECK(w.stride(0) == 1);
    Eigen::RowVectorXf rv = Eigen::RowVectorXf::LinSpaced(4, 0, 3);
    auto r = pt::as_view<const float, 1>(rv, here);
    CHECK(r(3) == 3.0f);
    Eigen::ArrayXf arr = Eigen::ArrayXf::Constant(3, 2.0f);
    CHECK(pt::as_view<const float, 1>(arr, here)(2) == 2.0f);
    Eigen::Vector3f fixed(1, 2, 3);
    CHECK(pt::as_view<const float, 1>(fixed, here).extent(0) == 3);
}

TEST_CASE("adapt eigen: column-major and row-major matrices") {
    Eigen::MatrixXf cm(3, 4);
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rm(3, 4);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 4; ++j) cm(i, j) = rm(i, j) = float(10 * i + j);
    auto c = pt::as_view<const float, 2>(cm, here);
    CHECK(c.extent(0) == 3);
    CHECK(c.extent(1) == 4);
    CHECK(c.stride(0) == 1);
    CHECK(c.stride(1) == 3);
    CHECK_FALSE(c.is_contiguous());
    auto r = pt::as_view<const float, 2>(rm, here);
    CHECK(r.stride(0) == 4);
    CHECK(r.stride(1) == 1);
    CHECK(r.is_contiguous());
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 4; ++j) {
            CHECK(c(i, j) == cm(i, j));
            CHECK(r(i, j) == rm(i, j));
        }
    Eigen::ArrayXXd a = Eigen::ArrayXXd::Zero(2, 2);
    pt::as_view<double, 2>(a, here)(1, 0) = 5;
    CHECK(a(1, 0) == 5);
}

TEST_CASE("adapt eigen: Map with inner and outer strides") {
    std::vector<float> buf(40);
    for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = float(i);
    SUBCASE("vector with inner stride") {
        Eigen::Map<Eigen::VectorXf, 0, Eigen::InnerStride<>> m(buf.data(), 5, Eigen::InnerStride<>(3));
        auto v = pt::as_view<float, 1>(m, here);
        CHECK(v.stride(0) == 3);
        CHECK(v(4) == 12.0f);
        Eigen::Map<const Eigen::VectorXf, 0, Eigen::InnerStride<2>> cm(buf.data() + 1, 4);
        auto cv = pt::as_view<const float, 1>(cm, here);
        static_assert(std::is_same_v<decltype(cv)::element_type, const float>);
        CHECK(cv(3) == 7.0f);
    }
    SUBCASE("column-major matrix with outer stride") {
        Eigen::Map<Eigen::MatrixXf, 0, Eigen::OuterStride<>> m(buf.data(), 3, 4, Eigen::OuterStride<>(10));
        auto v = pt::as_view<const float, 2>(m, here);
        CHECK(v.stride(0) == 1);
        CHECK(v.stride(1) == 10);
        CHECK(v(2, 3) == 32.0f);
    }
    SUBCASE("row-major matrix with both strides") {
        using RM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
        Eigen::Map<RM, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>> m(buf.data(), 3, 4,
                                                                         Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(12, 2));
        auto v = pt::as_view<const float, 2>(m, here);
        CHECK(v.stride(0) == 12);
        CHECK(v.stride(1) == 2);
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 4; ++j) CHECK(v(i, j) == m(i, j));
    }
    SUBCASE("negative run-time strides are rejected") {
        Eigen::Map<Eigen::VectorXf, 0, Eigen::InnerStride<>> m(buf.data() + 10, 3, Eigen::InnerStride<>(-1));
        CHECK_THROWS_AS(((void)pt::as_view<const float, 1>(m, here)), pt::invalid_argument);
    }
}

TEST_CASE("adapt eigen: Block, row, col and Ref") {
    Eigen::MatrixXd m(4, 5);
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 5; ++j) m(i, j) = 10 * i + j;
    SUBCASE("block of a column-major matrix") {
        auto b = m.block(1, 2, 2, 3);
        auto v = pt::as_view<const double, 2>(b, here);
        CHECK(v.extent(0) == 2);
        CHECK(v.extent(1) == 3);
        CHECK(v.stride(0) == 1);
        CHECK(v.stride(1) == 4);
        CHECK(v(1, 2) == 24);
    }
    SUBCASE("a row of a column-major matrix is a strided rank-1 view") {
        auto v = pt::as_view<double, 1>(m.row(2), here);
        CHECK(v.extent(0) == 5);
        CHECK(v.stride(0) == 4);
        CHECK(v(4) == 24);
        v(0) = -1;
        CHECK(m(2, 0) == -1);
    }
    SUBCASE("a column is contiguous") {
        auto v = pt::as_view<const double, 1>(m.col(3), here);
        CHECK(v.stride(0) == 1);
        CHECK(v(3) == 33);
    }
    SUBCASE("block of a const matrix is read-only") {
        const Eigen::MatrixXd& cm = m;
        auto b = cm.block(0, 0, 2, 2);
        static_assert(std::is_same_v<pt::static_view_t<decltype(b)>, pt::tensor_view<const double, 2>>);
        CHECK(pt::as_view<const double, 2>(b, here)(1, 1) == 11);
    }
    SUBCASE("Ref") {
        Eigen::Ref<Eigen::MatrixXd> r = m.block(1, 1, 3, 3);
        auto v = pt::as_view<double, 2>(r, here);
        CHECK(v.stride(1) == 4);
        CHECK(v(0, 0) == 11);
        Eigen::Ref<const Eigen::VectorXd> cr = m.col(1);
        auto cv = pt::as_view<const double, 1>(cr, here);
        CHECK(cv(2) == 21);
        Eigen::Ref<Eigen::RowVectorXd, 0, Eigen::InnerStride<>> rr = m.row(3);
        auto rv = pt::as_view<const double, 1>(rr, here);
        CHECK(rv.stride(0) == 4);
        CHECK(rv(1) == 31);
    }
}

TEST_CASE("adapt eigen: grpo through every kind") {
    const std::vector<float> r{1, 2, 3, 5, -1, 4};
    const auto want = reference_grpo(r, 2);
    const auto groups = pt::uniform_groups{2};

    SUBCASE("VectorXf in, VectorXf out") {
        Eigen::VectorXf in = Eigen::Map<const Eigen::VectorXf>(r.data(), 6);
        Eigen::VectorXf out(6);
        auto res = pt::advantage::grpo(pt::exec::seq, in, groups, out);
        CHECK(res.groups == 3);
        check_equal(out, want);
    }
    SUBCASE("const ArrayXf in, ArrayXf out") {
        const Eigen::ArrayXf in = Eigen::Map<const Eigen::ArrayXf>(r.data(), 6);
        Eigen::ArrayXf out(6);
        (void)pt::advantage::grpo(pt::exec::seq, in, groups, out);
        check_equal(out, want);
    }
    SUBCASE("strided Map in, row of a column-major matrix out (temporary Block)") {
        std::vector<float> spaced(18, 0.0f);
        for (std::size_t i = 0; i < 6; ++i) spaced[3 * i] = r[i];
        Eigen::Map<const Eigen::VectorXf, 0, Eigen::InnerStride<3>> in(spaced.data(), 6);
        Eigen::MatrixXf out = Eigen::MatrixXf::Constant(2, 6, 9.0f);
        (void)pt::advantage::grpo(pt::exec::seq, in, groups, out.row(1));
        check_equal(Eigen::VectorXf(out.row(1).transpose()), want);
        CHECK((out.row(0).array() == 9.0f).all());
    }
    SUBCASE("row of a row-major matrix in, column of a row-major matrix out") {
        Eigen::Matrix<float, 2, 6, Eigen::RowMajor> in;
        in.row(0) = Eigen::Map<const Eigen::RowVectorXf>(r.data(), 6);
        in.row(1).setZero();
        Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out = Eigen::MatrixXf::Zero(6, 3);
        (void)pt::advantage::grpo(pt::exec::seq, in.row(0), groups, out.col(2));
        check_equal(Eigen::VectorXf(out.col(2)), want);
        CHECK(out.col(0).isZero());
    }
    SUBCASE("Ref and segment") {
        Eigen::VectorXd in(8);
        in << 0, 1, 2, 3, 5, -1, 4, 0;
        Eigen::VectorXd outbuf = Eigen::VectorXd::Zero(8);
        Eigen::Ref<const Eigen::VectorXd> rin = in.segment(1, 6);
        Eigen::Ref<Eigen::VectorXd> rout = outbuf.segment(1, 6);
        (void)pt::advantage::grpo(pt::exec::seq, rin, groups, rout);
        const auto want_d = reference_grpo(std::vector<double>(r.begin(), r.end()), 2);
        check_equal(Eigen::VectorXd(outbuf.segment(1, 6)), want_d);
        CHECK(outbuf(0) == 0);
        CHECK(outbuf(7) == 0);
    }
    SUBCASE("mixed precision: double in, float out") {
        Eigen::VectorXd in = Eigen::Map<const Eigen::VectorXf>(r.data(), 6).cast<double>();
        Eigen::VectorXf out(6);
        (void)pt::advantage::grpo(pt::exec::seq, in, groups, out);
        for (int i = 0; i < 6; ++i) CHECK(out(i) == doctest::Approx(want[std::size_t(i)]));
    }
    SUBCASE("an input overlapping the output is rejected") {
        Eigen::VectorXf buf = Eigen::Map<const Eigen::VectorXf>(r.data(), 6);
        CHECK_THROWS_WITH_AS(((void)pt::advantage::grpo(pt::exec::seq, buf, groups, buf)),
                             doctest::Contains("argument 'advantages'"), pt::invalid_argument);
    }
}
