// policy_loss::aggregate, count_tokens and value_loss on exec::cuda against the host oracle: short rows (teams of
// a few lanes), rows of one segment, chunked long rows, empty batches; bool, float-weight and int64
// masks with fully masked rows and NaN/inf losses at masked positions; every aggregation mode, row
// denominator, empty-row rule, global normalizers and presets; float and double gradients or none;
// the device-result overloads, exact workspaces, misuse, and CUDA-graph capture.

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/policy_loss/aggregate.cuh>
#include <posttrain/policy_loss/value_loss.cuh>

#include "support.cuh"

namespace pt = posttrain;
namespace pl = posttrain::policy_loss;
using pt::index_t;
using pt::test::device_vec;

namespace {

// A mask's storage: bool masks live in bytes (std::vector<bool> has no data()) holding 0 or 1.
template <class M>
using stored = std::conditional_t<std::is_same_v<M, bool>, unsigned char, M>;

// Mask values: 0/1 with a fully masked row (and every third row masked from the middle on), as M.
template <class M>
std::vector<stored<M>> make_mask(index_t B, index_t T, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<stored<M>> m(std::size_t(B * T));
    for (index_t i = 0; i < B; ++i)
        for (index_t t = 0; t < T; ++t) {
            double w = rng() % 5 != 0 ? 1.0 : 0.0;
            if (i == 1 || (i % 3 == 2 && t > T / 2)) w = 0.0;
            if constexpr (std::is_floating_point_v<M>) w *= double(1 + rng() % 4) * 0.5;  // weights 0.5 .. 2
            m[std::size_t(i * T + t)] = static_cast<stored<M>>(static_cast<M>(w));
        }
    return m;
}

template <class S>
std::vector<double> make_loss(index_t B, index_t T, const std::vector<S>& m, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> d(0.3, 1.5);
    std::vector<double> L(std::size_t(B * T));
    for (std::size_t k = 0; k < L.size(); ++k) {
        L[k] = d(rng);
        if (double(m[k]) == 0 && rng() % 3 == 0) L[k] = rng() % 2 ? std::nan("") : INFINITY;  // never read
    }
    return L;
}

std::vector<std::pair<std::string, pl::aggregation_options>> variants(index_t T) {
    std::vector<std::pair<std::string, pl::aggregation_options>> v;
    const pl::aggregation modes[] = {pl::aggregation::token_mean, pl::aggregation::token_sum,
                                     pl::aggregation::seq_mean_token_mean, pl::aggregation::seq_mean_token_sum,
                                     pl::aggregation::seq_mean_token_sum_norm};
    for (auto mode : modes) {
        pl::aggregation_options o;
        o.mode = mode;
        v.push_back({"mode " + std::to_string(int(mode)), o});
        v.push_back({"verl mode " + std::to_string(int(mode)), pl::aggregation_options::verl(mode, 4, 0, 0, 0)});
        v.push_back({"verl_agent mode " + std::to_string(int(mode)), pl::aggregation_options::verl_agent(mode)});
    }
    pl::aggregation_options global;
    global.global_tokens = 12345;
    global.global_sequences = 77;
    global.multiplier = 8;
    for (auto mode : modes) {
        global.mode = mode;
        v.push_back({"global mode " + std::to_string(int(mode)), global});
    }
    pl::aggregation_options norm;
    norm.mode = pl::aggregation::seq_mean_token_sum_norm;
    norm.norm_constant = double(T) * 1.5;
    norm.norm_per_sequence = true;
    v.push_back({"norm per sequence", norm});
    pl::aggregation_options trl;
    trl.mode = pl::aggregation::seq_mean_token_mean;
    trl.row_denominator = pl::row_mean::at_least_one;
    trl.empty = pl::empty_rows::counted;
    v.push_back({"at_least_one counted", trl});
    v.push_back({"openrlhf sample level", pl::aggregation_options::openrlhf(false, 2)});
    return v;
}

template <class M, class G>
void aggregate_case(index_t B, index_t T, std::uint64_t seed) {
    const auto m = make_mask<M>(B, T, seed);
    const auto L = make_loss(B, T, m, seed + 1);
    const device_vec<stored<M>> dm(m);
    const device_vec<double> dL(L);
    const pt::tensor_view<const double, 2> hL(L.data(), B, T);
    const pt::tensor_view<const M, 2> hm(reinterpret_cast<const M*>(m.data()), B, T);
    const pt::device_view<const double, 2> vL(dL.data(), B, T);
    const pt::device_view<const M, 2> vm(reinterpret_cast<const M*>(dm.data()), B, T);
    for (const auto& [name, o] : variants(T)) {
        const std::string what = "aggregate [" + std::to_string(B) + ", " + std::to_string(T) + "] " + name;
        std::vector<G> want_g(std::size_t(B * T));
        const pl::aggregate_result want = pl::aggregate(pt::exec::seq, hL, hm, pt::tensor_view<G, 2>(want_g.data(), B, T), o, -0.7);
        device_vec<G> dg(std::size_t(B * T), G(-7));
        const pl::aggregate_result got = pl::aggregate(pt::exec::cuda, vL, vm, pt::device_view<G, 2>(dg.data(), B, T), o, -0.7);
        pt::test::close_to(std::vector<double>{got.loss, got.tokens, got.sequences, got.divisor},
                           std::vector<double>{want.loss, want.tokens, want.sequences, want.divisor}, 1e-12, what);
        pt::test::close_to(dg.host(), want_g, 1e-14, what + " gradient");
        // The asynchronous overload, into device memory, without a gradient.
        device_vec<pl::aggregate_result> dres(1);
        pl::aggregate(pt::exec::cuda, vL, vm, pt::none, o, 1.0, pt::device_view<pl::aggregate_result, 0>(dres.data()));
        const pl::aggregate_result async = dres.host()[0];
        PT_CHECK_MSG(async.loss == got.loss && async.divisor == got.divisor, what + " (device result)");
    }
    const pl::token_counts hc = pl::count_tokens(pt::exec::seq, hm), dc = pl::count_tokens(pt::exec::cuda, vm);
    PT_CHECK(dc.tokens == hc.tokens && dc.sequences == hc.sequences && dc.rows == hc.rows);
}

// value_loss: values near the old values (some clipped, some not), returns, NaN at masked positions.
template <class T, class M>
void value_case(index_t B, index_t T_, std::uint64_t seed) {
    const auto m = make_mask<M>(B, T_, seed);
    std::mt19937_64 rng(seed + 5);
    std::normal_distribution<double> d(0.0, 1.0);
    std::vector<T> v(std::size_t(B * T_)), vo(v.size()), R(v.size());
    for (std::size_t k = 0; k < v.size(); ++k) {
        vo[k] = T(d(rng));
        v[k] = T(double(vo[k]) + 0.4 * d(rng));
        R[k] = T(d(rng));
        if (double(m[k]) == 0 && rng() % 3 == 0) v[k] = T(std::nan(""));  // masked: never read
    }
    const device_vec<T> dv(v), dvo(vo), dR(R);
    const device_vec<stored<M>> dm(m);
    const pt::tensor_view<const M, 2> hm(reinterpret_cast<const M*>(m.data()), B, T_);
    const pt::device_view<const M, 2> vm(reinterpret_cast<const M*>(dm.data()), B, T_);
    auto host = [&](const std::vector<T>& x) { return pt::tensor_view<const T, 2>(x.data(), B, T_); };
    auto dev = [&](const device_vec<T>& x) { return pt::device_view<const T, 2>(x.data(), B, T_); };
    const std::pair<const char*, pl::value_loss_options> options[] = {
        {"verl", pl::value_loss_options::verl(0.2, pl::aggregation::token_mean)},
        {"verl seq-mean", pl::value_loss_options::verl(0.5, pl::aggregation::seq_mean_token_mean, 2)},
        {"openrlhf", pl::value_loss_options::openrlhf(0.2, false)},
        {"no clip", pl::value_loss_options{}}};
    for (auto [name, o] : options) {
        o.nonfinite_inputs = pt::advantage::nonfinite::propagate;  // the host refuses the NaN at masked positions otherwise
        const std::string what = std::string("value_loss ") + (sizeof(T) == 8 ? "double " : "float ") + name + " [" +
                                 std::to_string(B) + ", " + std::to_string(T_) + "]";
        std::vector<T> want_g(v.size());
        const auto want = pl::value_loss(pt::exec::seq, host(v), host(vo), host(R), hm, pt::tensor_view<T, 2>(want_g.data(), B, T_),
                                         o, 0.3);
        device_vec<T> dg(v.size(), T(-7));
        device_vec<std::uint32_t> status(1, 0u);
        const auto got = pl::value_loss(pt::exec::cuda.with_status(status.data()), dev(dv), dev(dvo), dev(dR), vm,
                                        pt::device_view<T, 2>(dg.data(), B, T_), o, 0.3);
        pt::test::close_to(std::vector<double>{got.loss, got.clipfrac, got.aggregation.loss, got.aggregation.tokens,
                                               got.aggregation.sequences, got.aggregation.divisor},
                           std::vector<double>{want.loss, want.clipfrac, want.aggregation.loss, want.aggregation.tokens,
                                               want.aggregation.sequences, want.aggregation.divisor},
                           1e-11, what);
        pt::test::close_to(dg.host(), want_g, sizeof(T) == 8 ? 1e-13 : 1e-6, what + " gradient");
        PT_CHECK_MSG(status.host()[0] == 0u, what + ": NaN at masked positions must not be reported");
    }
    // raise: a NaN at a valid position is reported; the device-result overload without a gradient.
    std::vector<T> bad = v;
    for (std::size_t k = 0; k < bad.size(); ++k)
        if (double(m[k]) != 0) {
            bad[k] = T(std::nan(""));
            break;
        }
    const device_vec<T> dbad(bad);
    device_vec<std::uint32_t> status(1, 0u);
    device_vec<pl::value_loss_result> res(1);
    pl::value_loss(pt::exec::cuda.with_status(status.data()), dev(dbad), dev(dvo), dev(dR), vm, pt::none,
                   pl::value_loss_options::verl(0.2), 1.0, pt::device_view<pl::value_loss_result, 0>(res.data()));
    PT_CHECK((status.host()[0] & pt::status_nonfinite_input) != 0);
    PT_CHECK(std::isnan(res.host()[0].loss));
}

}  // namespace

