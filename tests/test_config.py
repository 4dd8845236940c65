"""Run configs: bad values and unknown keys are errors that name the key and the choices."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from scion_jax.train import base_config, validate
from scion_jax.train.optim import make_schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "key,value,message",
    [
        (
            "optimizer.name",
            "sgd",
            r"config.optimizer.name='sgd' is invalid; valid choices: "
            r"scion, adamw, muon",
        ),
        ("schedule.name", "cosine", r"config.schedule.name='cosine'.*constant, warmup"),
        ("model.compute_dtype", "float16", r"model.compute_dtype.*float32, bfloat16"),
        ("optimizer.momentum", 1.5, r"optimizer.momentum=1.5 must be in \[0, 1\]"),
        ("steps", 0, r"config.steps=0 must be a positive number"),
        ("mesh.data", 16, r"mesh=.*needs 16 devices; there are 8"),
        ("batch_size", 12, r"batch_size=12 must divide by data×fsdp = 8"),
        ("keep_steps", (5, 500), r"keep_steps has 500; each must be a step in \[1, 100\]"),
        ("branch.workdir", "../run", r"branch.step=0 must be in \[1, steps=100\)"),
    ],
)
def test_invalid_values(key, value, message):
    config = base_config()
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError, match=message):
        validate(config, n_devices=8)


def test_mesh_rest_axis_and_subsets():
    config = base_config()
    config.mesh.update(data=-1, fsdp=2, tensor=1)
    assert validate(config, n_devices=8) == {"data": 4, "fsdp": 2, "tensor": 1}
    config.mesh.update(data=1, fsdp=1, tensor=1)  # the first device only
    assert validate(config, n_devices=8) == {"data": 1, "fsdp": 1, "tensor": 1}
    with pytest.raises(ValueError, match="multi-host runs use them all"):
        validate(config, n_devices=8, process_count=2)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("constant", [1.0, 1.0, 1.0, 1.0]),
        ("warmup", [0.0, 0.5, 1.0, 1.0]),
        ("linear_decay", [1.0, 1.0, 1.0, 0.5]),  # last 25% of 8 steps decays linearly to 0
        ("wsd", [0.0, 0.5, 1.0, 0.5]),
    ],
)
def test_schedules(name, expected):
    config = base_config()
    config.steps, config.optimizer.learning_rate = 8, 1.0
    config.schedule.update(name=name, warmup_steps=2, decay_fraction=0.25)
    schedule = make_schedule(config)
    assert [float(schedule(s)) for s in (0, 1, 5, 7)] == pytest.approx(expected)
    assert float(schedule(8)) == pytest.approx(0.0 if name in ("linear_decay", "wsd") else 1.0)


def test_unknown_override_key_is_an_error(tmp_path):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "experiments", "run.py"),
        f"--workdir={tmp_path}",
        "--config.optimizer.learnig_rate=0.1",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "learnig_rate" in out.stderr and "learning_rate" in out.stderr  # the close match


def test_saved_json_config_gets_new_defaults_and_refuses_unknown_keys(tmp_path):
    """from_json.py: a config saved before keys were added still runs; a typo is an error."""
    path = os.path.join(ROOT, "experiments", "configs", "from_json.py")
    spec = importlib.util.spec_from_file_location("from_json", path)
    from_json = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(from_json)
    old = json.loads(base_config().to_json())
    del old["keep_steps"], old["branch"]  # keys added after this config was saved
    old["model"]["d_model"], old["keep_every"] = 96, 7
    (tmp_path / "old.json").write_text(json.dumps(old))
    config = from_json.get_config(str(tmp_path / "old.json"))
    assert config.model.d_model == 96 and config.keep_every == 7
    assert config.keep_steps == () and config.branch.workdir == ""
    old["optimizer"]["learning_rte"] = 0.1
    (tmp_path / "typo.json").write_text(json.dumps(old))
    with pytest.raises(KeyError, match="learning_rte"):
        from_json.get_config(str(tmp_path / "typo.json"))
