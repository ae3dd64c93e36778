// posttrain_conformance: runs every case of every mapped reference function and compares each
// expected output with what posttrain computes.
//
//   posttrain_conformance [--verbose] [--list-deviations] [--stats] [DIR|FILE ...]
//
// Prints `FAIL <file>:<case id> <output>[<flat index>] expected <x> got <y>` for each mismatch,
// `SKIP <file>:<case id> (<reason>)` for cases it cannot map (per file unless --verbose), and ends
// with exactly one line `N passed, M failed, K skipped`. Exit status: 0 when nothing failed, 1 on
// any failure, 2 on bad usage, 77 when a named directory does not exist (ctest: skipped).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "conformance.hpp"

namespace fs = std::filesystem;

namespace conformance {

double number(const json& v) {
    if (v.is_number()) return v.get<double>();
    if (v.is_boolean()) return v.get<bool>() ? 1.0 : 0.0;
    if (v.is_string()) {
        const auto s = v.get<std::string>();
        if (s == "NaN") return std::nan("");
        if (s == "Infinity") return INFINITY;
        if (s == "-Infinity") return -INFINITY;
    }
    throw std::runtime_error("not a number: " + v.dump());
}

bool is_tensor(const json& v) { return v.is_object() && v.contains("shape") && v.contains("data"); }

tensor parse_tensor(const json& v) {
    if (!is_tensor(v)) throw std::runtime_error("not a tensor: " + v.dump().substr(0, 80));
    tensor t;
    t.shape = v.at("shape").get<std::vector<std::int64_t>>();
    t.dtype = v.value("dtype", std::string("float64"));
    const auto& d = v.at("data");
    const bool integral = t.dtype == "int64" || t.dtype == "bool";
    for (const auto& x : d) {
        t.data.push_back(number(x));
        if (integral) t.ints.push_back(x.is_boolean() ? (x.get<bool>() ? 1 : 0) : x.get<std::int64_t>());
    }
    std::int64_t n = 1;
    for (auto s : t.shape) n *= s;
    if (n != t.numel()) throw std::runtime_error("tensor data length does not match its shape");
    return t;
}

tensor zeros(std::vector<std::int64_t> shape, std::string dtype) {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    tensor t;
    t.shape = std::move(shape);
    t.dtype = std::move(dtype);
    t.data.assign(static_cast<std::size_t>(n), 0.0);
    return t;
}

tensor from_values(std::vector<double> values, std::vector<std::int64_t> shape, std::string dtype) {
    tensor t;
    t.shape = std::move(shape);
    t.dtype = std::move(dtype);
    t.data = std::move(values);
    return t;
}

group_ids parse_ids(const json& v) {
    group_ids g;
    if (!v.is_array()) throw std::runtime_error("group ids must be a JSON list");
    g.strings = !v.empty() && v.front().is_string();
    for (const auto& x : v) {
        if (g.strings) g.s.push_back(x.get<std::string>());
        else g.i.push_back(x.get<std::int64_t>());
    }
    return g;
}

tensor case_context::input(const std::string& name) const {
    if (!inputs.contains(name)) throw std::runtime_error("case has no input '" + name + "'");
    return parse_tensor(inputs.at(name));
}

posttrain::grouping_result group_by(const group_ids& ids) {
    if (ids.strings) return posttrain::grouping::from_string_ids(posttrain::exec::seq, ids.s);
    return posttrain::grouping::from_ids(posttrain::exec::seq, ids.i);
}

std::vector<double> block_nanstd(const std::vector<double>& values, index_t size, bool float32_bessel) {
    namespace adv = posttrain::advantage;
    const index_t n = index_t(values.size());
    const index_t blocks = size > 0 ? n / size : 0;
    std::vector<double> kept;
    std::vector<index_t> offsets{0};
    for (index_t b = 0; b < blocks; ++b) {
        for (index_t j = b * size; j < (b + 1) * size; ++j)
            if (values[std::size_t(j)] == values[std::size_t(j)]) kept.push_back(values[std::size_t(j)]);
        offsets.push_back(index_t(kept.size()));
    }
    const std::size_t nb = static_cast<std::size_t>(blocks);
    std::vector<double> mean(nb), sd(nb), count(nb);
    adv::group_mean_std_options o;  // float64, Bessel; a block of one value has no std (NaN)
    o.singleton_unit = false;
    adv::group_mean_std(posttrain::exec::seq, kept, posttrain::ragged(offsets), mean, sd, count, o);
    for (index_t b = 0; b < blocks; ++b) {
        const double c = count[std::size_t(b)];
        if (c == 0) sd[std::size_t(b)] = std::nan("");  // nanstd of nothing
        else if (float32_bessel && c > 1)  // swap the exact factor c/(c-1) for its float32 value
            sd[std::size_t(b)] *= std::sqrt(double(float(c) / float(c - 1)) * ((c - 1) / c));
    }
    return sd;
}

}  // namespace conformance

