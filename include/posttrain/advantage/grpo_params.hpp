#pragma once
// grpo_options -> outcome_params (the flat form the shared per-group arithmetic of grpo_math.hpp
// takes), with the option checks every non-host backend (CUDA, Thrust) applies before running.

#include "grpo.hpp"
#include "grpo_math.hpp"

namespace posttrain::advantage::detail {

inline outcome_params grpo_params(const grpo_options& o, const char* fn) {
    check_grpo_options(o, fn);
    outcome_params p;
    p.std_scale = o.std_scale;
    p.epsilon = o.epsilon;
    p.ddof = static_cast<int>(o.ddof);
    p.float32_bessel = o.float32_bessel;
    p.leave_one_out = o.leave_one_out;
    p.singleton_groups = o.singleton_groups;
    p.zero_variance_groups = o.zero_variance_groups;
    p.skip_nan = o.nonfinite_rewards == nonfinite::ignore;
    p.singleton_denom = singleton_denominator(o);
    p.float32_one_pass = o.stats == statistics::float32_one_pass;
    return p;
}

}  // namespace posttrain::advantage::detail
