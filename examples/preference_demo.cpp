// preference_demo: a small synthetic preference problem trained with preference::dpo and SimPO.
//
// The world: P prompts; every prompt x has K candidate responses, each a short token sequence
// (1 to 4 content tokens from a vocabulary of V - 1, then EOS). A hidden utility
//
//     u(x, y) = mean over the content tokens of a_x[y_t]        (a_x[v] ~ N(0, 1), one table per prompt)
//
// labels every pair of candidates of a prompt: the response with the higher utility is chosen. The
// utility is a mean, so length by itself is neither good nor bad. The first K - 2 = 6 candidates of every
// prompt give the training pairs (up to 15 per prompt; ties get no label); the pairs that involve one of
// the last two candidates (up to 13 per prompt) are held out: the policy never trains on those responses.
//
// The policy is a linear softmax over the next token, with a prompt-specific and a bigram part:
//
//     logit(x, prev, v) = theta[x][v] + phi[prev][v]        (prev = the previous token, or BOS)
//     log pi(y_t | x, y_<t) = logit(x, y_{t-1}, y_t) - logsumexp_v logit(x, y_{t-1}, v)
//
// The example computes the per-token log-probs of every response and, by hand, their gradient with
// respect to theta and phi (d log pi / d logit_v = [v == y_t] - softmax_v). posttrain does the rest:
// preference::dpo reads the per-token log-probs with their masks (sequence_input::tokens), the frozen
// reference is the initial policy (its sequence sums cached once with sequence_log_probs), and dpo()
// writes d loss / d (token log-probs) into [B, T] views; the example chains that through the softmax
// and takes a plain gradient step. The same problem is trained twice from the same initial policy:
// DPO (dpo_options::trl(), beta 0.1) and SimPO (dpo_options::simpo(): reference-free, length-averaged,
// beta 2, gamma 0.5).
//
// Printed per iteration: the loss, TRL's rewards/accuracies and rewards/margins on the training
// pairs, and the held-out preference accuracy: the fraction of held-out pairs where the policy gives
// the better response the higher sequence log-prob (sum) — and, for SimPO's sake, the higher mean
// token log-prob.
//
// Usage: preference_demo [--iterations N] [--csv PATH] [--seed S]
// Deterministic: std::mt19937_64 (fixed by the standard) with the sampling done here, full-batch
// updates, and posttrain's fixed-order sums.

#include <posttrain/posttrain.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace pt = posttrain;
namespace pref = posttrain::preference;

