"""benchmarks/graph_head_oracle.py: the majority label of each fragment (the oracle's decision)."""

import importlib.util
from pathlib import Path

import torch

_SPEC = importlib.util.spec_from_file_location(
    "graph_head_oracle", Path(__file__).resolve().parents[2] / "benchmarks" / "graph_head_oracle.py")
oracle = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(oracle)


def test_majority_label_per_fragment():
    seg = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    lab = torch.tensor([5, 3, 5, 0, 0, 7, 1, 1, 7])
    maj = oracle.majority(seg, lab, 3)
    assert maj[0] == 5 and maj[1] == 0 and maj[2] in (1, 7)
    big = torch.tensor([9] * 3 + [2] * 5 + [9] * 4)  # counts above the label range still sort by count
    assert oracle.majority(torch.zeros(12, dtype=torch.long), big, 1).tolist() == [9]
