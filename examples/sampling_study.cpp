// sampling_study: which prompts to train on? Uniform sampling, MMR1's variance-aware sampling (VAS)
// and DAPO's dynamic-sampling filter, simulated (the setup of group_rl.md §4.3).
//
// The simulated world:
//   - a dataset of P prompts with hidden difficulty: prompt i starts with pass rate p_i ~ Beta(0.5,
//     0.5) (U-shaped: many prompts almost always or almost never solved), and belongs to one of K
//     latent skills;
//   - the policy's success probability on prompt i is p_i = sigmoid(d_i + s_k(i)): a logit of its own
//     plus a logit shared by every prompt of its skill (generalisation across prompts);
//   - a training step draws a batch of B prompts, samples N rollouts per prompt (binary verifier
//     reward y ~ Bernoulli(p_i)), computes GRPO advantages with posttrain (advantage::grpo over
//     uniform_groups{N}) and takes one policy-gradient step on the logits:
//         g_i = (1/N) sum_j A_j (y_j - p_i)        (d/dlogit of log Bernoulli(y_j; p_i) is y_j - p_i)
//         d_i += lr g_i,   s_k(i) += lr * transfer * g_i
//     A group whose rewards all agree has every A_j = 0, so the prompt (and its skill) learns nothing
//     from it. For 0/1 rewards g_i is about sqrt(m (1 - m)) >= 0 (m the group's success rate): a
//     prompt only ever improves, and only when its group had reward variance.
//
// The methods (same dataset and initial policy per seed; their own random streams):
//   uniform     the dataset reshuffled every epoch (sampling::random_permutation), consecutive
//               slices of B;
//   vas_t4      MMR1's VAS as released (examples/mmr1.yaml): every T_update = 4 steps (and once
//               before training) N fresh rollouts of EVERY prompt are scored with
//               sampling::outcome_variance (OVS = p (1 - p)), VPS = 1.0 OVS + 0.0 TDS
//               (sampling::variance_promotion_score), weights = sampling::minmax_weights, and the
//               batches come from sampling::mixed_curriculum_sampler (lambda = 0.5: half drawn by
//               weight with replacement, half from a fixed shuffled pool), the index list regenerated
//               after each refresh as MMR1's trainer does (update_weights, then a new iterator);
//   vas_epoch   the same, refreshed at each epoch's end instead (MMR1 curriculum_update_freq = 0);
//   dapo        DAPO's dynamic sampling: candidate batches of B prompts come from the uniform
//               stream; after each one sampling::dynamic_sampling_filter (dapo(B), in order) runs
//               over everything generated this step; generation stops when B groups with reward
//               variance are kept or after 10 candidate batches (DAPO max_num_gen_batches; DAPO then
//               raises, here the step trains on what it has and the shortfall is counted).
//
// Cost accounting (rollouts = verifier-scored generations, the dominant cost of a real run):
//   uniform B N per step; vas_* B N per step plus P N per refresh (the scoring rollouts are NOT used
//   for the gradient, as in MMR1, where they are a separate generation pass); dapo every candidate
//   rollout generated, including the groups the filter drops and eligible groups beyond B.
//
// Metrics per step (mean and standard error over seeds): the fraction of the trained groups with
// reward variance ("effective groups"), the mean within-batch reward variance m (1 - m) of the
// trained groups, the dataset's mean success (1/P) sum_i p_i (the exact expectation, not a sample)
// and the cumulative rollouts spent. The summary adds each method's final success, and its success at
// the budget uniform spends in the whole run (the last step at or under it): the fair-cost view.
//
// Usage: sampling_study [--csv PATH] [--prompts P] [--batch B] [--rollouts N] [--steps S] [--seeds K]
//                       [--skills K] [--lr X] [--transfer X] [--t-update T] [--seed S]
// The defaults are a quick run (well under a second; CI runs examples); scripts/sampling-study runs
// the full study and draws docs/algorithms/figures/sampling_study.png from the CSV.
//
// Everything is seeded: std::mt19937_64 streams for the dataset and the rollouts (beta draws are made
// here from gamma draws by Marsaglia-Tsang on our own normal/uniform draws, not by std::*_distribution,
// whose algorithms differ between standard libraries) and Philox seeds for the library's samplers.

