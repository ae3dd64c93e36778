#pragma once
// Timing and output shared by the CUDA benchmarks: CUDA-event timing of a warm callable, and one
// JSON line per measurement,
//     {"op":..., "size":N, "threads":0, "device":..., "posttrain_ms":..., "memcpy_ms":..., "memcpy_fraction":...}
// memcpy_fraction = memcpy_ms / posttrain_ms (1.0 = as fast as a copy of the bytes the op must move).
// Also the upload of host test data to the device in the benchmark's dtype.

#include <cstdio>
#include <string>
#include <vector>

#include <posttrain/cuda/exec.cuh>
#include <posttrain/policy_loss/policy_loss.cuh>  // from_double: the rounding the kernels' own conversions use

namespace posttrain::bench {

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

inline void row(const char* op, index_t n, const std::string& device, double ms, double memcpy_ms) {
    std::printf("{\"op\":\"%s\",\"size\":%lld,\"threads\":0,\"device\":\"%s\",\"posttrain_ms\":%.6f,"
                "\"memcpy_ms\":%.6f,\"memcpy_fraction\":%.4f}\n",
                op, static_cast<long long>(n), device.c_str(), ms, memcpy_ms, memcpy_ms / ms);
    std::fflush(stdout);
}

// "cuda:<name>" of device 0, or empty when there is no CUDA device.
inline std::string device_name() {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) return {};
    cudaDeviceProp prop{};
    POSTTRAIN_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    return std::string("cuda:") + prop.name;
}

// d = a new device array holding h converted to T (float, double, __half or __nv_bfloat16); the caller
// cudaFrees it.
template <class T>
void upload(T*& d, const std::vector<double>& h) {
    std::vector<T> t(h.size());
    for (std::size_t k = 0; k < h.size(); ++k) t[k] = posttrain::policy_loss::detail::from_double<T>(h[k]);
    POSTTRAIN_CUDA_CHECK(cudaMalloc(&d, sizeof(T) * h.size()));
    POSTTRAIN_CUDA_CHECK(cudaMemcpy(d, t.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice));
}

}  // namespace posttrain::bench
