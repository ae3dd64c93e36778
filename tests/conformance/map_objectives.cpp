// Conformance mappings for issue 8's objectives: DisCO (Optimization-AI/DisCO bd2b078,
// verl/verl/trainer/ppo/core_algos.py compute_policy_loss_{disco,discob}_{logL,Lratio} and the
// dp_actor dispatch) and TRPA (XueruiSu/Trust-Region-Preference-Approximation f372585,
// compute_pairwise_policy_loss, compute_trpa_outcome_advantage, dp_actor.update_policy's objective).

#include <algorithm>
#include <numeric>

#include <posttrain/advantage/trpa.hpp>
#include <posttrain/policy_loss/aggregate.hpp>
#include <posttrain/policy_loss/disco.hpp>
#include <posttrain/policy_loss/trpa.hpp>

#include "conformance.hpp"

namespace conformance {
namespace {

namespace pl = posttrain::policy_loss;
namespace adv = posttrain::advantage;
using posttrain::exec::seq;

// DisCO's grouping: rows sorted by uid (torch.sort; stable for these sizes) and cut into
// num_unique_uids blocks of N // num_unique_uids rows. With equal group sizes that is the uid grouping;
// with ragged sizes a block can take rows of the next uid, as upstream does; when N is not a multiple
// the last offset misses N and posttrain refuses the layout (upstream's view() raises).
struct disco_layout {
    std::vector<index_t> permutation, offsets;
    posttrain::permuted_groups layout() const {
        return {posttrain::tensor_view<const index_t, 1>(permutation.data(), index_t(permutation.size())),
                posttrain::tensor_view<const index_t, 1>(offsets.data(), index_t(offsets.size()))};
    }
};

disco_layout disco_groups(const tensor& uid) {
    const index_t n = uid.numel();
    disco_layout d;
    d.permutation.resize(std::size_t(n));
    std::iota(d.permutation.begin(), d.permutation.end(), index_t(0));
    std::stable_sort(d.permutation.begin(), d.permutation.end(),
                     [&](index_t a, index_t b) { return uid.ints[std::size_t(a)] < uid.ints[std::size_t(b)]; });
    std::vector<std::int64_t> u = uid.ints;
    std::sort(u.begin(), u.end());
    const index_t q = index_t(std::unique(u.begin(), u.end()) - u.begin());
    const index_t k = q > 0 ? n / q : 0;
    for (index_t g = 0; g <= q; ++g) d.offsets.push_back(g * k);
    return d;
}

void disco_case(const case_context& c, produced& out, pl::disco_score score, pl::disco_objective objective) {
    const tensor lp = c.input("log_prob"), old = c.input("old_log_prob"), m = c.input("eos_mask");
    const tensor uid = c.input("uid"), r = c.input("seq_level_rewards");
    const std::string kl_type = c.params.at("kl_type").get<std::string>();
    auto o = pl::disco_options::official(score, objective,
                                         kl_type == "low_var_kl" ? pl::kl_estimator::k3 : pl::kl_estimator::k1);
    o.delta = c.param("delta");
    o.beta = c.param("beta");
    if (c.has_param("tau")) o.tau = c.param("tau");
    const auto groups = disco_groups(uid);
    tensor g = zeros(lp.shape);
    const auto res = pl::disco(seq, lp.view2(), old.view2(), m.view2(), r.view1(), groups.layout(),
                               view2(g.data, lp.rows(), lp.cols()), o);
    out.set("pg_loss", from_values({res.loss}, {}));
    out.set("pg_clipfrac", from_values({res.constraint_active ? 1.0 : 0.0}, {}, "float32"));
    out.set("ppo_kl", from_values({res.kl}, {}));
    out.set("grad_log_prob", g);
}

// id_tensor / uid groups as the paper code passes them (float32 or int64 tensors of small integers).
posttrain::grouping_result groups_of(const tensor& ids) {
    std::vector<std::int64_t> v(ids.data.size());
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::int64_t>(ids.data[i]);
    return posttrain::grouping::from_ids(seq, v);
}

std::vector<std::int64_t> levels_of(const tensor& l) {
    std::vector<std::int64_t> v(l.data.size());
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::int64_t>(l.data[i]);
    return v;
}

// compute_pairwise_policy_loss(log_prob, ref_log_prob, advantages, eos_mask, beta, preference_levels,
// anisotropy, preference_type, id_tensor): loss, log_delta, h_high, h_low and d loss / d log_prob.
void trpa_pairwise(const case_context& c, produced& out) {
    const tensor lp = c.input("log_prob"), ref = c.input("ref_log_prob"), m = c.input("eos_mask");
    pl::trpa_options o = pl::trpa_options::official();
    o.beta = c.param("beta");
    o.anisotropy = c.param("anisotropy");
    const auto groups = groups_of(c.input("id_tensor"));
    const auto levels = levels_of(c.input("preference_levels"));
    tensor g = zeros(lp.shape);
    const auto res = pl::trpa_pairwise_loss(seq, lp.view2(), ref.view2(), m.view2(), levels, groups,
                                            view2(g.data, lp.rows(), lp.cols()), o);
    out.set("loss", from_values({res.loss}, {}));
    out.set("log_delta", from_values({res.log_delta}, {}));
    out.set("h_high", from_values({res.h_high}, {}));
    out.set("h_low", from_values({res.h_low}, {}));
    out.set("grad_log_prob", g);
}

// compute_trpa_outcome_advantage(token_level_rewards, eos_mask, index): (scores, scores, id_tensor).
void trpa_outcome(const case_context& c, produced& out) {
    const tensor r = c.input("token_level_rewards"), m = c.input("eos_mask");
    const auto groups = group_by(c.ids("index"));
    tensor a = zeros(r.shape);
    (void)adv::trpa_outcome_advantages(seq, r.view2(), m.view2(), groups, view2(a.data, r.rows(), r.cols()));
    out.set("advantages", a);
    out.set("returns", a);
    // id_tensor numbers the uids 1.. in order of first appearance: posttrain's groups replace it.
    std::vector<double> first(std::size_t(groups.num_groups()), 0.0), id(groups.group_of.size());
    double next = 0;
    for (std::size_t i = 0; i < id.size(); ++i) {
        double& f = first[std::size_t(groups.group_of[i])];
        if (f == 0) f = ++next;
        id[i] = f;
    }
    out.set("id_tensor", from_values(id, {std::int64_t(id.size())}, "float32"));
}

// dp_actor.update_policy with use_trkl_loss: policy_loss = pairwise loss (- entropy_coeff * token mean of
// entropy if config.entropy) + tr_kl_loss_coef * KL(pi, pi_old) (sqrt form with use_sqrt_trkl); the
// reference KL is logged only.
void trpa_update_policy(const case_context& c, produced& out) {
    const tensor lp = c.input("log_prob"), ref = c.input("ref_log_prob"), old = c.input("old_log_prob");
    const tensor m = c.input("response_mask"), h = c.input("entropy");
    pl::trpa_options o = pl::trpa_options::official();
    o.beta = c.param("trpa_beta");
    o.anisotropy = c.param("trpa_anisotropy");
    o.trust_region_coef = c.param("tr_kl_loss_coef");
    o.sqrt_trust_region = c.params.at("use_sqrt_trkl").get<bool>();
    const auto groups = groups_of(c.input("id_tensor"));
    const auto levels = levels_of(c.input("preference_levels"));
    tensor g = zeros(lp.shape);
    const auto res = pl::trpa(seq, lp.view2(), ref.view2(), old.view2(), m.view2(), levels, groups,
                              view2(g.data, lp.rows(), lp.cols()), o);
    double policy_loss = res.loss;
    if (c.params.at("entropy").get<bool>())
        policy_loss -= c.param("entropy_coeff") * pl::aggregate(seq, h.view2(), m.view2(), posttrain::none).loss;
    const auto ref_kl = pl::kl_loss(seq, lp.view2(), ref.view2(), m.view2(), posttrain::none, pl::trpa_options::trpa_kl());
    out.set("policy_loss", from_values({policy_loss}, {}));
    out.set("pg_loss", from_values({res.preference_loss}, {}));
    out.set("grad_log_prob", g);
    out.set("metric_actor_kl_loss", from_values({ref_kl.loss}, {}));
    out.set("metric_actor_kl_coef", from_values({c.param("kl_loss_coef")}, {}));
    out.set("metric_actor_tr_kl_loss", from_values({res.trust_region_kl}, {}));
    out.set("metric_actor_tr_kl_coef", from_values({o.trust_region_coef}, {}));
}

}  // namespace

void register_objectives(registry& reg) {
    struct variant {
        const char* name;
        pl::disco_score score;
        pl::disco_objective objective;
        const char* what;
    };
    const variant disco_variants[] = {
        {"disco/compute_policy_loss_disco_logL", pl::disco_score::log_likelihood, pl::disco_objective::log_sum_exp,
         "policy_loss::disco(disco_options::official(log_likelihood, log_sum_exp, kl_type)), delta/beta/tau from params"},
        {"disco/compute_policy_loss_disco_Lratio", pl::disco_score::likelihood_ratio, pl::disco_objective::log_sum_exp,
         "policy_loss::disco(disco_options::official(likelihood_ratio, log_sum_exp, kl_type)), delta/beta/tau from params"},
        {"disco/compute_policy_loss_discob_logL", pl::disco_score::log_likelihood, pl::disco_objective::mean_difference,
         "policy_loss::disco(disco_options::official(log_likelihood, mean_difference, kl_type)), delta/beta from params"},
        {"disco/compute_policy_loss_discob_Lratio", pl::disco_score::likelihood_ratio, pl::disco_objective::mean_difference,
         "policy_loss::disco(disco_options::official(likelihood_ratio, mean_difference, kl_type)), delta/beta from params"},
    };
    for (const auto& v : disco_variants)
        reg.add(v.name, {[v](const case_context& c, produced& out) { disco_case(c, out, v.score, v.objective); },
                         float64_path, std::string(v.what) + "; groups: uid-sorted rows cut into equal blocks, as upstream"});
    // The dispatch is mapped to what the scripts meant (DisCO with the L-ratio score); the deviation below
    // keeps it from being compared with upstream's TypeError.
    reg.add("disco/dp_actor_dispatch_disco_Lratio",
            {[](const case_context& c, produced& out) {
                 disco_case(c, out, pl::disco_score::likelihood_ratio, pl::disco_objective::log_sum_exp);
             },
             float64_path, "policy_loss::disco(disco_options::official(likelihood_ratio, log_sum_exp, kl_type))"});
    reg.deviations.push_back(
        {"disco/dp_actor_dispatch_disco_Lratio", "*", "disco_lratio_dispatch_typeerror",
         "upstream dp_actor maps grpo_type 'disco_Lratio' to compute_policy_loss_discob_Lratio(..., tau=tau), which takes "
         "no tau: a TypeError, so the released run_disco_Lratio scripts cannot run at bd2b078. posttrain has no dispatch "
         "table to reproduce; the L-ratio DisCO loss itself is disco(disco_options::official(likelihood_ratio, "
         "log_sum_exp)), checked against compute_policy_loss_disco_Lratio"});

    reg.add("trpa/compute_pairwise_policy_loss",
            {trpa_pairwise, float64_path,
             "policy_loss::trpa_pairwise_loss(trpa_options::official() with beta/anisotropy from params), groups = "
             "grouping::from_ids(id_tensor)"});
    reg.add("trpa/compute_trpa_outcome_advantage",
            {trpa_outcome, float64_path,
             "advantage::trpa_outcome_advantages, groups = grouping::from_string_ids(index); id_tensor = the groups "
             "numbered by first appearance"});
    reg.add("trpa/update_policy_trpa_objective",
            {trpa_update_policy, float64_path,
             "policy_loss::trpa(trpa_options::official() with beta/anisotropy/tr_kl_loss_coef/use_sqrt_trkl), minus "
             "entropy_coeff * aggregate(entropy) when config.entropy; kl_loss metric = kl_loss(log_prob, ref, "
             "trpa_options::trpa_kl())"});
}

}  // namespace conformance
