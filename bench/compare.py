#!/usr/bin/python3
"""Runs posttrain_bench and the PyTorch peers in one go and prints, per operation and size: posttrain's
time, each peer's time, the ratio peer/posttrain (speedup), and posttrain's fraction of a memcpy of the
same bytes (memcpy_time / posttrain_time, the memcpy measured in the same run). Appends one JSON object
per row to bench-results.jsonl in the working directory.

Adding an operation: register its C++ benchmark as "<bench>/<seq|parT>/<N>" (see bench/common.hpp),
write its peers in bench/peers/torch_peers.py, and add one line to OPS below.

Usage: compare.py --bench BINARY [--filter REGEX] [--sizes 14,16,...] [--threads 1,2] [--out FILE]
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
import torch  # noqa: E402
import torch_peers  # noqa: E402

# op name -> (C++ benchmark base name, layout of the peer's inputs, peers)
OPS = {
    "grpo_uniform":   ("grpo_uniform",   "uniform",   ["reshape", "reshape_trl", "scatter", "verl_loop"]),
    "grpo_ragged":    ("grpo_ragged",    "ragged",    ["scatter", "verl_loop"]),
    "grpo_ids":       ("grpo_ids",       "ids",       ["scatter", "verl_loop"]),
    "grpo_ids_dense": ("grpo_ids_dense", "ids_dense", ["scatter", "verl_loop"]),
    "rloo_uniform":   ("rloo_uniform",   "uniform",   ["rloo_reshape", "rloo_scatter", "rloo_verl_loop"]),
    "rloo_ragged":    ("rloo_ragged",    "ragged",    ["rloo_scatter", "rloo_verl_loop"]),
    "rloo_ids":       ("rloo_ids",       "ids",       ["rloo_scatter", "rloo_verl_loop"]),
    "rloo_ids_dense": ("rloo_ids_dense", "ids_dense", ["rloo_scatter", "rloo_verl_loop"]),
    "gae_t1024":      ("gae_t1024",      "gae_t1024", ["gae_verl_loop"]),
    "gae_t4096":      ("gae_t4096",      "gae_t4096", ["gae_verl_loop"]),
    "ppo_k3":         ("ppo_k3",         "tokens_t1024", ["ppo_k3_autograd"]),
    "dpo_sigmoid":    ("dpo_sigmoid",    "pairs_t1024",  ["dpo_autograd"]),
    "simpo":          ("simpo",          "pairs_t1024",  ["simpo_autograd"]),
    "dpo_sigmoid_i64": ("dpo_sigmoid_i64", "pairs_i64_t1024", ["dpo_trl_autograd", "dpo_autograd"]),
    "bradley_terry":  ("bradley_terry",  "uniform",   ["bt_mm_torch"]),
    "rank_advantages": ("rank_advantages", "uniform", ["rank_adv_torch"]),
    "gigpo_steps":    ("gigpo_steps",    "steps",     ["gigpo_verl_agent"]),
    "token_log_probs": ("token_log_probs", "logits_v32768", ["logprobs_entropy_autograd"]),
}


def device_name():
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu: {model}"


def run_cpp(binary, names, repetitions, min_time):
    """Median real time (ms) and bytes of each benchmark whose name matches one of names (exact)."""
    regex = "^(" + "|".join(re.escape(n) for n in names) + ")(/real_time)?$"
    cmd = [binary, f"--benchmark_filter={regex}", "--benchmark_format=json",
           f"--benchmark_repetitions={repetitions}", f"--benchmark_min_time={min_time}"]
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    samples, bytes_of = {}, {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        name = b.get("run_name", b["name"]).removesuffix("/real_time")
        scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
        samples.setdefault(name, []).append(b["real_time"] * scale)
        bytes_of[name] = int(b.get("bytes", 0))
    return {n: statistics.median(v) for n, v in samples.items()}, bytes_of


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--filter", default="", help="regex on op names (e.g. grpo, 'grpo_(uniform|ids)$')")
    ap.add_argument("--sizes", default="14,16,18,20,22,24", help="log2 of N")
    ap.add_argument("--threads", default="1", help="thread counts; 1 runs exec::seq, T > 1 exec::par with T")
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.1)
    ap.add_argument("--out", default="bench-results.jsonl")
    a = ap.parse_args()

    ops = {k: v for k, v in OPS.items() if re.search(a.filter, k)}
    if not ops:
        sys.exit(f"no operation matches '{a.filter}'; known: {', '.join(OPS)}")
    sizes = [1 << int(e) for e in a.sizes.split(",")]
    threads = [int(t) for t in a.threads.split(",")]

    def cpp_name(op, t, n):
        return f"{ops[op][0]}/{'seq' if t == 1 else f'par{t}'}/{n}"

    # posttrain first (all rows), then the memcpy references of exactly those byte counts.
    wanted = [cpp_name(op, t, n) for op in ops for t in threads for n in sizes]
    env_threads = max(threads)
    os.environ["POSTTRAIN_BENCH_THREADS"] = str(env_threads if env_threads > 1 else 2)
    times, bytes_of = run_cpp(a.bench, wanted, a.repetitions, a.min_time)
    missing = [w for w in wanted if w not in times]
    if missing:
        print(f"warning: no C++ benchmark named {', '.join(missing)}", file=sys.stderr)
    mem_names = sorted({f"memcpy/{b}" for b in bytes_of.values() if b > 0})
    mem_times, _ = run_cpp(a.bench, mem_names, a.repetitions, a.min_time)

    device = device_name()
    rows = []
    header = f"{'op':16s} {'N':>9s} {'thr':>3s} {'posttrain ms':>12s} {'peer':15s} {'peer ms':>10s} {'ratio':>8s} {'memcpy frac':>11s}"
    for op, (_, layout, peers) in ops.items():
        print(f"\n== {op}\n{header}", flush=True)
        for t in threads:
            torch.set_num_threads(t)
            for n in sizes:
                name = cpp_name(op, t, n)
                if name not in times:
                    continue
                ours = times[name]
                mem = mem_times.get(f"memcpy/{bytes_of.get(name, 0)}")
                frac = mem / ours if mem else None
                d = torch_peers.make_data(layout, n)
                for peer in peers:
                    s = torch_peers.time_peer(torch_peers.PEERS[peer], d)
                    if s is None:  # the peer declines this size (verl's loops are capped)
                        continue
                    peer_ms = s * 1e3
                    ratio = peer_ms / ours
                    row = {"op": op, "size": n, "threads": t, "device": device, "posttrain_ms": ours,
                           "peer": peer, "peer_ms": peer_ms, "ratio": ratio, "memcpy_fraction": frac}
                    rows.append(row)
                    fmt = lambda v, f: format(v, f) if v is not None else "-"
                    print(f"{op:16s} {n:9d} {t:3d} {ours:12.4f} {peer:15s} {peer_ms:10.4f} "
                          f"{ratio:8.2f} {fmt(frac, '11.3f'):>11s}", flush=True)
        if any(p.endswith("verl_loop") for p in peers):
            print(f"(verl's per-uid Python loops run only at N <= {torch_peers.VERL_LOOP_MAX_N})")
    with open(a.out, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"\nappended {len(rows)} rows to {os.path.abspath(a.out)}")


if __name__ == "__main__":
    main()
