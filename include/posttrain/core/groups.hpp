#pragma once
// Group layouts. Every group-relative algorithm takes one of these, never a reshaped [P, G] tensor:
//   uniform_groups{k}          consecutive blocks of k rows
//   ragged(offsets)            CSR offsets: G+1 non-decreasing entries, offsets[0] = 0, offsets[G] = N
//   grouping::from_ids(ex, ids) arbitrary unsorted ids -> stable permutation + offsets (radix sort, O(N))
// Empty groups are allowed in ragged and id layouts.
//
// An output may not share bytes with the buffers of the layout a call reads (ragged offsets, a
// permutation and its offsets): the entries read the layout while writing, so the write would change
// the groups. Each layout names the buffer a view overlaps (layout_buffer_overlapping, found by
// argument-dependent lookup, so device layouts add their own), and detail::check_apart_from_layout
// raises invalid_argument for it before anything is written.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "error.hpp"
#include "exec.hpp"
#include "group_ids.hpp"
#include "traits.hpp"
#include "view.hpp"

namespace posttrain {

struct uniform_groups {
    index_t size = 0;  // rows per group, >= 1

    // The layout's buffer (by name) that shares bytes with `v`, or null: a uniform layout has none.
    template <class V>
    friend const char* layout_buffer_overlapping(const uniform_groups&, const V&) noexcept {
        return nullptr;
    }
};

template <class Offset>
struct ragged_groups {
    tensor_view<const Offset, 1> offsets;

    template <class V>
    friend const char* layout_buffer_overlapping(const ragged_groups& r, const V& v) noexcept {
        return views_overlap(v, r.offsets) ? "offsets" : nullptr;
    }
};

// A permuted layout: group g holds rows permutation[offsets[g] .. offsets[g+1]).
struct permuted_groups {
    tensor_view<const index_t, 1> permutation;
    tensor_view<const index_t, 1> offsets;

    template <class V>
    friend const char* layout_buffer_overlapping(const permuted_groups& l, const V& v) noexcept {
        if (views_overlap(v, l.permutation)) return "permutation";
        if (views_overlap(v, l.offsets)) return "offsets";
        return nullptr;
    }
};

// Wraps CSR offsets (any integer type, any adapted container) as a group layout. The container must
// outlive the call that uses the layout.
template <class Offsets>
auto ragged(const Offsets& offsets) {
    auto v = std::visit([](auto view) { return view; },
                        detail::id_input<1>(offsets, {"posttrain::ragged", "offsets"}));
    using V = decltype(v);
    return ragged_groups<typename V::value_type>{v};
}

// The owning result of grouping rows by id.
struct grouping_result {
    std::vector<index_t> permutation;  // rows ordered by group, stable within a group
    std::vector<index_t> offsets;      // G + 1 entries
    std::vector<std::int64_t> ids;     // the id of each group, ascending
    std::vector<index_t> group_of;     // the group of each row (N entries)

    index_t num_groups() const noexcept { return static_cast<index_t>(ids.size()); }
    permuted_groups layout() const noexcept {
        return {tensor_view<const index_t, 1>(permutation.data(), static_cast<index_t>(permutation.size())),
                tensor_view<const index_t, 1>(offsets.data(), static_cast<index_t>(offsets.size()))};
    }

