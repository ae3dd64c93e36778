#pragma once
// The samplers through Thrust (exec::thrust): the same POSTTRAIN_HD draw functors as the host path
// (sampling/samplers.hpp), run as a transform over draw indices, and the keyed samplers as a stable
// sort by key, whose tie order (by index) is the host path's (key, index) order. Same seed, same
// indices as exec::seq, bit for bit. Argument checks and the alias table build are the host's.
//
//     with replacement      transform d -> alias_draw(d)                      (O(1) per draw)
//     without replacement   transform i -> E_i / w_i; stable_sort_by_key; first k
//     permutation           transform i -> 64 Philox bits; stable_sort_by_key

#include <cstdint>
#include <type_traits>
#include <vector>

#include <thrust/iterator/counting_iterator.h>
#include <thrust/sequence.h>
#include <thrust/sort.h>
#include <thrust/transform.h>

#include "../sampling/samplers.hpp"
#include "exec.hpp"

namespace posttrain::sampling {
namespace detail {

// Orders [0, n) by key(i) with a stable sort (ties keep index order) and returns the first k.
template <class ThrustPolicy, class Key>
std::vector<index_t> thrust_smallest_keys(const ThrustPolicy& p, index_t n, index_t k, const Key& key) {
    using K = decltype(key(index_t{0}));
    std::vector<K> keys(static_cast<std::size_t>(n));
    std::vector<index_t> order(static_cast<std::size_t>(n));
    ::thrust::transform(p, ::thrust::counting_iterator<index_t>(0), ::thrust::counting_iterator<index_t>(n), keys.data(), key);
    ::thrust::sequence(p, order.data(), order.data() + n);
    ::thrust::stable_sort_by_key(p, keys.data(), keys.data() + n, order.data());
    order.resize(static_cast<std::size_t>(k));
    return order;
}

}  // namespace detail

template <class ThrustPolicy, class Out>
sample_result sample_with_replacement(const exec::thrust_policy<ThrustPolicy>& policy, const alias_table& table, Out&& indices,
                                      const weighted_options& options = {}) {
    posttrain::detail::check_host_thrust_policy<ThrustPolicy>();
    return detail::alias_draws(table, indices, options, [&](auto out, const detail::alias_draw& draw) {
        std::vector<index_t> drawn(static_cast<std::size_t>(out.extent(0)));
        ::thrust::transform(policy.base, ::thrust::counting_iterator<index_t>(0),
                            ::thrust::counting_iterator<index_t>(out.extent(0)), drawn.data(), draw);
        detail::write_indices(out, drawn);
    });
}

template <class ThrustPolicy, class Weights, class Out>
sample_result sample_with_replacement(const exec::thrust_policy<ThrustPolicy>& policy, const Weights& weights, Out&& indices,
                                      const weighted_options& options = {}) {
    const alias_table t = detail::build_alias_table(detail::read_weights(
        weights, options.all_zero, {"posttrain::sampling::sample_with_replacement", "weights"}));
    return sample_with_replacement(policy, t, std::forward<Out>(indices), options);
}

template <class ThrustPolicy, class Weights, class Out>
sample_result sample_without_replacement(const exec::thrust_policy<ThrustPolicy>& policy, const Weights& weights,
                                         Out&& indices, const weighted_options& options = {}) {
    posttrain::detail::check_host_thrust_policy<ThrustPolicy>();
    return detail::smallest_key_draws(weights, indices, options, [&](index_t n, index_t k, const detail::exponential_key& key) {
        return detail::thrust_smallest_keys(policy.base, n, k, key);
    });
}

template <class ThrustPolicy, class Out>
void random_permutation(const exec::thrust_policy<ThrustPolicy>& policy, Out&& indices, const permutation_options& options = {}) {
    posttrain::detail::check_host_thrust_policy<ThrustPolicy>();
    constexpr const char* fn = "posttrain::sampling::random_permutation";
    detail::check_stream(options.stream, {fn, "options.stream"});
    detail::with_index_output(indices, -1, {fn, "indices"}, [&](auto out) {
        const index_t n = out.extent(0);
        const detail::permutation_key key{philox4x32_10(options.seed), detail::stream_word(options.stream, purpose::permutation)};
        detail::write_indices(out, detail::thrust_smallest_keys(policy.base, n, n, key));
        return 0;
    });
}

}  // namespace posttrain::sampling