namespace {

using namespace conformance;

struct counts {
    long passed = 0, failed = 0, skipped = 0;
};

std::string fmt(double x) {
    if (std::isnan(x)) return "NaN";
    if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", x);
    return buf;
}

// Largest error seen per file key (--stats): relative where |expected| > 1, absolute below, i.e. how
// far inside its tolerance each mapping is.
std::map<std::string, double> worst_error;

bool close(double got, double want, tolerance tol) {
    if (std::isnan(want) || std::isnan(got)) return std::isnan(want) && std::isnan(got);
    if (std::isinf(want) || std::isinf(got)) return got == want;
    return std::fabs(got - want) <= tol.abs + tol.rel * std::fabs(want);
}

// Compares one output; prints FAIL lines (at most a few per output) and returns whether it matched.
bool compare_output(const std::string& where, const std::string& name, const tensor& want, const tensor& got,
                    tolerance tol, double& worst) {
    if (want.numel() != got.numel()) {
        std::cout << "FAIL " << where << " " << name << " shape: expected " << want.numel() << " elements, got "
                  << got.numel() << "\n";
        return false;
    }
    int shown = 0, bad = 0;
    for (index_t i = 0; i < want.numel(); ++i) {
        const double w = want.data[std::size_t(i)], g = got.data[std::size_t(i)];
        if (std::isfinite(w) && std::isfinite(g))
            worst = std::max(worst, std::fabs(g - w) / std::max(std::fabs(w), 1.0));
        if (close(g, w, tol)) continue;
        ++bad;
        if (shown < 4) {
            std::cout << "FAIL " << where << " " << name << "[" << i << "] expected " << fmt(w) << " got " << fmt(g)
                      << "\n";
            ++shown;
        }
    }
    if (bad > shown) std::cout << "FAIL " << where << " " << name << ": " << (bad - shown) << " more mismatches\n";
    return bad == 0;
}

// Shell-style match where '*' stands for any run of characters.
bool glob_match(const char* pattern, const char* text) {
    if (*pattern == '\0') return *text == '\0';
    if (*pattern == '*') return glob_match(pattern + 1, text) || (*text != '\0' && glob_match(pattern, text + 1));
    return *text == *pattern && glob_match(pattern + 1, text + 1);
}

const deviation* find_deviation(const registry& reg, const std::string& key, const std::string& id) {
    for (const auto& d : reg.deviations)
        if (d.key == key && glob_match(d.case_id.c_str(), id.c_str())) return &d;
    return nullptr;
}

void run_file(const registry& reg, const fs::path& path, bool verbose, counts& total) {
    json doc;
    try {
        std::ifstream in(path);
        doc = json::parse(in);
    } catch (const std::exception& e) {
        std::cout << "FAIL " << path.string() << " cannot be read: " << e.what() << "\n";
        ++total.failed;
        return;
    }
    const std::string key = path.parent_path().filename().string() + "/" + path.stem().string();
    const std::string file = path.string();
    const auto& cases = doc.at("cases");
    const auto it = reg.mappings.find(key);
    if (it == reg.mappings.end()) {
        total.skipped += static_cast<long>(cases.size());
        if (verbose) {
            for (const auto& c : cases)
                std::cout << "SKIP " << file << ":" << c.at("id").get<std::string>() << " (function not mapped)\n";
        } else {
            std::cout << "SKIP " << file << ": " << cases.size() << " cases (function not mapped; --verbose lists ids)\n";
        }
        return;
    }
    const mapping& m = it->second;
    for (const auto& c : cases) {
        const std::string id = c.at("id").get<std::string>();
        const std::string where = file + ":" + id;
        const deviation* dev = find_deviation(reg, key, id);
        if (dev && !dev->tol) {
            ++total.skipped;
            std::cout << "SKIP " << where << " (deviation " << dev->name << ")\n";
            continue;
        }
        const json& expected = c.at("expected");
        const bool wants_raise = expected.contains("raises");
        const case_context ctx{file, key, id, c.at("params"), c.at("inputs"), expected};
        produced out;
        try {
            m.run(ctx, out);
        } catch (const skip_case& s) {
            ++total.skipped;
            std::cout << "SKIP " << where << " (" << s.what() << ")\n";
            continue;
        } catch (const posttrain::invalid_argument& e) {
            if (wants_raise) {
                ++total.passed;
                if (verbose) std::cout << "PASS " << where << " (raised: " << e.what() << ")\n";
            } else {
                ++total.failed;
                std::cout << "FAIL " << where << " raised posttrain::invalid_argument: " << e.what() << "\n";
            }
            continue;
        } catch (const std::exception& e) {
            ++total.failed;
            std::cout << "FAIL " << where << " mapping error: " << e.what() << "\n";
            continue;
        }
        if (wants_raise) {
            ++total.failed;
            std::cout << "FAIL " << where << " expected posttrain::invalid_argument (reference raises "
                      << expected.at("raises").dump() << "), got a result\n";
            continue;
        }
        bool ok = true;
        for (const auto& [name, value] : expected.items()) {
            if (!is_tensor(value)) {
                const auto e = out.exact.find(name);
                if (e == out.exact.end()) {
                    if (m.internal.count(name)) continue;
                    std::cout << "FAIL " << where << " " << name << " not produced by the mapping\n";
                    ok = false;
                } else if (e->second != value) {
                    std::cout << "FAIL " << where << " " << name << " expected " << value.dump().substr(0, 300)
                              << " got " << e->second.dump().substr(0, 300) << "\n";
                    ok = false;
                }
                continue;
            }
            const auto p = out.values.find(name);
            if (p == out.values.end() && m.internal.count(name)) continue;
            if (p == out.values.end()) {
                std::cout << "FAIL " << where << " " << name << " not produced by the mapping\n";
                ok = false;
                continue;
            }
            const tolerance tol = dev ? *dev->tol : out.tol.value_or(m.tol);
            ok &= compare_output(where, name, parse_tensor(value), p->second, tol, worst_error[key]);
        }
        if (ok) {
            ++total.passed;
            if (verbose) std::cout << "PASS " << where << (dev ? " (at the tolerance of deviation " + dev->name + ")" : "") << "\n";
        } else {
            ++total.failed;
        }
    }
}

void collect(const fs::path& p, std::vector<fs::path>& files) {
    if (fs::is_directory(p)) {
        for (const auto& e : fs::recursive_directory_iterator(p))
            if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
    } else {
        files.push_back(p);
    }
}

void list_deviations(const registry& reg) {
    std::cout << "Named deviations from the references (case id '*' = every case of the file):\n";
    if (reg.deviations.empty()) std::cout << "  (none: every mapped case is compared at its file's tolerance)\n";
    for (const auto& d : reg.deviations) {
        std::cout << "  " << d.name << "\n    " << d.key << ":" << d.case_id << "\n    " << d.reason << "\n";
        if (d.tol) std::cout << "    compared at rel " << d.tol->rel << ", abs " << d.tol->abs << "\n";
        else std::cout << "    not compared (skipped)\n";
    }
    std::cout << "Mapped functions:\n";
    for (const auto& [key, m] : reg.mappings) {
        std::cout << "  " << key << "  [rel " << m.tol.rel << ", abs " << m.tol.abs << "]\n    " << m.what << "\n";
        for (const auto& [name, why] : m.internal) std::cout << "    not compared: " << name << " (" << why << ")\n";
    }
}

}  // namespace

