import pytest

from larpanda.errors import UserError
from larpanda.tasks.common import load_task_config


def test_a_budget_sets_steps_for_one_mode_only(tmp_path):
    budget = tmp_path / "budget.yaml"
    budget.write_text("train: {max_steps: 100, eval_every: 10}\nfor_mode: {uresnet: {train: {max_steps: 300}}}\n")
    uresnet = load_task_config("semantic", str(budget), default="uresnet")
    scratch = load_task_config("semantic", str(budget), default="scratch")
    assert uresnet["train"]["max_steps"] == 300 and uresnet["train"]["eval_every"] == 10
    assert scratch["train"]["max_steps"] == 100
    assert "for_mode" not in uresnet and "for_mode" not in scratch  # not saved with the run's config
    assert load_task_config("semantic", str(budget), ["train.max_steps=7"], default="uresnet")["train"]["max_steps"] == 7
    budget.write_text("for_mode: {uresnet: 3}\n")
    with pytest.raises(UserError, match="for_mode"):
        load_task_config("semantic", str(budget), default="uresnet")
