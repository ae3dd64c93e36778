#!/usr/bin/python3
"""The GPU half of compare.py: reads the JSON lines the CUDA benchmarks print (bench/cuda/*_bench.cu,
timing.cuh: {"op", "size", "device", "posttrain_ms", "memcpy_ms", "memcpy_fraction"}), runs the
matching PyTorch peers (bench/peers/torch_peers.py) on the GPU at the same sizes in the same
invocation, and prints per operation and size: posttrain's time, its fraction of a device copy of the
bytes it must move (memcpy_ms / posttrain_ms, measured by the bench in the same run), each peer's
time and the speedup peer_ms / posttrain_ms; then issue 9's targets, each met or missed. Appends one
JSON object per row to bench-results.jsonl (compare.py's keys; threads 0; device the GPU's name).

Peers are optional: without torch, or with a torch that has no CUDA, the table shows posttrain's
numbers alone and says why (exit status 0). A bench row may name its peers itself with the keys
"peer_layout" (a torch_peers.make_data layout) and "peers" (a list of torch_peers.PEERS names);
otherwise OPS below maps the op name to them.

Usage: compare_gpu.py BENCH.jsonl [...] [--device cuda] [--out bench-results.jsonl] [--budget-s 240]
                      [--repeats 3] [--filter REGEX] [--no-peers]
Testing without a GPU: --device cpu runs the peers on the CPU against a hand-written JSONL file.
"""

import argparse
import json
import math
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# op-name regex -> (peer layout or a function of the match giving it, group size override or None, peers).
# Sizes: the bench's "size" (rewards, tokens, tokens per side) is the peer's n.
OPS = [
    (r"^grpo_uniform(\d+)_f32$", "uniform", 1, ["reshape", "reshape_trl", "scatter"]),
    (r"^grpo_uniform(\d+)_batchstd_f32$", "uniform", 1, []),  # no batch-std peer in torch_peers
    (r"^grpo_uniform(\d+)_f32pass_f32$", "uniform", 1, ["scatter", "reshape"]),  # scatter: verl's vectorized form
    (r"^gpg_uniform(\d+)_f32$", "uniform", 1, ["gpg_reshape"]),
    (r"^passk_uniform(\d+)_f32$", "uniform", 1, ["passk_reshape"]),
    (r"^opo_uniform(\d+)_f32$", "uniform", 1, ["opo_reshape"]),
    (r"^gdpo_uniform(\d+)_k3_f32$", "uniform", 1, ["gdpo_reshape"]),
    (r"^rloo_uniform(\d+)_f32$", "uniform", 1, ["rloo_reshape", "rloo_scatter"]),
    (r"^grpo_ragged\d*_f32$", "ragged", None, ["scatter"]),
    (r"^rloo_ragged\d*_f32$", "ragged", None, ["rloo_scatter"]),
    (r"^grpo_ids_dense", "ids_dense", None, ["scatter"]),
    (r"^rloo_ids_dense", "ids_dense", None, ["rloo_scatter"]),
    (r"^grpo_(ids|unsorted)", "ids", None, ["scatter"]),
    (r"^rloo_(ids|unsorted)", "ids", None, ["rloo_scatter"]),
    (r"^ppo_k3_(f32|bf16)(_sync)?$", "tokens_t2048", None, ["ppo_k3_autograd"]),
    (r"^dpo_sigmoid_(f32|bf16)$", "pairs_t2048", None, ["dpo_autograd"]),
    (r"^simpo_(f32|bf16)$", "pairs_t2048", None, ["simpo_autograd"]),
    (r"^gae_t(\d+)", lambda m: f"gae_t{m.group(1)}", None, ["gae_verl_loop"]),
    # size = logits (B * T * V), as bench/logits_bench.cpp; V from a "_v<V>" in the name, else 32768.
    (r"^token_log_probs?", lambda m: "logits_v" + (re.search(r"_v(\d+)", m.string) or [None, "32768"])[1], None,
     ["logprobs_entropy_autograd"]),
]

