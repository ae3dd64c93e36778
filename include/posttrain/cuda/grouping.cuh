#pragma once
// grouping::from_ids and grouping::from_dense_ids on the GPU: rows grouped by integer id into a
// permutation + offsets in the caller's device memory, asynchronous on the policy's stream.
//
//     auto groups = pt::grouping::from_ids(pt::exec::cuda.on(s), d_ids, d_perm /*[N]*/, d_offsets /*[N + 1]*/,
//                                          d_count /*[1]*/);
//     pt::advantage::grpo(pt::exec::cuda.on(s), d_rewards, groups, d_advantages);
//
// Same result as the host overloads (<posttrain/core/groups.hpp>), bit for bit: groups in ascending
// id order (signed order for signed ids), rows in their original order inside a group. from_ids
// writes permutation[0, N), offsets[0, G] and count[0] = G, where G (the number of distinct ids) is
// known only on the device: offsets is a capacity of N + 1 entries, and the returned
// device_permuted_groups carries the device count (the outcome kernels launch for the capacity and
// skip the groups past it). from_dense_ids takes G from the caller (ids in [0, G), empty groups
// kept): offsets has exactly G + 1 entries and the layout's count is a host fact.
//
// How: the ids are mapped to order-preserving unsigned keys (32 bits for 32-bit ids, 64 for 64-bit
// ones; dense ids: the id itself, on bit_width(G) bits), paired with their row index (32 bits while
// N <= 2^32), and sorted by CUB's stable DeviceRadixSort (onesweep: a histogram pass, then one
// pass per 8 key bits). Group heads (a key differing from its predecessor) are compacted into the
// offsets by DeviceSelect::If (from_ids) or found by a binary search per group (from_dense_ids),
// and the sorted row indices widened into the permutation.
//
// Scratch: two key buffers, two row buffers and CUB's temporary storage, from .with(workspace)
// (from_ids_workspace_bytes / from_dense_ids_workspace_bytes) or cudaMallocAsync on the stream.
// Deterministic run to run (stable sort, prefix-sum compaction, no atomics in any result).
// Status: from_dense_ids sets status_id_out_of_range for an id outside [0, G); those rows go to
// the end of the permutation, outside every group (offsets[G] is then the number of valid rows, a
// layout the outcome kernels report as status_invalid_groups).

#if !defined(__CUDACC__)
#error "<posttrain/cuda/grouping.cuh> needs nvcc: include it only from .cu files"
#endif

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_select.cuh>
#include <thrust/iterator/counting_iterator.h>

#include <bit>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <variant>

#include "../core/groups.hpp"
#include "../core/traits.hpp"
#include "exec.cuh"
#include "groups.cuh"
#include "tuning.cuh"