PT_TEST("value_loss on CUDA: the host's loss, clip fraction and gradient") {
    value_case<float, bool>(6, 33, 1);
    value_case<double, float>(64, 2048, 2);
    value_case<double, std::int64_t>(3, 20000, 3);
}

PT_TEST("value_loss on CUDA: misuse throws before launching") {
    device_vec<float> v(std::vector<float>(12, 1.0f)), m(std::vector<float>(12, 1.0f)), g(12);
    device_vec<double> v64(12);
    const pt::device_view<const float, 2> vv(v.data(), 3, 4), vm(m.data(), 3, 4);
    pl::value_loss_options negative;
    negative.clip = -1;
    PT_CHECK_THROWS((void)pl::value_loss(pt::exec::cuda, vv, vv, vv, vm, pt::none, negative), pt::invalid_argument);
    PT_CHECK_THROWS((void)pl::value_loss(pt::exec::cuda, vv, pt::device_view<const double, 2>(v64.data(), 3, 4), vv, vm, pt::none),
                    pt::invalid_argument);
    PT_CHECK_THROWS((void)pl::value_loss(pt::exec::cuda, vv, vv, pt::device_view<const float, 2>(v.data(), 4, 3), vm, pt::none),
                    pt::invalid_argument);
    PT_CHECK_THROWS((void)pl::value_loss(pt::exec::cuda, vv, vv, vv, vm, pt::device_view<float, 2>(v.data(), 3, 4)),
                    pt::invalid_argument);
    PT_CHECK_THROWS((void)pl::value_loss(pt::exec::cuda, vv, vv, vv, vm, pt::device_view<double, 2>(v64.data(), 3, 4)),
                    pt::invalid_argument);
    // The device result over the gradient or over an input is refused before launching.
    PT_CHECK_THROWS(pl::value_loss(pt::exec::cuda, vv, vv, vv, vm, pt::device_view<float, 2>(g.data(), 3, 4), {}, 1.0,
                                   pt::device_view<pl::value_loss_result, 0>(reinterpret_cast<pl::value_loss_result*>(g.data()))),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pl::value_loss(pt::exec::cuda, vv, vv, vv, vm, pt::none, {}, 1.0,
                                   pt::device_view<pl::value_loss_result, 0>(reinterpret_cast<pl::value_loss_result*>(m.data()))),
                    pt::invalid_argument);
    PT_CHECK(pl::value_loss_workspace_bytes(3, 4) == pl::aggregate_workspace_bytes(3, 4));
}

