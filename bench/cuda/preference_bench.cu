// preference::dpo on exec::cuda: DPO (sigmoid, TRL's options) and SimPO forward and backward from
// per-token log-probs, N = 2^18 .. 2^24 tokens per side as [N / 2048, 2048] rows with right padding
// (each row keeps 1024..2048 tokens), uint8 masks, the gradients in the input dtype and the
// device_dpo_result left in device memory. Timed with CUDA events against a device-to-device
// cudaMemcpy that moves the bytes the call must move at the least:
//   DPO:   reading chosen, rejected, ref_chosen, ref_rejected and the two masks, writing both gradients
//          (4 x sizeof(T) + 2 + 2 x sizeof(T) bytes per token position);
//   SimPO: reading chosen, rejected and the two masks, writing both gradients (4 x sizeof(T) + 2).
// A copy of half that many bytes reads and writes as many. One JSON line per measurement (timing.cuh):
//     dpo_sigmoid_f32, dpo_sigmoid_bf16, simpo_f32, simpo_bf16   (size = tokens per side)
// Usage: posttrain_cuda_preference_bench [max_log2_n (default 24) [min_log2_n (default 18)]]

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <posttrain/preference/dpo.cuh>

#include "timing.cuh"

namespace pt = posttrain;
namespace pp = posttrain::preference;
using pt::index_t;
using pt::bench::row;
using pt::bench::time_ms;
using pt::bench::upload;

namespace {

constexpr index_t row_tokens = 2048;

// Device copies of the four sides in dtype T, and the two gradient buffers.
template <class T>
struct sides {
    T* lp[4] = {};
    T* grad[2] = {};
    explicit sides(const std::vector<double> (&h)[4]) {
        for (int k = 0; k < 4; ++k) upload(lp[k], h[k]);
        for (T*& g : grad) POSTTRAIN_CUDA_CHECK(cudaMalloc(&g, sizeof(T) * h[0].size()));
    }
    ~sides() {
        for (T* p : lp) cudaFree(p);
        for (T* p : grad) cudaFree(p);
    }
    sides(const sides&) = delete;
    sides& operator=(const sides&) = delete;
};

}  // namespace

int main(int argc, char** argv) {
    const std::string device = pt::bench::device_name();
    if (device.empty()) {
        std::printf("posttrain CUDA preference bench: no CUDA device present, skipped\n");
        return 77;
    }
    const int max_log2 = argc > 1 ? std::atoi(argv[1]) : 24;
    const int min_log2 = argc > 2 ? std::atoi(argv[2]) : 18;
    const index_t max_n = index_t{1} << max_log2;

    std::mt19937_64 rng(42);
    std::uniform_real_distribution<double> u(0.0, 1.0), noise(-0.05, 0.05);
    std::vector<double> lp[4];
    for (auto& v : lp) v.resize(static_cast<std::size_t>(max_n));
    for (std::size_t k = 0; k < lp[0].size(); ++k) {
        lp[0][k] = -3 * u(rng);
        lp[1][k] = -3 * u(rng);
        lp[2][k] = lp[0][k] + noise(rng);
        lp[3][k] = lp[1][k] + noise(rng);
    }
    std::vector<std::uint8_t> mask[2];
    for (auto& m : mask) {
        m.resize(lp[0].size());
        for (index_t i = 0; i < max_n / row_tokens; ++i) {
            const index_t len = row_tokens / 2 + static_cast<index_t>(rng() % (row_tokens / 2 + 1));
            for (index_t t = 0; t < row_tokens; ++t) m[static_cast<std::size_t>(i * row_tokens + t)] = t < len;
        }
    }
    const sides<float> f32(lp);
    const sides<__nv_bfloat16> b16(lp);
    std::uint8_t* d_mask[2] = {};
    for (int s = 0; s < 2; ++s) {
        POSTTRAIN_CUDA_CHECK(cudaMalloc(&d_mask[s], mask[s].size()));
        POSTTRAIN_CUDA_CHECK(cudaMemcpy(d_mask[s], mask[s].data(), mask[s].size(), cudaMemcpyHostToDevice));
    }
    pp::device_dpo_result* d_result = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&d_result, sizeof(pp::device_dpo_result)));
    // The memcpy baseline's buffers: half the bytes the float DPO call moves at the least.
    const std::size_t max_bytes = static_cast<std::size_t>(max_n) * (6 * sizeof(float) + 2);
    void *c_src = nullptr, *c_dst = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&c_src, max_bytes / 2));
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&c_dst, max_bytes / 2));
    POSTTRAIN_CUDA_CHECK(cudaMemset(c_src, 0, max_bytes / 2));

    const pp::dpo_options dpo_o = pp::dpo_options::trl(), simpo_o = pp::dpo_options::simpo();
    for (int lg = min_log2; lg <= max_log2; lg += 2) {
        const index_t n = index_t{1} << lg, B = n / row_tokens, T = row_tokens;
        const pt::device_view<pp::device_dpo_result, 0> result(d_result);
        auto copy_ms = [&](std::size_t per_token) {
            const std::size_t bytes = static_cast<std::size_t>(n) * per_token / 2;
            return time_ms([&] { POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(c_dst, c_src, bytes, cudaMemcpyDeviceToDevice)); });
        };
        // The sequence inputs are built inside the timed call: building them is part of a call's cost.
        auto run = [&](const auto& in, bool reference) {
            using T_ = std::remove_pointer_t<std::remove_cv_t<std::remove_reference_t<decltype(in.lp[0])>>>;
            auto side = [&](int k) {
                return pp::device_sequence_input::tokens(pt::device_view<const T_, 2>(in.lp[k], B, T),
                                                         pt::device_view<const std::uint8_t, 2>(d_mask[k % 2], B, T));
            };
            const pp::device_sequence_grad gw = pt::device_view<T_, 2>(in.grad[0], B, T);
            const pp::device_sequence_grad gl = pt::device_view<T_, 2>(in.grad[1], B, T);
            if (reference)
                pp::dpo(pt::exec::cuda, side(0), side(1), side(2), side(3), gw, gl, dpo_o, {}, {}, result);
            else
                pp::dpo(pt::exec::cuda, side(0), side(1), {}, {}, gw, gl, simpo_o, {}, {}, result);
        };
        const double dpo_f32 = copy_ms(6 * sizeof(float) + 2), dpo_b16 = copy_ms(6 * sizeof(__nv_bfloat16) + 2);
        const double simpo_f32 = copy_ms(4 * sizeof(float) + 2), simpo_b16 = copy_ms(4 * sizeof(__nv_bfloat16) + 2);
        row("dpo_sigmoid_f32", n, device, time_ms([&] { run(f32, true); }), dpo_f32);
        row("dpo_sigmoid_bf16", n, device, time_ms([&] { run(b16, true); }), dpo_b16);
        row("simpo_f32", n, device, time_ms([&] { run(f32, false); }), simpo_f32);
        row("simpo_bf16", n, device, time_ms([&] { run(b16, false); }), simpo_b16);
    }
    POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
    for (std::uint8_t* m : d_mask) cudaFree(m);
    cudaFree(d_result);
    cudaFree(c_src);
    cudaFree(c_dst);
    return 0;
}