int main(int argc, char** argv) {
    registry reg;
    register_verl(reg);
    register_trl(reg);
    register_openrlhf(reg);
    register_gdpo(reg);
    register_policy_loss(reg);
    register_returns(reg);
    register_token_baseline(reg);
    register_kl_value(reg);
    register_preference(reg);
    register_kto_orpo(reg);
    register_listwise(reg);
    register_token_preference(reg);
    register_oreo(reg);
    register_arenarl(reg);
    register_mmr1_scores(reg);
    register_mmr1_samplers(reg);
    register_verl_agent(reg);
    register_shaping(reg);
    register_objectives(reg);

    bool verbose = false, list = false, stats = false;
    std::vector<fs::path> roots;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--verbose" || a == "-v") verbose = true;
        else if (a == "--list-deviations") list = true;
        else if (a == "--stats") stats = true;
        else if (a == "--help" || a == "-h") {
            std::cout << "usage: posttrain_conformance [--verbose] [--list-deviations] [--stats] [DIR|FILE ...]\n"
                         "  --verbose          print every PASS and every skipped case id\n"
                         "  --list-deviations  print the named deviations and the mapped functions\n"
                         "  --stats            print the largest error per mapped file\n";
            return 0;
        } else if (!a.empty() && a[0] == '-') {
            std::cerr << "unknown option " << a << "\n";
            return 2;
        } else roots.emplace_back(a);
    }
    if (list) {
        list_deviations(reg);
        if (roots.empty()) return 0;
    }
    if (roots.empty()) {
        std::cerr << "posttrain_conformance: no case directory or file given\n";
        return 2;
    }
    std::vector<fs::path> files;
    for (const auto& r : roots) {
        if (!fs::exists(r)) {
            std::cout << "posttrain_conformance: " << r.string() << " does not exist; nothing to run\n";
            return 77;
        }
        collect(r, files);
    }
    std::sort(files.begin(), files.end());
    counts total;
    for (const auto& f : files) run_file(reg, f, verbose, total);
    if (stats)
        for (const auto& [key, worst] : worst_error) std::cout << "STAT " << key << " max error (relative above 1, absolute below) " << worst << "\n";
    std::cout << total.passed << " passed, " << total.failed << " failed, " << total.skipped << " skipped\n";
    return total.failed == 0 ? 0 : 1;
}
