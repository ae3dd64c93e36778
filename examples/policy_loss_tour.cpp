// A tour of the fused policy-gradient loss (posttrain::policy_loss): one small, hand-checkable call
// per objective, correction and aggregation rule. The pages docs/algorithms/policy_loss.md,
// aggregation.md, ppo_clip.md, ... quote the blocks between the "// [name]" markers, and show the
// output this program prints.
//
// Every section uses the same batch: two responses of up to four tokens, the last token of the second
// response being padding. The first response has advantage +1, the second -1, and the log-ratios
// logp - old are chosen so that every kink of PPO's clip is visited:
//
//   row 0 (A = +1): log-ratio +0.1 (inside), +0.4 (above 1 + 0.2: clipped), -0.4 (below: not clipped
//                   for A > 0), 0
//   row 1 (A = -1): log-ratio +1.3 (ratio 3.67: above verl's dual clip 3), -0.5 (ratio 0.61, below
//                   1 - 0.2: clipped), 0, padding

#include <posttrain/posttrain.hpp>

#include <cstdint>
#include <cstdio>
#include <vector>

namespace pt = posttrain;
namespace pl = posttrain::policy_loss;

namespace {

constexpr pt::index_t B = 2, T = 4;

// The batch (row-major [B, T]).
const std::vector<double> lp   = {-1.0, -0.5, -2.0, -1.2,    -0.3, -0.9, -1.5, 0.0};
const std::vector<double> old  = {-1.1, -0.9, -1.6, -1.2,    -1.6, -0.4, -1.5, 0.0};
const std::vector<double> adv  = {+1.0, +1.0, +1.0, +1.0,    -1.0, -1.0, -1.0, -1.0};
const std::vector<double> mask = {1, 1, 1, 1,                1, 1, 1, 0};

pt::tensor_view<const double, 2> in(const std::vector<double>& v) { return pt::tensor_view<const double, 2>(v.data(), B, T); }
pt::tensor_view<double, 2> out(std::vector<double>& v) { return pt::tensor_view<double, 2>(v.data(), B, T); }

void print_rows(const char* label, const std::vector<double>& v) {
    for (pt::index_t i = 0; i < B; ++i) {
        std::printf("  %-16s", i == 0 ? label : "");
        for (pt::index_t t = 0; t < T; ++t) std::printf(" %+.6f", v[std::size_t(i * T + t)]);
        std::printf("\n");
    }
}

void print_loss(const char* label, const pl::loss_result& r) {
    std::printf("  %-16s loss %+.6f  clipped low/high %g/%g  dual %g  approx_kl %+.6f\n", label, r.loss,
                r.sums.clipped_low, r.sums.clipped_high, r.sums.dual_clipped, r.approx_kl());
}

void tour_policy_loss() {
    std::printf("policy_loss\n");
    // [policy_loss]
    std::vector<double> grad(B * T);
    pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), pl::options::verl());
    std::printf("  loss %.6f over %g tokens\n", r.loss, r.sums.tokens);
    print_rows("d loss / d lp", grad);  // padding gets 0
    std::printf("  clip fraction %.6f (low %.6f, high %.6f), dual clip fraction %.6f, approx_kl %.6f\n",
                r.clip_fraction(), r.clip_fraction_low(), r.clip_fraction_high(), r.dual_clip_fraction(), r.approx_kl());
    // verl logs masked means with 1e-8 added to the token count: pg_clipfrac is
    std::printf("  verl pg_clipfrac %.12f\n", (r.sums.clipped_low + r.sums.clipped_high) / (r.sums.tokens + 1e-8));

    // A KL term to a reference policy and an entropy bonus: the extras carry the inputs they need.
    const std::vector<double> ref = {-1.2, -0.6, -1.8, -1.0,    -0.5, -0.7, -1.5, 0.0};
    const std::vector<double> ent = {0.9, 1.4, 0.3, 2.0,        1.1, 0.6, 0.8, 0.0};
    pl::options o = pl::options::verl();
    o.kl_coef = 0.1;        // + 0.1 * KL(k3 as verl clamps it), aggregated like the loss
    o.entropy_coef = 0.01;  // - 0.01 * the aggregated entropy (its logits gradient: entropy.hpp)
    r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o,
                    {.ref_log_probs = in(ref), .entropies = in(ent)});
    std::printf("  policy %.6f + 0.1 * kl %.6f - 0.01 * entropy %.6f = loss %.6f\n", r.policy_loss, r.kl_loss,
                r.entropy_loss, r.loss);
    print_rows("d loss / d lp", grad);

    // exec::par runs rows on threads and gives the same bits.
    std::vector<double> grad_par(B * T);
    const pl::loss_result p = pl::compute(pt::exec::par, in(lp), in(old), in(adv), in(mask), out(grad_par), o,
                                          {.ref_log_probs = in(ref), .entropies = in(ent)});
    std::printf("  exec::par identical: %s\n", p.loss == r.loss && grad_par == grad ? "yes" : "no");
    // [policy_loss]
}