PT_TEST("value_loss on CUDA: CUDA-graph capture and replay") {
    const index_t B = 8, T = 700;
    std::mt19937_64 rng(4);
    std::normal_distribution<double> d(0.0, 1.0);
    auto values = [&] {
        std::vector<float> x(std::size_t(B * T));
        for (auto& e : x) e = float(d(rng));
        return x;
    };
    auto v = pt::test::input_sets<float>(values(), values());
    const device_vec<float> vo(values()), R(values());
    const auto mh = make_mask<float>(B, T, 6);
    const device_vec<float> m(mh);
    device_vec<float> g(std::size_t(B * T));
    device_vec<pl::value_loss_result> res(1);
    pt::test::graph_case c;
    c.name = "value_loss";
    c.workspace = pl::value_loss_workspace_bytes(B, T);
    c.outputs = {pt::test::out_of(g), pt::test::out_of(res, 0)};
    c.load = [&](int k) { v.load(k); };
    c.call = [&](const pt::exec::cuda_policy& p) {
        auto view = [&](const float* x) { return pt::device_view<const float, 2>(x, B, T); };
        pl::value_loss(p, view(v.dev.data()), view(vo.data()), view(R.data()), view(m.data()),
                       pt::device_view<float, 2>(g.data(), B, T), pl::value_loss_options::verl(0.2), 1.0,
                       pt::device_view<pl::value_loss_result, 0>(res.data()));
    };
    pt::test::graph_replay_both(c);
}

