#pragma once
// Group layouts whose offsets live in device memory, and their device-side readers.
//
//     posttrain::ragged(device_view<const int64_t, 1>(d_offsets, G + 1))   CSR offsets on the device
//     posttrain::device_ragged(dlpack_tensor_on_cuda)                       the same from any adapted tensor
//
// The host cannot read device offsets without synchronizing, so they are validated where they are
// read: a group whose bounds are not a valid CSR range sets status_invalid_groups in the policy's
// status word and is skipped (its rows are left unwritten; nothing outside [0, N) is ever touched).
// exec::cuda.validated() instead copies the offsets to the host and throws invalid_argument.

#if !defined(__CUDACC__)
#error "<posttrain/cuda/groups.cuh> needs nvcc: include it only from .cu files"
#endif

#include <variant>
#include <vector>

#include "../core/groups.hpp"
#include "../core/traits.hpp"
#include "exec.cuh"

namespace posttrain {

template <class Offset>
struct device_ragged_groups {
    device_view<const Offset, 1> offsets;
};

// Offsets of any adapted integer type in device memory (device_view, or a DLPack tensor on CUDA).
template <class Offsets>
auto device_ragged(const Offsets& offsets) {
    auto v = std::visit([](auto view) { return view; },
                        detail::id_input<1, device_space>(offsets, {"posttrain::device_ragged", "offsets"}));
    using V = decltype(v);
    return device_ragged_groups<typename V::value_type>{v};
}

// ragged() of a device view gives the device layout (more specialized than groups.hpp's overload).
template <class Offset>
device_ragged_groups<std::remove_const_t<Offset>> ragged(const device_view<Offset, 1>& offsets) {
    return {device_view<const std::remove_const_t<Offset>, 1>(offsets)};
}

namespace detail {

// Device-side readers: bounds(g, begin, end) gives the rows of group g, or false when the layout is
// invalid there (then the group is skipped and the caller reports status_invalid_groups).
struct device_uniform_layout {
    static constexpr bool uniform = true;
    index_t k = 1;
    // First row of group g (g <= groups); only meaningful where the layout is valid.
    __device__ index_t begin_of(index_t g) const noexcept { return g * k; }
    __device__ bool bounds(index_t g, index_t& begin, index_t& end) const noexcept {
        begin = g * k;
        end = begin + k;
        return true;
    }
};

template <class Offset>
struct device_ragged_layout {
    static constexpr bool uniform = false;
    const Offset* offsets = nullptr;
    index_t stride = 1;
    index_t groups = 0;
    index_t rows = 0;
    __device__ index_t begin_of(index_t g) const noexcept { return static_cast<index_t>(offsets[g * stride]); }
    // Whether [lo, hi) is a valid range for group g of a CSR layout over `rows` rows.
    __device__ bool valid(index_t g, index_t lo, index_t hi) const noexcept {
        bool ok = lo >= 0 && hi >= lo && hi <= rows;
        if (g == 0) ok = ok && lo == 0;
        if (g == groups - 1) ok = ok && hi == rows;
        return ok;
    }
    __device__ bool bounds(index_t g, index_t& begin, index_t& end) const noexcept {
        begin = static_cast<index_t>(offsets[g * stride]);
        end = static_cast<index_t>(offsets[(g + 1) * stride]);
        return valid(g, begin, end);
    }
};

// The host-visible half of a layout on the device: how many groups, and whether every group has
// the same known size (which lets the launcher pick a kernel without reading the offsets).
template <class DeviceLayout>
struct device_layout_info {
    DeviceLayout layout;
    index_t groups = 0;
    index_t exact_size = -1;  // >= 0 when every group has this many rows
};

inline device_layout_info<device_uniform_layout> make_device_layout(const exec::cuda_policy&, const uniform_groups& u,
                                                                    index_t n, where w) {
    const auto host = make_layout(u, n, w);  // k >= 1 and N divisible by k are host facts
    return {device_uniform_layout{host.k}, host.groups, host.k};
}

template <class Offset>
device_layout_info<device_ragged_layout<Offset>> make_device_layout(const exec::cuda_policy& p,
                                                                    const device_ragged_groups<Offset>& r, index_t n,
                                                                    where w) {
    const index_t entries = r.offsets.extent(0);
    require(entries >= 1, w, "offsets must have at least one entry (G + 1 entries for G groups), found 0");
    // With no group no kernel would read offsets[0], so this one inconsistency is caught here.
    require(entries > 1 || n == 0, w,
            "offsets has a single entry (no groups) but there are " + str(n) + " rows");
    if (p.validate) {
        // Opt-in: bring the offsets to the host (synchronizes the stream) and validate them there.
        std::vector<Offset> host(static_cast<std::size_t>(entries));
        POSTTRAIN_CUDA_CHECK(cudaMemcpy2DAsync(host.data(), sizeof(Offset), r.offsets.data(),
                                               sizeof(Offset) * static_cast<std::size_t>(r.offsets.stride(0)),
                                               sizeof(Offset), static_cast<std::size_t>(entries), cudaMemcpyDeviceToHost,
                                               p.stream));
        POSTTRAIN_CUDA_CHECK(cudaStreamSynchronize(p.stream));
        validate_offsets(tensor_view<const Offset, 1>(host.data(), entries), n, w);
    }
    device_ragged_layout<Offset> d;
    d.offsets = r.offsets.data();
    d.stride = r.offsets.stride(0);
    d.groups = entries - 1;
    d.rows = n;
    return {d, entries - 1, -1};
}

}  // namespace detail
}  // namespace posttrain