void tour_aggregation() {
    std::printf("aggregation\n");
    // [aggregation]
    // One loss matrix, the five modes: rows have 4 and 3 valid tokens.
    const std::vector<double> L = {1, 2, 3, 4,    10, 20, 30, 99};  // 99 sits on padding: never read
    std::vector<double> g(B * T);
    const char* names[] = {"token_mean", "token_sum", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"};
    for (int m = 0; m < 5; ++m) {
        const pl::aggregate_result a = pl::aggregate(pt::exec::seq, in(L), in(mask), out(g), {.mode = pl::aggregation(m)});
        std::printf("  %-24s loss %9.4f = sum / %g; token weights row 0 %.4f, row 1 %.4f\n", names[m], a.loss,
                    a.divisor, g[0], g[4]);
    }

    // Data parallelism: rank 0 holds one response of 6 tokens (loss 1 each), rank 1 two responses of
    // 1 token (loss 0). The step's token mean is 6 / 8 = 0.75; the trainer averages the two ranks.
    const std::vector<double> L0 = {1, 1, 1, 1, 1, 1}, m0 = {1, 1, 1, 1, 1, 1};
    const std::vector<double> L1 = {0, 0}, m1 = {1, 1};
    const pt::tensor_view<const double, 2> vL0(L0.data(), 1, 6), vm0(m0.data(), 1, 6), vL1(L1.data(), 2, 1), vm1(m1.data(), 2, 1);
    std::vector<double> g0(6), g1(2);
    // Each rank divides by its own tokens: the average is 0.5 and a token of rank 1 weighs 3x one of rank 0.
    double l0 = pl::aggregate(pt::exec::seq, vL0, vm0, pt::tensor_view<double, 2>(g0.data(), 1, 6)).loss;
    double l1 = pl::aggregate(pt::exec::seq, vL1, vm1, pt::tensor_view<double, 2>(g1.data(), 2, 1)).loss;
    std::printf("  local token mean : (%.4f + %.4f) / 2 = %.4f; token weights %.4f (rank 0), %.4f (rank 1)\n", l0, l1,
                (l0 + l1) / 2, g0[0] / 2, g1[0] / 2);
    // Global normalizers: all-reduce count_tokens, divide by the step's tokens, multiply by the world size.
    const double tokens = pl::count_tokens(pt::exec::seq, vm0).tokens + pl::count_tokens(pt::exec::seq, vm1).tokens;
    const pl::aggregation_options global{.mode = pl::aggregation::token_mean, .global_tokens = tokens, .multiplier = 2};
    l0 = pl::aggregate(pt::exec::seq, vL0, vm0, pt::tensor_view<double, 2>(g0.data(), 1, 6), global).loss;
    l1 = pl::aggregate(pt::exec::seq, vL1, vm1, pt::tensor_view<double, 2>(g1.data(), 2, 1), global).loss;
    std::printf("  global token mean: (%.4f + %.4f) / 2 = %.4f; token weights %.4f (rank 0), %.4f (rank 1)\n", l0, l1,
                (l0 + l1) / 2, g0[0] / 2, g1[0] / 2);
    // [aggregation]
}

void tour_ppo_clip() {
    std::printf("ppo_clip\n");
    // [ppo_clip]
    std::vector<double> grad(B * T);
    // verl: dual clip 3 caps the first token of row 1 at -3 * A = 3 (gradient 0 there).
    pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), pl::options::verl());
    print_loss("verl", r);
    print_rows("grad", grad);

    // OpenRLHF: no dual clip, so that token costs its ratio 3.669 and keeps a gradient.
    r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), pl::options::openrlhf());
    print_loss("openrlhf", r);
    print_rows("grad", grad);

    // TRL "dapo": a token mean over num_items_in_batch, the token count of the whole generation batch
    // (here this batch: 7). Without it the divisor is 1.
    r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad),
                    pl::options::trl(pl::options::trl_loss::dapo, 0, 1, /*num_items_in_batch=*/7));
    print_loss("trl dapo", r);

    // Clip-higher (DAPO's 0.28) and TRL's two-sided delta: the unclipped ratio is capped at delta.
    pl::options o = pl::options::trl(pl::options::trl_loss::grpo);
    o.clip_high = 0.28;
    o.delta = 1.5;
    r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o);
    print_loss("trl grpo delta", r);
    print_rows("grad", grad);
    // [ppo_clip]
}

