// Policy losses and their aggregation: verl agg_loss and compute_policy_loss_* (core_algos.py,
// b178a3c), OpenRLHF aggregate_loss and PolicyLoss (models/loss.py, 3c3be62), TRL
// GRPOTrainer._compute_loss (f2cd577).

#include "conformance.hpp"

namespace conformance {
namespace {

namespace pl = posttrain::policy_loss;
using posttrain::exec::seq;


// agg_loss(loss_mat, loss_mask, loss_agg_mode, dp_size, batch_num_tokens, global_batch_size, loss_scale_factor)
void verl_agg_loss(const case_context& c, produced& out) {
    const tensor L = c.input("loss_mat"), m = c.input("loss_mask");
    const auto o = pl::aggregation_options::verl(verl_agg_mode(c.params.at("loss_agg_mode").get<std::string>()),
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

// A config field, or the reference's fallback when it is absent or None.
double cfg_or(const json& cfg, const char* key, double fallback) {
    return cfg.contains(key) && !cfg.at(key).is_null() ? number(cfg.at(key)) : fallback;
}

// The ActorConfig clip fields: clip_ratio_low / clip_ratio_high fall back to clip_ratio.
void verl_clip(const json& cfg, pl::options& o) {
    const double clip = cfg_or(cfg, "clip_ratio", 0.2);
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

// verl's three PPO metrics, each a masked mean (sum / (tokens + 1e-8)) of the given sums.
void verl_ppo_metrics(produced& out, const pl::loss_result& r, double clipped, double neg_log_ratio, double lower) {
    const double n = r.sums.tokens;
    set_metric(out, "pg_clipfrac", verl_mean(clipped, n));
    set_metric(out, "ppo_kl", verl_mean(neg_log_ratio, n));
    set_metric(out, "pg_clipfrac_lower", verl_mean(lower, n));
}

pl::aggregation case_mode(const case_context& c) { return verl_agg_mode(c.params.at("loss_agg_mode").get<std::string>()); }

// compute_policy_loss(old, lp, adv, mask, cliprange, cliprange_low, cliprange_high, clip_ratio_c, loss_agg_mode)
void verl_ppo_explicit(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::ppo_clip, case_mode(c));
    const double clip = c.param("cliprange");
    o.clip_low = c.param_or("cliprange_low", clip);
    o.clip_high = c.param_or("cliprange_high", clip);
    o.dual_clip = c.param_or("clip_ratio_c", 3.0);
    const auto r = run_verl(c, out, o);
    verl_ppo_metrics(out, r, r.sums.clipped_low + r.sums.clipped_high, r.sums.neg_log_ratio, r.sums.dual_clipped);
}

const json& verl_config(const case_context& c) { return c.params.at("config"); }

void verl_vanilla(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::ppo_clip, case_mode(c));
    verl_clip(verl_config(c), o);
    o.dual_clip = cfg_or(verl_config(c), "clip_ratio_c", 3.0);
    const auto r = run_verl(c, out, o);
    verl_ppo_metrics(out, r, r.sums.clipped_low + r.sums.clipped_high, r.sums.neg_log_ratio, r.sums.dual_clipped);
}

void verl_gspo(const case_context& c, produced& out) {
    auto o = pl::options::verl_gspo();  // loss_agg_mode is ignored: always seq-mean-token-mean
    verl_clip(verl_config(c), o);
    const auto r = run_verl(c, out, o);
    verl_ppo_metrics(out, r, r.sums.clipped_low + r.sums.clipped_high, r.sums.neg_log_ratio_raw, 0.0);
}

void verl_sapo(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::sapo);
    o.sapo_tau_pos = cfg_or(verl_config(c), "tau_pos", 1.0);
    o.sapo_tau_neg = cfg_or(verl_config(c), "tau_neg", 1.05);
    const auto r = run_verl(c, out, o);
    verl_ppo_metrics(out, r, 0.0, r.sums.neg_log_ratio, 0.0);
}

void verl_gpg(const case_context& c, produced& out) {
    (void)run_verl(c, out, pl::options::verl(pl::objective::policy_gradient, case_mode(c)));
}

void verl_geo_mean(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::gmpo);
    verl_clip(verl_config(c), o);
    const auto r = run_verl(c, out, o);
    verl_ppo_metrics(out, r, r.sums.clipped_high, r.sums.neg_log_ratio, r.sums.clipped_low);
}

void verl_cispo(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::cispo, case_mode(c));
    verl_clip(verl_config(c), o);
    const auto r = run_verl(c, out, o);
    verl_ppo_metrics(out, r, r.sums.clipped_low + r.sums.clipped_high, r.sums.neg_log_ratio, 0.0);
}

