// bandit_demo: a contextual bandit trained with posttrain's outcome advantages.
//
// The "model" is a table of logits: P prompts, each with K candidate answers, and a softmax over the
// K logits of a prompt is the policy. Some answers of every prompt are correct (reward 1), the others
// are not (reward 0): a verifiable 0/1 reward, as in RL on maths or code. Each iteration samples G
// answers per prompt (a group), scores them, turns the rewards into advantages with posttrain over
// uniform_groups{G}, and takes one REINFORCE step on the logits:
//
//     logits[p] += lr / G * sum_{i in group p} A_i * (onehot(answer_i) - softmax(logits[p]))
//
// (onehot - probs is the gradient of log softmax). No critic, no ratio clipping: with one update per
// batch the PPO ratio is 1, so the clipped objective reduces to this plain policy gradient.
//
// The same problem is trained five times, once per estimator, each starting from the same logits and
// the same random stream. The printed table and the CSV report the policy's mean reward: the
// probability that it answers correctly, averaged over prompts (the exact expectation, not a sample).
//
// A second part trains a token-level policy with the fused PPO-clip loss (policy_loss::compute): see
// "Part 2" below. It prints the mean reward, the clip fraction and the approximate KL per iteration.
//
// Usage: bandit_demo [--csv PATH] [--iterations N] [--ppo-iterations N] [--seed S]
// Everything is seeded; the output is identical run to run and machine to machine (the random numbers
// come from std::mt19937_64, whose output the standard fixes, and the sampling is done here rather than
// by std::*_distribution, whose algorithms vary between standard libraries).

#include <posttrain/posttrain.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace pt = posttrain;
namespace adv = posttrain::advantage;

