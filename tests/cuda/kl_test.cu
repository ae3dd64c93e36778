// policy_loss::kl_penalty on exec::cuda against the host oracle (exec::seq): every estimator and
// framework preset, log-ratios of +-30 that hit the clamps, float and double, strided (transposed)
// views, optional outputs, grad_scale, the status word for non-finite log-probs, and bad input.

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/policy_loss/kl.cuh>

#include "support.cuh"

namespace pt = posttrain;
namespace pl = posttrain::policy_loss;
using pl::kl_estimator;
using pt::index_t;
using pt::test::device_vec;

namespace {

// Log-probs in (-8, 0), references around them, a fifth of the log-ratios at +-30.
void make_pair(std::size_t n, std::uint64_t seed, std::vector<double>& lp, std::vector<double>& ref) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(-8, 0), d(-3, 3), coin(0, 1);
    lp.resize(n), ref.resize(n);
    for (std::size_t j = 0; j < n; ++j) {
        lp[j] = u(rng);
        const double c = coin(rng);
        ref[j] = lp[j] + (c < 0.1 ? 30.0 : c < 0.2 ? -30.0 : d(rng));
    }
}

std::vector<pl::kl_options> presets() {
    return {pl::kl_options::verl(kl_estimator::k1),  pl::kl_options::verl(kl_estimator::abs),
            pl::kl_options::verl(kl_estimator::k2),  pl::kl_options::verl(kl_estimator::k3),
            pl::kl_options::verl(kl_estimator::k3, true), pl::kl_options::openrlhf(kl_estimator::k3),
            pl::kl_options::openrlhf(kl_estimator::k2), pl::kl_options::trl(),
            pl::kl_options::nemo(kl_estimator::k1), pl::kl_options::nemo(kl_estimator::k3)};
}

// Device and host differ only in the last bits of exp (CUDA's double exp is within 1 ulp).
template <class T>
void compare_with_host(index_t B, index_t T_, std::uint64_t seed, double tol) {
    std::vector<double> lpd, refd;
    make_pair(std::size_t(B * T_), seed, lpd, refd);
    const std::vector<T> lp(lpd.begin(), lpd.end()), ref(refd.begin(), refd.end());
    const device_vec<T> dlp(lp), dref(ref);
    for (const auto& o : presets()) {
        device_vec<T> dk(lp.size()), dg(lp.size());
        pl::kl_penalty(pt::exec::cuda, pt::device_view<const T, 2>(dlp.data(), B, T_), pt::device_view<const T, 2>(dref.data(), B, T_),
                       pt::device_view<T, 2>(dk.data(), B, T_), pt::device_view<T, 2>(dg.data(), B, T_), o, 0.5);
        std::vector<T> hk(lp.size()), hg(lp.size());
        pl::kl_penalty(pt::exec::seq, pt::tensor_view<const T, 2>(lp.data(), B, T_), pt::tensor_view<const T, 2>(ref.data(), B, T_),
                       pt::tensor_view<T, 2>(hk.data(), B, T_), pt::tensor_view<T, 2>(hg.data(), B, T_), o, 0.5);
        const std::string what = "estimator " + std::to_string(int(o.estimator)) + (o.straight_through ? "+" : "");
        pt::test::close_to(dk.host(), hk, tol, what + " kl");
        pt::test::close_to(dg.host(), hg, tol, what + " grad");
    }
}

}  // namespace

PT_TEST("kl_penalty: device equals the host oracle, double") { compare_with_host<double>(37, 301, 1, 1e-14); }

PT_TEST("kl_penalty: device equals the host oracle, float (double inside, rounded once)") {
    compare_with_host<float>(64, 1000, 2, 1.2e-7);
}

