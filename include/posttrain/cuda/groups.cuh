#pragma once
// Group layouts whose offsets live in device memory, and their device-side readers.
//
//     posttrain::ragged(device_view<const int64_t, 1>(d_offsets, G + 1))   CSR offsets on the device
//     posttrain::device_ragged(dlpack_tensor_on_cuda)                       the same from any adapted tensor
//     posttrain::device_permuted_groups{d_perm, d_offsets, d_count}        rows grouped through a permutation,
//                                                                          e.g. from grouping::from_ids
//                                                                          (<posttrain/cuda/grouping.cuh>)
//
// The host cannot read device offsets without synchronizing, so they are validated where they are
// read: a group whose bounds are not a valid CSR range sets status_invalid_groups in the policy's
// status word and is skipped (its rows are left unwritten; nothing outside [0, N) is ever touched).
// A permutation entry outside [0, N) is likewise reported, reads as 0 and is not written through.
// Threads read the offsets and the permutation themselves (the count once per block), so outputs
// must not alias the layout: the launchers check that on the host (detail::check_apart_from_layout).
// exec::cuda.validated() instead copies the layout to the host and throws invalid_argument.

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

    // The layout buffer (by argument name) that shares bytes with `v`, or null (as the host layouts',
    // <posttrain/core/groups.hpp>). Kernels read a layout's buffers once per thread (offsets,
    // permutation; the count once per block), so one that a kernel also writes (advantages, counters,
    // the status word) would let threads of one block see different groups and reach different
    // barriers: the launchers reject such aliasing on the host (detail::check_apart_from_layout).
    template <class V>
    friend const char* layout_buffer_overlapping(const device_ragged_groups& r, const V& v) noexcept {
        return views_overlap(v, r.offsets) ? "offsets" : nullptr;
    }
};

// Offsets of any adapted integer type in device memory (device_view, or a DLPack tensor on CUDA).
template <class Offsets>
auto device_ragged(const Offsets& offsets) {
    auto v = std::visit([](auto view) { return view; },
                        detail::id_input<1, device_space>(offsets, {"posttrain::device_ragged", "offsets"}));
    using V = decltype(v);
    return device_ragged_groups<typename V::value_type>{v};
}

// A permuted layout in device memory: group g holds the rows permutation[offsets[g] .. offsets[g+1])
// (in that order), for g < the group count. The count is either a host fact (count empty: G =
// offsets.extent(0) - 1, every entry written) or a device scalar (count[0]) that the host cannot
// read without synchronizing: then offsets is a capacity (grouping::from_ids gives N + 1 entries)
// of which only the first count + 1 are read, and the kernels launch for the capacity and skip the
// groups past the count. advantages and other row outputs are written in row order (row
// permutation[j] of the input gives row permutation[j] of the output).
//
// expected_group_size (host, optional): the mean rows per group the caller expects. With a device
// count the launcher cannot compute it, and it picks the team width from it (see
// permuted_assumed_group_size); a wrong guess costs time, never correctness.
struct device_permuted_groups {
    device_view<const index_t, 1> permutation;  // N entries, a permutation of [0, N)
    device_view<const index_t, 1> offsets;      // G + 1 entries (or a capacity, with a device count)
    device_view<const index_t, 1> count;        // empty, or one device entry: the number of groups
    index_t expected_group_size = 0;            // 0: n / G for a host count, else permuted_assumed_group_size

    template <class V>
    friend const char* layout_buffer_overlapping(const device_permuted_groups& l, const V& v) noexcept {
        if (views_overlap(v, l.permutation)) return "permutation";
        if (views_overlap(v, l.offsets)) return "offsets";
        if (views_overlap(v, l.count)) return "count";
        return nullptr;
    }
};

// The mean group size assumed when a device-counted layout states none: GRPO groups are typically
// 4..64 rows, and a team shape for 32-row groups stages groups of up to ~64 rows without falling
// back, while smaller groups only leave its tiles partly filled.
inline constexpr index_t permuted_assumed_group_size = 32;

// ragged() of a device view gives the device layout (more specialized than groups.hpp's overload).
template <class Offset>
device_ragged_groups<std::remove_const_t<Offset>> ragged(const device_view<Offset, 1>& offsets) {
    return {device_view<const std::remove_const_t<Offset>, 1>(offsets)};
}