PT_TEST("aggregate on CUDA: the host's loss, totals and gradient, every mode") {
    for (auto [B, T] : {std::pair<index_t, index_t>{5, 7}, {64, 2048}, {3, 50000}, {200, 300}, {1, 1}}) {
        aggregate_case<bool, float>(B, T, std::uint64_t(B * T));
        aggregate_case<float, double>(B, T, std::uint64_t(B * T) + 7);
        aggregate_case<std::int64_t, double>(B, T, std::uint64_t(B * T) + 9);
    }
}

PT_TEST("aggregate on CUDA: empty batches, workspaces, misuse, graph capture") {
    // [0, 5] and [4, 0]: nothing valid, loss 0, divisor 0 where the host says so.
    for (auto [B, T] : {std::pair<index_t, index_t>{0, 5}, {4, 0}}) {
        std::vector<double> L(std::size_t(B * T), 1.0);
        std::vector<std::uint8_t> m(std::size_t(B * T), 1);
        const device_vec<double> dL(L);
        const device_vec<std::uint8_t> dm(m);
        const auto want = pl::aggregate(pt::exec::seq, pt::tensor_view<const double, 2>(L.data(), B, T),
                                        pt::tensor_view<const std::uint8_t, 2>(m.data(), B, T), pt::none);
        const auto got = pl::aggregate(pt::exec::cuda, pt::device_view<const double, 2>(dL.data(), B, T),
                                       pt::device_view<const std::uint8_t, 2>(dm.data(), B, T), pt::none);
        PT_CHECK(got.loss == want.loss && got.tokens == want.tokens && got.sequences == want.sequences &&
                 got.divisor == want.divisor);
    }
    const index_t B = 16, T = 3000;
    const auto m = make_mask<float>(B, T, 3);
    const auto L = make_loss(B, T, m, 4);
    const device_vec<float> dm(m);
    const device_vec<double> dL(L);
    device_vec<double> dg(std::size_t(B * T));
    const pt::device_view<const double, 2> vL(dL.data(), B, T);
    const pt::device_view<const float, 2> vm(dm.data(), B, T);
    const std::size_t bytes = pl::aggregate_workspace_bytes(B, T);
    PT_CHECK(bytes > 0 && pl::count_tokens_workspace_bytes(B, T) > 0);
    device_vec<unsigned char> ws(bytes);
    const auto want = pl::aggregate(pt::exec::cuda, vL, vm, pt::none);
    const auto with_ws = pl::aggregate(pt::exec::cuda.with(ws.data(), bytes), vL, vm, pt::none);
    PT_CHECK(with_ws.loss == want.loss);
    PT_CHECK_THROWS((void)pl::aggregate(pt::exec::cuda.with(ws.data(), bytes - 1), vL, vm, pt::none), pt::invalid_argument);
    // Misuse: a mask of another shape, a gradient over the loss, options out of range.
    PT_CHECK_THROWS((void)pl::aggregate(pt::exec::cuda, vL, pt::device_view<const float, 2>(dm.data(), B, T - 1), pt::none),
                    pt::invalid_argument);
    PT_CHECK_THROWS((void)pl::aggregate(pt::exec::cuda, vL, vm, pt::device_view<double, 2>(const_cast<double*>(dL.data()), B, T)),
                    pt::invalid_argument);
    pl::aggregation_options bad;
    bad.global_tokens = -1;
    PT_CHECK_THROWS((void)pl::aggregate(pt::exec::cuda, vL, vm, pt::none, bad), pt::invalid_argument);
    // The device result over the gradient or over an input is refused before launching.
    PT_CHECK_THROWS(pl::aggregate(pt::exec::cuda, vL, vm, pt::device_view<double, 2>(dg.data(), B, T), {}, 1.0,
                                  pt::device_view<pl::aggregate_result, 0>(reinterpret_cast<pl::aggregate_result*>(dg.data() + 5))),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pl::aggregate(pt::exec::cuda, vL, vm, pt::none, {}, 1.0,
                                  pt::device_view<pl::aggregate_result, 0>(
                                      reinterpret_cast<pl::aggregate_result*>(const_cast<double*>(dL.data())))),
                    pt::invalid_argument);
    PT_CHECK_THROWS(pl::count_tokens(pt::exec::cuda, vm,
                                     pt::device_view<pl::token_counts, 0>(reinterpret_cast<pl::token_counts*>(const_cast<float*>(dm.data())))),
                    pt::invalid_argument);
    // Graph capture: the gradient and the device result, replayed on new inputs.
    auto losses = pt::test::input_sets<double>(L, make_loss(B, T, m, 5));
    device_vec<pl::aggregate_result> res(1);
    device_vec<pl::token_counts> counts(1);
    pt::test::graph_case c;
    c.name = "aggregate";
    c.workspace = bytes;
    c.outputs = {pt::test::out_of(dg), pt::test::out_of(res, 0)};
    c.load = [&](int k) { losses.load(k); };
    c.call = [&](const pt::exec::cuda_policy& p) {
        pl::aggregate(p, pt::device_view<const double, 2>(losses.dev.data(), B, T), vm, pt::device_view<double, 2>(dg.data(), B, T),
                      pl::aggregation_options::verl(pl::aggregation::seq_mean_token_mean, 2), 0.5,
                      pt::device_view<pl::aggregate_result, 0>(res.data()));
    };
    pt::test::graph_replay_both(c);
    auto masks = pt::test::input_sets<float>(m, make_mask<float>(B, T, 8));  // two sets: the replays must differ
    pt::test::graph_case cc;
    cc.name = "count_tokens";
    cc.workspace = pl::count_tokens_workspace_bytes(B, T);
    cc.outputs = {pt::test::out_of(counts, 0)};
    cc.load = [&](int k) { masks.load(k); };
    cc.call = [&](const pt::exec::cuda_policy& p) {
        pl::count_tokens(p, pt::device_view<const float, 2>(masks.dev.data(), B, T),
                         pt::device_view<pl::token_counts, 0>(counts.data()));
    };
    pt::test::graph_replay_both(cc);
}