#include <posttrain/advantage/grpo.hpp>
#include <posttrain/core/groups.hpp>
#include <posttrain/core/random.hpp>
#include <posttrain/sampling/filters.hpp>
#include <posttrain/sampling/samplers.hpp>
#include <posttrain/sampling/scores.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <numbers>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace pt = posttrain;
namespace sp = posttrain::sampling;
namespace adv = posttrain::advantage;
using pt::index_t;

namespace {

// ---- random numbers -------------------------------------------------------------------------------

double uniform01_open(std::mt19937_64& rng) { return (double(rng() >> 11) + 0.5) * 0x1.0p-53; }

double normal(std::mt19937_64& rng) {  // Box-Muller, one half used (simple; speed is no concern)
    const double r = std::sqrt(-2.0 * std::log(uniform01_open(rng)));
    return r * std::cos(2.0 * std::numbers::pi * uniform01_open(rng));
}

// Gamma(a, 1) by Marsaglia-Tsang; a < 1 through Gamma(a + 1) * U^(1/a).
double gamma(std::mt19937_64& rng, double a) {
    if (a < 1) return gamma(rng, a + 1) * std::pow(uniform01_open(rng), 1.0 / a);
    const double d = a - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = normal(rng);
            v = 1 + c * x;
        } while (v <= 0);
        v = v * v * v;
        const double u = uniform01_open(rng);
        if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
    }
}

double beta(std::mt19937_64& rng, double a, double b) {
    const double x = gamma(rng, a), y = gamma(rng, b);
    return x / (x + y);
}

