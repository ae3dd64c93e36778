#pragma once
// Small result structs returned by host algorithms for what needs no output tensor.

#include "view.hpp"

namespace posttrain {

// What a group-relative advantage computation saw.
struct [[nodiscard]] group_stats_result {
    index_t groups = 0;               // number of groups in the layout
    index_t empty_groups = 0;         // groups with no rows
    index_t singleton_groups = 0;     // groups with exactly one (valid) row
    index_t zero_variance_groups = 0; // groups of >= 2 rows whose rewards are all equal (max == min)
    index_t ignored_rows = 0;         // rows whose reward was NaN and ignored (nonfinite::ignore)
};

// Mean and variance of a masked reduction.
struct [[nodiscard]] moments_result {
    double mean = 0;
    double variance = 0;
    double count = 0;  // sum of mask weights
};

}  // namespace posttrain
