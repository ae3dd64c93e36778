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

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::index_t;

namespace {

// Median-free but warm: a few untimed runs, then enough timed repetitions for ~20 ms of work.
template <class F>
double time_ms(F&& f) {
    for (int i = 0; i < 3; ++i) f();
    cudaEvent_t a, b;
    POSTTRAIN_CUDA_CHECK(cudaEventCreate(&a));
    POSTTRAIN_CUDA_CHECK(cudaEventCreate(&b));
    POSTTRAIN_CUDA_CHECK(cudaEventRecord(a));
    f();
    POSTTRAIN_CUDA_CHECK(cudaEventRecord(b));
    POSTTRAIN_CUDA_CHECK(cudaEventSynchronize(b));
    float once = 0;
    POSTTRAIN_CUDA_CHECK(cudaEventElapsedTime(&once, a, b));
    int reps = once > 0 ? static_cast<int>(20.0 / once) : 1000;
    reps = reps < 5 ? 5 : reps > 2000 ? 2000 : reps;
    POSTTRAIN_CUDA_CHECK(cudaEventRecord(a));
    for (int i = 0; i < reps; ++i) f();
    POSTTRAIN_CUDA_CHECK(cudaEventRecord(b));
    POSTTRAIN_CUDA_CHECK(cudaEventSynchronize(b));
    float total = 0;
    POSTTRAIN_CUDA_CHECK(cudaEventElapsedTime(&total, a, b));
    POSTTRAIN_CUDA_CHECK(cudaEventDestroy(a));
    POSTTRAIN_CUDA_CHECK(cudaEventDestroy(b));
    return double(total) / reps;
}

void row(const char* op, index_t n, const std::string& device, double ms, double memcpy_ms) {
    std::printf("{\"op\":\"%s\",\"size\":%lld,\"threads\":0,\"device\":\"%s\",\"posttrain_ms\":%.6f,"
                "\"memcpy_ms\":%.6f,\"memcpy_fraction\":%.4f}\n",
                op, static_cast<long long>(n), device.c_str(), ms, memcpy_ms, memcpy_ms / ms);
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("posttrain CUDA bench: no CUDA device present, skipped\n");
        return 77;
    }
    const int max_log2 = argc > 1 ? std::atoi(argv[1]) : 24;
    const int min_log2 = argc > 2 ? std::atoi(argv[2]) : 14;
    cudaDeviceProp prop{};
    POSTTRAIN_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const std::string device = std::string("cuda:") + prop.name;

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