namespace {

struct config {
    int prompts = 40;     // P
    int candidates = 8;   // K responses per prompt: 0..K-3 train, the last two held out
    int vocab = 8;        // V: token 0 is EOS, 1..7 are content tokens
    int max_content = 4;  // content tokens per response: 1..max_content (T = max_content + 1 with EOS)
    int iterations = 200;
    double lr_dpo = 80.0;    // plain gradient steps on the mean loss (a parameter sees 1 / P of the pairs)
    double lr_simpo = 15.0;
    std::uint64_t seed = 7;
    std::string csv = "preference_demo.csv";
};

double uniform01(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }
int uniform_int(std::mt19937_64& rng, int n) { return int(rng() % std::uint64_t(n)); }
// Box-Muller from two uniforms (portable, unlike std::normal_distribution).
double normal(std::mt19937_64& rng) {
    const double u1 = 1.0 - uniform01(rng), u2 = uniform01(rng);
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

struct response {
    int prompt = 0;
    std::vector<int> tokens;  // content tokens then EOS (0)
    double utility = 0;
};

struct pair_ref {
    int chosen = 0, rejected = 0;  // indices into the response list
};

struct problem {
    int P = 0, K = 0, V = 0, T = 0;
    std::vector<response> responses;  // [P * K]
    std::vector<pair_ref> train, heldout;
};

problem make_problem(const config& c) {
    problem pb{c.prompts, c.candidates, c.vocab, c.max_content + 1, {}, {}, {}};
    std::mt19937_64 rng(c.seed);
    for (int x = 0; x < pb.P; ++x) {
        std::vector<double> a(std::size_t(pb.V));
        for (int v = 1; v < pb.V; ++v) a[std::size_t(v)] = normal(rng);
        for (int k = 0; k < pb.K; ++k) {
            response r;
            r.prompt = x;
            const int n = 1 + uniform_int(rng, c.max_content);
            for (int t = 0; t < n; ++t) {
                const int v = 1 + uniform_int(rng, pb.V - 1);
                r.tokens.push_back(v);
                r.utility += a[std::size_t(v)] / n;
            }
            r.tokens.push_back(0);
            pb.responses.push_back(r);
        }
        for (int i = 0; i < pb.K; ++i)
            for (int j = i + 1; j < pb.K; ++j) {
                const int ri = x * pb.K + i, rj = x * pb.K + j;
                if (pb.responses[std::size_t(ri)].utility == pb.responses[std::size_t(rj)].utility) continue;  // a tie: no label
                const bool i_better = pb.responses[std::size_t(ri)].utility > pb.responses[std::size_t(rj)].utility;
                const pair_ref p{i_better ? ri : rj, i_better ? rj : ri};
                (j < pb.K - 2 ? pb.train : pb.heldout).push_back(p);
            }
    }
    return pb;
}

// logit(x, prev, v) = theta[x][v] + phi[prev][v]; prev = V stands for BOS.
struct policy {
    int P = 0, V = 0;
    std::vector<double> theta;  // [P, V]
    std::vector<double> phi;    // [V + 1, V]

    void probs(int x, int prev, double* p) const {
        double mx = -1e300;
        for (int v = 0; v < V; ++v) mx = std::max(mx, theta[std::size_t(x * V + v)] + phi[std::size_t(prev * V + v)]);
        double z = 0;
        for (int v = 0; v < V; ++v) z += p[v] = std::exp(theta[std::size_t(x * V + v)] + phi[std::size_t(prev * V + v)] - mx);
        for (int v = 0; v < V; ++v) p[v] /= z;
    }
    // Per-token log-probs of a response into row[0..T) (0 past its end; the mask says which count).
    void token_log_probs(const response& r, double* row, int T) const {
        std::vector<double> p(static_cast<std::size_t>(V));
        int prev = V;
        for (int t = 0; t < T; ++t) {
            if (t < int(r.tokens.size())) {
                probs(r.prompt, prev, p.data());
                row[t] = std::log(p[std::size_t(r.tokens[std::size_t(t)])]);
                prev = r.tokens[std::size_t(t)];
            } else {
                row[t] = 0;
            }
        }
    }
    // Adds sum_t g[t] * d log pi(y_t) / d (theta, phi) into (dtheta, dphi).
    void backward(const response& r, const double* g, double* dtheta, double* dphi) const {
        std::vector<double> p(static_cast<std::size_t>(V));
        int prev = V;
        for (std::size_t t = 0; t < r.tokens.size(); ++t) {
            const int y = r.tokens[t];
            if (g[t] != 0) {
                probs(r.prompt, prev, p.data());
                for (int v = 0; v < V; ++v) {
                    const double d = g[t] * ((v == y ? 1.0 : 0.0) - p[std::size_t(v)]);
                    dtheta[r.prompt * V + v] += d;
                    dphi[prev * V + v] += d;
                }
            }
            prev = y;
        }
    }
};

policy initial_policy(const config& c) {
    policy pi{c.prompts, c.vocab, std::vector<double>(std::size_t(c.prompts * c.vocab)),
              std::vector<double>(std::size_t((c.vocab + 1) * c.vocab))};
    std::mt19937_64 rng(c.seed ^ 0x5851f42d4c957f2dull);
    for (double& w : pi.theta) w = 0.5 * normal(rng);
    for (double& w : pi.phi) w = 0.5 * normal(rng);
    return pi;
}

// The [B, T] per-token log-probs and masks of one side (chosen or rejected) of a list of pairs.
struct side {
    std::vector<double> logp;
    std::vector<std::uint8_t> mask;
};

side build_side(const problem& pb, const policy& pi, const std::vector<pair_ref>& pairs, bool chosen) {
    const std::size_t B = pairs.size(), T = std::size_t(pb.T);
    side s{std::vector<double>(B * T), std::vector<std::uint8_t>(B * T)};
    for (std::size_t b = 0; b < B; ++b) {
        const response& r = pb.responses[std::size_t(chosen ? pairs[b].chosen : pairs[b].rejected)];
        pi.token_log_probs(r, &s.logp[b * T], pb.T);
        for (std::size_t t = 0; t < T; ++t) s.mask[b * T + t] = t < r.tokens.size() ? 1 : 0;
    }
    return s;
}

pt::tensor_view<const double, 2> view(const std::vector<double>& x, const problem& pb) {
    return pt::tensor_view<const double, 2>(x.data(), pt::index_t(x.size()) / pb.T, pt::index_t(pb.T));
}
pt::tensor_view<const std::uint8_t, 2> view(const std::vector<std::uint8_t>& x, const problem& pb) {
    return pt::tensor_view<const std::uint8_t, 2>(x.data(), pt::index_t(x.size()) / pb.T, pt::index_t(pb.T));
}

// Sequence sums and lengths of one side, through posttrain's reduction.
void sequence_sums(const problem& pb, const side& s, std::vector<double>& sums, std::vector<double>& lengths) {
    const std::size_t B = s.logp.size() / std::size_t(pb.T);
    sums.assign(B, 0.0);
    lengths.assign(B, 0.0);
    pref::sequence_log_probs(pt::exec::seq, view(s.logp, pb), view(s.mask, pb), sums, lengths);
}

// Held-out preference accuracy: better response has the higher sum (and, second, mean) log-prob.
void heldout_accuracy(const problem& pb, const policy& pi, double& by_sum, double& by_mean) {
    const side w = build_side(pb, pi, pb.heldout, true), l = build_side(pb, pi, pb.heldout, false);
    std::vector<double> sw, nw, sl, nl;
    sequence_sums(pb, w, sw, nw);
    sequence_sums(pb, l, sl, nl);
    double a = 0, b = 0;
    for (std::size_t i = 0; i < sw.size(); ++i) {
        a += sw[i] > sl[i] ? 1.0 : 0.0;
        b += sw[i] / nw[i] > sl[i] / nl[i] ? 1.0 : 0.0;
    }
    by_sum = a / double(sw.size());
    by_mean = b / double(sw.size());
}

struct record {
    int iteration = 0;
    double loss = 0, accuracy = 0, margin = 0, heldout_sum = 0, heldout_mean = 0;
};

// Trains one method from the initial policy; records[t] is measured before update t (the last one
// after the final update, without a loss).
std::vector<record> train(const config& c, const problem& pb, bool simpo) {
    policy pi = initial_policy(c);
    const std::size_t B = pb.train.size(), T = std::size_t(pb.T);

    // The frozen reference: the initial policy's sequence sums, cached once.
    const side ref_w = build_side(pb, pi, pb.train, true), ref_l = build_side(pb, pi, pb.train, false);
    std::vector<double> ref_sw, ref_nw, ref_sl, ref_nl;
    sequence_sums(pb, ref_w, ref_sw, ref_nw);
    sequence_sums(pb, ref_l, ref_sl, ref_nl);

    const pref::dpo_options opts = simpo ? pref::dpo_options::simpo() : pref::dpo_options::trl(pref::pair_loss::sigmoid, 0.1);
    const double lr = simpo ? c.lr_simpo : c.lr_dpo;
    std::vector<double> grad_w(B * T), grad_l(B * T);
    std::vector<double> dtheta(pi.theta.size()), dphi(pi.phi.size());
    std::vector<record> out;
    for (int it = 0; it <= c.iterations; ++it) {
        record rec;
        rec.iteration = it;
        heldout_accuracy(pb, pi, rec.heldout_sum, rec.heldout_mean);
        if (it == c.iterations) {
            out.push_back(rec);
            break;
        }
        const side w = build_side(pb, pi, pb.train, true), l = build_side(pb, pi, pb.train, false);
        const auto chosen = pref::sequence_input::tokens(view(w.logp, pb), view(w.mask, pb));
        const auto rejected = pref::sequence_input::tokens(view(l.logp, pb), view(l.mask, pb));
        const pt::tensor_view<double, 2> gw(grad_w.data(), pt::index_t(B), pt::index_t(T));
        const pt::tensor_view<double, 2> gl(grad_l.data(), pt::index_t(B), pt::index_t(T));
        const pref::dpo_result r =
            simpo ? pref::simpo(pt::exec::seq, chosen, rejected, gw, gl, opts)
                  : pref::dpo(pt::exec::seq, chosen, rejected, pref::sequence_input::sums(ref_sw),
                              pref::sequence_input::sums(ref_sl), gw, gl, opts);
        rec.loss = r.loss;
        rec.accuracy = r.metrics.accuracy;
        rec.margin = r.metrics.margin;
        out.push_back(rec);

        // d loss / d token log-probs -> d loss / d (theta, phi), then a gradient step.
        std::fill(dtheta.begin(), dtheta.end(), 0.0);
        std::fill(dphi.begin(), dphi.end(), 0.0);
        for (std::size_t b = 0; b < B; ++b) {
            pi.backward(pb.responses[std::size_t(pb.train[b].chosen)], &grad_w[b * T], dtheta.data(), dphi.data());
            pi.backward(pb.responses[std::size_t(pb.train[b].rejected)], &grad_l[b * T], dtheta.data(), dphi.data());
        }
        for (std::size_t k = 0; k < dtheta.size(); ++k) pi.theta[k] -= lr * dtheta[k];
        for (std::size_t k = 0; k < dphi.size(); ++k) pi.phi[k] -= lr * dphi[k];
    }
    return out;
}

void print_run(const char* title, const std::vector<record>& rs, int every) {
    std::printf("%s\n", title);
    std::printf("%9s  %9s  %10s  %10s  %12s  %13s\n", "iteration", "loss", "train acc", "margin", "heldout(sum)",
                "heldout(mean)");
    for (const record& r : rs) {
        const bool last = &r == &rs.back();
        if (r.iteration % every != 0 && !last && &r != &rs[rs.size() - 2]) continue;
        if (last)
            std::printf("%9d  %9s  %10s  %10s  %12.4f  %13.4f\n", r.iteration, "", "", "", r.heldout_sum, r.heldout_mean);
        else
            std::printf("%9d  %9.5f  %10.4f  %+10.4f  %12.4f  %13.4f\n", r.iteration, r.loss, r.accuracy, r.margin,
                        r.heldout_sum, r.heldout_mean);
    }
    std::printf("\n");
}

// 0: run; otherwise the exit status (0 after --help, 2 after a bad argument).
int parse_args(int argc, char** argv, config& c, bool& run) {
    run = true;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        if (a == "--csv" && has_value) c.csv = argv[++i];
        else if (a == "--iterations" && has_value) c.iterations = std::max(1, std::atoi(argv[++i]));
        else if (a == "--seed" && has_value) c.seed = std::strtoull(argv[++i], nullptr, 10);
        else {
            run = false;
            const bool help = a == "--help" || a == "-h";
            std::fprintf(help ? stdout : stderr, "usage: %s [--iterations N] [--csv PATH] [--seed S]\n", argv[0]);
            return help ? 0 : 2;
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    config c;
    bool run = true;
    if (const int status = parse_args(argc, argv, c, run); !run) return status;

    const problem pb = make_problem(c);
    std::printf("preference demo: %d prompts x %d candidates (tokens over %d symbols + EOS, 1-%d content tokens),\n"
                "%zu training pairs (candidates 0-%d), %zu held-out pairs (those with candidate %d or %d), seed %llu\n"
                "policy: logit(x, prev, v) = theta[x][v] + phi[prev][v]; reference = the initial policy\n\n",
                c.prompts, c.candidates, c.vocab - 1, c.max_content, pb.train.size(), c.candidates - 3, pb.heldout.size(),
                c.candidates - 2, c.candidates - 1,
                static_cast<unsigned long long>(c.seed));

    const std::vector<record> dpo_run = train(c, pb, false);
    const std::vector<record> simpo_run = train(c, pb, true);
    const int every = std::max(1, c.iterations / 10);
    print_run("DPO (dpo_options::trl(), beta 0.1; rewards beta * (S - S_ref))", dpo_run, every);
    print_run("SimPO (dpo_options::simpo(), beta 2, gamma 0.5; rewards beta * S / n)", simpo_run, every);
    std::printf("(train acc / margin: TRL's rewards/accuracies and rewards/margins, before the update; heldout: the\n"
                " fraction of held-out pairs where the better response has the higher sum / mean token log-prob)\n");

    std::ofstream csv(c.csv);
    if (!csv) {
        std::fprintf(stderr, "preference_demo: cannot write %s\n", c.csv.c_str());
        return 1;
    }
    csv << "iteration,method,loss,reward_accuracy,reward_margin,heldout_accuracy_sum,heldout_accuracy_mean\n";
    char line[192];
    for (int m = 0; m < 2; ++m)
        for (const record& r : m == 0 ? dpo_run : simpo_run) {
            if (r.iteration == c.iterations) {
                std::snprintf(line, sizeof line, "%d,%s,,,,%.6f,%.6f\n", r.iteration, m == 0 ? "dpo" : "simpo", r.heldout_sum,
                              r.heldout_mean);
            } else {
                std::snprintf(line, sizeof line, "%d,%s,%.6f,%.6f,%.6f,%.6f,%.6f\n", r.iteration, m == 0 ? "dpo" : "simpo", r.loss,
                              r.accuracy, r.margin, r.heldout_sum, r.heldout_mean);
            }
            csv << line;
        }
    std::printf("\nwrote %s\n", c.csv.c_str());
    return 0;
}