namespace detail {

// The rows of one group in global memory, where its rows are contiguous: row j at p[j * stride].
template <class T>
struct global_rows {
    T* p;
    index_t stride;
    __device__ std::remove_const_t<T> load(index_t j) const { return p[j * stride]; }
    __device__ void store(index_t j, T v) const { p[j * stride] = v; }
};

// The rows of one group of a permuted layout: row j at p[perm[j * perm_stride] * stride]. An entry
// outside [0, n) reads as 0, is not written through, and sets status_invalid_groups (the layout is
// caller data the host has not seen; grouping::from_ids never produces one).
template <class T>
struct permuted_global_rows {
    T* p;
    index_t stride;
    const index_t* perm;
    index_t perm_stride;
    index_t n;
    std::uint32_t* status;
    __device__ index_t row(index_t j) const {
        const index_t r = perm[j * perm_stride];
        if (static_cast<std::uint64_t>(r) < static_cast<std::uint64_t>(n)) return r;
        report_status(status, status_invalid_groups);
        return -1;
    }
    __device__ std::remove_const_t<T> load(index_t j) const {
        const index_t r = row(j);
        return r >= 0 ? p[r * stride] : std::remove_const_t<T>(0);
    }
    __device__ void store(index_t j, T v) const {
        const index_t r = row(j);
        if (r >= 0) p[r * stride] = v;
    }
};

// Device-side readers: bounds(g, begin, end, groups) gives the rows of group g of the `groups` in use
// (what live_groups returned), or false when the layout is invalid there (then the group is skipped and the caller reports status_invalid_groups). The rows
// [begin, end) are positions: rows_at(p, stride, begin) reads and writes them in global memory, and
// `permuted` layouts map position j to row row(j) in the staged kernels. live_groups(launched), which
// every thread of every block calls first, is the number of groups the kernel works on (launched,
// except for a count held on the device).
struct device_uniform_layout {
    static constexpr bool uniform = true;
    static constexpr bool permuted = false;
    index_t k = 1;
    __device__ index_t live_groups(index_t launched) const noexcept { return launched; }
    template <class T>
    __device__ global_rows<T> rows_at(T* p, index_t stride, index_t begin) const noexcept {
        return {p + begin * stride, stride};
    }
    // First row of group g (g <= groups); only meaningful where the layout is valid.
    __device__ index_t begin_of(index_t g) const noexcept { return g * k; }
    __device__ bool bounds(index_t g, index_t& begin, index_t& end, index_t /*groups*/) const noexcept {
        begin = g * k;
        end = begin + k;
        return true;
    }
};

template <class Offset>
struct device_ragged_layout {
    static constexpr bool uniform = false;
    static constexpr bool permuted = false;
    const Offset* offsets = nullptr;
    index_t stride = 1;
    index_t groups = 0;
    index_t rows = 0;
    __device__ index_t live_groups(index_t launched) const noexcept { return launched; }
    template <class T>
    __device__ global_rows<T> rows_at(T* p, index_t stride_of_p, index_t begin) const noexcept {
        return {p + begin * stride_of_p, stride_of_p};
    }
    __device__ index_t begin_of(index_t g) const noexcept { return static_cast<index_t>(offsets[g * stride]); }
    // Whether [lo, hi) is a valid range for group g of a CSR layout of `in_use` groups over `rows` rows
    // (in_use: live_groups' value, the same in every thread of a block; a parameter rather than a
    // member, so that kernels never modify the layout they were passed, which stays in parameter
    // space instead of taking registers).
    __device__ bool valid(index_t g, index_t lo, index_t hi, index_t in_use) const noexcept {
        bool ok = lo >= 0 && hi >= lo && hi <= rows;
        if (g == 0) ok = ok && lo == 0;
        if (g == in_use - 1) ok = ok && hi == rows;
        return ok;
    }
    __device__ bool bounds(index_t g, index_t& begin, index_t& end, index_t in_use) const noexcept {
        begin = static_cast<index_t>(offsets[g * stride]);
        end = static_cast<index_t>(offsets[(g + 1) * stride]);
        return valid(g, begin, end, in_use);
    }
};

// A permuted layout: the CSR reader over positions, plus the permutation from positions to rows
// and, optionally, the group count on the device. With a device count, `groups` is the capacity the
// kernels were launched for, and live_groups gives the count clamped to [0, capacity], which the
// kernels pass to valid() and bounds().
struct device_permuted_layout : device_ragged_layout<index_t> {
    static constexpr bool permuted = true;
    const index_t* perm = nullptr;
    index_t perm_stride = 1;
    const index_t* count = nullptr;  // null: `groups` is the count
    std::uint32_t* status = nullptr;

