#pragma once
// exec::cuda: the CUDA execution policy.
//
//     posttrain::exec::cuda                                  default stream, scratch from cudaMallocAsync
//         .on(stream)                                        stream-ordered and asynchronous on `stream`
//         .with(workspace)                                   scratch from a caller buffer (CUDA-graph friendly;
//                                                            256-byte aligned, as cudaMalloc returns)
//         .with_status(d_status)                             kernels OR status_bits into *d_status (device memory)
//         .validated()                                       opt-in host validation of device-resident layouts
//
// Algorithms taking this policy never synchronize the host with the device unless .validated() is
// asked for: host-detectable misuse (shapes, dtypes, spaces, options) throws invalid_argument before
// anything is launched; what only the device can see (offsets, non-finite values) sets status bits.

#if !defined(__CUDACC__)
#error "<posttrain/cuda/exec.cuh> needs nvcc: include it only from .cu files"
#endif

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "../core/error.hpp"
#include "../core/view.hpp"

namespace posttrain {

#define POSTTRAIN_CUDA_CHECK(expr)                                                                         \
    do {                                                                                                   \
        const cudaError_t posttrain_cuda_check_err_ = (expr);                                              \
        if (posttrain_cuda_check_err_ != cudaSuccess)                                                      \
            ::posttrain::detail::raise_cuda_error(static_cast<int>(posttrain_cuda_check_err_), __func__,   \
                                                  std::string(#expr) + ": " +                              \
                                                      cudaGetErrorString(posttrain_cuda_check_err_));      \
    } while (0)

namespace exec {

struct cuda_policy {
    cudaStream_t stream = nullptr;
    void* workspace = nullptr;           // caller scratch (device memory), or null for cudaMallocAsync
    std::size_t workspace_bytes = 0;
    std::uint32_t* status = nullptr;     // optional device word that kernels OR status bits into
    bool validate = false;               // copy device layouts to the host and validate them (synchronizes)

    constexpr cuda_policy on(cudaStream_t s) const noexcept {
        cuda_policy p = *this;
        p.stream = s;
        return p;
    }
    constexpr cuda_policy with(void* buffer, std::size_t bytes) const noexcept {
        cuda_policy p = *this;
        p.workspace = buffer;
        p.workspace_bytes = bytes;
        return p;
    }
    constexpr cuda_policy with(device_view<std::byte, 1> buffer) const noexcept {
        return with(static_cast<void*>(buffer.data()), static_cast<std::size_t>(buffer.size()));
    }
    constexpr cuda_policy with_status(std::uint32_t* d_status) const noexcept {
        cuda_policy p = *this;
        p.status = d_status;
        return p;
    }
    constexpr cuda_policy validated(bool on_host = true) const noexcept {
        cuda_policy p = *this;
        p.validate = on_host;
        return p;
    }
};

inline constexpr cuda_policy cuda{};

}  // namespace exec

// True for exec::cuda and the policies derived from it; host overloads reject these, .cuh ones take them.
template <class P>
inline constexpr bool is_cuda_policy_v = std::is_same_v<std::remove_cvref_t<P>, exec::cuda_policy>;

template <class P>
concept cuda_execution_policy = is_cuda_policy_v<P>;

namespace detail {

inline void check_launch(const char* function) {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        raise_cuda_error(static_cast<int>(e), function, std::string("kernel launch: ") + cudaGetErrorString(e));
}

// The alignment of every scratch region: cudaMalloc's, required of a caller workspace.
inline constexpr std::size_t scratch_alignment = 256;

// Scratch for one algorithm call: the caller's workspace when given (and large enough), otherwise a
// stream-ordered cudaMallocAsync released with cudaFreeAsync when the call returns. Either way the
// memory is only touched by work enqueued on the policy's stream.
class cuda_scratch {
public:
    cuda_scratch(const exec::cuda_policy& p, std::size_t bytes, where w) : stream_(p.stream) {
        if (bytes == 0) return;
        if (p.workspace != nullptr) {
            require(p.workspace_bytes >= bytes, w,
                    "the workspace has " + std::to_string(p.workspace_bytes) + " bytes, this call needs " +
                        std::to_string(bytes) + " (ask <algorithm>_workspace_bytes)");
            // Algorithms carve the scratch at scratch_align offsets from its base and store 8-byte
            // values there (sort keys, doubles, counters): a misaligned base would be a kernel
            // fault, not an error the caller can catch.
            require(reinterpret_cast<std::uintptr_t>(p.workspace) % scratch_alignment == 0, w,
                    "the workspace must be " + std::to_string(scratch_alignment) +
                        "-byte aligned (as cudaMalloc returns), found an address " +
                        std::to_string(reinterpret_cast<std::uintptr_t>(p.workspace) % scratch_alignment) +
                        " bytes past a boundary");
            ptr_ = p.workspace;
            return;
        }
        POSTTRAIN_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream_));
        owned_ = true;
    }
    cuda_scratch(const cuda_scratch&) = delete;
    cuda_scratch& operator=(const cuda_scratch&) = delete;
    ~cuda_scratch() {
        if (owned_) (void)cudaFreeAsync(ptr_, stream_);  // a destructor cannot throw; the stream reports later errors
    }
    template <class T>
    T* as(std::size_t byte_offset = 0) const noexcept {
        return reinterpret_cast<T*>(static_cast<unsigned char*>(ptr_) + byte_offset);
    }

private:
    cudaStream_t stream_;
    void* ptr_ = nullptr;
    bool owned_ = false;
};

// Rounds a scratch sub-allocation up so that every piece stays 256-byte aligned (cudaMalloc's alignment).
constexpr std::size_t scratch_align(std::size_t bytes) noexcept {
    return (bytes + scratch_alignment - 1) / scratch_alignment * scratch_alignment;
}

// Lays out consecutive scratch regions one after the other, each starting on a scratch_align
// boundary: take(bytes) returns the region's offset; end is the total size so far.
struct scratch_cursor {
    std::size_t end = 0;
    std::size_t take(std::size_t bytes) noexcept {
        const std::size_t at = end;
        end += scratch_align(bytes);
        return at;
    }
};

// The policy's workspace and status word as device views (empty when absent), for aliasing checks.
inline device_view<const std::byte, 1> policy_workspace_view(const exec::cuda_policy& p) noexcept {
    const bool has = p.workspace != nullptr && p.workspace_bytes > 0;
    return device_view<const std::byte, 1>(static_cast<const std::byte*>(p.workspace),
                                           has ? static_cast<index_t>(p.workspace_bytes) : 0);
}
inline device_view<const std::uint32_t, 1> policy_status_view(const exec::cuda_policy& p) noexcept {
    return device_view<const std::uint32_t, 1>(p.status, p.status != nullptr ? 1 : 0);
}

// Refuses (argument "policy" of `fn`) a workspace or a status word that shares bytes with a view the
// call reads or writes, or a status word inside the workspace, before anything is allocated or
// launched: kernels write both (scratch; atomicOr into the status) while other blocks still read the
// inputs and write the outputs, so such an overlap would silently corrupt the results. Each view
// comes with its argument's name: check_policy_apart(policy, fn, std::pair{r, "rewards"}, ...). An
// empty view or an absent one (none, nullptr) never overlaps.
template <class... V>
void check_policy_apart(const exec::cuda_policy& policy, const char* fn, const std::pair<V, const char*>&... views) {
    const auto ws = policy_workspace_view(policy);
    const auto st = policy_status_view(policy);
    if (views_overlap(st, ws))
        raise_invalid_argument(fn, "policy", "the status word lies inside the 'workspace'; pass a separate buffer");
    auto one = [&](const auto& v, const char* name) {
        using T = std::remove_cvref_t<decltype(v)>;
        if constexpr (!std::is_same_v<T, none_t> && !std::is_same_v<T, std::nullptr_t>) {
            if (views_overlap(v, ws))
                raise_invalid_argument(fn, "policy", std::string("the workspace overlaps the argument '") + name +
                                                         "'; pass a separate buffer");
            if (views_overlap(v, st))
                raise_invalid_argument(fn, "policy", std::string("the status word overlaps the argument '") + name +
                                                         "'; pass a separate buffer");
        }
    };
    (one(views.first, views.second), ...);
}

// As check_policy_apart, for the buffers of a group layout the call reads (offsets, a permutation, a
// device count): found through the layout's layout_buffer_overlapping (<posttrain/core/groups.hpp>,
// <posttrain/cuda/groups.cuh>).
template <class Groups>
void check_policy_apart_from_layout(const exec::cuda_policy& policy, const Groups& groups, const char* fn) {
    if (const char* buffer = layout_buffer_overlapping(groups, policy_workspace_view(policy)))
        raise_invalid_argument(fn, "policy", std::string("the workspace overlaps the layout's '") + buffer +
                                                 "'; pass a separate buffer");
    if (const char* buffer = layout_buffer_overlapping(groups, policy_status_view(policy)))
        raise_invalid_argument(fn, "policy", std::string("the status word overlaps the layout's '") + buffer +
                                                 "'; pass a separate buffer");
}

// ORs bits into the optional status word.
__device__ inline void report_status(std::uint32_t* status, std::uint32_t bits) {
    if (status != nullptr && bits != 0) atomicOr(reinterpret_cast<unsigned int*>(status), bits);
}

}  // namespace detail
}  // namespace posttrain
