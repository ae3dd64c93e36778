#pragma once
// grouping::from_ids through Thrust: a stable sort of (id, row) pairs and a scan over group heads,
// the device-shaped form of the host's radix sort. Same result as the host overload.

#include <cstdint>
#include <type_traits>
#include <variant>
#include <vector>

#include <thrust/iterator/constant_iterator.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/reduce.h>
#include <thrust/scan.h>
#include <thrust/scatter.h>
#include <thrust/sequence.h>
#include <thrust/sort.h>
#include <thrust/transform.h>

#include "../core/groups.hpp"
#include "exec.hpp"

namespace posttrain {
namespace detail {

// 1 where sorted position j starts a new group.
template <class Key>
struct head_flag {
    const Key* keys;
    POSTTRAIN_HD index_t operator()(index_t j) const { return (j > 0 && keys[j] != keys[j - 1]) ? 1 : 0; }
};

template <class Id>
struct to_int64 {
    POSTTRAIN_HD std::int64_t operator()(Id v) const { return static_cast<std::int64_t>(v); }
};

template <class ThrustPolicy, class Id>
grouping_result thrust_group_by_ids(const ThrustPolicy& p, tensor_view<const Id, 1> ids) {
    const index_t n = ids.extent(0);
    grouping_result g;
    std::vector<Id> keys(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) keys[std::size_t(i)] = ids(i);
    g.permutation.resize(std::size_t(n));
    ::thrust::sequence(p, g.permutation.begin(), g.permutation.end(), index_t{0});
    // Sorting by the id type's own order: signed ids as signed, unsigned as unsigned (as the host does).
    ::thrust::stable_sort_by_key(p, keys.begin(), keys.end(), g.permutation.begin());
    std::vector<index_t> group_of_sorted(static_cast<std::size_t>(n));
    ::thrust::transform(p, ::thrust::counting_iterator<index_t>(0), ::thrust::counting_iterator<index_t>(n),
                        group_of_sorted.begin(), head_flag<Id>{keys.data()});
    ::thrust::inclusive_scan(p, group_of_sorted.begin(), group_of_sorted.end(), group_of_sorted.begin());
    g.group_of.resize(std::size_t(n));
    ::thrust::scatter(p, group_of_sorted.begin(), group_of_sorted.end(), g.permutation.begin(), g.group_of.begin());
    // One (id, count) per group, then the offsets as a scan of the counts.
    std::vector<Id> unique_ids(static_cast<std::size_t>(n));
    std::vector<index_t> counts(static_cast<std::size_t>(n));
    const auto ends = ::thrust::reduce_by_key(p, keys.begin(), keys.end(), ::thrust::constant_iterator<index_t>(1),
                                              unique_ids.begin(), counts.begin());
    const auto groups = static_cast<std::size_t>(ends.first - unique_ids.begin());
    g.offsets.assign(groups + 1, 0);
    ::thrust::inclusive_scan(p, counts.begin(), counts.begin() + static_cast<std::ptrdiff_t>(groups), g.offsets.begin() + 1);
    g.ids.resize(groups);
    ::thrust::transform(p, unique_ids.begin(), unique_ids.begin() + static_cast<std::ptrdiff_t>(groups), g.ids.begin(),
                        to_int64<Id>{});
    return g;
}

}  // namespace detail

namespace grouping {

// grouping::from_ids(exec::thrust(thrust::omp::par), ids): as the host overload, through Thrust.
template <class ThrustPolicy, class Ids>
grouping_result from_ids(const exec::thrust_policy<ThrustPolicy>& policy, const Ids& ids) {
    detail::check_host_thrust_policy<ThrustPolicy>();
    return std::visit([&](auto v) { return detail::thrust_group_by_ids(policy.base, v); },
                      detail::id_input<1>(ids, {"posttrain::grouping::from_ids", "ids"}));
}

}  // namespace grouping
}  // namespace posttrain
