// The logits primitive's CUDA kernels under the other modules' names: preference::token_log_probs
// and its backward (preference/logits.cuh), policy_loss::entropy_from_logits and entropy_loss
// (policy_loss/entropy.cuh),
// against their host overloads, float and double, warp teams (V = 300) and block teams (V = 5000),
// ignored labels, a scalar and a [B, T] upstream; errors name the called function, and misuse
// throws before anything is written.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/policy_loss/entropy.cuh>
#include <posttrain/preference/logits.cuh>

#include "support.cuh"

namespace pt = posttrain;
using pt::index_t;
using pt::test::device_vec;

namespace {

// |got - want| <= tol (|want| + floor) (NaN matches NaN).
void close_floor(const std::vector<double>& got, const std::vector<double>& want, double tol, double floor,
                 const std::string& what) {
    ++pt::test::state().checks;
    int bad = 0;
    for (std::size_t i = 0; i < got.size() && i < want.size(); ++i) {
        const double g = got[i], w = want[i];
        if ((std::isnan(g) && std::isnan(w)) || g == w || std::fabs(g - w) <= tol * (std::fabs(w) + floor)) continue;
        if (bad++ < 5) {
            char buf[320];
            std::snprintf(buf, sizeof buf, "%s: index %zu: got %.17g, want %.17g", what.c_str(), i, g, w);
            pt::test::report_failure(__FILE__, __LINE__, buf);
        }
    }
    if (got.size() != want.size()) pt::test::report_failure(__FILE__, __LINE__, what + ": size mismatch");
}

template <class T>
std::vector<T> random_logits(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> d(0.0, 3.0);
    std::vector<T> z(n);
    for (auto& x : z) x = T(d(rng));
    return z;
}

template <class T>
void preference_case(index_t B, index_t T_, index_t V) {
    const std::string what = std::string("preference::token_log_probs ") + (sizeof(T) == 8 ? "double" : "float") +
                             " V=" + std::to_string(V);
    const double tol = sizeof(T) == 8 ? 1e-11 : 3e-5, gtol = sizeof(T) == 8 ? 1e-10 : 1e-4;
    const auto z = random_logits<T>(std::size_t(B * T_ * V), std::uint64_t(V));
    std::vector<std::int64_t> y(std::size_t(B * T_));
    std::mt19937_64 rng(5);
    for (auto& l : y) l = rng() % 5 == 0 ? -100 : std::int64_t(rng() % std::uint64_t(V));
    std::vector<double> up(std::size_t(B * T_));
    for (auto& u : up) u = double(rng() % 1000) / 250.0 - 2.0;
    const pt::tensor_view<const T, 3> hz(z.data(), B, T_, V);
    const pt::tensor_view<const std::int64_t, 2> hy(y.data(), B, T_);
    std::vector<double> want(std::size_t(B * T_));
    std::vector<T> want_g(z.size());
    pt::preference::token_log_probs(pt::exec::seq, hz, hy, pt::tensor_view<double, 2>(want.data(), B, T_));
    pt::preference::token_log_probs_backward(pt::exec::seq, hz, hy, pt::tensor_view<const double, 2>(up.data(), B, T_),
                                             pt::tensor_view<T, 3>(want_g.data(), B, T_, V));

    device_vec<T> dz(z), dg(z.size());
    device_vec<std::int64_t> dy(y);
    device_vec<double> dout(std::size_t(B * T_)), dup(up);
    const pt::device_view<const T, 3> vz(dz.data(), B, T_, V);
    const pt::device_view<const std::int64_t, 2> vy(dy.data(), B, T_);
    pt::preference::token_log_probs(pt::exec::cuda, vz, vy, pt::device_view<double, 2>(dout.data(), B, T_));
    pt::preference::token_log_probs_backward(pt::exec::cuda, vz, vy, pt::device_view<const double, 2>(dup.data(), B, T_),
                                             pt::device_view<T, 3>(dg.data(), B, T_, V));
    close_floor(dout.host(), want, tol, 1.0, what);
    close_floor(pt::test::as_double(dg.host()), pt::test::as_double(want_g), gtol, 1e-3, what + " backward");
}

template <class T>
void entropy_case(index_t B, index_t T_, index_t V) {
    const std::string what = std::string("policy_loss::entropy_from_logits ") + (sizeof(T) == 8 ? "double" : "float") +
                             " V=" + std::to_string(V);
    const double tol = sizeof(T) == 8 ? 1e-11 : 3e-5, gtol = sizeof(T) == 8 ? 1e-10 : 1e-4;
    auto z = random_logits<T>(std::size_t(B * T_ * V), std::uint64_t(V) + 1);
    z[3] = -INFINITY;  // a masked vocabulary entry: probability 0
    std::vector<double> up(std::size_t(B * T_));
    std::mt19937_64 rng(9);
    for (auto& u : up) u = double(rng() % 1000) / 250.0 - 2.0;
    const pt::tensor_view<const T, 3> hz(z.data(), B, T_, V);
    std::vector<double> want_h(std::size_t(B * T_));
    std::vector<T> want_scalar(z.size()), want_view(z.size());
    pt::policy_loss::entropy_options o;
    o.nonfinite_logits = pt::advantage::nonfinite::propagate;  // the host raises on the -inf entry otherwise
    pt::policy_loss::entropy_from_logits(pt::exec::seq, hz, pt::tensor_view<double, 2>(want_h.data(), B, T_),
                                         pt::tensor_view<T, 3>(want_scalar.data(), B, T_, V), 0.5, o);
    pt::policy_loss::entropy_from_logits(pt::exec::seq, hz, pt::none, pt::tensor_view<T, 3>(want_view.data(), B, T_, V),
                                         pt::tensor_view<const double, 2>(up.data(), B, T_), o);

    device_vec<T> dz(z), g_scalar(z.size()), g_view(z.size());
    device_vec<double> dh(std::size_t(B * T_)), dh_only(std::size_t(B * T_)), dup(up);
    const pt::device_view<const T, 3> vz(dz.data(), B, T_, V);
    pt::policy_loss::entropy_from_logits(pt::exec::cuda, vz, pt::device_view<double, 2>(dh.data(), B, T_),
                                         pt::device_view<T, 3>(g_scalar.data(), B, T_, V), 0.5, o);
    pt::policy_loss::entropy_from_logits(pt::exec::cuda, vz, pt::none, pt::device_view<T, 3>(g_view.data(), B, T_, V),
                                         pt::device_view<const double, 2>(dup.data(), B, T_), o);
    pt::policy_loss::entropy_from_logits(pt::exec::cuda, vz, pt::device_view<double, 2>(dh_only.data(), B, T_));
    close_floor(dh.host(), want_h, tol, 1.0, what);
    close_floor(dh_only.host(), want_h, tol, 1.0, what + " (no gradient)");
    close_floor(pt::test::as_double(g_scalar.host()), pt::test::as_double(want_scalar), gtol, 1e-3, what + " grad (scalar)");
    close_floor(pt::test::as_double(g_view.host()), pt::test::as_double(want_view), gtol, 1e-3, what + " grad ([B, T])");
    // With a workspace of exactly the size asked for, and one byte less.
    const std::size_t bytes = pt::policy_loss::entropy_from_logits_workspace_bytes(B, T_, true);
    PT_CHECK(pt::policy_loss::entropy_from_logits_workspace_bytes(B, T_, false) == 0);
    device_vec<unsigned char> ws(bytes);
    device_vec<T> g_ws(z.size());
    pt::policy_loss::entropy_from_logits(pt::exec::cuda.with(ws.data(), bytes), vz, pt::none,
                                         pt::device_view<T, 3>(g_ws.data(), B, T_, V), 0.5, o);
    close_floor(pt::test::as_double(g_ws.host()), pt::test::as_double(want_scalar), gtol, 1e-3, what + " grad (workspace)");
    PT_CHECK_THROWS(pt::policy_loss::entropy_from_logits(pt::exec::cuda.with(ws.data(), bytes - 1), vz, pt::none,
                                                         pt::device_view<T, 3>(g_ws.data(), B, T_, V), 0.5, o),
                    pt::invalid_argument);
}

// entropy_loss: masked positions hold NaN logits (propagate) or are finite (raise); float weights.
template <class T>
void entropy_loss_case(index_t B, index_t T_, index_t V, bool nan_at_masked) {
    const std::string what = std::string("policy_loss::entropy_loss ") + (sizeof(T) == 8 ? "double" : "float") +
                             " V=" + std::to_string(V) + (nan_at_masked ? " NaN at masked positions" : "");
    const double tol = sizeof(T) == 8 ? 1e-11 : 3e-5, gtol = sizeof(T) == 8 ? 1e-10 : 1e-4;
    auto z = random_logits<T>(std::size_t(B * T_ * V), std::uint64_t(V) + 3);
    std::vector<float> m(std::size_t(B * T_));
    std::mt19937_64 rng(11);
    for (std::size_t k = 0; k < m.size(); ++k) {
        m[k] = rng() % 4 == 0 ? 0.0f : float(1 + rng() % 2) * 0.5f;
        if (m[k] == 0 && nan_at_masked) z[k * std::size_t(V) + 1] = T(std::nan(""));
    }
    pt::policy_loss::entropy_options o;
    if (nan_at_masked) o.nonfinite_logits = pt::advantage::nonfinite::propagate;
    const auto agg = pt::policy_loss::aggregation_options::verl(pt::policy_loss::aggregation::seq_mean_token_mean, 2);
    const pt::tensor_view<const T, 3> hz(z.data(), B, T_, V);
    std::vector<double> want_h(std::size_t(B * T_));
    std::vector<T> want_g(z.size());
    const auto want = pt::policy_loss::entropy_loss(pt::exec::seq, hz, pt::tensor_view<const float, 2>(m.data(), B, T_),
                                                    pt::tensor_view<double, 2>(want_h.data(), B, T_),
                                                    pt::tensor_view<T, 3>(want_g.data(), B, T_, V), agg, -0.01, o);
    device_vec<T> dz(z), dg(z.size());
    device_vec<float> dm(m);
    device_vec<double> dh(std::size_t(B * T_));
    const pt::device_view<const T, 3> vz(dz.data(), B, T_, V);
    const pt::device_view<const float, 2> vm(dm.data(), B, T_);
    const auto got = pt::policy_loss::entropy_loss(pt::exec::cuda, vz, vm, pt::device_view<double, 2>(dh.data(), B, T_),
                                                   pt::device_view<T, 3>(dg.data(), B, T_, V), agg, -0.01, o);
    close_floor({got.loss, got.tokens, got.sequences, got.divisor}, {want.loss, want.tokens, want.sequences, want.divisor},
                tol, 1.0, what);
    close_floor(dh.host(), want_h, tol, 1.0, what + " entropy");
    close_floor(pt::test::as_double(dg.host()), pt::test::as_double(want_g), gtol, 1e-3, what + " grad");
    // Without outputs, into device memory, with a workspace of exactly the size asked for.
    const std::size_t bytes = pt::policy_loss::entropy_loss_workspace_bytes(B, T_, false);
    device_vec<unsigned char> ws(bytes);
    device_vec<pt::policy_loss::aggregate_result> res(1);
    pt::policy_loss::entropy_loss(pt::exec::cuda.with(ws.data(), bytes), vz, vm, pt::none, pt::none, agg, -0.01, o,
                                  pt::device_view<pt::policy_loss::aggregate_result, 0>(res.data()));
    close_floor({res.host()[0].loss}, {want.loss}, tol, 1.0, what + " (device result, no gradient)");
    // The device result over an output or over an input is refused before allocating or launching.
    using R = pt::policy_loss::aggregate_result;
    PT_CHECK_THROWS(pt::policy_loss::entropy_loss(pt::exec::cuda, vz, vm, pt::device_view<double, 2>(dh.data(), B, T_), pt::none, agg,
                                                  -0.01, o, pt::device_view<R, 0>(reinterpret_cast<R*>(dh.data()))),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pt::policy_loss::entropy_loss(pt::exec::cuda, vz, vm, pt::none, pt::device_view<T, 3>(dg.data(), B, T_, V), agg,
                                                  -0.01, o, pt::device_view<R, 0>(reinterpret_cast<R*>(dg.data()))),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pt::policy_loss::entropy_loss(pt::exec::cuda, vz, vm, pt::none, pt::none, agg, -0.01, o,
                                                  pt::device_view<R, 0>(reinterpret_cast<R*>(dm.data()))),
                    pt::invalid_argument);
}

}  // namespace