std::uint64_t mix_seed(std::initializer_list<std::uint64_t> parts) {
    std::uint64_t h = 0x243F6A8885A308D3ull;
    for (std::uint64_t p : parts) h = pt::splitmix64(h ^ p).next();
    return h;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ---- configuration --------------------------------------------------------------------------------

struct config {
    index_t prompts = 128, batch = 16, rollouts = 8, steps = 60, seeds = 4, skills = 8;
    double lr = 1.0, transfer = 0.02;
    index_t t_update = 4;
    index_t max_gen_batches = 10;
    double lambda = 0.5;
    std::uint64_t seed = 2026;
    std::string csv = "sampling_study.csv";
};

enum class method { uniform, vas_t4, vas_epoch, dapo };
constexpr method all_methods[] = {method::uniform, method::vas_t4, method::vas_epoch, method::dapo};

const char* name_of(method m) {
    switch (m) {
        case method::uniform: return "uniform";
        case method::vas_t4: return "vas_t4";
        case method::vas_epoch: return "vas_epoch";
        case method::dapo: return "dapo";
    }
    return "?";
}

// ---- the simulated policy -------------------------------------------------------------------------

struct world {
    std::vector<double> d;      // per-prompt logit
    std::vector<double> s;      // per-skill logit
    std::vector<index_t> skill;  // prompt -> skill

    double p(index_t i) const { return sigmoid(d[std::size_t(i)] + s[std::size_t(skill[std::size_t(i)])]); }
    double mean_success() const {
        double t = 0;
        for (index_t i = 0; i < index_t(d.size()); ++i) t += p(i);
        return t / double(d.size());
    }
};

world make_world(const config& c, std::uint64_t seed) {
    std::mt19937_64 rng(mix_seed({seed, 0xda7a}));
    world w;
    w.d.resize(std::size_t(c.prompts));
    w.skill.resize(std::size_t(c.prompts));
    w.s.assign(std::size_t(c.skills), 0.0);
    for (index_t i = 0; i < c.prompts; ++i) {
        const double p0 = std::clamp(beta(rng, 0.5, 0.5), 1e-4, 1 - 1e-4);
        w.d[std::size_t(i)] = std::log(p0 / (1 - p0));
        w.skill[std::size_t(i)] = index_t(rng() % std::uint64_t(c.skills));
    }
    return w;
}

// N rollouts of each listed prompt: rewards[g * N + j] in {0, 1}.
void roll(const world& w, const std::vector<index_t>& prompts, index_t n, std::mt19937_64& rng, std::vector<double>& r) {
    r.resize(prompts.size() * std::size_t(n));
    for (std::size_t g = 0; g < prompts.size(); ++g) {
        const double p = w.p(prompts[g]);
        for (index_t j = 0; j < n; ++j) r[g * std::size_t(n) + std::size_t(j)] = uniform01_open(rng) < p ? 1.0 : 0.0;
    }
}

// One GRPO policy-gradient step on the groups of `prompts` (their rewards in r, N per group).
// Returns (effective groups, sum of m (1 - m)) over the batch.
struct batch_stats {
    index_t groups = 0, effective = 0;
    double variance_sum = 0;
};

batch_stats train(world& w, const std::vector<index_t>& prompts, const std::vector<double>& r, const config& c) {
    const index_t n = c.rollouts, G = index_t(prompts.size());
    batch_stats b;
    b.groups = G;
    if (G == 0) return b;
    std::vector<double> a(r.size());
    std::vector<double> m(static_cast<std::size_t>(G));
    (void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{n}, a);
    (void)sp::pass_rate(pt::exec::seq, r, pt::uniform_groups{n}, m);
    // Gradients first, from the policy that generated the rollouts; then the update.
    std::vector<double> g(std::size_t(G), 0.0);
    for (index_t k = 0; k < G; ++k) {
        const double p = w.p(prompts[std::size_t(k)]);
        double t = 0;
        for (index_t j = 0; j < n; ++j) {
            const std::size_t row = std::size_t(k * n + j);
            t += a[row] * (r[row] - p);
        }
        g[std::size_t(k)] = t / double(n);
        const double mk = m[std::size_t(k)];
        b.effective += mk > 0 && mk < 1;
        b.variance_sum += mk * (1 - mk);
    }
    for (index_t k = 0; k < G; ++k) {
        const index_t i = prompts[std::size_t(k)];
        w.d[std::size_t(i)] += c.lr * g[std::size_t(k)];
        w.s[std::size_t(w.skill[std::size_t(i)])] += c.lr * c.transfer * g[std::size_t(k)];
    }
    return b;
}

// ---- batch sources --------------------------------------------------------------------------------

// The uniform stream: one permutation per epoch (sampling::random_permutation, stream = epoch), read in
// consecutive slices; used by uniform and as DAPO's candidate source.
class uniform_stream {
public:
    uniform_stream(index_t n, std::uint64_t seed) : perm_(std::size_t(n)), seed_(seed) { refill(); }
    std::vector<index_t> next(index_t b) {
        if (pos_ + b > index_t(perm_.size())) {
            ++epoch_;
            refill();
        }
        std::vector<index_t> out(perm_.begin() + pos_, perm_.begin() + pos_ + b);
        pos_ += b;
        return out;
    }

private:
    void refill() {
        sp::random_permutation(pt::exec::seq, perm_, sp::permutation_options{seed_, std::uint64_t(epoch_)});
        pos_ = 0;
    }
    std::vector<index_t> perm_;
    std::uint64_t seed_;
    index_t epoch_ = 0, pos_ = 0;
};

// VAS weights from N fresh rollouts of every prompt: OVS -> VPS (alpha 1, beta 0) -> min-max.
std::vector<double> vas_weights(const world& w, const config& c, std::mt19937_64& rng) {
    std::vector<index_t> all(std::size_t(c.prompts));
    for (index_t i = 0; i < c.prompts; ++i) all[std::size_t(i)] = i;
    std::vector<double> r;
    roll(w, all, c.rollouts, rng, r);
    std::vector<double> ovs(std::size_t(c.prompts)), tds(std::size_t(c.prompts), 0.0), vps(std::size_t(c.prompts)),
        weights(std::size_t(c.prompts));
    (void)sp::outcome_variance(pt::exec::seq, r, pt::uniform_groups{c.rollouts}, ovs);
    // MMR1's released config scores learnability only; TDS (diversity.hpp) has no meaning for 0/1 toys.
    sp::variance_promotion_score(pt::exec::seq, ovs, tds, vps, sp::vps_options{1.0, 0.0});
    (void)sp::minmax_weights(pt::exec::seq, vps, weights);  // all-equal scores: uniform weights
    return weights;
}

// ---- one run --------------------------------------------------------------------------------------

struct step_record {
    double effective = 0;   // fraction of trained groups with reward variance
    double variance = 0;    // mean m (1 - m) over the trained groups
    double success = 0;     // dataset mean success after the step
    double rollouts = 0;    // cumulative, all rollouts generated
    double gen_yield = 0;   // dapo: eligible fraction of the candidates generated this step
};

struct run_result {
    std::vector<step_record> steps;  // [0] = before training
    index_t unfilled_steps = 0;      // dapo: steps trained on fewer than B groups
    index_t refreshes = 0;           // vas: scoring passes over the whole dataset
};

run_result run(method mth, const config& c, std::uint64_t seed) {
    world w = make_world(c, seed);
    const std::uint64_t mid = std::uint64_t(mth);
    std::mt19937_64 rng(mix_seed({seed, mid, 1}));
    const std::uint64_t philox_seed = mix_seed({seed, mid, 2});
    const index_t B = c.batch, N = c.rollouts;
    run_result out;
    double spent = 0;
    out.steps.push_back({0, 0, w.mean_success(), 0, 0});
    std::vector<double> r;

    auto record = [&](const batch_stats& b, double gen_yield) {
        step_record s;
        s.effective = b.groups ? double(b.effective) / double(b.groups) : 0.0;
        s.variance = b.groups ? b.variance_sum / double(b.groups) : 0.0;
        s.success = w.mean_success();
        s.rollouts = spent;
        s.gen_yield = gen_yield;
        out.steps.push_back(s);
    };

    if (mth == method::uniform) {
        uniform_stream src(c.prompts, philox_seed);
        for (index_t t = 1; t <= c.steps; ++t) {
            const std::vector<index_t> batch = src.next(B);
            roll(w, batch, N, rng, r);
            spent += double(B * N);
            const batch_stats b = train(w, batch, r, c);
            record(b, double(b.effective) / double(B));
        }
    } else if (mth == method::dapo) {
        uniform_stream src(c.prompts, philox_seed);
        for (index_t t = 1; t <= c.steps; ++t) {
            std::vector<index_t> pool;
            std::vector<double> pool_r;
            std::vector<std::uint8_t> keep;
            sp::dynamic_sampling_result f;
            index_t gens = 0;
            do {
                const std::vector<index_t> cand = src.next(B);
                roll(w, cand, N, rng, r);
                spent += double(B * N);
                pool.insert(pool.end(), cand.begin(), cand.end());
                pool_r.insert(pool_r.end(), r.begin(), r.end());
                keep.assign(pool.size(), 0);
                f = sp::dynamic_sampling_filter(pt::exec::seq, pool_r, pt::uniform_groups{N}, keep,
                                                sp::dynamic_sampling_options::dapo(B));
                ++gens;
            } while (!f.filled && gens < c.max_gen_batches);
            out.unfilled_steps += !f.filled;
            std::vector<index_t> batch;
            std::vector<double> br;
            for (std::size_t g = 0; g < pool.size(); ++g) {
                if (!keep[g]) continue;
                batch.push_back(pool[g]);
                br.insert(br.end(), pool_r.begin() + std::ptrdiff_t(g * std::size_t(N)),
                          pool_r.begin() + std::ptrdiff_t((g + 1) * std::size_t(N)));
            }
            const batch_stats b = train(w, batch, br, c);
            record(b, double(f.eligible) / double(pool.size()));
        }
    } else {
        // MMR1's trainer loop: weights before training; an epoch is one pass over a regenerated list;
        // a refresh (every T steps, or at the epoch's end when T = 0) recomputes the weights from
        // fresh rollouts, update_weights() drops the cached list and training continues on a new one.
        const index_t T = mth == method::vas_t4 ? c.t_update : 0;
        const sp::refresh_schedule refresh{T};
        auto score = [&] {
            ++out.refreshes;
            spent += double(c.prompts * N);
            return vas_weights(w, c, rng);
        };
        sp::mixed_curriculum_options o;
        o.batch_size = B;
        o.mixture_ratio = c.lambda;
        o.seed = philox_seed;
        sp::mixed_curriculum_sampler sampler(pt::exec::seq, score(), o);
        index_t t = 0;
        while (t < c.steps) {
            sampler.reset();  // epoch start
            bool epoch_done = false;
            while (!epoch_done && t < c.steps) {
                const std::vector<index_t> list = sampler.indices(pt::exec::seq);  // a copy: a refresh regenerates
                const index_t batches = index_t(list.size()) / B;
                bool refreshed = false;
                for (index_t j = 0; j < batches && t < c.steps && !refreshed; ++j) {
                    const std::vector<index_t> batch(list.begin() + j * B, list.begin() + (j + 1) * B);
                    roll(w, batch, N, rng, r);
                    spent += double(B * N);
                    ++t;
                    const batch_stats b = train(w, batch, r, c);
                    if (refresh.after_step(t)) {
                        sampler.update_weights(score());
                        refreshed = true;  // MMR1 re-creates the iterator: the next batch is the new list's first
                    }
                    sampler.consume();
                    record(b, double(b.effective) / double(B));
                    if (j + 1 == batches && !refreshed) epoch_done = true;
                }
            }
            if (epoch_done && refresh.at_epoch_end() && t < c.steps) sampler.update_weights(score());
        }
    }
    return out;
}

// ---- aggregation and output -----------------------------------------------------------------------

struct running {
    double sum = 0, sum2 = 0;
    long long n = 0;
    void add(double v) {
        sum += v;
        sum2 += v * v;
        ++n;
    }
    double mean() const { return n ? sum / double(n) : std::nan(""); }
    double se() const {
        if (n < 2) return 0.0;
        const double m = mean(), var = (sum2 - double(n) * m * m) / double(n - 1);
        return std::sqrt(std::max(var, 0.0) / double(n));
    }
};

struct summary {
    method m;
    running final_success, effective, variance, rollouts, budget_success, budget_steps, gen_yield;
    double unfilled = 0, refreshes = 0;
};

}  // namespace

