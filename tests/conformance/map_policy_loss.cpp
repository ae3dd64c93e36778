// Policy losses and their aggregation: verl agg_loss and compute_policy_loss_* (core_algos.py,
// b178a3c), OpenRLHF aggregate_loss and PolicyLoss (models/loss.py, 3c3be62), TRL
// GRPOTrainer._compute_loss (f2cd577).

#include "conformance.hpp"

namespace conformance {
namespace {

namespace pl = posttrain::policy_loss;
using posttrain::exec::seq;

pl::aggregation verl_mode(const std::string& s) {
    if (s == "token-mean") return pl::aggregation::token_mean;
    if (s == "token-sum") return pl::aggregation::token_sum;
    if (s == "seq-mean-token-mean") return pl::aggregation::seq_mean_token_mean;
    if (s == "seq-mean-token-sum") return pl::aggregation::seq_mean_token_sum;
    if (s == "seq-mean-token-sum-norm") return pl::aggregation::seq_mean_token_sum_norm;
    throw std::runtime_error("unknown verl loss_agg_mode " + s);
}

// agg_loss(loss_mat, loss_mask, loss_agg_mode, dp_size, batch_num_tokens, global_batch_size, loss_scale_factor)
void verl_agg_loss(const case_context& c, produced& out) {
    const tensor L = c.input("loss_mat"), m = c.input("loss_mask");
    const auto o = pl::aggregation_options::verl(verl_mode(c.params.at("loss_agg_mode").get<std::string>()),
                                                 c.param_or("dp_size", 1), c.param_or("batch_num_tokens", 0),
                                                 c.param_or("global_batch_size", 0), c.param_or("loss_scale_factor", 0));
    tensor g = zeros(L.shape);
    const auto r = pl::aggregate(seq, L.view2(), m.view2(), view2(g.data, L.rows(), L.cols()), o);
    out.set("loss", from_values({r.loss}, {}));
    out.set("grad_loss_mat", g);
}

// aggregate_loss(loss, mask, token_level_loss, dp_size, batch_num_tokens, global_batch_size)
void openrlhf_aggregate_loss(const case_context& c, produced& out) {
    const tensor L = c.input("loss"), m = c.input("loss_mask");
    const auto o = pl::aggregation_options::openrlhf(c.params.at("token_level_loss").get<bool>(), c.param_or("dp_size", 1),
                                                     c.param_or("batch_num_tokens", 0), c.param_or("global_batch_size", 0));
    tensor g = zeros(L.shape);
    const auto r = pl::aggregate(seq, L.view2(), m.view2(), view2(g.data, L.rows(), L.cols()), o);
    out.set("aggregated", from_values({r.loss}, {}));
    out.set("grad_loss", g);
}

}  // namespace

void register_policy_loss(registry& r) {
    r.add("verl/agg_loss", {verl_agg_loss, float64_path, "policy_loss::aggregate, aggregation_options::verl(mode, dp_size, ...)"});
    r.add("openrlhf/aggregate_loss",
          {openrlhf_aggregate_loss, float64_path, "policy_loss::aggregate, aggregation_options::openrlhf(token_level, ...)"});
}

}  // namespace conformance