namespace {

struct config {
    int prompts = 64;        // P
    int answers = 16;        // K candidate answers per prompt
    int group = 8;           // G samples per prompt per iteration
    int iterations = 120;
    int ppo_iterations = 40;  // part 2
    double learning_rate = 0.5;
    std::uint64_t seed = 2025;
    std::string csv = "bandit_demo.csv";
};

// Uniform double in [0, 1) from the top 53 bits of one draw.
double uniform01(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }

// Integer in [0, n) (n small; the modulo bias is irrelevant here and the result is portable).
int uniform_int(std::mt19937_64& rng, int n) { return int(rng() % std::uint64_t(n)); }

struct problem {
    int P = 0, K = 0;
    std::vector<unsigned char> correct;  // [P, K] row-major, 1 = a correct answer
};

// Every prompt gets 1 to 3 correct answers out of K, so a uniform policy starts at about 12% reward
// and many groups of 8 samples are all wrong (zero variance: no GRPO signal).
problem make_problem(const config& c) {
    problem pb{c.prompts, c.answers, std::vector<unsigned char>(std::size_t(c.prompts) * c.answers, 0)};
    std::mt19937_64 rng(c.seed);
    for (int p = 0; p < c.prompts; ++p) {
        const int n_correct = 1 + uniform_int(rng, 3);
        for (int placed = 0; placed < n_correct;) {
            const int a = uniform_int(rng, c.answers);
            unsigned char& slot = pb.correct[std::size_t(p) * c.answers + a];
            if (!slot) {
                slot = 1;
                ++placed;
            }
        }
    }
    return pb;
}

void softmax(const double* logits, int K, double* probs) {
    const double mx = *std::max_element(logits, logits + K);
    double z = 0;
    for (int k = 0; k < K; ++k) z += probs[k] = std::exp(logits[k] - mx);
    for (int k = 0; k < K; ++k) probs[k] /= z;
}

// Inverse-CDF sampling from a categorical distribution.
int sample(const double* probs, int K, std::mt19937_64& rng) {
    const double u = uniform01(rng);
    double cdf = 0;
    for (int k = 0; k < K - 1; ++k) {
        cdf += probs[k];
        if (u < cdf) return k;
    }
    return K - 1;
}

// rewards[N] (N = P*G, group p = rows p*G .. p*G+G-1) -> advantages[N].
using estimator_fn = std::function<void(const std::vector<double>& rewards, std::vector<double>& advantages)>;

struct estimator {
    const char* name;
    estimator_fn advantages;
};

std::vector<estimator> make_estimators(int G) {
    const pt::uniform_groups groups{G};
    return {
        // GRPO: (r - group mean) / (group std + 1e-6), unbiased std; all-equal groups give 0.
        {"grpo", [=](const std::vector<double>& r, std::vector<double>& a) {
             (void)adv::grpo(pt::exec::seq, r, groups, a);
         }},
        // Dr. GRPO: r - group mean, no division by the std (removes the difficulty bias).
        {"dr_grpo", [=](const std::vector<double>& r, std::vector<double>& a) {
             (void)adv::grpo(pt::exec::seq, r, groups, a, adv::grpo_options::dr_grpo());
         }},
        // RLOO: r - mean of the other G-1 rewards of the group.
        {"rloo", [=](const std::vector<double>& r, std::vector<double>& a) {
             (void)adv::rloo(pt::exec::seq, r, groups, a);
         }},
        // REINFORCE++ proper has no group baseline: it takes token rewards [N, T], computes discounted
        // returns and whitens them over the whole batch. An answer here is one "token", so we pass
        // [N, 1] token rewards with an all-ones [N, 1] mask; the return of a 1-token response is its
        // reward (gamma plays no part) and the advantage is the batch z-score of the rewards. It is
        // shown because it is the estimator the REINFORCE++ paper names; it ignores which prompt a
        // sample came from, so easy prompts push their answers up and hard prompts push theirs down.
        {"reinforce_pp", [=](const std::vector<double>& r, std::vector<double>& a) {
             const pt::index_t N = pt::index_t(r.size());
             const std::vector<std::uint8_t> mask(r.size(), 1);
             (void)adv::reinforce_pp(pt::exec::seq, pt::tensor_view<const double, 2>(r.data(), N, 1),
                                     pt::tensor_view<const std::uint8_t, 2>(mask.data(), N, 1),
                                     pt::tensor_view<double, 2>(a.data(), N, 1), pt::none);
         }},
        // REINFORCE++-baseline: subtract the group mean first (as Dr. GRPO), then whiten over the batch.
        // This is the variant the paper recommends for group-sampled reasoning tasks, and the fair
        // comparison with the three group estimators above.
        {"reinforce_pp_baseline", [=](const std::vector<double>& r, std::vector<double>& a) {
             const pt::index_t N = pt::index_t(r.size());
             const std::vector<std::uint8_t> mask(r.size(), 1);
             (void)adv::reinforce_pp_baseline(pt::exec::seq, r, groups,
                                              pt::tensor_view<const std::uint8_t, 2>(mask.data(), N, 1),
                                              pt::tensor_view<double, 2>(a.data(), N, 1));
         }},
    };
}

// The policy's expected reward, averaged over prompts.
double mean_reward(const problem& pb, const std::vector<double>& logits) {
    std::vector<double> probs(std::size_t(pb.K));
    double total = 0;
    for (int p = 0; p < pb.P; ++p) {
        softmax(&logits[std::size_t(p) * pb.K], pb.K, probs.data());
        for (int k = 0; k < pb.K; ++k) total += pb.correct[std::size_t(p) * pb.K + k] ? probs[std::size_t(k)] : 0.0;
    }
    return total / pb.P;
}

// Trains one estimator; curve[t] is the mean reward before iteration t (curve[iterations] after the last).
std::vector<double> train(const config& c, const problem& pb, const estimator& est) {
    const int P = pb.P, K = pb.K, G = c.group;
    const std::size_t N = std::size_t(P) * G;
    std::vector<double> logits(std::size_t(P) * K, 0.0), probs(std::size_t(P) * K);
    std::vector<int> answer(N);
    std::vector<double> rewards(N), advantages(N);
    std::mt19937_64 rng(c.seed ^ 0x9e3779b97f4a7c15ull);  // the same stream for every estimator
    std::vector<double> curve;
    for (int it = 0; it < c.iterations; ++it) {
        curve.push_back(mean_reward(pb, logits));
        for (int p = 0; p < P; ++p) {
            double* pr = &probs[std::size_t(p) * K];
            softmax(&logits[std::size_t(p) * K], K, pr);
            for (int j = 0; j < G; ++j) {
                const std::size_t i = std::size_t(p) * G + j;
                answer[i] = sample(pr, K, rng);
                rewards[i] = pb.correct[std::size_t(p) * K + answer[i]] ? 1.0 : 0.0;
            }
        }
        est.advantages(rewards, advantages);
        for (int p = 0; p < P; ++p) {
            double* lg = &logits[std::size_t(p) * K];
            const double* pr = &probs[std::size_t(p) * K];
            for (int j = 0; j < G; ++j) {
                const std::size_t i = std::size_t(p) * G + j;
                const double step = c.learning_rate * advantages[i] / G;
                for (int k = 0; k < K; ++k) lg[k] += step * ((k == answer[i] ? 1.0 : 0.0) - pr[k]);
            }
        }
    }
    curve.push_back(mean_reward(pb, logits));
    return curve;
}

// ---- Part 2: token-level PPO clip with the fused policy loss ----
//
// A toy language model. A response is a sequence of at most T tokens over the digits 0..K-1 and an EOS
// token (K); at position t of prompt p the policy is softmax(theta[p, t, :]) over the K + 1 tokens (it
// sees the position, not the earlier tokens). The verifier accepts a response when it stops with EOS
// after at least one digit and its digits sum to the prompt's target modulo K; a response that runs
// out of room without EOS is truncated and scores 0. A uniform policy is right 8.6% of the time.
//
// Each iteration samples G responses per prompt, records their per-token log-probs under the sampling
// policy (old_log_probs), turns the 0/1 rewards into GRPO advantages and broadcasts them to the tokens,
// then takes several PPO epochs over the batch: each epoch recomputes the per-token log-probs under
// the current table, calls policy_loss::compute with verl's preset (clip 0.2, dual clip 3, token
// mean) plus a k3 KL to the initial (uniform) policy, and applies d loss / d log_probs to the logits
// through the softmax: d log pi(y) / d theta[v] = onehot(y)_v - pi_v. After the first epoch the ratios
// move away from 1 and the clip starts to bind: the clip fraction and the approximate KL
// (mean of old - new log-prob) are what a PPO trainer watches.

struct ppo_config {
    int digits = 5;       // K
    int max_len = 5;      // T
    int epochs = 4;       // PPO epochs per batch
    double learning_rate = 250;  // plain SGD; the loss is a mean over the batch's 1200 to 1800 tokens
    double kl_coef = 0.01;
};

struct ppo_stats {
    double reward = 0;     // the policy's expected reward before the iteration (exact, not sampled)
    double clip = 0;       // clip fraction, averaged over the epochs
    double approx_kl = 0;  // mean(old - new log-prob) over valid tokens, averaged over the epochs
    double kl_ref = 0;     // k3 estimate of KL(policy || initial) on the sampled tokens, last epoch
    double length = 0;     // mean response length in tokens (EOS included)
};

// Expected reward of the table policy, averaged over prompts: a forward pass over (position, digit sum
// mod K) for the responses still running.
double ppo_mean_reward(const std::vector<double>& probs, const std::vector<int>& target, int P, const ppo_config& pc) {
    const int K = pc.digits, V = K + 1, T = pc.max_len;
    double total = 0;
    std::vector<double> alive(static_cast<std::size_t>(K)), next(static_cast<std::size_t>(K));
    for (int p = 0; p < P; ++p) {
        std::fill(alive.begin(), alive.end(), 0.0);
        alive[0] = 1;
        for (int t = 0; t < T; ++t) {
            const double* pi = &probs[(std::size_t(p) * T + t) * V];
            if (t > 0) total += alive[std::size_t(target[std::size_t(p)])] * pi[K];  // stop here, sum correct
            std::fill(next.begin(), next.end(), 0.0);
            for (int s = 0; s < K; ++s)
                for (int v = 0; v < K; ++v) next[std::size_t((s + v) % K)] += alive[std::size_t(s)] * pi[v];
            alive.swap(next);
        }
    }
    return total / P;
}

std::vector<ppo_stats> train_ppo(const config& c) {
    namespace pl = pt::policy_loss;
    const ppo_config pc;
    const int P = c.prompts, G = c.group, K = pc.digits, V = K + 1, T = pc.max_len;
    const pt::index_t N = pt::index_t(P) * G;
    std::mt19937_64 rng(c.seed ^ 0x5851f42d4c957f2dull);
    std::vector<int> target(static_cast<std::size_t>(P));
    for (int& x : target) x = uniform_int(rng, K);

    std::vector<double> logits(std::size_t(P) * T * V, 0.0), probs(logits.size());
    auto refresh = [&] {
        for (std::size_t cell = 0; cell < std::size_t(P) * T; ++cell) softmax(&logits[cell * V], V, &probs[cell * V]);
    };
    const std::size_t NT = std::size_t(N) * T;
    std::vector<int> tokens(NT, 0);
    std::vector<double> mask(NT), old_lp(NT), lp(NT), ref_lp(NT, -std::log(double(V))), adv(NT), grad(NT);
    std::vector<double> rewards(static_cast<std::size_t>(N)), seq_adv(static_cast<std::size_t>(N));
    const pt::tensor_view<const double, 2> v_mask(mask.data(), N, T), v_old(old_lp.data(), N, T), v_lp(lp.data(), N, T),
        v_ref(ref_lp.data(), N, T), v_adv(adv.data(), N, T);
    const pt::tensor_view<double, 2> v_grad(grad.data(), N, T);

    pl::options opts = pl::options::verl();  // clip 0.2, dual clip 3, log-ratio clamp 20, token mean
    opts.kl_coef = pc.kl_coef;               // + 0.01 * k3 KL to the initial policy

    std::vector<ppo_stats> out;
    refresh();
    for (int it = 0; it < c.ppo_iterations; ++it) {
        ppo_stats st;
        st.reward = ppo_mean_reward(probs, target, P, pc);
        // ---- rollout ----
        double length = 0;
        for (pt::index_t i = 0; i < N; ++i) {
            const int p = int(i / G);
            int sum = 0, t = 0;
            bool stopped = false;
            for (; t < T && !stopped; ++t) {
                const double* pi = &probs[(std::size_t(p) * T + t) * V];
                const int y = sample(pi, V, rng);
                const std::size_t k = std::size_t(i) * T + t;
                tokens[k] = y, mask[k] = 1, old_lp[k] = std::log(pi[y]);
                if (y == K) stopped = true;
                else sum += y;
            }
            length += t;
            for (; t < T; ++t) {  // padding: never read by the loss
                const std::size_t k = std::size_t(i) * T + t;
                tokens[k] = 0, mask[k] = 0, old_lp[k] = 0;
            }
            const bool has_digit = tokens[std::size_t(i) * T] != K;
            rewards[std::size_t(i)] = stopped && has_digit && sum % K == target[std::size_t(p)] ? 1.0 : 0.0;
        }
        st.length = length / double(N);
        // ---- advantages: GRPO per prompt, broadcast to the valid tokens ----
        (void)adv::grpo(pt::exec::seq, rewards, pt::uniform_groups{G}, seq_adv);
        adv::broadcast_to_tokens(pt::exec::seq, seq_adv, v_mask, pt::tensor_view<double, 2>(adv.data(), N, T));
        // ---- PPO epochs ----
        for (int e = 0; e < pc.epochs; ++e) {
            for (std::size_t k = 0; k < NT; ++k) {
                const int p = int(pt::index_t(k / T) / G), t = int(k % T);
                lp[k] = mask[k] != 0 ? std::log(probs[(std::size_t(p) * T + t) * V + tokens[k]]) : 0.0;
            }
            const pl::loss_result r = pl::compute(pt::exec::seq, v_lp, v_old, v_adv, v_mask, v_grad, opts,
                                                  {.ref_log_probs = v_ref});
            st.clip += r.clip_fraction() / pc.epochs;
            st.approx_kl += r.approx_kl() / pc.epochs;
            st.kl_ref = r.kl_mean();
            // SGD on the logits: d loss / d theta[p, t, v] = sum over tokens at (p, t) of g * (onehot - pi).
            for (std::size_t k = 0; k < NT; ++k) {
                if (mask[k] == 0 || grad[k] == 0) continue;
                const int p = int(pt::index_t(k / T) / G), t = int(k % T);
                double* lg = &logits[(std::size_t(p) * T + t) * V];
                const double* pi = &probs[(std::size_t(p) * T + t) * V];
                for (int v = 0; v < V; ++v) lg[v] -= pc.learning_rate * grad[k] * ((v == tokens[k] ? 1.0 : 0.0) - pi[v]);
            }
            refresh();
        }
        out.push_back(st);
    }
    ppo_stats last;
    last.reward = ppo_mean_reward(probs, target, P, pc);
    out.push_back(last);
    return out;
}

void print_ppo(const config& c, const std::vector<ppo_stats>& s) {
    const ppo_config pc;
    std::printf("\ntoken-level PPO clip: policy_loss::compute with options::verl() (clip 0.2, dual clip 3, token mean)\n"
                "plus kl_coef %.2f * k3 KL to the initial policy; %d prompts, %d samples per prompt, responses of up to\n"
                "%d tokens over %d digits + EOS (correct: stops with EOS and the digits sum to the prompt's target mod %d),\n"
                "GRPO advantages broadcast to the tokens, %d PPO epochs per batch on old_log_probs, SGD lr %.0f\n\n",
                pc.kl_coef, c.prompts, c.group, pc.max_len, pc.digits, pc.digits, pc.epochs, pc.learning_rate);
    std::printf("%9s  %11s  %9s  %10s  %11s  %6s\n", "iteration", "mean reward", "clip frac", "approx_kl", "kl_to_init",
                "length");
    for (std::size_t t = 0; t + 1 < s.size(); ++t)
        std::printf("%9zu  %11.4f  %9.4f  %10.6f  %11.6f  %6.3f\n", t, s[t].reward, s[t].clip, s[t].approx_kl, s[t].kl_ref,
                    s[t].length);
    std::printf("%9zu  %11.4f\n", s.size() - 1, s.back().reward);
    std::printf("\n(mean reward: the exact probability of a correct response before the iteration; clip frac and\n"
                " approx_kl: averaged over the %d epochs, 0 in the first one where the ratio is 1; kl_to_init: last epoch)\n",
                pc.epochs);
}

// 0: run; otherwise the exit status (0 after --help, 2 after a bad argument).
int parse_args(int argc, char** argv, config& c, bool& run) {
    run = true;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        if (a == "--csv" && has_value) c.csv = argv[++i];
        else if (a == "--iterations" && has_value) c.iterations = std::max(1, std::atoi(argv[++i]));
        else if (a == "--ppo-iterations" && has_value) c.ppo_iterations = std::max(1, std::atoi(argv[++i]));
        else if (a == "--seed" && has_value) c.seed = std::strtoull(argv[++i], nullptr, 10);
        else {
            run = false;
            const bool help = a == "--help" || a == "-h";
            std::fprintf(help ? stdout : stderr, "usage: %s [--csv PATH] [--iterations N] [--ppo-iterations N] [--seed S]\n", argv[0]);
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
    const std::vector<estimator> estimators = make_estimators(c.group);
    std::vector<std::vector<double>> curves;
    for (const estimator& e : estimators) curves.push_back(train(c, pb, e));

    std::printf("contextual bandit: %d prompts x %d answers, %d samples per prompt, lr %.2f, seed %llu\n",
                c.prompts, c.answers, c.group, c.learning_rate, static_cast<unsigned long long>(c.seed));
    std::printf("mean reward (probability of a correct answer, averaged over prompts)\n\n");
    std::printf("%9s", "iteration");
    for (const estimator& e : estimators) std::printf("  %*s", int(std::max<std::size_t>(8, std::strlen(e.name))), e.name);
    std::printf("\n");
    const int every = std::max(1, c.iterations / 12);
    for (int t = 0; t <= c.iterations; ++t) {
        if (t % every != 0 && t != c.iterations) continue;
        std::printf("%9d", t);
        for (std::size_t e = 0; e < estimators.size(); ++e)
            std::printf("  %*.4f", int(std::max<std::size_t>(8, std::strlen(estimators[e].name))), curves[e][std::size_t(t)]);
        std::printf("\n");
    }

    // The learning rate is shared, but the advantages' scales are not: GRPO and the REINFORCE++ pair
    // divide by a standard deviation (about 0.3 for 0/1 rewards at a 10% pass rate), Dr. GRPO and RLOO
    // do not, so at equal lr their steps are about three times smaller early on.
    std::printf("\n(same learning rate for all: grpo and reinforce_pp* divide by a std, dr_grpo and rloo do not,\n"
                " so their early steps are smaller; compare curve shapes, not only speed)\n");

    std::ofstream csv(c.csv);
    if (!csv) {
        std::fprintf(stderr, "bandit_demo: cannot write %s\n", c.csv.c_str());
        return 1;
    }
    csv << "iteration,estimator,mean_reward\n";
    char line[128];
    for (int t = 0; t <= c.iterations; ++t)
        for (std::size_t e = 0; e < estimators.size(); ++e) {
            std::snprintf(line, sizeof line, "%d,%s,%.6f\n", t, estimators[e].name, curves[e][std::size_t(t)]);
            csv << line;
        }
    std::printf("\nwrote %s (columns iteration,estimator,mean_reward; iteration %d is after the last update)\n",
                c.csv.c_str(), c.iterations);

    print_ppo(c, train_ppo(c));
    return 0;
}