void tour_gspo() {
    std::printf("gspo\n");
    // [gspo]
    // Sequence ratios: exp(mean log-ratio) = exp(0.025) for row 0 and exp(0.8 / 3) for row 1.
    std::vector<double> grad(B * T);
    pl::options o = pl::options::trl(pl::options::trl_loss::grpo);
    o.level = pl::ratio_level::sequence;  // TRL importance_sampling_level="sequence": gradient through the mean
    pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o);
    std::printf("  %-16s loss %+.6f  ratio row 0 %.6f, row 1 %.6f\n", "trl sequence", r.loss, r.ratio_min, r.ratio_max);
    print_rows("grad", grad);

    // verl gspo: the same sequence ratio as a value, each token's own log-prob for the gradient.
    o = pl::options::verl_gspo();
    o.clip_low = o.clip_high = 0.2;  // (verl_gspo() keeps the paper's 3e-4 / 4e-4)
    r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o);
    std::printf("  %-16s loss %+.6f\n", "verl gspo", r.loss);
    print_rows("grad", grad);

    // TRL "luspo": sequence ratios, each sequence's loss weighted by its length.
    r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), pl::options::trl(pl::options::trl_loss::luspo));
    std::printf("  %-16s loss %+.6f\n", "trl luspo", r.loss);
    print_rows("grad", grad);

    // The two sequence forms agree unless a per-token weight varies inside a row: with is_weights the
    // sequence form spreads the row's weighted sum evenly, sequence_token weights each token's own term.
    const std::vector<double> w = {1.0, 2.0, 0.5, 1.0,    1.2, 0.8, 1.0, 0.0};
    o = pl::options::trl(pl::options::trl_loss::grpo);
    for (pl::ratio_level level : {pl::ratio_level::sequence, pl::ratio_level::sequence_token}) {
        o.level = level;
        r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o, {.is_weights = in(w)});
        std::printf("  %-16s loss %+.6f\n", level == pl::ratio_level::sequence ? "sequence, w" : "seq_token, w", r.loss);
        print_rows("grad", grad);
    }
    // [gspo]
}

void tour_cispo() {
    std::printf("cispo\n");
    // [cispo]
    std::vector<double> grad(B * T);
    // verl: -sg(clamp(r, 0.8, 1.2)) A logp.
    pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad),
                                    pl::options::verl(pl::objective::cispo));
    print_loss("verl cispo", r);
    print_rows("grad", grad);  // = -clamp(r) A / 7: the weight survives where PPO's clip would zero it
    // TRL: -sg(min(r, 5)) A logp, a token mean over num_items_in_batch.
    r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad),
                    pl::options::trl(pl::options::trl_loss::cispo, 0, 1, 7));
    std::printf("  %-16s loss %+.6f  cispo_clip_ratio %g\n", "trl cispo", r.loss, r.sums.clipped_high_positive / r.sums.tokens);
    print_rows("grad", grad);
    // [cispo]
}

void tour_sapo() {
    std::printf("sapo\n");
    // [sapo]
    std::vector<double> grad(B * T);
    // -A sigmoid(tau (r - 1)) 4 / tau, tau = 1 for A > 0 and 1.05 otherwise; per-sequence token means.
    pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad),
                                    pl::options::verl(pl::objective::sapo));
    std::printf("  %-16s loss %+.6f\n", "verl sapo", r.loss);
    print_rows("grad", grad);
    r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), pl::options::trl(pl::options::trl_loss::sapo));
    std::printf("  %-16s loss %+.6f\n", "trl sapo", r.loss);
    // [sapo]
}

