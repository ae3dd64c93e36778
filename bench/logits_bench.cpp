// The fused token-log-prob primitive (logits module): forward (log-prob of the label, entropy and lse)
// and backward with the saved statistics (dL/dlogits from dL/dlog p and dL/dH), one call each per
// iteration, over float32 logits [B, T, V] with V = 32768, B = P / 8 and T = 8 for P = N / V positions,
// labels uniform in [0, V), upstream gradients 1 and 0.01; N = B * T * V = 2^20 .. 2^24 logits, under
// exec::seq and exec::par. The peer (bench/peers/logits_peer.py) is log_softmax + gather + softmax
// entropy with autograd, as verl computes them.
//
// Bytes per logit: the forward reads it (4), the backward reads it again and writes its gradient
// (4 + 4): 12 N bytes (the [B, T] arrays are 1/2^13 of that and not counted).

#include <posttrain/logits/token_log_probs.hpp>

#include "common.hpp"

namespace lg = posttrain::logits;
namespace pb = posttrain_bench;
using posttrain::index_t;

namespace {

constexpr index_t vocab = 32768;
constexpr index_t bytes_per_logit = 12;

struct logits_batch {
    index_t B = 0, T = 8;
    std::vector<float> z, g, lp, h, lse, ul, uh;
    std::vector<std::int64_t> y;
};

logits_batch make_batch(index_t n) {
    logits_batch b;
    const index_t positions = n / vocab;
    b.B = positions / b.T;
    std::mt19937_64 gen(9);
    std::normal_distribution<float> d(0.0f, 2.0f);
    std::uniform_int_distribution<std::int64_t> label(0, vocab - 1);
    b.z.resize(static_cast<std::size_t>(n));
    for (auto& x : b.z) x = d(gen);
    b.g.resize(b.z.size());
    for (auto* v : {&b.lp, &b.h, &b.lse}) v->resize(static_cast<std::size_t>(positions));
    b.ul.assign(static_cast<std::size_t>(positions), 1.0f);
    b.uh.assign(static_cast<std::size_t>(positions), 0.01f);
    b.y.resize(static_cast<std::size_t>(positions));
    for (auto& v : b.y) v = label(gen);
    return b;
}

template <class Policy>
void bm_token_log_probs(benchmark::State& state, Policy policy, int threads, index_t n) {
    logits_batch b = make_batch(n);
    const index_t B = b.B, T = b.T;
    const posttrain::tensor_view<const float, 3> z(b.z.data(), B, T, vocab);
    const posttrain::tensor_view<const std::int64_t, 2> y(b.y.data(), B, T);
    auto out = [&](std::vector<float>& v) { return posttrain::tensor_view<float, 2>(v.data(), B, T); };
    auto in = [&](const std::vector<float>& v) { return posttrain::tensor_view<const float, 2>(v.data(), B, T); };
    for (auto _ : state) {
        lg::token_log_probs(policy, z, y, out(b.lp), out(b.h), out(b.lse));
        lg::token_log_probs_backward(policy, z, y, in(b.ul), in(b.uh), posttrain::tensor_view<float, 3>(b.g.data(), B, T, vocab),
                                     in(b.lse), in(b.h));
        benchmark::DoNotOptimize(b.g.data());
        benchmark::ClobberMemory();
    }
    pb::set_counters(state, n, bytes_per_logit * n, threads);
}

int register_all() {
    const int threads = pb::par_threads();
    for (index_t n : pb::size_ladder()) {
        if (n < (index_t{1} << 20)) continue;  // at least 32 positions of V = 32768
        pb::memcpy_sizes().insert(bytes_per_logit * n);
        benchmark::RegisterBenchmark(("token_log_probs/seq/" + std::to_string(n)).c_str(),
                                     bm_token_log_probs<posttrain::exec::sequenced_policy>, posttrain::exec::seq, 1, n)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark(("token_log_probs/par" + std::to_string(threads) + "/" + std::to_string(n)).c_str(),
                                     bm_token_log_probs<posttrain::exec::parallel_policy>,
                                     posttrain::exec::par.with_threads(threads), threads, n)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    }
    return 0;
}

const int registered = register_all();

}  // namespace
