"""The task run skeleton (`larpanda.tasks.runs`): the seed fixes the model's initialisation."""

from __future__ import annotations

from argparse import Namespace

import torch

from larpanda.tasks.runs import task_config
from larpanda.tasks.semantic import build_semantic_model


def _initial_weights(seed):
    torch.seed()  # a fresh process starts torch from a random seed
    args = Namespace(config="cpu", overrides=["model.preset=tiny"], seed=seed, quiet=True)
    cfg, _ = task_config(args, "semantic", "scratch")
    return build_semantic_model("scratch", cfg, None).state_dict()


def test_task_config_seeds_the_model_initialisation():
    a, b, c = _initial_weights(0), _initial_weights(0), _initial_weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
