// verl's optimal token baseline (b178a3c, core_algos.py): compute_optimal_token_baseline_advantage
// ("optimal_token_baseline") and compute_multi_turn_optimal_token_baseline_advantage
// ("tir_optimal_token_baseline"). Both return (advantages, returns); rows are grouped by the string
// uids of `index`; rollout_is_weights is optional; handle_zero_tail and epsilon are the case params.

#include <posttrain/advantage/token_baseline.hpp>

#include "conformance.hpp"

namespace conformance {
namespace {

namespace adv = posttrain::advantage;
using posttrain::exec::seq;

void token_baseline_case(const case_context& c, produced& out, bool multi_turn) {
    const tensor r = c.input("token_level_rewards"), m = c.input("response_mask");
    const tensor lp = c.input("old_log_probs"), sp = c.input("sum_pi_squared");
    const index_t n = r.rows(), t = r.cols();
    const auto groups = group_by(c.ids("index"));
    auto options = multi_turn ? adv::token_baseline_options::verl_multi_turn() : adv::token_baseline_options::verl();
    if (c.has_param("handle_zero_tail")) options.handle_zero_tail = c.params.at("handle_zero_tail").get<bool>();
    options.epsilon = c.param_or("epsilon", options.epsilon);
    std::vector<double> a(static_cast<std::size_t>(n * t)), ret(a.size());
    auto run = [&](const auto& is) {
        if (multi_turn)
            (void)adv::multi_turn_optimal_token_baseline(seq, r.view2(), m.view2(), lp.view2(), sp.view2(), is, groups,
                                                         view2(a, n, t), view2(ret, n, t), options);
        else
            (void)adv::optimal_token_baseline(seq, r.view2(), m.view2(), lp.view2(), sp.view2(), is, groups, view2(a, n, t),
                                              view2(ret, n, t), options);
    };
    if (c.inputs.contains("rollout_is_weights") && !c.inputs.at("rollout_is_weights").is_null()) {
        const tensor is = c.input("rollout_is_weights");
        run(is.view2());
    } else {
        run(posttrain::none);
    }
    out.set("advantages", from_values(a, {n, t}));
    out.set("returns", from_values(ret, {n, t}));
}

}  // namespace

void register_token_baseline(registry& reg) {
    reg.add("verl/compute_optimal_token_baseline_advantage",
            {[](const case_context& c, produced& out) { token_baseline_case(c, out, false); }, float64_path,
             "advantage::optimal_token_baseline(token_baseline_options::verl(), handle_zero_tail/epsilon from params), "
             "groups = grouping::from_string_ids(index)"});
    reg.add("verl/compute_multi_turn_optimal_token_baseline_advantage",
            {[](const case_context& c, produced& out) { token_baseline_case(c, out, true); }, float64_path,
             "advantage::multi_turn_optimal_token_baseline(token_baseline_options::verl_multi_turn(), "
             "handle_zero_tail/epsilon from params), groups = grouping::from_string_ids(index)"});
}

}  // namespace conformance