# Issue 9's targets on an H100. metric "copy": memcpy_fraction >= need; "ratio": peer_ms / posttrain_ms
# >= need against the first listed peer present; "memory": the row's extra_bytes / the peer's peak extra
# device memory <= need. at: "2^24" (rows of size >= 0.95 * 2^24: the ragged
# bench cuts its last group) or "largest" (the op's largest size).
TARGETS = [
    ("outcome advantages: >= 70% of copy bandwidth at >= 2^24 rewards",
     r"^(grpo_uniform\d+|rloo_uniform\d+|grpo_ragged\d*|gpg_uniform\d+|passk_uniform\d+|opo_uniform\d+|gdpo_uniform\d+_k3)_f32$",
     "copy", [], 0.70, "2^24"),
    ("outcome advantages: >= 3x the reshape peer at >= 2^24 rewards",
     r"^(grpo|rloo|gpg|passk|opo)_uniform\d+_f32$|^gdpo_uniform\d+_k3_f32$", "ratio",
     ["reshape", "rloo_reshape", "gpg_reshape", "passk_reshape", "opo_reshape", "gdpo_reshape"], 3.0, "2^24"),
    ("outcome advantages from unsorted ids: >= 5x the scatter peer at >= 2^24 rewards",
     r"^(grpo|rloo)_(ids|unsorted)", "ratio", ["scatter", "rloo_scatter"], 5.0, "2^24"),
    ("fused PPO loss forward+backward: >= 10x PyTorch autograd at 2^24 tokens",
     r"^ppo_k3_f32$", "ratio", ["ppo_k3_autograd"], 10.0, "2^24"),
    ("GAE scan: >= 1000x the per-timestep loop",
     r"^gae", "ratio", ["gae_verl_loop"], 1000.0, "largest"),
    ("token log-probs: >= 3x log_softmax + gather",
     r"^tlp_fwd_bf16_2x4096x128256$", "ratio", ["log_softmax_gather"], 3.0, "largest"),
    ("token log-probs: under 5% of log_softmax + gather's extra memory",
     r"^tlp_fwd_bf16_2x4096x128256$", "memory", ["log_softmax_gather"], 0.05, "largest"),
]

BIG = 0.95 * (1 << 24)


def read_rows(paths):
    """The bench rows of the files, in order; a later row for the same (op, size) replaces an earlier."""
    rows = {}
    for path in paths:
        try:
            f = open(path)
        except OSError as e:
            print(f"compare_gpu: cannot read {path}: {e}", file=sys.stderr)
            continue
        with f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue  # the benches' "no CUDA device" notes and other text
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not all(k in r for k in ("op", "size", "posttrain_ms")):
                    continue
                rows[(r["op"], int(r["size"]))] = r
    return list(rows.values())


def peer_spec(row):
    """(layout, group override, peers) for a bench row; layout None when no peer applies. The token
    log-prob benches must name their peers in the row (the logits data is shaped, not sized)."""
    if row.get("peer_layout") and row.get("peers"):
        return row["peer_layout"], None, list(row["peers"])
    for regex, layout, group, peers in OPS:
        m = re.match(regex, row["op"])
        if m:
            lay = layout(m) if callable(layout) else layout
            return lay, (int(m.group(group)) if group else None), peers
    return None, None, []


def load_peers(device, no_peers):
    """(torch, torch_peers) or (None, reason)."""
    if no_peers:
        return None, "peers not asked for (--no-peers)"
    try:
        import torch  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return None, f"torch is not importable ({e.__class__.__name__}: {e})"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return None, f"torch {torch.__version__} has no usable CUDA device (torch.cuda.is_available() is False)"
    sys.path.insert(0, os.path.join(HERE, "peers"))
    try:
        import torch_peers
    except Exception as e:
        return None, f"bench/peers/torch_peers.py failed to import ({e.__class__.__name__}: {e})"
    return (torch, torch_peers), None


def fmt(v, spec):
    return format(v, spec) if v is not None and not (isinstance(v, float) and math.isnan(v)) else "-"