PT_TEST("entropy on CUDA: CUDA-graph capture and replay (scalar upstream; entropy_loss with a gradient)") {
    const index_t B = 3, T_ = 5, V = 700;
    auto z = pt::test::input_sets<float>(random_logits<float>(std::size_t(B * T_ * V), 1),
                                         random_logits<float>(std::size_t(B * T_ * V), 2));
    const device_vec<float> m(std::vector<float>{1, 1, 0, 1, 1, 0.5f, 1, 1, 1, 0, 0, 0, 1, 2, 1});
    device_vec<float> g(std::size_t(B * T_ * V));
    device_vec<double> h(std::size_t(B * T_));
    device_vec<pt::policy_loss::aggregate_result> res(1);
    auto logits = [&] { return pt::device_view<const float, 3>(z.dev.data(), B, T_, V); };
    pt::test::graph_case c;
    c.name = "entropy_from_logits (scalar upstream)";
    c.workspace = pt::policy_loss::entropy_from_logits_workspace_bytes(B, T_, true);
    c.outputs = {pt::test::out_of(g), pt::test::out_of(h)};
    c.load = [&](int k) { z.load(k); };
    c.call = [&](const pt::exec::cuda_policy& p) {
        pt::policy_loss::entropy_from_logits(p, logits(), pt::device_view<double, 2>(h.data(), B, T_),
                                             pt::device_view<float, 3>(g.data(), B, T_, V), 0.25);
    };
    pt::test::graph_replay_both(c);
    pt::test::graph_case l;
    l.name = "entropy_loss";
    l.workspace = pt::policy_loss::entropy_loss_workspace_bytes(B, T_, true);
    l.outputs = {pt::test::out_of(g), pt::test::out_of(h), pt::test::out_of(res, 0)};
    l.load = [&](int k) { z.load(k); };
    l.call = [&](const pt::exec::cuda_policy& p) {
        pt::policy_loss::entropy_loss(p, logits(), pt::device_view<const float, 2>(m.data(), B, T_),
                                      pt::device_view<double, 2>(h.data(), B, T_), pt::device_view<float, 3>(g.data(), B, T_, V),
                                      pt::policy_loss::aggregation_options{}, -0.01, pt::policy_loss::entropy_options{},
                                      pt::device_view<pt::policy_loss::aggregate_result, 0>(res.data()));
    };
    pt::test::graph_replay_both(l);
}

