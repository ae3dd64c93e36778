"""The PyTorch peers of posttrain's token log-prob benchmark (bench/logits_bench.cpp): filled in by the
logits module's benchmark. PEERS maps a peer name to peer(data); make_data(layout, n, seed) builds the
inputs of the layouts this file owns (None for the others)."""

PEERS = {}


def make_data(layout, n, seed=42):
    return None