void tour_gmpo() {
    std::printf("gmpo\n");
    // [gmpo]
    std::vector<double> grad(B * T);
    pl::options o = pl::options::verl(pl::objective::gmpo);
    o.clip_low = o.clip_high = 0.4;  // the log-ratio window (-0.4, 0.4) of the GMPO paper
    const pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o);
    std::printf("  %-16s loss %+.6f  clipped low/high %g/%g  sequence ratios %.6f, %.6f\n", "verl geo_mean", r.loss,
                r.sums.clipped_low, r.sums.clipped_high, r.ratio_min, r.ratio_max);
    print_rows("grad", grad);
    // [gmpo]
}

void tour_policy_gradient() {
    std::printf("policy_gradient\n");
    // [policy_gradient]
    std::vector<double> grad(B * T);
    // verl "gpg": -A logp, no ratio.
    pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad),
                                    pl::options::verl(pl::objective::policy_gradient));
    std::printf("  %-16s loss %+.6f\n", "gpg", r.loss);
    print_rows("grad", grad);

    // REINFORCE with truncated importance weights from the rollout engine's log-probs (verl bypass mode:
    // old_log_probs are the rollout's, the weights come in precomputed through is_weights).
    const std::vector<double> w = {1.0, 2.0, 0.5, 1.0,    1.2, 0.8, 1.0, 0.0};
    r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad),
                    pl::options::verl(pl::objective::policy_gradient), {.is_weights = in(w)});
    std::printf("  %-16s loss %+.6f\n", "reinforce + is", r.loss);
    print_rows("grad", grad);

    // TOPR: -A logp for A > 0, -sg(clamp(r, 0, 1)) A logp otherwise.
    pl::options o;
    o.loss = pl::objective::topr;
    r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o);
    std::printf("  %-16s loss %+.6f\n", "topr", r.loss);
    print_rows("grad", grad);
    // [policy_gradient]
}

void tour_dro() {
    std::printf("dro\n");
    // [dro]
    std::vector<double> grad(B * T);
    pl::options o = pl::options::verl(pl::objective::dro);
    o.dro_beta = 0.1;  // -A logp + 0.1 / 2 (logp - old)^2
    const pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o);
    std::printf("  %-16s loss %+.6f\n", "dro", r.loss);
    print_rows("grad", grad);  // -A + 0.1 (logp - old), over 7 tokens
    // [dro]
}

void tour_clip_cov() {
    std::printf("clip_cov\n");
    // [clip_cov]
    // Covariance of each valid token: (A - mean A) (logp - mean logp). Clip-Cov removes the gradient of
    // a random subset of the tokens whose covariance lies in (lower, upper) and that PPO did not clip.
    std::vector<double> grad(B * T);
    pl::options o = pl::options::verl(pl::objective::clip_cov);
    o.clip_cov_lower = 0.0, o.clip_cov_upper = 5.0;  // (verl's default window is (1, 5))
    o.cov_ratio = 0.2;                                // int(0.2 * 7) = 1 token out of the candidates
    for (std::uint64_t seed : {0, 1, 2}) {
        o.seed = seed;  // the subset is a pure function of the seed and the batch
        const pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o);
        std::printf("  clip_cov seed %llu  loss %+.6f  selected %g\n", (unsigned long long)seed, r.loss, r.sums.selected);
        print_rows("grad", grad);
    }
    // KL-Cov: the top-k covariance tokens (ties: lower index first) get + coef |logp - old|; no clip.
    o = pl::options::verl(pl::objective::kl_cov);
    o.cov_ratio = 0.3, o.kl_cov_coef = 1.0;
    const pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o);
    std::printf("  kl_cov          loss %+.6f  selected %g  verl ppo_kl %.6f\n", r.loss, r.sums.selected,
                r.sums.abs_log_ratio / (r.sums.tokens + 1e-8));
    print_rows("grad", grad);
    // [clip_cov]
}

