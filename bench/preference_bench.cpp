// The DPO family from per-token log-probs: DPO (sigmoid, with a reference) and SimPO (reference-free,
// length-averaged, margin), forward and backward in one call, over float32 [B, T] log-probs of the
// chosen and rejected responses with T = 1024, a uint8 completion mask with right padding of random
// length in [T/2, T]; N = B * T = 2^14 .. 2^24 tokens per side, under exec::seq and exec::par.
//
// Bytes per token of one side: DPO reads the policy and reference log-probs and the mask and writes
// the gradient (4 + 4 + 1 + 4 = 13); SimPO has no reference (9). Both sides: 26 N and 18 N bytes.
// dpo_sigmoid_i64 takes the int64 completion mask TRL's collator produces (8-byte mask: 40 N bytes).

#include <posttrain/preference/dpo.hpp>

#include "common.hpp"

namespace pref = posttrain::preference;
namespace pb = posttrain_bench;
using posttrain::index_t;

namespace {

constexpr index_t row_length = 1024;

template <class M>
struct pair_batch {
    index_t rows = 0;
    std::vector<float> cw, cl, rw, rl, gw, gl;
    std::vector<M> mw, ml;
};

template <class M>
pair_batch<M> make_batch(index_t n) {
    pair_batch<M> b;
    b.rows = n / row_length;
    std::mt19937_64 gen(5);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::uniform_int_distribution<index_t> len(row_length / 2, row_length);
    const std::size_t size = static_cast<std::size_t>(n);
    for (auto* v : {&b.cw, &b.cl, &b.rw, &b.rl, &b.gw, &b.gl}) v->resize(size);
    b.mw.resize(size), b.ml.resize(size);
    for (index_t i = 0; i < b.rows; ++i) {
        const index_t lw = len(gen), ll = len(gen);
        for (index_t t = 0; t < row_length; ++t) {
            const std::size_t k = static_cast<std::size_t>(i * row_length + t);
            b.rw[k] = -1.0f + 0.1f * d(gen);
            b.rl[k] = -1.0f + 0.1f * d(gen);
            b.cw[k] = b.rw[k] + 0.05f * d(gen);
            b.cl[k] = b.rl[k] + 0.05f * d(gen);
            b.mw[k] = t < lw;
            b.ml[k] = t < ll;
        }
    }
    return b;
}

template <class M>
constexpr index_t bytes_per_token(bool simpo);

template <class Policy, class M>
void bm_pairs(benchmark::State& state, Policy policy, int threads, index_t n, bool simpo) {
    pair_batch<M> b = make_batch<M>(n);
    const index_t T = row_length;
    auto in = [&](const std::vector<float>& v, const std::vector<M>& m) {
        return pref::sequence_input::tokens(posttrain::tensor_view<const float, 2>(v.data(), b.rows, T),
                                            posttrain::tensor_view<const M, 2>(m.data(), b.rows, T));
    };
    const auto chosen = in(b.cw, b.mw), rejected = in(b.cl, b.ml);
    const auto ref_w = simpo ? pref::sequence_input{} : in(b.rw, b.mw);
    const auto ref_l = simpo ? pref::sequence_input{} : in(b.rl, b.ml);
    const pref::sequence_grad gw(posttrain::tensor_view<float, 2>(b.gw.data(), b.rows, T));
    const pref::sequence_grad gl(posttrain::tensor_view<float, 2>(b.gl.data(), b.rows, T));
    const pref::dpo_options o = simpo ? pref::dpo_options::simpo() : pref::dpo_options::trl();
    for (auto _ : state) {
        const pref::dpo_result r = pref::dpo(policy, chosen, rejected, ref_w, ref_l, gw, gl, o);
        benchmark::DoNotOptimize(r.loss);
        benchmark::ClobberMemory();
    }
    pb::set_counters(state, n, bytes_per_token<M>(simpo) * n, threads);
}

template <class M>
constexpr index_t bytes_per_token(bool simpo) {
    return 2 * ((simpo ? 8 : 12) + index_t(sizeof(M)));
}

template <class M>
void register_pairs(const char* name, bool simpo) {
    const int threads = pb::par_threads();
    for (index_t n : pb::size_ladder()) {
        if (n < row_length) continue;
        pb::memcpy_sizes().insert(bytes_per_token<M>(simpo) * n);
        benchmark::RegisterBenchmark((std::string(name) + "/seq/" + std::to_string(n)).c_str(),
                                     bm_pairs<posttrain::exec::sequenced_policy, M>, posttrain::exec::seq, 1, n, simpo)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark((std::string(name) + "/par" + std::to_string(threads) + "/" + std::to_string(n)).c_str(),
                                     bm_pairs<posttrain::exec::parallel_policy, M>, posttrain::exec::par.with_threads(threads),
                                     threads, n, simpo)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    }
}

const int registered = (register_pairs<std::uint8_t>("dpo_sigmoid", false), register_pairs<std::uint8_t>("simpo", true),
                        register_pairs<std::int64_t>("dpo_sigmoid_i64", false), 0);

}  // namespace
