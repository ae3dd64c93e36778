// The fused policy loss: verl's PPO clip (dual clip 3, log-ratio clamp 20) plus the k3 KL term to a
// reference policy (coefficient 0.001, verl's clamps), token-mean aggregation, forward and backward in
// one call, over float32 [B, T] log-probs with T = 1024 and a float mask whose last 7 positions of
// each row are padding; N = B * T = 2^14 .. 2^24 tokens, under exec::seq and exec::par.
//
// Bytes: the call reads log_probs, old_log_probs, ref_log_probs, advantages and the mask (4 bytes
// each) and writes the gradient (4 bytes): 24 bytes per token.

#include <posttrain/policy_loss/policy_loss.hpp>

#include "common.hpp"

namespace pl = posttrain::policy_loss;
namespace pb = posttrain_bench;
using posttrain::index_t;

namespace {

constexpr index_t row_length = 1024;

struct token_batch {
    index_t rows = 0;
    std::vector<float> lp, old, ref, adv, mask, grad;
};

token_batch make_batch(index_t n) {
    token_batch b;
    b.rows = n / row_length;
    std::mt19937_64 gen(3);
    std::normal_distribution<float> d(0.0f, 1.0f);
    const std::size_t size = static_cast<std::size_t>(n);
    b.lp.resize(size), b.old.resize(size), b.ref.resize(size), b.adv.resize(size), b.mask.resize(size), b.grad.resize(size);
    for (std::size_t i = 0; i < size; ++i) {
        b.lp[i] = -1.0f + 0.1f * d(gen);
        b.old[i] = b.lp[i] + 0.05f * d(gen);  // ratios around 1, some outside the clip range
        b.ref[i] = b.lp[i] + 0.05f * d(gen);
        b.adv[i] = d(gen);
        b.mask[i] = static_cast<index_t>(i) % row_length < row_length - 7 ? 1.0f : 0.0f;
    }
    return b;
}

template <class Policy>
void bm_ppo_k3(benchmark::State& state, Policy policy, int threads, index_t n) {
    token_batch b = make_batch(n);
    const index_t T = row_length;
    auto in = [&](const std::vector<float>& v) { return posttrain::tensor_view<const float, 2>(v.data(), b.rows, T); };
    pl::options o = pl::options::verl();
    o.kl_coef = 0.001;
    pl::extras ex;
    ex.ref_log_probs = in(b.ref);
    posttrain::tensor_view<float, 2> grad(b.grad.data(), b.rows, T);
    for (auto _ : state) {
        const pl::loss_result r = pl::compute(policy, in(b.lp), in(b.old), in(b.adv), in(b.mask), grad, o, ex);
        benchmark::DoNotOptimize(r.loss);
        benchmark::ClobberMemory();
    }
    pb::set_counters(state, n, 24 * n, threads);
}

void register_ppo_k3() {
    const int threads = pb::par_threads();
    for (index_t n : pb::size_ladder()) {
        if (n < row_length) continue;
        pb::memcpy_sizes().insert(24 * n);
        benchmark::RegisterBenchmark(("ppo_k3/seq/" + std::to_string(n)).c_str(),
                                     bm_ppo_k3<posttrain::exec::sequenced_policy>, posttrain::exec::seq, 1, n)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark(("ppo_k3/par" + std::to_string(threads) + "/" + std::to_string(n)).c_str(),
                                     bm_ppo_k3<posttrain::exec::parallel_policy>,
                                     posttrain::exec::par.with_threads(threads), threads, n)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    }
}

const int registered = (register_ppo_k3(), 0);

}  // namespace
