// GAE benchmarks: advantage::gae with gae_options::verl(0.99, 0.95) (carry masking, returns, batch
// whitening) on float32 [B, T] token rewards, values and a float mask, B = N / T, for
//   gae_t1024   T = 1024
//   gae_t4096   T = 4096
// and N = 2^14 .. 2^24, under exec::seq and exec::par. The peer (bench/peers/torch_peers.py,
// gae_verl_loop) is verl's per-timestep loop over T with masked_whiten, on the same shapes.
//
// Byte counters count what the call reads and writes through its arguments: rewards, values and
// mask (12N) and advantages and returns (8N). The whitening's second read of the advantages is
// internal and not counted.

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/gae.hpp>

#include "common.hpp"

namespace pa = posttrain::advantage;
namespace pb = posttrain_bench;
using posttrain::index_t;

namespace {

// Rewards mostly zero with a terminal score per row, values ~ U[0,1), a mask with right padding
// (row lengths between T/2 and T) and a few interior zeros (observation tokens).
struct token_batch {
    index_t b, t;
    std::vector<float> r, v, m;
};

token_batch make_batch(index_t n, index_t t) {
    token_batch x{n / t, t, std::vector<float>(std::size_t(n)), pb::make_rewards(n, 3), std::vector<float>(std::size_t(n))};
    std::mt19937_64 gen(5);
    std::uniform_int_distribution<index_t> len(t / 2, t);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (index_t i = 0; i < x.b; ++i) {
        const index_t l = len(gen);
        for (index_t j = 0; j < t; ++j) {
            const std::size_t k = std::size_t(i * t + j);
            x.m[k] = j < l && u(gen) > 0.05f ? 1.0f : 0.0f;
            x.r[k] = j == l - 1 ? u(gen) : 0.0f;
        }
    }
    return x;
}

template <class Policy>
void bm_gae(benchmark::State& state, Policy policy, int threads, index_t n, index_t t) {
    const token_batch x = make_batch(n, t);
    std::vector<float> a(static_cast<std::size_t>(n)), ret(static_cast<std::size_t>(n));
    const auto o = pa::gae_options::verl(0.99, 0.95);
    auto call = [&] {
        benchmark::DoNotOptimize(pa::gae(policy, posttrain::tensor_view<const float, 2>(x.r.data(), x.b, t),
                                         posttrain::tensor_view<const float, 2>(x.v.data(), x.b, t),
                                         posttrain::tensor_view<const float, 2>(x.m.data(), x.b, t),
                                         posttrain::tensor_view<float, 2>(a.data(), x.b, t),
                                         posttrain::tensor_view<float, 2>(ret.data(), x.b, t), o));
    };
    call();  // warm the output pages
    for (auto _ : state) {
        call();
        benchmark::ClobberMemory();
    }
    pb::set_counters(state, n, 20 * std::int64_t(n), threads);
}

void register_gae() {
    const int par = pb::par_threads();
    for (index_t t : {index_t{1024}, index_t{4096}}) {
        const std::string base = "gae_t" + std::to_string(t);
        for (index_t n : pb::size_ladder()) {
            if (n < t) continue;
            benchmark::RegisterBenchmark((base + "/seq/" + std::to_string(n)).c_str(), bm_gae<posttrain::exec::sequenced_policy>,
                                         posttrain::exec::seq, 1, n, t)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
            benchmark::RegisterBenchmark((base + "/par" + std::to_string(par) + "/" + std::to_string(n)).c_str(),
                                         bm_gae<posttrain::exec::parallel_policy>, posttrain::exec::par.with_threads(par), par, n, t)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
            pb::memcpy_sizes().insert(20 * std::int64_t(n));
        }
    }
}

const int registered = (register_gae(), 0);

}  // namespace