namespace posttrain {
namespace detail {

// Sort keys: as wide as the id.
template <class Id>
using grouping_key_t = std::conditional_t<sizeof(Id) == 4, std::uint32_t, std::uint64_t>;

// Order-preserving key of an id (group_key of group_ids.hpp at the id's own width: the sign bit
// flipped for signed ids), and the id of a key as the host's grouping_result::ids holds it.
template <class Id>
struct id_sort_key {
    using key_type = grouping_key_t<Id>;
    static constexpr key_type sign = std::is_signed_v<Id> ? key_type{1} << (8 * sizeof(key_type) - 1) : key_type{0};
    __device__ key_type operator()(Id v, std::uint32_t*) const { return static_cast<key_type>(v) ^ sign; }
    __device__ static std::int64_t id_of(key_type k) {
        if constexpr (std::is_signed_v<Id>) return static_cast<std::int64_t>(static_cast<std::make_signed_t<key_type>>(k ^ sign));
        else return static_cast<std::int64_t>(k);
    }
};

// Dense ids: the id itself when it lies in [0, groups), else `groups` (sorted after every valid id)
// and status_id_out_of_range. groups < 2^32, so the key fits 32 bits.
template <class Id>
struct dense_sort_key {
    std::uint32_t groups;
    __device__ std::uint32_t operator()(Id v, std::uint32_t* status) const {
        bool in_range = static_cast<std::uint64_t>(v) < groups;
        if constexpr (std::is_signed_v<Id>) in_range = in_range && v >= 0;
        if (in_range) return static_cast<std::uint32_t>(v);
        report_status(status, status_id_out_of_range);
        return groups;
    }
};

// keys[i] = key(ids[i]), rows[i] = i: the pairs the radix sort orders (stably: rows stay ascending
// inside a key).
template <class Id, class KeyOf, class Key, class Row>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    grouping_keys_kernel(const Id* ids, index_t stride, index_t n, KeyOf key_of, Key* keys, Row* rows,
                         std::uint32_t* status) {
    const index_t step = static_cast<index_t>(gridDim.x) * cuda_tuning::block_threads;
    for (index_t i = static_cast<index_t>(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; i < n; i += step) {
        keys[i] = key_of(ids[i * stride], status);
        rows[i] = static_cast<Row>(i);
    }
}

// The sorted row indices, widened to index_t.
template <class Row>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    grouping_permutation_kernel(const Row* rows, index_t n, index_t* perm, index_t perm_stride) {
    const index_t step = static_cast<index_t>(gridDim.x) * cuda_tuning::block_threads;
    for (index_t i = static_cast<index_t>(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; i < n; i += step)
        perm[i * perm_stride] = static_cast<index_t>(rows[i]);
}

// Sorted position i starts a group (DeviceSelect::If's predicate over the positions).
template <class Key>
struct group_head {
    const Key* keys;
    __device__ bool operator()(index_t i) const { return i == 0 || keys[i] != keys[i - 1]; }
};

// After the compaction of heads into offsets[0, G) and G into *count: offsets[G] = N, and the id of
// each group when asked for. Launched for the capacity; threads past G + 1 do nothing.
template <class KeyOf, class Key>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    grouping_finish_kernel(const Key* keys, index_t n, index_t* offsets, const index_t* count, std::int64_t* ids,
                           index_t ids_stride) {
    const index_t groups = *count;
    const index_t step = static_cast<index_t>(gridDim.x) * cuda_tuning::block_threads;
    for (index_t g = static_cast<index_t>(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; g <= groups; g += step) {
        if (g == groups) offsets[g] = n;
        else if (ids != nullptr) ids[g * ids_stride] = KeyOf::id_of(keys[offsets[g]]);
    }
}

// N = 0: no group.
template <int Unused = 0>
__global__ void grouping_empty_kernel(index_t* offsets, index_t* count) {
    offsets[0] = 0;
    *count = 0;
}

// Dense ids: offsets[g] = the number of sorted keys below g (a binary search per group, so that no
// thread walks a long run of absent ids), g = 0..groups; *count = groups when asked for.
template <int Unused = 0>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    dense_offsets_kernel(const std::uint32_t* keys, index_t n, index_t groups, index_t* offsets, index_t* count) {
    const index_t step = static_cast<index_t>(gridDim.x) * cuda_tuning::block_threads;
    for (index_t g = static_cast<index_t>(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; g <= groups; g += step) {
        index_t lo = 0, hi = n;
        while (lo < hi) {
            const index_t mid = lo + (hi - lo) / 2;
            if (static_cast<index_t>(keys[mid]) < g) lo = mid + 1;
            else hi = mid;
        }
        offsets[g] = lo;
        if (g == 0 && count != nullptr) *count = groups;
    }
}

// Where each piece of a grouping's scratch lives, and how much CUB's temporary storage takes (the
// radix sort's, or the larger of it and the head compaction's). One function for the call and for
// its *_workspace_bytes, so that the two always agree.
struct grouping_plan {
    std::size_t keys[2] = {0, 0}, rows[2] = {0, 0};
    std::size_t temp = 0, temp_bytes = 0, total = 0;
};

template <class Key, class Row>
grouping_plan plan_grouping(index_t n, int end_bit, bool select_heads) {
    grouping_plan p;
    if (n == 0) return p;
    scratch_cursor c;
    for (auto& k : p.keys) k = c.take(sizeof(Key) * static_cast<std::size_t>(n));
    for (auto& r : p.rows) r = c.take(sizeof(Row) * static_cast<std::size_t>(n));
    cub::DoubleBuffer<Key> kb(nullptr, nullptr);
    cub::DoubleBuffer<Row> rb(nullptr, nullptr);
    std::size_t sort_bytes = 0;
    POSTTRAIN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, kb, rb, n, 0, end_bit));
    if (select_heads) {
        std::size_t select_bytes = 0;
        POSTTRAIN_CUDA_CHECK(cub::DeviceSelect::If(nullptr, select_bytes, ::thrust::counting_iterator<index_t>(0),
                                                   static_cast<index_t*>(nullptr), static_cast<index_t*>(nullptr), n,
                                                   group_head<Key>{nullptr}));
        if (select_bytes > sort_bytes) sort_bytes = select_bytes;
    }
    p.temp_bytes = sort_bytes;
    p.temp = c.take(sort_bytes);
    p.total = c.end;
    return p;
}

// Row indices fit 32 bits up to 2^32 rows, which halves what every radix pass moves for them.
inline bool rows_fit_32(index_t n) noexcept { return static_cast<std::uint64_t>(n) <= (std::uint64_t{1} << 32); }

// Sorts (key(ids[i]), i) in the scratch; returns the buffers holding the sorted keys and rows.
template <class Key, class Row, class Id, class KeyOf>
void sort_by_group_key(const exec::cuda_policy& pol, const cuda_scratch& scratch, const grouping_plan& plan,
                       tensor_view<const Id, 1, device_space> ids, KeyOf key_of, int end_bit, const Key*& sorted_keys,
                       const Row*& sorted_rows, const char* fn) {
    const index_t n = ids.extent(0);
    cub::DoubleBuffer<Key> kb(scratch.as<Key>(plan.keys[0]), scratch.as<Key>(plan.keys[1]));
    cub::DoubleBuffer<Row> rb(scratch.as<Row>(plan.rows[0]), scratch.as<Row>(plan.rows[1]));
    grouping_keys_kernel<<<cuda_tuning::elementwise_blocks(n), cuda_tuning::block_threads, 0, pol.stream>>>(
        ids.data(), ids.stride(0), n, key_of, kb.Current(), rb.Current(), pol.status);
    check_launch(fn);
    std::size_t temp_bytes = plan.temp_bytes;
    // The DoubleBuffer overload leaves the sorted pairs in whichever buffer the pass count ends on
    // (decided on the host, so Current() is known without synchronizing).
    POSTTRAIN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(scratch.as<unsigned char>(plan.temp), temp_bytes, kb, rb, n, 0,
                                                         end_bit, pol.stream));
    sorted_keys = kb.Current();
    sorted_rows = rb.Current();
}

// Host checks shared by both entry points: contiguous offsets (the compaction writes through a
// pointer) and no output overlapping another or the ids.
template <class Id>
void check_grouping_outputs(tensor_view<const Id, 1, device_space> ids, const device_view<index_t, 1>& perm,
                            const device_view<index_t, 1>& offsets, const device_view<index_t, 1>& count,
                            const device_view<std::int64_t, 1>& group_ids, const char* fn) {
    const index_t n = ids.extent(0);
    require(perm.extent(0) == n, {fn, "permutation"},
            "expected one entry per id (" + str(n) + "), found " + str(perm.extent(0)));
    require(offsets.size() == 0 || offsets.stride(0) == 1, {fn, "offsets"}, "must be contiguous (stride 1)");
    require(!views_overlap(perm, ids), {fn, "permutation"}, "overlaps the input 'ids'; pass a separate buffer");
    require(!views_overlap(offsets, ids), {fn, "offsets"}, "overlaps the input 'ids'; pass a separate buffer");
    require(!views_overlap(offsets, perm), {fn, "offsets"}, "overlaps 'permutation'; pass a separate buffer");
    require(!views_overlap(count, ids) && !views_overlap(count, perm) && !views_overlap(count, offsets), {fn, "count"},
            "overlaps another argument; pass a separate buffer");
    require(!views_overlap(group_ids, ids) && !views_overlap(group_ids, perm) && !views_overlap(group_ids, offsets) &&
                !views_overlap(group_ids, count),
            {fn, "group_ids"}, "overlaps another argument; pass a separate buffer");
}

template <class Id>
device_permuted_groups group_ids_cuda(const exec::cuda_policy& pol, tensor_view<const Id, 1, device_space> ids,
                                      const device_view<index_t, 1>& perm, const device_view<index_t, 1>& offsets,
                                      const device_view<index_t, 1>& count, const device_view<std::int64_t, 1>& group_ids,
                                      const char* fn) {
    using Key = grouping_key_t<Id>;
    const index_t n = ids.extent(0);
    check_grouping_outputs(ids, perm, offsets, count, group_ids, fn);
    check_policy_apart(pol, fn, std::pair{ids, "ids"}, std::pair{perm, "permutation"}, std::pair{offsets, "offsets"},
                       std::pair{count, "count"}, std::pair{group_ids, "group_ids"});
    require(offsets.extent(0) >= n + 1, {fn, "offsets"},
            "needs room for N + 1 = " + str(n + 1) + " entries (up to one group per id), found " + str(offsets.extent(0)));
    require(count.extent(0) == 1, {fn, "count"}, "expected one device entry (the number of groups), found " + str(count.extent(0)));
    require(group_ids.size() == 0 || group_ids.extent(0) >= n, {fn, "group_ids"},
            "needs room for N = " + str(n) + " entries (up to one group per id), found " + str(group_ids.extent(0)));
    // The layout sees N + 1 offsets, the most groups N rows can form, however large the caller's
    // buffer: the outcome kernels launch for that capacity.
    const device_permuted_groups layout{perm, device_view<const index_t, 1>(offsets.data(), n + 1), count, 0};
    if (n == 0) {
        grouping_empty_kernel<<<1, 1, 0, pol.stream>>>(offsets.data(), count.data());
        check_launch(fn);
        return layout;
    }
    constexpr int end_bit = 8 * static_cast<int>(sizeof(Key));
    auto run = [&](auto row_tag) {
        using Row = typename decltype(row_tag)::type;
        const grouping_plan plan = plan_grouping<Key, Row>(n, end_bit, true);
        const cuda_scratch scratch(pol, plan.total, {fn, "policy"});
        const Key* keys = nullptr;
        const Row* rows = nullptr;
        sort_by_group_key<Key, Row>(pol, scratch, plan, ids, id_sort_key<Id>{}, end_bit, keys, rows, fn);
        std::size_t temp_bytes = plan.temp_bytes;
        POSTTRAIN_CUDA_CHECK(cub::DeviceSelect::If(scratch.as<unsigned char>(plan.temp), temp_bytes,
                                                   ::thrust::counting_iterator<index_t>(0), offsets.data(), count.data(),
                                                   n, group_head<Key>{keys}, pol.stream));
        grouping_finish_kernel<id_sort_key<Id>><<<cuda_tuning::elementwise_blocks(n + 1), cuda_tuning::block_threads, 0, pol.stream>>>(
            keys, n, offsets.data(), count.data(), group_ids.size() ? group_ids.data() : nullptr,
            group_ids.size() ? group_ids.stride(0) : 1);
        check_launch(fn);
        grouping_permutation_kernel<<<cuda_tuning::elementwise_blocks(n), cuda_tuning::block_threads, 0, pol.stream>>>(
            rows, n, perm.data(), perm.stride(0));
        check_launch(fn);
    };
    if (rows_fit_32(n)) run(std::type_identity<std::uint32_t>{});
    else run(std::type_identity<std::uint64_t>{});
    return layout;
}

template <class Id>
device_permuted_groups group_dense_ids_cuda(const exec::cuda_policy& pol, tensor_view<const Id, 1, device_space> ids,
                                            index_t num_groups, const device_view<index_t, 1>& perm,
                                            const device_view<index_t, 1>& offsets, const device_view<index_t, 1>& count,
                                            const char* fn) {
    const index_t n = ids.extent(0);
    require(num_groups >= 0 && static_cast<std::uint64_t>(num_groups) < (std::uint64_t{1} << 32), {fn, "num_groups"},
            "must be in [0, 2^32), found " + str(num_groups));
    check_grouping_outputs(ids, perm, offsets, count, device_view<std::int64_t, 1>{}, fn);
    check_policy_apart(pol, fn, std::pair{ids, "ids"}, std::pair{perm, "permutation"}, std::pair{offsets, "offsets"},
                       std::pair{count, "count"});
    require(offsets.extent(0) == num_groups + 1, {fn, "offsets"},
            "expected num_groups + 1 = " + str(num_groups + 1) + " entries, found " + str(offsets.extent(0)));
    require(count.size() == 0 || count.extent(0) == 1, {fn, "count"},
            "expected no entry or one device entry (the number of groups), found " + str(count.extent(0)));
    // The mean group size is a host fact here: the outcome kernels shape their tiles from it.
    const device_permuted_groups layout{perm, offsets, {}, 0};
    const int end_bit = std::bit_width(static_cast<std::uint64_t>(num_groups)) > 0
                            ? static_cast<int>(std::bit_width(static_cast<std::uint64_t>(num_groups)))
                            : 1;  // keys lie in [0, num_groups], the top one for ids out of range
    const std::uint32_t* keys = nullptr;
    auto run = [&](auto row_tag) {
        using Row = typename decltype(row_tag)::type;
        const grouping_plan plan = plan_grouping<std::uint32_t, Row>(n, end_bit, false);
        const cuda_scratch scratch(pol, plan.total, {fn, "policy"});
        const Row* rows = nullptr;
        sort_by_group_key<std::uint32_t, Row>(pol, scratch, plan, ids,
                                              dense_sort_key<Id>{static_cast<std::uint32_t>(num_groups)}, end_bit, keys,
                                              rows, fn);
        dense_offsets_kernel<<<cuda_tuning::elementwise_blocks(num_groups + 1), cuda_tuning::block_threads, 0, pol.stream>>>(
            keys, n, num_groups, offsets.data(), count.size() ? count.data() : nullptr);
        check_launch(fn);
        grouping_permutation_kernel<<<cuda_tuning::elementwise_blocks(n), cuda_tuning::block_threads, 0, pol.stream>>>(
            rows, n, perm.data(), perm.stride(0));
        check_launch(fn);
    };
    if (n == 0) {
        // No key to sort: every offset is 0.
        dense_offsets_kernel<<<cuda_tuning::elementwise_blocks(num_groups + 1), cuda_tuning::block_threads, 0, pol.stream>>>(
            keys, 0, num_groups, offsets.data(), count.size() ? count.data() : nullptr);
        check_launch(fn);
    } else if (rows_fit_32(n)) {
        run(std::type_identity<std::uint32_t>{});
    } else {
        run(std::type_identity<std::uint64_t>{});
    }
    return layout;
}

}  // namespace detail

namespace grouping {

// Bytes of workspace grouping::from_ids(exec::cuda, ...) takes for n ids of id_bytes (4: int32 or
// uint32 ids, 8: int64 or uint64) bytes each; 8 gives enough for either.
inline std::size_t from_ids_workspace_bytes(index_t n, int id_bytes = 8) {
    constexpr const char* fn = "posttrain::grouping::from_ids_workspace_bytes";
    detail::require(n >= 0, {fn, "n"}, "must be >= 0, found " + detail::str(n));
    detail::require(id_bytes == 4 || id_bytes == 8, {fn, "id_bytes"}, "must be 4 or 8, found " + std::to_string(id_bytes));
    auto of = [&](auto key_tag) {
        using Key = typename decltype(key_tag)::type;
        constexpr int end_bit = 8 * static_cast<int>(sizeof(Key));
        return detail::rows_fit_32(n) ? detail::plan_grouping<Key, std::uint32_t>(n, end_bit, true).total
                                      : detail::plan_grouping<Key, std::uint64_t>(n, end_bit, true).total;
    };
    // 8 covers 32-bit ids too (whatever CUB's temporary storage does with the narrower key).
    const std::size_t narrow = of(std::type_identity<std::uint32_t>{});
    if (id_bytes == 4) return narrow;
    const std::size_t wide = of(std::type_identity<std::uint64_t>{});
    return wide > narrow ? wide : narrow;
}

// Bytes of workspace grouping::from_dense_ids(exec::cuda, ...) takes for n ids in [0, num_groups).
inline std::size_t from_dense_ids_workspace_bytes(index_t n, index_t num_groups) {
    constexpr const char* fn = "posttrain::grouping::from_dense_ids_workspace_bytes";
    detail::require(n >= 0, {fn, "n"}, "must be >= 0, found " + detail::str(n));
    detail::require(num_groups >= 0 && static_cast<std::uint64_t>(num_groups) < (std::uint64_t{1} << 32),
                    {fn, "num_groups"}, "must be in [0, 2^32), found " + detail::str(num_groups));
    const int bits = static_cast<int>(std::bit_width(static_cast<std::uint64_t>(num_groups)));
    const int end_bit = bits > 0 ? bits : 1;
    return detail::rows_fit_32(n) ? detail::plan_grouping<std::uint32_t, std::uint32_t>(n, end_bit, false).total
                                  : detail::plan_grouping<std::uint32_t, std::uint64_t>(n, end_bit, false).total;
}

// Groups rows by integer id (a device_view or a DLPack tensor on a CUDA device of int32, int64,
// uint32 or uint64) into permutation [N], offsets [capacity >= N + 1, contiguous] and count [1],
// and optionally group_ids [capacity >= N] (the id of each group, as int64, like
// grouping_result::ids). Returns the layout over those buffers (its offsets: the first N + 1
// entries), for the CUDA outcome algorithms; it reads the buffers, so they must outlive its uses.
// Set expected_group_size on it when the mean group size is known (it shapes the outcome kernels; see device_permuted_groups).
template <class Ids>
device_permuted_groups from_ids(const exec::cuda_policy& policy, const Ids& ids, device_view<index_t, 1> permutation,
                                device_view<index_t, 1> offsets, device_view<index_t, 1> count,
                                device_view<std::int64_t, 1> group_ids = {}) {
    constexpr const char* fn = "posttrain::grouping::from_ids";
    return std::visit(
        [&](auto v) { return detail::group_ids_cuda(policy, v, permutation, offsets, count, group_ids, fn); },
        detail::id_input<1, device_space>(ids, {fn, "ids"}));
}

// Groups rows by dense ids in [0, num_groups): group g holds the rows with id g, in row order, and
// empty groups are kept (the host from_dense_ids' result, bit for bit). offsets has num_groups + 1
// entries; count, when given (one device entry), receives num_groups. An id out of range sets
// status_id_out_of_range (the host overload throws): its row is placed after every group. The
// radix sort looks at bit_width(num_groups) key bits only: 2^20 groups take 3 passes where 64-bit
// ids take 8.
template <class Ids>
device_permuted_groups from_dense_ids(const exec::cuda_policy& policy, const Ids& ids, index_t num_groups,
                                      device_view<index_t, 1> permutation, device_view<index_t, 1> offsets,
                                      device_view<index_t, 1> count = {}) {
    constexpr const char* fn = "posttrain::grouping::from_dense_ids";
    return std::visit(
        [&](auto v) { return detail::group_dense_ids_cuda(policy, v, num_groups, permutation, offsets, count, fn); },
        detail::id_input<1, device_space>(ids, {fn, "ids"}));
}

}  // namespace grouping
}  // namespace posttrain
