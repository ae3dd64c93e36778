// policy_loss::compute on exec::cuda: the fused PPO-clip + k3-KL forward and backward (verl's
// options: dual clip 3, log-ratio clamp 20, token-mean, k3 clamped; kl_coef 0.001), N = 2^18 .. 2^24
// tokens as [N / 2048, 2048] rows with right padding (each row keeps 1024..2048 tokens), a bool mask,
// the gradient in the input dtype and the loss_result left in device memory. Timed with CUDA events
// against a device-to-device cudaMemcpy that moves the same bytes as the kernels must: reading
// log_probs, old_log_probs, advantages, ref_log_probs and the mask and writing the gradient (a copy
// of half that many bytes reads and writes as many). One JSON line per measurement (timing.cuh):
//     ppo_k3_f32        float inputs
//     ppo_k3_bf16       __nv_bfloat16 inputs (widened to double on load)
//     ppo_k3_f32_sync   float, the overload that returns the loss_result on the host (stream sync)
// Usage: posttrain_cuda_policy_loss_bench [max_log2_n (default 24) [min_log2_n (default 18)]]

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <posttrain/policy_loss/policy_loss.cuh>

#include "timing.cuh"

namespace pt = posttrain;
namespace pl = posttrain::policy_loss;
using pt::index_t;
using pt::bench::row;
using pt::bench::time_ms;
using pt::bench::upload;

namespace {

constexpr index_t row_tokens = 2048;

// Device copies of the inputs in dtype T, and a gradient buffer.
template <class T>
struct inputs {
    T *lp = nullptr, *old = nullptr, *adv = nullptr, *ref = nullptr, *grad = nullptr;
    explicit inputs(const std::vector<double>& h_lp, const std::vector<double>& h_old, const std::vector<double>& h_adv,
                    const std::vector<double>& h_ref) {
        upload(lp, h_lp), upload(old, h_old), upload(adv, h_adv), upload(ref, h_ref);
        POSTTRAIN_CUDA_CHECK(cudaMalloc(&grad, sizeof(T) * h_lp.size()));
    }
    ~inputs() {
        for (T* p : {lp, old, adv, ref, grad}) cudaFree(p);
    }
    inputs(const inputs&) = delete;
    inputs& operator=(const inputs&) = delete;
};

}  // namespace

int main(int argc, char** argv) {
    const std::string device = pt::bench::device_name();
    if (device.empty()) {
        std::printf("posttrain CUDA policy-loss bench: no CUDA device present, skipped\n");
        return 77;
    }
    const int max_log2 = argc > 1 ? std::atoi(argv[1]) : 24;
    const int min_log2 = argc > 2 ? std::atoi(argv[2]) : 18;
    const index_t max_n = index_t{1} << max_log2;

    std::mt19937_64 rng(42);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::vector<double> lp(static_cast<std::size_t>(max_n)), old(lp.size()), adv(lp.size()), ref(lp.size());
    std::vector<unsigned char> mask(lp.size());
    for (std::size_t k = 0; k < lp.size(); ++k) {
        lp[k] = -5 * u(rng);
        old[k] = lp[k] + 0.1 * normal(rng);
        ref[k] = lp[k] + 0.1 * normal(rng);
        adv[k] = normal(rng);
    }
    for (index_t i = 0; i < max_n / row_tokens; ++i) {
        const index_t len = row_tokens / 2 + static_cast<index_t>(rng() % (row_tokens / 2 + 1));
        for (index_t t = 0; t < row_tokens; ++t) mask[static_cast<std::size_t>(i * row_tokens + t)] = t < len;
    }
    const inputs<float> f32(lp, old, adv, ref);
    const inputs<__nv_bfloat16> b16(lp, old, adv, ref);
    unsigned char* d_mask = nullptr;
    pl::loss_result* d_result = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&d_mask, mask.size()));
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(d_mask, mask.data(), mask.size(), cudaMemcpyHostToDevice));
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&d_result, sizeof(pl::loss_result)));
    // The memcpy baseline's buffers: half the bytes the float op moves (5 reads of 4 or 1 bytes, 1 write).
    const std::size_t f32_bytes = static_cast<std::size_t>(max_n) * (4 * sizeof(float) + 1 + sizeof(float));
    void *c_src = nullptr, *c_dst = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&c_src, f32_bytes / 2));
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&c_dst, f32_bytes / 2));
    POSTTRAIN_CUDA_CHECK(cudaMemset(c_src, 0, f32_bytes / 2));

    pl::options o = pl::options::verl(pl::objective::ppo_clip);
    o.kl_coef = 0.001;
    for (int lg = min_log2; lg <= max_log2; lg += 2) {
        const index_t n = index_t{1} << lg, B = n / row_tokens, T = row_tokens;
        const pt::device_view<const bool, 2> m(reinterpret_cast<const bool*>(d_mask), B, T);
        const pt::device_view<pl::loss_result, 0> result(d_result);
        auto copy_ms = [&](std::size_t per_token) {
            const std::size_t bytes = static_cast<std::size_t>(n) * per_token / 2;
            return time_ms([&] { POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(c_dst, c_src, bytes, cudaMemcpyDeviceToDevice)); });
        };
        auto run = [&](const auto& in, bool sync) {
            using T_ = std::remove_pointer_t<decltype(in.lp)>;
            const pt::device_view<const T_, 2> lpv(in.lp, B, T), oldv(in.old, B, T), advv(in.adv, B, T), refv(in.ref, B, T);
            const pt::device_view<T_, 2> g(in.grad, B, T);
            pl::device_extras ex;
            ex.ref_log_probs = refv;
            if (sync) {
                const pl::loss_result r = pl::compute(pt::exec::cuda, lpv, oldv, advv, m, g, o, ex);
                (void)r;
            } else {
                pl::compute(pt::exec::cuda, lpv, oldv, advv, m, g, o, ex, result);
            }
        };
        const double copy_f32 = copy_ms(4 * sizeof(float) + 1 + sizeof(float));
        const double copy_b16 = copy_ms(4 * sizeof(__nv_bfloat16) + 1 + sizeof(__nv_bfloat16));
        row("ppo_k3_f32", n, device, time_ms([&] { run(f32, false); }), copy_f32);
        row("ppo_k3_bf16", n, device, time_ms([&] { run(b16, false); }), copy_b16);
        row("ppo_k3_f32_sync", n, device, time_ms([&] { run(f32, true); }), copy_f32);
    }
    POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
    cudaFree(d_mask);
    cudaFree(d_result);
    cudaFree(c_src);
    cudaFree(c_dst);
    return 0;
}