PT_TEST("kl_penalty: strided views and optional outputs") {
    const index_t B = 50, T_ = 33;
    std::vector<double> lp, ref;
    make_pair(std::size_t(B * T_), 3, lp, ref);
    const auto o = pl::kl_options::verl(kl_estimator::k3);
    std::vector<double> hk(lp.size()), hg(lp.size());
    pl::kl_penalty(pt::exec::seq, pt::tensor_view<const double, 2>(lp.data(), B, T_), pt::tensor_view<const double, 2>(ref.data(), B, T_),
                   pt::tensor_view<double, 2>(hk.data(), B, T_), pt::tensor_view<double, 2>(hg.data(), B, T_), o);
    // The same matrices stored transposed ([T, B] row-major), read through strides (1, B).
    std::vector<double> lpt(lp.size()), reft(lp.size());
    for (index_t i = 0; i < B; ++i)
        for (index_t t = 0; t < T_; ++t) {
            lpt[std::size_t(t * B + i)] = lp[std::size_t(i * T_ + t)];
            reft[std::size_t(t * B + i)] = ref[std::size_t(i * T_ + t)];
        }
    const device_vec<double> dlp(lpt), dref(reft);
    device_vec<double> dk(lp.size()), dg(lp.size(), -1.0);
    const index_t ext[2] = {B, T_}, tr[2] = {1, B};
    pl::kl_penalty(pt::exec::cuda, pt::device_view<const double, 2>(dlp.data(), ext, tr), pt::device_view<const double, 2>(dref.data(), ext, tr),
                   pt::device_view<double, 2>(dk.data(), B, T_), pt::none, o);
    pt::test::close_to(dk.host(), hk, 1e-14, "strided kl");
    for (double x : dg.host()) PT_CHECK(x == -1.0);  // not written
    pl::kl_penalty(pt::exec::cuda, pt::device_view<const double, 2>(dlp.data(), ext, tr), pt::device_view<const double, 2>(dref.data(), ext, tr),
                   pt::none, pt::device_view<double, 2>(dg.data(), ext, tr), o);
    std::vector<double> gt = dg.host(), g(lp.size());
    for (index_t i = 0; i < B; ++i)
        for (index_t t = 0; t < T_; ++t) g[std::size_t(i * T_ + t)] = gt[std::size_t(t * B + i)];
    pt::test::close_to(g, hg, 1e-14, "strided grad");
    // Empty batch: nothing launched, nothing thrown.
    pl::kl_penalty(pt::exec::cuda, pt::device_view<const double, 2>(dlp.data(), 0, T_), pt::device_view<const double, 2>(dref.data(), 0, T_),
                   pt::device_view<double, 2>(dk.data(), 0, T_), pt::none, o);
}

PT_TEST("kl_penalty: status word for non-finite log-probs, propagate on request") {
    std::vector<double> lp{-1, -2, std::nan(""), -4}, ref{-1, -1, -1, -1};
    const device_vec<double> dlp(lp), dref(ref);
    device_vec<double> dk(4);
    device_vec<std::uint32_t> status(1, 0u);
    pl::kl_penalty(pt::exec::cuda.with_status(status.data()), pt::device_view<const double, 2>(dlp.data(), 2, 2),
                   pt::device_view<const double, 2>(dref.data(), 2, 2), pt::device_view<double, 2>(dk.data(), 2, 2), pt::none);
    PT_CHECK((status.host()[0] & pt::status_nonfinite_input) != 0);
    PT_CHECK(std::isnan(dk.host()[2]));
    auto prop = pl::kl_options::verl(kl_estimator::k3);
    prop.nonfinite_inputs = pt::advantage::nonfinite::propagate;
    device_vec<std::uint32_t> status2(1, 0u);
    pl::kl_penalty(pt::exec::cuda.with_status(status2.data()), pt::device_view<const double, 2>(dlp.data(), 2, 2),
                   pt::device_view<const double, 2>(dref.data(), 2, 2), pt::device_view<double, 2>(dk.data(), 2, 2), pt::none, prop);
    PT_CHECK(status2.host()[0] == 0u);
}

PT_TEST("kl_penalty: bad input throws before launching") {
    const device_vec<double> a(6), b(6);
    device_vec<double> k(6);
    PT_CHECK_THROWS(pl::kl_penalty(pt::exec::cuda, pt::device_view<const double, 2>(a.data(), 2, 3),
                                   pt::device_view<const double, 2>(b.data(), 3, 2), pt::device_view<double, 2>(k.data(), 2, 3), pt::none),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pl::kl_penalty(pt::exec::cuda, pt::device_view<const double, 2>(a.data(), 2, 3),
                                   pt::device_view<const double, 2>(b.data(), 2, 3), pt::device_view<double, 2>(k.data(), 3, 2), pt::none),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pl::kl_penalty(pt::exec::cuda, pt::device_view<const double, 2>(k.data(), 2, 3),
                                   pt::device_view<const double, 2>(b.data(), 2, 3), pt::device_view<double, 2>(k.data(), 2, 3), pt::none),
                    pt::invalid_argument);
    pl::kl_options neg;
    neg.value_clamp = -1;
    PT_CHECK_THROWS(pl::kl_penalty(pt::exec::cuda, pt::device_view<const double, 2>(a.data(), 2, 3),
                                   pt::device_view<const double, 2>(b.data(), 2, 3), pt::device_view<double, 2>(k.data(), 2, 3), pt::none, neg),
                    pt::invalid_argument);
}