int main(int argc, char** argv) {
    config c;
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            auto value = [&]() -> std::string {
                if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
                return argv[++i];
            };
            if (a == "--csv") c.csv = value();
            else if (a == "--prompts") c.prompts = std::stoll(value());
            else if (a == "--batch") c.batch = std::stoll(value());
            else if (a == "--rollouts") c.rollouts = std::stoll(value());
            else if (a == "--steps") c.steps = std::stoll(value());
            else if (a == "--seeds") c.seeds = std::stoll(value());
            else if (a == "--skills") c.skills = std::stoll(value());
            else if (a == "--lr") c.lr = std::stod(value());
            else if (a == "--transfer") c.transfer = std::stod(value());
            else if (a == "--t-update") c.t_update = std::stoll(value());
            else if (a == "--seed") c.seed = std::stoull(value());
            else if (a == "--help" || a == "-h") {
                std::printf("usage: sampling_study [--csv PATH] [--prompts P] [--batch B] [--rollouts N] [--steps S] "
                            "[--seeds K] [--skills K] [--lr X] [--transfer X] [--t-update T] [--seed S]\n");
                return 0;
            } else throw std::invalid_argument("unknown argument " + a);
        }
        if (c.batch < 1 || c.prompts < c.batch || c.prompts % c.batch != 0)
            throw std::invalid_argument("--prompts must be a positive multiple of --batch");
        if (c.rollouts < 2) throw std::invalid_argument("--rollouts must be >= 2");
        if (c.steps < 1 || c.seeds < 1 || c.skills < 1 || c.t_update < 1)
            throw std::invalid_argument("--steps, --seeds, --skills and --t-update must be >= 1");
        if (!(c.lr > 0) || !(c.transfer >= 0)) throw std::invalid_argument("--lr must be > 0 and --transfer >= 0");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sampling_study: %s\n", e.what());
        return 1;
    }

    std::printf("== sampling study: P = %lld prompts (p0 ~ Beta(0.5, 0.5), %lld skills), B = %lld, N = %lld, "
                "%lld steps, %lld seeds, lr %g, transfer %g ==\n",
                (long long)c.prompts, (long long)c.skills, (long long)c.batch, (long long)c.rollouts, (long long)c.steps,
                (long long)c.seeds, c.lr, c.transfer);
    const double budget = double(c.steps * c.batch * c.rollouts);  // uniform's whole run
    std::ofstream csv(c.csv);
    if (!csv) {
        std::fprintf(stderr, "sampling_study: cannot write %s\n", c.csv.c_str());
        return 1;
    }
    csv << "method,step,rollouts,rollouts_se,effective,effective_se,variance,variance_se,success,success_se,gen_yield,seeds\n";
    std::vector<summary> table;
    for (method m : all_methods) {
        std::vector<run_result> runs;
        for (index_t k = 0; k < c.seeds; ++k) runs.push_back(run(m, c, mix_seed({c.seed, std::uint64_t(k)})));
        summary s{m, {}, {}, {}, {}, {}, {}, {}, 0, 0};
        for (index_t t = 0; t <= c.steps; ++t) {
            running ro, ef, va, su, gy;
            for (const run_result& r : runs) {
                const step_record& x = r.steps[std::size_t(t)];
                ro.add(x.rollouts), ef.add(x.effective), va.add(x.variance), su.add(x.success), gy.add(x.gen_yield);
            }
            char buf[256];
            std::snprintf(buf, sizeof buf, "%s,%lld,%.1f,%.1f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%lld\n", name_of(m),
                          (long long)t, ro.mean(), ro.se(), ef.mean(), ef.se(), va.mean(), va.se(), su.mean(), su.se(),
                          gy.mean(), (long long)c.seeds);
            csv << buf;
        }
        for (const run_result& r : runs) {
            running ef, va, gy;
            for (std::size_t t = 1; t < r.steps.size(); ++t) ef.add(r.steps[t].effective), va.add(r.steps[t].variance),
                gy.add(r.steps[t].gen_yield);
            s.effective.add(ef.mean());
            s.variance.add(va.mean());
            s.gen_yield.add(gy.mean());
            s.final_success.add(r.steps.back().success);
            s.rollouts.add(r.steps.back().rollouts);
            // The fair-cost view: the last step whose cumulative rollouts fit uniform's whole budget.
            std::size_t at = 0;
            for (std::size_t t = 0; t < r.steps.size(); ++t)
                if (r.steps[t].rollouts <= budget) at = t;
            s.budget_success.add(r.steps[at].success);
            s.budget_steps.add(double(at));
            s.unfilled += double(r.unfilled_steps) / double(c.seeds);
            s.refreshes += double(r.refreshes) / double(c.seeds);
        }
        table.push_back(s);
    }

    std::printf("\n%-10s %9s %9s %11s %16s %10s %16s %8s\n", "method", "effective", "batch_var", "rollouts",
                "final success", "steps@bud", "success@budget", "yield");
    for (const summary& s : table) {
        std::printf("%-10s %9.3f %9.4f %11.0f %8.4f +-%.4f %10.1f %8.4f +-%.4f %8.3f\n", name_of(s.m), s.effective.mean(),
                    s.variance.mean(), s.rollouts.mean(), s.final_success.mean(), s.final_success.se(),
                    s.budget_steps.mean(), s.budget_success.mean(), s.budget_success.se(), s.gen_yield.mean());
    }
    std::printf("\nbudget = uniform's whole run = %.0f rollouts; initial dataset success %.4f (mean over seeds)\n", budget,
                [&] {
                    running r;
                    for (index_t k = 0; k < c.seeds; ++k) r.add(make_world(c, mix_seed({c.seed, std::uint64_t(k)})).mean_success());
                    return r.mean();
                }());
    for (const summary& s : table) {
        if (s.m == method::dapo)
            std::printf("dapo: %.1f steps per run trained on fewer than B groups after %lld candidate batches\n", s.unfilled,
                        (long long)c.max_gen_batches);
        if (s.m == method::vas_t4 || s.m == method::vas_epoch)
            std::printf("%s: %.1f scoring passes per run (%lld rollouts each)\n", name_of(s.m), s.refreshes,
                        (long long)(c.prompts * c.rollouts));
    }
    std::printf("CSV: %s\n", c.csv.c_str());
    return 0;
}
