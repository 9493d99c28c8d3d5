"""Config files and ``--set`` overrides (larpanda/config.py)."""

import pytest

from larpanda.config import apply_overrides, load_config
from larpanda.errors import UserError


@pytest.mark.parametrize("text, value", [("2e-3", 0.002), ("1E5", 1e5), ("-3.5e+2", -350.0), ("2.6e-3", 0.0026)])
def test_set_reads_exponent_floats_as_numbers(text, value):
    # PyYAML (YAML 1.1) reads "2e-3" as the text '2e-3'; a learning rate given that way must be a number
    cfg = apply_overrides({"train": {"lr": 1.0e-3}}, [f"train.lr={text}"])
    assert isinstance(cfg["train"]["lr"], float) and cfg["train"]["lr"] == pytest.approx(value)


def test_set_keeps_text_lists_and_integers():
    cfg = apply_overrides({}, ["a.b=uresnet-deep", "a.c=[1e-3, 2]", "d=7", "e=1e"])
    assert cfg == {"a": {"b": "uresnet-deep", "c": [0.001, 2]}, "d": 7, "e": "1e"}


def test_config_file_reads_exponent_floats(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 3e-4\n  max_steps: 100\n")
    assert load_config(path) == {"train": {"lr": 0.0003, "max_steps": 100}}


def test_set_without_equals_is_a_user_error():
    with pytest.raises(UserError, match="key=value"):
        apply_overrides({}, ["train.lr"])
