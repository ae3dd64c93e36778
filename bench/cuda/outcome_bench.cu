// GRPO / RLOO on exec::cuda, N = 2^14 .. 2^24, timed with CUDA events against a device-to-device
// cudaMemcpy of the same bytes (one read and one write of N elements, which is what the kernels
// must move at least). Prints one JSON object per line:
//     {"op":..., "size":N, "threads":0, "device":..., "posttrain_ms":..., "memcpy_ms":..., "memcpy_fraction":...}
// memcpy_fraction = memcpy_ms / posttrain_ms (1.0 = as fast as a copy).
// Usage: posttrain_cuda_bench [max_log2_n (default 24) [min_log2_n (default 14)]]

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <posttrain/advantage/grpo.cuh>
#include <posttrain/advantage/rloo.cuh>

#include "timing.cuh"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::index_t;
using pt::bench::row;
using pt::bench::time_ms;

int main(int argc, char** argv) {
    const std::string device = pt::bench::device_name();
    if (device.empty()) {
        std::printf("posttrain CUDA bench: no CUDA device present, skipped\n");
        return 77;
    }
    const int max_log2 = argc > 1 ? std::atoi(argv[1]) : 24;
    const int min_log2 = argc > 2 ? std::atoi(argv[2]) : 14;

    const index_t max_n = index_t{1} << max_log2;
    std::mt19937_64 rng(42);
    std::vector<float> host_r(static_cast<std::size_t>(max_n));
    for (auto& v : host_r) v = static_cast<float>(rng() % 2);
    // Ragged offsets with sizes 1..31 (mean ~16) covering max_n rows.
    std::vector<std::int64_t> host_off{0};
    while (host_off.back() < max_n) host_off.push_back(std::min<std::int64_t>(max_n, host_off.back() + 1 + rng() % 31));

    float *r = nullptr, *a = nullptr;
    std::int64_t* off = nullptr;
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&r, sizeof(float) * max_n));
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&a, sizeof(float) * max_n));
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&off, sizeof(std::int64_t) * host_off.size()));
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(r, host_r.data(), sizeof(float) * max_n, cudaMemcpyHostToDevice));
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(off, host_off.data(), sizeof(std::int64_t) * host_off.size(), cudaMemcpyHostToDevice));

    for (int lg = min_log2; lg <= max_log2; lg += 2) {
        const index_t n = index_t{1} << lg;
        const pt::device_view<const float, 1> rv(r, n);
        const pt::device_view<float, 1> av(a, n);
        const double copy = time_ms([&] { POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(a, r, sizeof(float) * n, cudaMemcpyDeviceToDevice)); });
        row("grpo_uniform16_f32", n, device, time_ms([&] { adv::grpo(pt::exec::cuda, rv, pt::uniform_groups{16}, av); }), copy);
        row("rloo_uniform16_f32", n, device, time_ms([&] { adv::rloo(pt::exec::cuda, rv, pt::uniform_groups{16}, av); }), copy);
        row("grpo_uniform4_f32", n, device, time_ms([&] { adv::grpo(pt::exec::cuda, rv, pt::uniform_groups{4}, av); }), copy);
        row("grpo_uniform4096_f32", n, device, time_ms([&] { adv::grpo(pt::exec::cuda, rv, pt::uniform_groups{4096}, av); }), copy);
        // The ragged prefix whose last offset is <= n: cut n down to that many rows.
        std::size_t g = 0;
        while (g + 1 < host_off.size() && host_off[g + 1] <= n) ++g;
        const index_t rows = host_off[g];
        const pt::device_view<const std::int64_t, 1> ov(off, static_cast<index_t>(g + 1));
        row("grpo_ragged16_f32", rows, device,
            time_ms([&] { adv::grpo(pt::exec::cuda, pt::device_view<const float, 1>(r, rows), pt::ragged(ov),
                                    pt::device_view<float, 1>(a, rows)); }),
            copy * double(rows) / double(n));
        adv::grpo_options batch;
        batch.std_scale = adv::scale::batch;
        row("grpo_uniform16_batchstd_f32", n, device,
            time_ms([&] { adv::grpo(pt::exec::cuda, rv, pt::uniform_groups{16}, av, batch); }), copy);
    }
    POSTTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
    cudaFree(r);
    cudaFree(a);
    cudaFree(off);
    return 0;
}
