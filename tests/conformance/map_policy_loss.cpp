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

// ---- verl compute_policy_loss_* ----

// verl_F.masked_mean: sum / (count + 1e-8).
double verl_mean(double sum, double count) { return sum / (count + 1e-8); }

struct verl_case {
    tensor lp, old, adv, mask;
    std::optional<tensor> is_weights;
};

// The ActorConfig clip fields: clip_ratio_low / clip_ratio_high fall back to clip_ratio.
void verl_clip(const json& cfg, pl::options& o) {
    const double clip = number(cfg.at("clip_ratio"));
    o.clip_low = cfg.contains("clip_ratio_low") && !cfg.at("clip_ratio_low").is_null() ? number(cfg.at("clip_ratio_low")) : clip;
    o.clip_high = cfg.contains("clip_ratio_high") && !cfg.at("clip_ratio_high").is_null() ? number(cfg.at("clip_ratio_high")) : clip;
}

// Runs one verl policy loss and stores pg_loss, grad_log_prob and the named metrics.
pl::loss_result run_verl(const case_context& c, produced& out, pl::options o, const std::string& old_name = "old_log_prob") {
    // config.global_batch_info: the data-parallel normalizers agg_loss receives.
    if (c.params.contains("config") && c.params.at("config").contains("global_batch_info")) {
        const json& g = c.params.at("config").at("global_batch_info");
        if (g.contains("dp_size") && o.aggregation.mode != pl::aggregation::seq_mean_token_sum_norm)
            o.aggregation.multiplier = number(g.at("dp_size"));
        if (g.contains("batch_num_tokens")) o.aggregation.global_tokens = number(g.at("batch_num_tokens"));
        if (g.contains("global_batch_size")) o.aggregation.global_sequences = number(g.at("global_batch_size"));
    }
    const tensor lp = c.input("log_prob"), old = c.input(old_name), adv = c.input("advantages"), m = c.input("response_mask");
    tensor g = zeros(lp.shape);
    pl::extras ex;
    tensor isw;
    if (c.inputs.contains("rollout_is_weights")) {
        isw = c.input("rollout_is_weights");
        ex.is_weights = isw.view2();
    }
    const auto r = pl::compute(seq, lp.view2(), old.view2(), adv.view2(), m.view2(), view2(g.data, lp.rows(), lp.cols()), o, ex);
    out.set("pg_loss", from_values({r.loss}, {}));
    out.set("grad_log_prob", g);
    return r;
}

void set_metric(produced& out, const std::string& name, double v) { out.set(name, from_values({v}, {})); }

pl::aggregation case_mode(const case_context& c) { return verl_mode(c.params.at("loss_agg_mode").get<std::string>()); }

// compute_policy_loss(old, lp, adv, mask, cliprange, cliprange_low, cliprange_high, clip_ratio_c, loss_agg_mode)
void verl_ppo_explicit(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::ppo_clip, case_mode(c));
    const double clip = c.param("cliprange");
    o.clip_low = c.param_or("cliprange_low", clip);
    o.clip_high = c.param_or("cliprange_high", clip);
    o.dual_clip = c.param_or("clip_ratio_c", 3.0);
    const auto r = run_verl(c, out, o);
    const double n = r.sums.tokens;
    set_metric(out, "pg_clipfrac", verl_mean(r.sums.clipped_low + r.sums.clipped_high, n));
    set_metric(out, "ppo_kl", verl_mean(r.sums.neg_log_ratio, n));
    set_metric(out, "pg_clipfrac_lower", verl_mean(r.sums.dual_clipped, n));
}

const json& verl_config(const case_context& c) { return c.params.at("config"); }

void verl_vanilla(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::ppo_clip, case_mode(c));
    verl_clip(verl_config(c), o);
    o.dual_clip = number(verl_config(c).at("clip_ratio_c"));
    const auto r = run_verl(c, out, o);
    const double n = r.sums.tokens;
    set_metric(out, "pg_clipfrac", verl_mean(r.sums.clipped_low + r.sums.clipped_high, n));
    set_metric(out, "ppo_kl", verl_mean(r.sums.neg_log_ratio, n));
    set_metric(out, "pg_clipfrac_lower", verl_mean(r.sums.dual_clipped, n));
}

void verl_gspo(const case_context& c, produced& out) {
    auto o = pl::options::verl_gspo();  // loss_agg_mode is ignored: always seq-mean-token-mean
    verl_clip(verl_config(c), o);
    const auto r = run_verl(c, out, o);
    const double n = r.sums.tokens;
    set_metric(out, "pg_clipfrac", verl_mean(r.sums.clipped_low + r.sums.clipped_high, n));
    set_metric(out, "ppo_kl", verl_mean(r.sums.neg_log_ratio_raw, n));
    set_metric(out, "pg_clipfrac_lower", 0.0);
}