void verl_kl_cov(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::kl_cov, case_mode(c));
    const json& pc = verl_config(c).at("policy_loss");
    o.cov_ratio = cfg_or(pc, "kl_cov_ratio", 0.0002);
    o.kl_cov_coef = cfg_or(pc, "ppo_kl_coef", 1.0);  // the function's own fallback (PolicyLossConfig says 0.1)
    const auto r = run_verl(c, out, o);
    set_metric(out, "ppo_kl", verl_mean(r.sums.abs_log_ratio, r.sums.tokens));
}

void verl_clip_cov(const case_context& c, produced& out) {
    auto o = pl::options::verl(pl::objective::clip_cov, case_mode(c));
    verl_clip(verl_config(c), o);
    const json& pc = verl_config(c).at("policy_loss");
    o.cov_ratio = cfg_or(pc, "clip_cov_ratio", 0.0002);
    o.clip_cov_lower = cfg_or(pc, "clip_cov_lb", 1.0);
    o.clip_cov_upper = cfg_or(pc, "clip_cov_ub", 5.0);
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

// ---- OpenRLHF PolicyLoss(**init)(log_probs, old_log_probs, advantages, action_mask, rollout_log_probs, **forward) ----
void openrlhf_policy_loss(const case_context& c, produced& out) {
    const json& init = c.params.at("init");
    const json& fwd = c.params.at("forward");
    auto get = [](const json& j, const char* k, double fallback) { return j.contains(k) && !j.at(k).is_null() ? number(j.at(k)) : fallback; };
    const bool gspo = init.value("policy_loss_type", std::string("ppo")) == "gspo";
    const bool vllm = init.value("enable_vllm_is_correction", false);
    auto o = pl::options::openrlhf(gspo, init.value("token_level_loss", true));
    o.clip_low = get(init, "clip_eps_low", 0.2);
    o.clip_high = get(init, "clip_eps_high", 0.2);
    o.dual_clip = get(init, "dual_clip", 0.0);
    o.aggregation.multiplier = get(fwd, "dp_size", 1);
    o.aggregation.global_tokens = get(fwd, "batch_num_tokens", 0);
    o.aggregation.global_sequences = get(fwd, "global_batch_size", 0);
    const tensor lp = c.input("log_probs"), old = c.input("old_log_probs"), adv = c.input("advantages"), m = c.input("action_mask");
    tensor rollout;
    pl::extras ex;
    // The correction type is validated in __init__ even when the correction is off.
    const std::string type = init.value("vllm_is_correction_type", std::string("tis"));
    (void)pl::mismatch_correction::openrlhf(type, 0, 0);
    if (vllm) {
        rollout = c.input("rollout_log_probs");
        const auto& th = init.at("vllm_is_truncated_threshold");
        o.mismatch = pl::mismatch_correction::openrlhf(type, number(th.at(0)), number(th.at(1)));
        if (gspo) o.mismatch.mode = pl::correction::none;  // GSPO takes the ratio against the rollout instead
        else ex.rollout_log_probs = rollout.view2();
    }
    // With the vLLM correction GSPO's sequence ratio is taken against the rollout log-probs.
    const tensor& ratio_base = vllm && gspo ? rollout : old;
    tensor g = zeros(lp.shape);
    const auto r = pl::compute(seq, lp.view2(), ratio_base.view2(), adv.view2(), m.view2(), view2(g.data, lp.rows(), lp.cols()), o, ex);
    out.set("loss", from_values({r.loss}, {}));
    out.set("grad_log_probs", g);
    // clip_ratio is a float32 mean there (the comparison is cast with .float()).
    set_metric(out, "clip_ratio", double(float(r.sums.clipped_low + r.sums.clipped_high) / float(r.sums.tokens)));
    // ppo_kl is always against the old log-probs.
    pl::options plain = o;
    plain.mismatch.mode = pl::correction::none;
    const auto k = pl::compute(seq, lp.view2(), old.view2(), adv.view2(), m.view2(), posttrain::none, plain);
    set_metric(out, "ppo_kl", k.sums.neg_log_ratio_raw / k.sums.tokens);
    if (vllm && !gspo) set_metric(out, "vllm_kl", r.sums.rollout_minus_old / r.sums.tokens);
}

// ---- TRL GRPOTrainer._compute_loss ----
void trl_grpo_loss(const case_context& c, produced& out) {
    using trl = pl::options::trl_loss;
    const std::string type = c.params.at("loss_type").get<std::string>();
    const trl t = type == "grpo" ? trl::grpo : type == "bnpo" ? trl::bnpo : type == "dr_grpo" ? trl::dr_grpo
                : type == "dapo" ? trl::dapo : type == "luspo" ? trl::luspo : type == "cispo" ? trl::cispo
                : type == "sapo" ? trl::sapo : type == "vespo" ? trl::vespo
                : throw std::runtime_error("unknown loss_type " + type);
    // Evaluation divides by no accumulation count.
    const bool eval = c.params.value("mode", std::string("train")) == "eval";
    const double gas = eval ? 1.0 : c.param_or("current_gradient_accumulation_steps", 1);
    const double items = c.inputs.contains("num_items_in_batch") ? number(c.inputs.at("num_items_in_batch")) : 0.0;
    auto o = pl::options::trl(t, c.param("max_completion_length"), gas, items, c.param_or("num_processes", 1));
    o.clip_low = c.param("epsilon_low");
    o.clip_high = c.param("epsilon_high");
    o.delta = c.param_or("delta", 0);
    if (c.params.at("importance_sampling_level").get<std::string>() == "sequence") o.level = pl::ratio_level::sequence;
    o.kl_coef = c.param("beta");
    o.kl_importance_weighted = c.params.at("use_bias_correction_kl").get<bool>();
    if (c.has_param("off_policy_mask_threshold")) o.off_policy_threshold = c.param("off_policy_mask_threshold");
    o.top_entropy_quantile = c.param("top_entropy_quantile");
    o.entropy_coef = c.param("entropy_coef");
    // torch.where(A > 0, tau_pos, tau_neg) over two Python floats builds a float32 tensor: TRL's SAPO
    // temperatures are float32 values.
    o.sapo_tau_pos = double(float(c.param("sapo_temperature_pos")));
    o.sapo_tau_neg = double(float(c.param("sapo_temperature_neg")));
    if (t == trl::luspo && o.kl_coef != 0)
        throw skip_case("luspo with beta > 0: this TRL snapshot averages (loss + beta KL) * |y| over every position, "
                        "masked ones included (fixed upstream by PR #6654); posttrain implements the fixed form");
    // vLLM's importance-sampling correction multiplies the loss (except vespo, which folds it into phi).
    const bool vllm_is = c.params.value("use_vllm", false) && c.params.value("vllm_importance_sampling_correction", true);
    const tensor lp = c.input("per_token_logps"), m = c.input("completion_mask");
    // old_per_token_logps absent: TRL uses per_token_logps.detach().
    const tensor old = c.inputs.contains("old_per_token_logps") ? c.input("old_per_token_logps") : lp;
    // advantages (B,) broadcast over the completion.
    const tensor a = c.input("advantages");
    tensor adv = a.shape.size() == 2 ? a : zeros(lp.shape);
    if (a.shape.size() == 1)
        for (index_t i = 0; i < lp.rows(); ++i)
            for (index_t j = 0; j < lp.cols(); ++j) adv.data[std::size_t(i * lp.cols() + j)] = a.data[std::size_t(i)];
    tensor ref, sampling, ent;
    pl::extras ex;
    if (c.inputs.contains("ref_per_token_logps")) ref = c.input("ref_per_token_logps"), ex.ref_log_probs = ref.view2();
    if (c.inputs.contains("sampling_per_token_logps")) sampling = c.input("sampling_per_token_logps"), ex.rollout_log_probs = sampling.view2();
    if (c.inputs.contains("entropies")) ent = c.input("entropies"), ex.entropies = ent.view2();
    tensor is_ratio;
    // vespo reads the ratio whenever the batch carries it.
    if ((vllm_is || t == trl::vespo) && c.inputs.contains("importance_sampling_ratio")) {
        is_ratio = c.input("importance_sampling_ratio");
        ex.is_weights = is_ratio.view2();
    }
    tensor g = zeros(lp.shape);
    const auto r = pl::compute(seq, lp.view2(), old.view2(), adv.view2(), m.view2(), view2(g.data, lp.rows(), lp.cols()), o, ex);
    out.set("loss", from_values({r.loss}, {}));
    out.set("grad_per_token_logps", g);
    const double tokens = std::max(r.sums.tokens, 1.0), rows = double(lp.rows());
    // The clip metrics are float32 there (boolean masks cast with .float()).
    auto f32 = [](double num, double den) { return double(float(num) / float(den)); };
    if (o.kl_coef != 0) set_metric(out, "metric_kl", r.sums.kl / tokens);
    if (o.entropy_coef != 0) {
        // policy_loss is logged before the accumulation division (dapo-like types have none).
        const bool global = t == trl::dapo || t == trl::cispo || t == trl::vespo;
        set_metric(out, "metric_policy_loss", (r.loss + o.entropy_coef * r.entropy_loss) * (global ? 1.0 : gas));
        set_metric(out, "metric_entropy_coef", o.entropy_coef);
    }
    if (o.loss == pl::objective::ppo_clip) {
        if (o.level == pl::ratio_level::token) {
            set_metric(out, "metric_clip_ratio_low_mean", f32(r.sums.clipped_low, tokens));
            set_metric(out, "metric_clip_ratio_high_mean", f32(r.sums.clipped_high, tokens));
            set_metric(out, "metric_clip_ratio_region_mean", f32((r.sums.clipped_low + r.sums.clipped_high), tokens));
            set_metric(out, "metric_clip_ratio_low_min", double(float(r.seq_low_clip_min)));
            set_metric(out, "metric_clip_ratio_high_max", double(float(r.seq_high_clip_max)));
        } else {
            // Sequence level: one flag per row, averaged over every row.
            set_metric(out, "metric_clip_ratio_low_mean", f32(r.sequences_clipped_low, rows));
            set_metric(out, "metric_clip_ratio_high_mean", f32(r.sequences_clipped_high, rows));
            set_metric(out, "metric_clip_ratio_region_mean", f32((r.sequences_clipped_low + r.sequences_clipped_high), rows));
            set_metric(out, "metric_clip_ratio_low_min", r.sequences_clipped_low == rows ? 1.0 : 0.0);
            set_metric(out, "metric_clip_ratio_high_max", r.sequences_clipped_high > 0 ? 1.0 : 0.0);
        }
    }
    if (o.loss == pl::objective::cispo) set_metric(out, "metric_cispo_clip_ratio", f32(r.sums.clipped_high_positive, tokens));
    if (o.loss == pl::objective::vespo) set_metric(out, "metric_vespo_phi_seq_mean", r.phi_mean);
}

// RTO's fork of OpenRLHF (pre-0.5 PolicyLoss): no log-ratio clamp, no dual clip, each sequence's
// exact masked mean, then the mean over every row.
void rto_policy_loss(const case_context& c, produced& out) {
    pl::options o;
    o.clip_low = o.clip_high = c.param("clip_eps");
    o.log_ratio_clamp = 0;
    o.aggregation.mode = pl::aggregation::seq_mean_token_mean;
    o.aggregation.empty = pl::empty_rows::counted;
    const tensor lp = c.input("log_probs"), old = c.input("old_log_probs"), adv = c.input("advantages"), m = c.input("action_mask");
    tensor g = zeros(lp.shape);
    const auto r = pl::compute(seq, lp.view2(), old.view2(), adv.view2(), m.view2(), view2(g.data, lp.rows(), lp.cols()), o);
    out.set("loss", from_values({r.loss}, {}));
    out.set("grad_log_probs", g);
}

}  // namespace

posttrain::policy_loss::aggregation verl_agg_mode(const std::string& s) {
    namespace pl = posttrain::policy_loss;
    if (s == "token-mean") return pl::aggregation::token_mean;
    if (s == "token-sum") return pl::aggregation::token_sum;
    if (s == "seq-mean-token-mean") return pl::aggregation::seq_mean_token_mean;
    if (s == "seq-mean-token-sum") return pl::aggregation::seq_mean_token_sum;
    if (s == "seq-mean-token-sum-norm") return pl::aggregation::seq_mean_token_sum_norm;
    throw std::runtime_error("unknown verl loss_agg_mode " + s);
}

void register_policy_loss(registry& r) {
    r.add("rto/PolicyLoss", {rto_policy_loss, float64_path, "policy_loss::compute, ppo_clip without clamp, seq_mean_token_mean over every row"});
    r.add("trl/GRPOTrainer._compute_loss", {trl_grpo_loss, float64_path, "policy_loss::compute, options::trl(loss_type, ...)"});
    r.add("openrlhf/PolicyLoss", {openrlhf_policy_loss, float64_path, "policy_loss::compute, options::openrlhf(gspo, token_level_loss) + mismatch correction"});
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