    // Every thread of the block calls it (it holds a __syncthreads). Thread 0 alone reads the count
    // and the block takes its value from shared memory: were each thread to read it, a count that
    // changed during the kernel (outputs may not alias it, but another stream could write it) would
    // let threads of one block disagree on the groups, hence on the barriers they reach. Block 0
    // reports a count out of range, or zero groups for rows.
    __device__ index_t live_groups(index_t launched) const noexcept {
        if (count == nullptr) return launched;
        __shared__ index_t s_live;
        if (threadIdx.x == 0) {
            const index_t c = *count;
            if (blockIdx.x == 0 && (c < 0 || c > groups || (c == 0 && rows > 0)))
                report_status(status, status_invalid_groups);
            s_live = c < 0 ? 0 : c > groups ? groups : c;
        }
        __syncthreads();
        const index_t live = s_live;
        return live < launched ? live : launched;
    }
    // The row at position j, or -1 (reported) when the permutation holds no row there.
    __device__ index_t row(index_t j) const noexcept {
        const index_t r = perm[j * perm_stride];
        if (static_cast<std::uint64_t>(r) < static_cast<std::uint64_t>(rows)) return r;
        report_status(status, status_invalid_groups);
        return -1;
    }
    template <class T>
    __device__ permuted_global_rows<T> rows_at(T* p, index_t stride_of_p, index_t begin) const noexcept {
        return {p, stride_of_p, perm + begin * perm_stride, perm_stride, rows, status};
    }
};

// The host-visible half of a layout on the device: how many groups, and whether every group has
// the same known size (which lets the launcher pick a kernel without reading the offsets).
template <class DeviceLayout>
struct device_layout_info {
    DeviceLayout layout;
    index_t groups = 0;
    index_t exact_size = -1;    // >= 0 when every group has this many rows
    index_t typical_size = -1;  // >= 1: the mean group size to shape the kernels for (else N / groups)
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

// Host checks of a permuted layout (sizes, a count of one entry), the opt-in host validation of its
// device contents, and the launch shape: with a device count the kernels launch for the capacity
// offsets.extent(0) - 1 and read the count on the device.
inline device_layout_info<device_permuted_layout> make_device_layout(const exec::cuda_policy& p,
                                                                     const device_permuted_groups& l, index_t n,
                                                                     where w) {
    const index_t entries = l.offsets.extent(0);
    const bool device_count = l.count.size() != 0;
    require(l.permutation.extent(0) == n, w,
            "permutation must have one entry per row (" + str(n) + "), found " + str(l.permutation.extent(0)));
    require(entries >= 1, w, "offsets must have at least one entry (G + 1 entries for G groups), found 0");
    require(l.count.size() == 0 || l.count.extent(0) == 1, w,
            "count must be empty (G = offsets.extent(0) - 1) or hold one device entry, found " +
                str(l.count.extent(0)));
    require(entries > 1 || n == 0, w,
            "offsets has a single entry (no groups) but there are " + str(n) + " rows");
    require(l.expected_group_size >= 0, w,
            "expected_group_size must be >= 0 (0: unknown), found " + str(l.expected_group_size));
    if (p.validate) {
        // Opt-in: bring the layout to the host (synchronizes the stream) and validate it there.
        index_t groups = entries - 1;
        if (device_count) {
            POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(&groups, l.count.data(), sizeof(index_t), cudaMemcpyDeviceToHost, p.stream));
            POSTTRAIN_CUDA_CHECK(cudaStreamSynchronize(p.stream));
            require(groups >= 0 && groups <= entries - 1, w,
                    "the device group count " + str(groups) + " is outside [0, " + str(entries - 1) + "]");
        }
        auto fetch = [&](const device_view<const index_t, 1>& v, index_t count) {
            std::vector<index_t> host(static_cast<std::size_t>(count));
            if (count > 0)
                POSTTRAIN_CUDA_CHECK(cudaMemcpy2DAsync(host.data(), sizeof(index_t), v.data(),
                                                       sizeof(index_t) * static_cast<std::size_t>(v.stride(0)),
                                                       sizeof(index_t), static_cast<std::size_t>(count),
                                                       cudaMemcpyDeviceToHost, p.stream));
            return host;
        };
        const std::vector<index_t> offsets = fetch(l.offsets, groups + 1), perm = fetch(l.permutation, n);
        POSTTRAIN_CUDA_CHECK(cudaStreamSynchronize(p.stream));
        (void)validate_permuted(permuted_groups{tensor_view<const index_t, 1>(perm.data(), n),
                                                tensor_view<const index_t, 1>(offsets.data(), groups + 1)},
                                n, w, true);
    }
    device_permuted_layout d;
    d.offsets = l.offsets.data();
    d.stride = l.offsets.stride(0);
    d.groups = entries - 1;
    d.rows = n;
    d.perm = l.permutation.data();
    d.perm_stride = l.permutation.stride(0);
    d.count = device_count ? l.count.data() : nullptr;
    d.status = p.status;
    device_layout_info<device_permuted_layout> info{d, entries - 1, -1, -1};
    if (l.expected_group_size > 0) info.typical_size = l.expected_group_size;
    else if (device_count) info.typical_size = permuted_assumed_group_size;
    return info;
}

}  // namespace detail
}  // namespace posttrain
