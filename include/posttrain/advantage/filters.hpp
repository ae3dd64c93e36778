#pragma once
// DAPO dynamic sampling (Yu et al. 2025): groups whose rewards are all equal carry no GRPO signal.
// zero_variance_filter says which groups to keep; the caller drops or resamples the others.

#include <variant>

#include "common.hpp"

namespace posttrain::advantage {

struct zero_variance_filter_options {
    bool keep_singletons = true;  // DAPO keeps a group if std > 0 or it has one row
    bool keep_empty = false;
};

// keep[g] = 1 when group g has reward variance (max != min), per the options; returns the kept count.
template <class Policy, class Rewards, class Groups, class Keep>
index_t zero_variance_filter(const Policy& policy, const Rewards& rewards, const Groups& groups, Keep&& keep,
                             const zero_variance_filter_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::zero_variance_filter: host policy expected");
    constexpr const char* fn = "posttrain::advantage::zero_variance_filter";
    return std::visit(
        [&](auto r, auto k) {
            detail::check_finite(r, {fn, "rewards"});
            const auto layout = posttrain::detail::make_layout(groups, r.extent(0), {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, k, fn, "keep");
            detail::check_extent(k.extent(0), layout.num_groups(), {fn, "keep"}, "length (one entry per group):");
            using K = typename decltype(k)::value_type;
            detail::for_each_group(policy, layout, r.extent(0), [&](index_t g, auto rows, index_t n) {
                bool varied = false;
                for (index_t j = 1; j < n && !varied; ++j) varied = r(rows(j)) != r(rows(0));
                const bool kept = n == 0 ? options.keep_empty : (n == 1 ? options.keep_singletons : varied);
                k(g) = static_cast<K>(kept ? 1 : 0);
            });
            index_t kept = 0;
            for (index_t g = 0; g < k.extent(0); ++g) kept += k(g) != K(0);
            return kept;
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}),
        posttrain::detail::dispatch_view<false, 1, host_space, posttrain::detail::mask_elems>::make(keep, {fn, "keep"}));
}

}  // namespace posttrain::advantage