    // The buffers the algorithms read: the permutation and the offsets.
    template <class V>
    friend const char* layout_buffer_overlapping(const grouping_result& g, const V& v) noexcept {
        return layout_buffer_overlapping(g.layout(), v);
    }
};

namespace detail {

template <class Id>
grouping_result group_by_keys(tensor_view<const Id, 1> ids) {
    grouping_result g;
    group_ids(ids, g.permutation, g.offsets, g.ids, g.group_of);
    return g;
}

}  // namespace detail

namespace grouping {

// Groups rows by integer id (any adapted 1-D integer tensor). Groups come out in ascending id order;
// rows keep their original order inside a group. O(N) time and memory.
template <class Policy, class Ids>
grouping_result from_ids(const Policy&, const Ids& ids) {
    static_assert(host_policy<Policy>, "posttrain::grouping::from_ids: this overload takes a host policy");
    return std::visit([](auto v) { return detail::group_by_keys(v); },
                      detail::id_input<1>(ids, {"posttrain::grouping::from_ids", "ids"}));
}

// Groups rows by dense ids in [0, num_groups): group g holds the rows with id g, in row order, and
// groups with no rows are kept (empty). An id outside the range is an invalid_argument. O(N + G).
template <class Policy, class Ids>
grouping_result from_dense_ids(const Policy&, const Ids& ids, index_t num_groups) {
    static_assert(host_policy<Policy>, "posttrain::grouping::from_dense_ids: this overload takes a host policy");
    constexpr const char* fn = "posttrain::grouping::from_dense_ids";
    detail::require(num_groups >= 0, {fn, "num_groups"}, "must be >= 0, found " + detail::str(num_groups));
    return std::visit(
        [&](auto v) {
            const index_t n = v.extent(0);
            grouping_result g;
            g.offsets.assign(static_cast<std::size_t>(num_groups) + 1, 0);
            for (index_t i = 0; i < n; ++i) {
                const auto id = v(i);
                // A negative id converts to at least 2^63, above any num_groups: one comparison serves both ends.
                const bool in_range = static_cast<std::uint64_t>(id) < static_cast<std::uint64_t>(num_groups);
                if (!in_range)
                    detail::raise_invalid_argument(fn, "ids",
                                                   "ids[" + detail::str(i) + "] = " + std::to_string(id) +
                                                       " is out of range [0, " + detail::str(num_groups) + ")");
                ++g.offsets[static_cast<std::size_t>(id) + 1];
            }
            for (index_t k = 0; k < num_groups; ++k) g.offsets[std::size_t(k) + 1] += g.offsets[std::size_t(k)];
            std::vector<index_t> next(g.offsets.begin(), g.offsets.end() - 1);
            g.permutation.resize(static_cast<std::size_t>(n));
            g.group_of.resize(static_cast<std::size_t>(n));
            for (index_t i = 0; i < n; ++i) {
                const auto id = static_cast<std::size_t>(v(i));
                g.permutation[static_cast<std::size_t>(next[id]++)] = i;
                g.group_of[static_cast<std::size_t>(i)] = static_cast<index_t>(id);
            }
            g.ids.resize(static_cast<std::size_t>(num_groups));
            for (index_t k = 0; k < num_groups; ++k) g.ids[std::size_t(k)] = k;
            return g;
        },
        detail::id_input<1>(ids, {fn, "ids"}));
}

// 64-bit hash of a string id (FNV-1a followed by a splitmix64 finalizer). Equal strings give equal
// hashes; from_string_ids additionally verifies that no two distinct strings collided.
inline std::int64_t hash_id(std::string_view s) noexcept {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) {
        h ^= c;
        h *= 0x100000001b3ull;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return static_cast<std::int64_t>(h);
}

// Hashes every string of a range into a vector of 64-bit ids.
template <class Range>
std::vector<std::int64_t> hash_ids(const Range& strings) {
    std::vector<std::int64_t> out;
    for (const auto& s : strings) out.push_back(hash_id(std::string_view(s)));
    return out;
}

// Groups rows by string id: hashes, groups, and checks that every group holds one distinct string.
template <class Policy, class Range>
grouping_result from_string_ids(const Policy& policy, const Range& strings) {
    const std::vector<std::int64_t> h = hash_ids(strings);
    grouping_result g = from_ids(policy, tensor_view<const std::int64_t, 1>(h.data(), static_cast<index_t>(h.size())));
    std::vector<std::string_view> views;
    for (const auto& s : strings) views.emplace_back(s);
    for (index_t grp = 0; grp < g.num_groups(); ++grp) {
        const auto first = views[static_cast<std::size_t>(g.permutation[static_cast<std::size_t>(g.offsets[static_cast<std::size_t>(grp)])])];
        for (index_t j = g.offsets[static_cast<std::size_t>(grp)] + 1; j < g.offsets[static_cast<std::size_t>(grp) + 1]; ++j)
            detail::require(views[static_cast<std::size_t>(g.permutation[static_cast<std::size_t>(j)])] == first,
                            {"posttrain::grouping::from_string_ids", "strings"},
                            "two distinct ids share a 64-bit hash; group them with from_ids on your own ids");
    }
    return g;
}

}  // namespace grouping

namespace detail {

// Row indexers handed to the per-group kernels: contiguous groups index directly, permuted groups
// through the permutation. Templates, so the contiguous case vectorizes.
struct contiguous_rows {
    index_t begin;
    constexpr index_t operator()(index_t j) const noexcept { return begin + j; }
    static constexpr bool contiguous = true;
};
struct permuted_rows {
    const index_t* rows;
    constexpr index_t operator()(index_t j) const noexcept { return rows[j]; }
    static constexpr bool contiguous = false;
};

// A validated layout over N rows: G groups, and for group g its size and row indexer.
template <class Layout>
struct group_layout;

template <>
struct group_layout<uniform_groups> {
    index_t k = 1, groups = 0;
    index_t num_groups() const noexcept { return groups; }
    index_t size(index_t) const noexcept { return k; }
    contiguous_rows rows(index_t g) const noexcept { return {g * k}; }
};

template <class Offset>
struct group_layout<ragged_groups<Offset>> {
    tensor_view<const Offset, 1> offsets;
    index_t num_groups() const noexcept { return offsets.extent(0) - 1; }
    index_t size(index_t g) const noexcept { return index_t(offsets(g + 1)) - index_t(offsets(g)); }
    contiguous_rows rows(index_t g) const noexcept { return {index_t(offsets(g))}; }
};

template <>
struct group_layout<permuted_groups> {
    permuted_groups p;
    index_t num_groups() const noexcept { return p.offsets.extent(0) - 1; }
    index_t size(index_t g) const noexcept { return p.offsets(g + 1) - p.offsets(g); }
    permuted_rows rows(index_t g) const noexcept { return {p.permutation.data() + p.offsets(g)}; }
};

template <class Offset>
void validate_offsets(tensor_view<const Offset, 1> off, index_t n, where w) {
    require(off.extent(0) >= 1, w, "offsets must have at least one entry (G + 1 entries for G groups), found 0");
    require(index_t(off(0)) == 0, w, "offsets[0] must be 0, found " + str(index_t(off(0))));
    const index_t g = off.extent(0) - 1;
    require(index_t(off(g)) == n,
            w, "offsets[G] must equal the number of rows " + str(n) + ", found " + str(index_t(off(g))));
    // Per-entry checks build their message only on failure: this loop runs once per group.
    for (index_t i = 0; i < g; ++i)
        if (off(i + 1) < off(i))
            raise_invalid_argument(w.function, w.argument,
                                   "offsets must be non-decreasing, but offsets[" + str(i + 1) + "] = " +
                                       str(index_t(off(i + 1))) + " < offsets[" + str(i) + "] = " + str(index_t(off(i))));
}

inline group_layout<uniform_groups> make_layout(const uniform_groups& u, index_t n, where w) {
    require(u.size >= 1, w, "uniform group size must be >= 1, found " + str(u.size));
    require(n % u.size == 0, w,
            "the number of rows " + str(n) + " is not a multiple of the uniform group size " + str(u.size));
    return {u.size, n / u.size};
}

template <class Offset>
group_layout<ragged_groups<Offset>> make_layout(const ragged_groups<Offset>& r, index_t n, where w) {
    validate_offsets(r.offsets, n, w);
    return {r.offsets};
}

// Offsets, and a permutation whose entries are in range; with check_repeats also that no row repeats.
inline group_layout<permuted_groups> validate_permuted(const permuted_groups& p, index_t n, where w, bool check_repeats) {
    validate_offsets(p.offsets, n, w);
    require(p.permutation.extent(0) == n, w,
            "permutation must have one entry per row (" + str(n) + "), found " + str(p.permutation.extent(0)));
    bool in_range = true;
    for (index_t j = 0; j < n; ++j) in_range &= p.permutation(j) >= 0 && p.permutation(j) < n;
    if (!in_range)
        for (index_t j = 0; j < n; ++j)
            if (p.permutation(j) < 0 || p.permutation(j) >= n)
                raise_invalid_argument(w.function, w.argument,
                                       "permutation[" + str(j) + "] = " + str(p.permutation(j)) + " is out of range [0, " +
                                           str(n) + ")");
    if (check_repeats) {
        std::vector<unsigned char> seen(static_cast<std::size_t>(n), 0);
        for (index_t j = 0; j < n; ++j) {
            unsigned char& s = seen[static_cast<std::size_t>(p.permutation(j))];
            if (s) raise_invalid_argument(w.function, w.argument, "permutation repeats row " + str(p.permutation(j)));
            s = 1;
        }
    }
    return {p};
}

inline group_layout<permuted_groups> make_layout(const permuted_groups& p, index_t n, where w) {
    return validate_permuted(p, n, w, true);
}

// A grouping_result comes from posttrain's grouping functions, which produce a permutation by
// construction: its offsets and the range of its entries are checked (so a modified result cannot
// make an algorithm read or write out of bounds), the O(N) repeat check is not repeated.
inline group_layout<permuted_groups> make_layout(const grouping_result& g, index_t n, where w) {
    return validate_permuted(g.layout(), n, w, false);
}

// Refuses an output `out` (argument `arg` of `fn`) that shares bytes with a buffer of the layout
// `groups`, before anything is written: "overlaps the layout's '<buffer>'; pass a separate buffer".
// An absent output (none) is never refused.
template <class Groups, class V>
void check_apart_from_layout(const Groups& groups, const V& out, const char* fn, const char* arg) {
    if constexpr (!std::is_same_v<V, none_t>)
        if (const char* buffer = layout_buffer_overlapping(groups, out))
            raise_invalid_argument(fn, arg, std::string("overlaps the layout's '") + buffer + "'; pass a separate buffer");
}

template <class Groups>
using layout_of = decltype(make_layout(std::declval<const Groups&>(), index_t{}, where{}));

}  // namespace detail
}  // namespace posttrain