PT_TEST("entropy on CUDA: an empty vocabulary has entropy 0, as on the host") {
    device_vec<float> z(1), g(1);
    device_vec<double> h(6, 7.0);
    device_vec<float> m(std::vector<float>(6, 1.0f));
    const pt::device_view<const float, 3> vz(z.data(), 2, 3, 0);
    pt::policy_loss::entropy_from_logits(pt::exec::cuda, vz, pt::device_view<double, 2>(h.data(), 2, 3),
                                         pt::device_view<float, 3>(g.data(), 2, 3, 0));
    for (double v : h.host()) PT_CHECK(v == 0.0);
    device_vec<double> h2(6, 7.0);
    const auto r = pt::policy_loss::entropy_loss(pt::exec::cuda, vz, pt::device_view<const float, 2>(m.data(), 2, 3),
                                                 pt::device_view<double, 2>(h2.data(), 2, 3),
                                                 pt::device_view<float, 3>(g.data(), 2, 3, 0));
    PT_CHECK(r.loss == 0.0 && r.tokens == 6.0);
    for (double v : h2.host()) PT_CHECK(v == 0.0);
}

PT_TEST("policy_loss::entropy_loss on CUDA: the host's loss, entropies and gradient") {
    entropy_loss_case<float>(3, 6, 300, false);
    entropy_loss_case<double>(3, 6, 300, true);
    entropy_loss_case<float>(2, 4, 5000, true);
    entropy_loss_case<double>(2, 4, 5000, false);
}