void verl_sapo(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::sapo);
    o.sapo_tau_pos = number(verl_config(c).at("tau_pos"));
    o.sapo_tau_neg = number(verl_config(c).at("tau_neg"));
    const auto r = run_verl(c, out, o);
    set_metric(out, "pg_clipfrac", 0.0);
    set_metric(out, "ppo_kl", verl_mean(r.sums.neg_log_ratio, r.sums.tokens));
    set_metric(out, "pg_clipfrac_lower", 0.0);
}

void verl_gpg(const case_context& c, produced& out) {
    (void)run_verl(c, out, pl::options::verl(pl::objective::policy_gradient, case_mode(c)));
}

void verl_geo_mean(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::gmpo);
    verl_clip(verl_config(c), o);
    const auto r = run_verl(c, out, o);
    const double n = r.sums.tokens;
    set_metric(out, "pg_clipfrac", verl_mean(r.sums.clipped_high, n));
    set_metric(out, "ppo_kl", verl_mean(r.sums.neg_log_ratio, n));
    set_metric(out, "pg_clipfrac_lower", verl_mean(r.sums.clipped_low, n));
}

void verl_cispo(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::cispo, case_mode(c));
    verl_clip(verl_config(c), o);
    const auto r = run_verl(c, out, o);
    const double n = r.sums.tokens;
    set_metric(out, "pg_clipfrac", verl_mean(r.sums.clipped_low + r.sums.clipped_high, n));
    set_metric(out, "ppo_kl", verl_mean(r.sums.neg_log_ratio, n));
    set_metric(out, "pg_clipfrac_lower", 0.0);
}

void verl_kl_cov(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::kl_cov, case_mode(c));
    const json& pc = verl_config(c).at("policy_loss");
    o.cov_ratio = number(pc.at("kl_cov_ratio"));
    o.kl_cov_coef = number(pc.at("ppo_kl_coef"));
    const auto r = run_verl(c, out, o);
    set_metric(out, "ppo_kl", verl_mean(r.sums.abs_log_ratio, r.sums.tokens));
}

void verl_clip_cov(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::clip_cov, case_mode(c));
    verl_clip(verl_config(c), o);
    const json& pc = verl_config(c).at("policy_loss");
    o.cov_ratio = number(pc.at("clip_cov_ratio"));
    o.clip_cov_lower = number(pc.at("clip_cov_lb"));
    o.clip_cov_upper = number(pc.at("clip_cov_ub"));
    const auto r = run_verl(c, out, o);
    const double n = r.sums.tokens;
    set_metric(out, "pg_clipfrac", verl_mean(r.sums.selected, n));
    set_metric(out, "ppo_kl", verl_mean(r.sums.neg_log_ratio, n));
}

// compute_policy_loss_reinforce: -A logp (* rollout_is_weights); ppo_kl = mean(rollout - logp).
void verl_reinforce(const case_context& c, produced& out) {
    const auto r = run_verl(c, out, pl::options::verl(pl::objective::policy_gradient, case_mode(c)), "rollout_log_prob");
    set_metric(out, "ppo_kl", verl_mean(r.sums.neg_log_ratio_raw, r.sums.tokens));
}

}  // namespace

void register_policy_loss(registry& r) {
    const char* verl_what = "policy_loss::compute, options::verl(objective, mode) (metrics: sums / (tokens + 1e-8))";
    r.add("verl/compute_policy_loss", {verl_ppo_explicit, float64_path, verl_what});
    r.add("verl/compute_policy_loss_vanilla", {verl_vanilla, float64_path, verl_what});
    r.add("verl/compute_policy_loss_gspo", {verl_gspo, float64_path, "policy_loss::compute, options::verl_gspo()"});
    r.add("verl/compute_policy_loss_sapo", {verl_sapo, float64_path, verl_what});
    r.add("verl/compute_policy_loss_gpg", {verl_gpg, float64_path, verl_what});
    r.add("verl/compute_policy_loss_geo_mean", {verl_geo_mean, float64_path, verl_what});
    r.add("verl/compute_policy_loss_cispo", {verl_cispo, float64_path, verl_what});
    r.add("verl/compute_policy_loss_kl_cov", {verl_kl_cov, float64_path, verl_what});
    r.add("verl/compute_policy_loss_clip_cov", {verl_clip_cov, float64_path, verl_what});
    r.add("verl/compute_policy_loss_reinforce", {verl_reinforce, float64_path, verl_what});
    r.add("verl/agg_loss", {verl_agg_loss, float64_path, "policy_loss::aggregate, aggregation_options::verl(mode, dp_size, ...)"});
    r.add("openrlhf/aggregate_loss",
          {openrlhf_aggregate_loss, float64_path, "policy_loss::aggregate, aggregation_options::openrlhf(token_level, ...)"});
}

}  // namespace conformance