void tour_dppo() {
    std::printf("dppo\n");
    // [dppo]
    // A token leaves the loss when its probability moved too far from the old one (in the direction the
    // advantage pushes); the others get -A sg(min(r, 3)) logp.
    std::vector<double> grad(B * T);
    pl::options o = pl::options::verl(pl::objective::dppo_tv);
    o.clip_low = 0.2, o.clip_high = 0.1;  // trust region: p - p_old <= 0.1 for A > 0, >= -0.2 for A < 0
    pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o);
    print_loss("dppo_tv", r);
    print_rows("grad", grad);
    o.loss = pl::objective::dppo_kl;  // binary KL between Bernoulli(p_old) and Bernoulli(p)
    o.clip_low = 0.05, o.clip_high = 0.1;
    r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o);
    print_loss("dppo_kl", r);
    print_rows("grad", grad);
    // [dppo]
}

void tour_vespo() {
    std::printf("vespo\n");
    // [vespo]
    // phi(w) = exp(lambda + k log w - lambda w) on the sequence weight w = exp(sum_t log r), (k, lambda) =
    // (2, 3) for A >= 0 and (3, 2) otherwise; the loss is -phi A logp with phi detached.
    std::vector<double> grad(B * T);
    const pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad),
                                          pl::options::trl(pl::options::trl_loss::vespo, 0, 1, 7));
    std::printf("  %-16s loss %+.6f  phi_seq_mean %.6f\n", "trl vespo", r.loss, r.phi_mean);
    print_rows("grad", grad);
    // [vespo]
}

void tour_mismatch() {
    std::printf("mismatch\n");
    // [mismatch]
    // The inference engine's log-probs of the sampled tokens differ from the trainer's old ones.
    // old - rollout: row 0 {0, 0.9, 0, -0.2} (sum 0.7), row 1 {-1.4, -0.1, -0.1} (sum -1.6).
    const std::vector<double> rollout = {-1.1, -1.8, -1.6, -1.0,    -0.2, -0.3, -1.4, 0.0};
    std::vector<double> grad(B * T);
    const pl::correction modes[] = {pl::correction::token_truncate, pl::correction::token_mask,
                                    pl::correction::sequence_truncate, pl::correction::sequence_mask,
                                    pl::correction::sequence_mask_token_weights};
    const char* names[] = {"token_truncate", "token_mask", "sequence_truncate", "sequence_mask", "seq_mask_token_w"};
    for (int k = 0; k < 5; ++k) {
        pl::options o = pl::options::verl();
        o.mismatch = {.mode = modes[k], .lower = 0.5, .upper = 2.0};
        const pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o,
                                              {.rollout_log_probs = in(rollout)});
        std::printf("  %-18s loss %+.6f\n", names[k], r.loss);
        print_rows("grad", grad);
    }

    // OPSM (TRL off_policy_mask_threshold): drop the negative-advantage sequences whose
    // mean(rollout - logp) exceeds the threshold. Row 1: mean(0.1, 0.6, 0.1) = 0.267 > 0.1: dropped.
    pl::options o = pl::options::trl(pl::options::trl_loss::grpo);
    o.off_policy_threshold = 0.1;
    pl::loss_result r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o,
                                    {.rollout_log_probs = in(rollout)});
    std::printf("  %-18s loss %+.6f  kept %g of %g tokens\n", "opsm 0.1", r.loss, r.sums.kept, r.sums.tokens);

    // Top-entropy mask (the 80/20 rule): keep the tokens whose entropy is in the top 50%.
    const std::vector<double> ent = {0.9, 1.4, 0.3, 2.0,    1.1, 0.6, 0.8, 0.0};
    o = pl::options::trl(pl::options::trl_loss::grpo);
    o.top_entropy_quantile = 0.5;
    r = pl::compute(pt::exec::seq, in(lp), in(old), in(adv), in(mask), out(grad), o, {.entropies = in(ent)});
    std::printf("  %-18s loss %+.6f  kept %g of %g tokens\n", "top entropy 0.5", r.loss, r.sums.kept, r.sums.tokens);
    print_rows("grad", grad);
    // [mismatch]
}

}  // namespace

int main() {
    tour_policy_loss();
    tour_aggregation();
    tour_ppo_clip();
    tour_gspo();
    tour_cispo();
    tour_sapo();
    tour_gmpo();
    tour_policy_gradient();
    tour_dro();
    tour_clip_cov();
    tour_dppo();
    tour_vespo();
    tour_mismatch();
}
