"""experiments/benchmarks/gpu_check.sh end to end on the CPU (--cpu_smoke, tiny sizes): the
one-call GPU check must not spend the GPU hour on its own bugs."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments", "benchmarks"))


@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path):
    from gpu_check import train_config

    from scion_jax.model import model_flops_per_token
    from scion_jax.train.trainer import model_config

    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    run = subprocess.run(
        ["bash", os.path.join(ROOT, "experiments", "benchmarks", "gpu_check.sh"), "--cpu_smoke",
         "--out", str(out), "--peak_tflops", "0.1"],  # a peak on the CPU: MFU is computed
        capture_output=True, text=True, timeout=400, env=env,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    read = lambda part: json.loads((out / f"gpu_check_{part}.json").read_text())  # noqa: E731
    stages = read("summary")["stages"]
    assert all(stages[s]["exit"] == 0 for s in ("install", "imports", "tests", "env"))
    env_part = read("env")
    assert env_part["backend"] == "cpu" and env_part["bf16_peak_tflop_per_s"] == 0.1
    train = read("train")
    step = train["steps"]["blockwise"]
    assert step["tokens_per_s"] > 0 and step["loss_step_1"] > 0
    config = train_config(smoke=True)
    flops = (model_flops_per_token(model_config(config), config.seq_len)
             * config.batch_size * config.seq_len)
    assert step["mfu_bf16_peak"] == pytest.approx(flops / step["step_s"] / 0.1e12)
    assert "cudnn" in train["errors"]  # no cuDNN on the CPU: recorded, not fatal
    assert train["attention_alone"]["xla_fwd_bwd_ms"] > 0
    memory = read("memory")
    assert memory["predicted"]["total_bytes"] > 0 and memory["measured_peak_bytes"] is None
    assert read("optimizer")["tiny"]["scion_ms"] > 0
    partitioned = read("partitioned")
    assert partitioned["max_abs_difference"] < 1e-6 and partitioned["partitioned_ms"] > 0


def test_bf16_peaks_by_device_kind():
    from gpu_check import bf16_peak

    assert bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert bf16_peak("NVIDIA H100 PCIe") == 756e12
    assert bf16_peak("NVIDIA H200") == 989e12
    assert bf16_peak("NVIDIA A100-SXM4-80GB") == 312e12
    # The longest matching key wins (a shorter one inside it would match first).
    assert bf16_peak("NVIDIA L40") == 181e12 and bf16_peak("NVIDIA L40S") == 362e12
    assert bf16_peak("NVIDIA L4") == 121e12
    assert bf16_peak("NVIDIA H100 NVL") == 835e12
    assert bf16_peak("NVIDIA H200 NVL") is None  # not the SXM's 989
    assert bf16_peak("cpu") is None
