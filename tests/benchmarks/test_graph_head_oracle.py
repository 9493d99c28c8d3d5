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


def test_interaction_rows_call_the_mostly_led_fragments_stuff():
    # fragments: 0 (interaction 0), 1 (two LED points and one of interaction 0), 2 (interaction 1); particles
    # {0, 1} and {2}, one particle edge scored "same interaction"; the head put everything in one interaction
    truth = torch.tensor([0, 0, -1, -1, 0, 1, 1])
    out = {"fragment_of_thing": torch.tensor([0, 0, 1, 1, 1, 2, 2]), "particle_of_thing": torch.tensor([0, 0, 0, 0, 0, 1, 1]),
           "interaction_edges": torch.tensor([[0], [1]]), "interaction_logits": torch.tensor([5.0]),
           "interaction_size": torch.tensor([5, 2]), "interaction_of_thing": torch.zeros(7, dtype=torch.long)}
    rows = oracle.interaction_rows(out, truth, 0.5)
    assert rows["led_fragments_stuff"].tolist() == [0, 0, -1, -1, -1, 0, 0]
    assert rows["oracle_edges"].tolist() == [0, 0, 0, 0, 0, 1, 1]  # the true decision splits the two particles
    assert rows["no_wrong_joins"].tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert rows["fragment_cap"].tolist() == [0, 0, 0, 0, 0, 1, 1]
