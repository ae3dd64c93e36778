#pragma once
// exec::thrust(policy): runs posttrain's sort/scan-shaped algorithms through Thrust with the given
// Thrust execution policy. With thrust::omp::par (or thrust::cpp::par) the GPU-shaped code runs on
// the CPU with any C++20 host compiler, which is how CI without a GPU tests it:
//
//     g++ -std=c++20 -fopenmp -DTHRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_OMP -I/usr/local/cuda/include/cccl
//     auto g = pt::grouping::from_ids(pt::exec::thrust(thrust::omp::par), ids);
//     pt::advantage::grpo(pt::exec::thrust(thrust::omp::par), rewards, g, advantages);
//
// Data must be host-accessible (host views): the CUDA path is exec::cuda. Translation units built
// by a host compiler must define THRUST_DEVICE_SYSTEM (OMP, CPP or TBB), or CUB fails to compile.

#include <type_traits>

#include <thrust/execution_policy.h>

#include "../config.hpp"

namespace posttrain {
namespace exec {

template <class ThrustPolicy>
struct thrust_policy {
    ThrustPolicy base;  // the Thrust execution policy every algorithm is called with
};

template <class ThrustPolicy>
constexpr thrust_policy<std::remove_cvref_t<ThrustPolicy>> thrust(const ThrustPolicy& p) {
    return {p};
}

}  // namespace exec

template <class P>
struct is_thrust_policy : std::false_type {};
template <class T>
struct is_thrust_policy<exec::thrust_policy<T>> : std::true_type {};

template <class P>
concept thrust_execution_policy = is_thrust_policy<std::remove_cvref_t<P>>::value;

namespace detail {

// Thrust policies whose algorithms dereference host pointers (everything but the CUDA system).
template <class ThrustPolicy>
constexpr bool thrust_runs_on_host() {
#if defined(__CUDACC__) && THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
    return !std::is_base_of_v<::thrust::cuda_cub::execution_policy<ThrustPolicy>, ThrustPolicy>;
#else
    return true;
#endif
}

template <class ThrustPolicy>
constexpr void check_host_thrust_policy() {
    static_assert(thrust_runs_on_host<ThrustPolicy>(),
                  "posttrain: exec::thrust takes host-side Thrust systems (thrust::omp::par, thrust::cpp::par, "
                  "thrust::tbb::par); for the GPU use exec::cuda from <posttrain/cuda/exec.cuh>");
}

}  // namespace detail
}  // namespace posttrain