def pick_peer(wanted, available):
    """The first of `wanted` (names, or *glob* patterns) among the measured peers."""
    for w in wanted:
        if w.startswith("*"):
            core = w.strip("*")
            for a in available:
                if core in a:
                    return a
        elif w in available:
            return w
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", help="JSON lines printed by the CUDA benches")
    ap.add_argument("--device", default="cuda", help="where the peers run: cuda (default), cuda:K, or cpu (testing)")
    ap.add_argument("--out", default="bench-results.jsonl")
    ap.add_argument("--filter", default="", help="regex on op names")
    ap.add_argument("--budget-s", type=float, default=240.0, help="stop starting peers after this many seconds")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per peer (median)")
    ap.add_argument("--no-peers", action="store_true")
    a = ap.parse_args()

    rows = [r for r in read_rows(a.files) if re.search(a.filter, r["op"])]
    if not rows:
        print("compare_gpu: no CUDA benchmark rows in " + ", ".join(a.files) + " (no GPU, or the benches failed)")
        return 0
    peers_mod, why = load_peers(a.device, a.no_peers)
    if why:
        print(f"compare_gpu: PyTorch peers skipped: {why}")
    if peers_mod:
        torch, tp = peers_mod
        if a.device == "cpu":
            torch.set_num_threads(1)  # compare.py's single-thread peers
        gpu = torch.cuda.get_device_name(torch.device(a.device)) if a.device.startswith("cuda") else None
        print(f"compare_gpu: peers on {a.device}{' (' + gpu + ')' if gpu else ''}, torch {torch.__version__}")

    # Measure: rows grouped by their peers' data, each data set built once (on the CPU, then moved).
    specs = {(r["op"], int(r["size"])): peer_spec(r) for r in rows}
    peer_ms, peer_note, peer_extra = {}, {}, {}  # peer_extra: peak device bytes beyond the inputs
    start = time.monotonic()
    if peers_mod:
        torch, tp = peers_mod
        by_data = {}
        for r in rows:
            layout, group, peers = specs[(r["op"], int(r["size"]))]
            if layout and peers:
                by_data.setdefault((layout, group, int(r["size"])), set()).update(peers)
        for (layout, group, n), peers in sorted(by_data.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2])):
            key = (layout, group, n)
            if time.monotonic() - start > a.budget_s:
                for p in peers:
                    peer_note[key + (p,)] = "skipped (time budget)"
                continue
            try:
                d = tp.make_data(layout, n)
                if d is None:
                    raise ValueError(f"no make_data for layout {layout}")
                if group:
                    d["group"] = group
                d = tp.to_device(d, a.device)
            except Exception as e:
                for p in peers:
                    peer_note[key + (p,)] = f"no data ({e.__class__.__name__}: {e})"
                continue
            for p in sorted(peers):
                if p not in tp.PEERS:
                    peer_note[key + (p,)] = "no such peer"
                    continue
                if time.monotonic() - start > a.budget_s:
                    peer_note[key + (p,)] = "skipped (time budget)"
                    continue
                try:
                    s = tp.time_peer(tp.PEERS[p], d, repeats=a.repeats)
                    if s is None:
                        peer_note[key + (p,)] = "declined at this size"
                    else:
                        peer_ms[key + (p,)] = s * 1e3
                        extra = getattr(tp, "peer_extra_bytes", lambda name: None)(p)
                        if extra is not None:
                            peer_extra[key + (p,)] = extra
                except Exception as e:  # out of memory, an op missing on this device, ...
                    peer_note[key + (p,)] = f"error ({e.__class__.__name__}: {str(e).splitlines()[0][:80]})"
                    if a.device.startswith("cuda"):
                        torch.cuda.empty_cache()
            del d
            if a.device.startswith("cuda"):
                torch.cuda.empty_cache()

    # The table, op by op in the benches' order.
    out_rows = []
    header = (f"{'op':28s} {'N':>9s} {'posttrain ms':>12s} {'copy frac':>9s} {'peer':26s} {'peer ms':>10s} "
              f"{'ratio':>9s}")
    ops = []
    for r in rows:
        if r["op"] not in ops:
            ops.append(r["op"])
    measured = {}  # (op, size) -> {peer: ratio}
    memory_used = {}  # (op, size) -> {peer: our extra bytes / the peer's}
    for op in ops:
        print(f"\n== {op}\n{header}")
        for r in sorted((r for r in rows if r["op"] == op), key=lambda r: int(r["size"])):
            n = int(r["size"])
            ours = float(r["posttrain_ms"])
            frac = r.get("memcpy_fraction")
            layout, group, peers = specs[(op, n)]
            device = r.get("device") or "cuda"
            base = {"op": op, "size": n, "threads": 0, "device": device, "posttrain_ms": ours,
                    "memcpy_fraction": frac}
            shown = False
            for p in peers if layout and peers_mod else []:
                key = (layout, group, n, p)
                ms = peer_ms.get(key)
                note = peer_note.get(key, why or "")
                ratio = ms / ours if ms and ours > 0 else None
                extra = peer_extra.get(key)
                if ms is not None:
                    measured.setdefault((op, n), {})[p] = ratio
                    if extra is not None and r.get("extra_bytes") is not None:
                        memory_used.setdefault((op, n), {})[p] = float(r["extra_bytes"]) / max(extra, 1)
                    out_rows.append(dict(base, peer=p, peer_ms=ms, ratio=ratio, peer_extra_bytes=extra))
                    shown = True
                if ms is not None and extra is not None:
                    note = f"extra memory: ours {float(r.get('extra_bytes', 0)) / 2**20:.1f} MiB, peer's {extra / 2**20:.0f} MiB"
                print(f"{op:28s} {n:9d} {ours:12.4f} {fmt(frac, '9.3f'):>9s} {p:26s} {fmt(ms, '10.4f'):>10s} "
                      f"{fmt(ratio, '9.2f'):>9s}" + (f"  {note}" if note and (ms is None or extra is not None) else ""))
            if not shown:  # posttrain's row is recorded even when no peer time is
                out_rows.append(dict(base, peer=None, peer_ms=None, ratio=None))
            if not (layout and peers and peers_mod):  # otherwise the peer lines above said it all
                reason = "no peer for this op" if not (layout and peers) else "peers skipped (see above)"
                print(f"{op:28s} {n:9d} {ours:12.4f} {fmt(frac, '9.3f'):>9s} {'-':26s} {'-':>10s} {'-':>9s}  {reason}")

    # Issue 9's targets.
    print("\n== issue 9 targets (H100)")
    for name, regex, metric, wanted, need, at in TARGETS:
        cand = [r for r in rows if re.search(regex, r["op"])]
        if not cand:
            print(f"  MISSING  {name}: no CUDA bench row matches /{regex}/")
            continue
        results = []
        for op in sorted({r["op"] for r in cand}):
            op_rows = sorted((r for r in cand if r["op"] == op), key=lambda r: int(r["size"]))
            r = op_rows[-1]
            n = int(r["size"])
            if at == "2^24" and n < BIG:
                results.append(f"{op}: n/a (largest size 2^{math.log2(max(n, 1)):.1f} < 2^24)")
                continue
            if metric == "copy":
                v = r.get("memcpy_fraction")
                if v is None:
                    results.append(f"{op}: no memcpy_fraction")
                    continue
                results.append(f"{op} @ {n}: {v:.2f} of copy -> {'met' if v >= need else 'MISSED'}")
            else:  # against a peer: its time ("ratio", at least `need`) or its memory ("memory", at most)
                memory = metric == "memory"
                got = (memory_used if memory else measured).get((op, n), {})
                p = pick_peer(wanted, list(got))
                if p is None:
                    results.append(f"{op} @ {n}: no peer {'memory' if memory else 'time'} "
                                   f"({why or 'peer not measured' + (' on a GPU' if memory else '')})")
                    continue
                v = got[p]
                met = v <= need if memory else v >= need
                shown = f"{100 * v:.3f}% of {p}'s extra memory" if memory else f"{v:.1f}x {p}"
                results.append(f"{op} @ {n}: {shown} -> {'met' if met else 'MISSED'}")
        print(f"  {name}")
        for line in results:
            print(f"      {line}")

    with open(a.out, "a") as f:
        for row in out_rows:
            f.write(json.dumps(row) + "\n")
    print(f"\nappended {len(out_rows)} rows to {os.path.abspath(a.out)} ({time.monotonic() - start:.0f} s of peers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