PT_TEST("preference::token_log_probs on CUDA: the host's values, warp and block teams") {
    preference_case<float>(2, 7, 300);
    preference_case<double>(2, 7, 300);
    preference_case<float>(2, 3, 5000);
    preference_case<double>(2, 3, 5000);
}

PT_TEST("policy_loss::entropy_from_logits on CUDA: the host's values, scalar and [B, T] upstream") {
    entropy_case<float>(2, 7, 300);
    entropy_case<double>(2, 7, 300);
    entropy_case<float>(2, 3, 5000);
    entropy_case<double>(2, 3, 5000);
}

PT_TEST("front ends on CUDA: errors name the called function; misuse writes nothing") {
    device_vec<float> z(std::vector<float>(2 * 3 * 10, 0.5f)), g(2 * 3 * 10, 7.0f);
    device_vec<double> h(6, 7.0), bad_h(5, 7.0);
    device_vec<std::int64_t> y(std::vector<std::int64_t>(6, 1));
    const pt::device_view<const float, 3> vz(z.data(), 2, 3, 10);
    try {
        pt::preference::token_log_probs(pt::exec::cuda, vz, pt::device_view<const std::int64_t, 2>(y.data(), 2, 3),
                                        pt::device_view<double, 2>(bad_h.data(), 1, 5));
        PT_CHECK_MSG(false, "a misshapen output must throw");
    } catch (const pt::invalid_argument& e) {
        PT_CHECK_MSG(std::string(e.what()).find("posttrain::preference::token_log_probs") != std::string::npos, e.what());
    }
    // A bad entropy output with a gradient: nothing is launched, so the gradient stays untouched.
    PT_CHECK_THROWS(pt::policy_loss::entropy_from_logits(pt::exec::cuda, vz, pt::device_view<double, 2>(bad_h.data(), 1, 5),
                                                         pt::device_view<float, 3>(g.data(), 2, 3, 10)),
                    pt::invalid_argument);
    for (float v : g.host()) PT_CHECK(v == 7.0f);
    // An entropy output inside the gradient's bytes.
    PT_CHECK_THROWS(pt::policy_loss::entropy_from_logits(
                        pt::exec::cuda, vz, pt::device_view<double, 2>(reinterpret_cast<double*>(g.data()), 2, 3),
                        pt::device_view<float, 3>(g.data(), 2, 3, 10)),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pt::policy_loss::entropy_from_logits(pt::exec::cuda, vz, pt::device_view<double, 2>(h.data(), 2, 3),
                                                         pt::device_view<float, 3>(g.data(), 2, 3, 10), std::nan("")),
                    pt::invalid_argument);
    // As on the host, the upstream is checked even without a gradient output; a gradient of another
    // dtype is refused before the scalar upstream is stored.
    PT_CHECK_THROWS(pt::policy_loss::entropy_from_logits(pt::exec::cuda, vz, pt::device_view<double, 2>(h.data(), 2, 3), pt::none,
                                                         INFINITY),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pt::policy_loss::entropy_from_logits(pt::exec::cuda, vz, pt::device_view<double, 2>(h.data(), 2, 3), pt::none,
                                                         pt::device_view<const double, 2>(bad_h.data(), 1, 5)),
                    pt::invalid_argument);
    device_vec<double> g64(2 * 3 * 10);
    PT_CHECK_THROWS(pt::policy_loss::entropy_from_logits(pt::exec::cuda, vz, pt::none, pt::device_view<double, 3>(g64.data(), 2, 3, 10)),
                    pt::invalid_argument);
}
