"""The run configuration: defaults every config file starts from, and validation.

Config files (`experiments/configs/*.py`) define ``get_config()`` returning
``base_config()`` with overrides; `experiments/run.py` locks it, so a mistyped
``--config.a.b=v`` is an error naming the key.
"""

from __future__ import annotations

import math

import ml_collections

from scion_jax import xla_cpu
from scion_jax.data import default_data_config
from scion_jax.model.config import ATTENTION, REMAT

# Norms `norm_extra` may add to the log (`scion_jax.norms.VALID` beyond the role norms).
NORM_EXTRA = ("supremum", "condition_number", "frobenius", "stable_rank")
OPTIMIZERS = ("scion", "adamw", "muon")
SCHEDULES = ("constant", "warmup", "linear_decay", "wsd")
MESH_AXES = ("data", "fsdp", "tensor")
DTYPES = ("float32", "bfloat16")
NS_COEFFS = ("muon", "polar_express", "svd")
NS_PRECONDITIONINGS = ("frobenius", "aol")


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.steps = 100
    c.batch_size = 16  # sequences per step, global
    c.seq_len = 256
    # Memory (issue 10): gradient accumulation over `microbatches` splits of the batch inside
    # the one step; the loss's logits `loss_chunk` positions at a time (-1: auto, chunked
    # when vocab ≥ 32k; 0: plain logits). See also model.attention / attention_block / remat.
    c.microbatches = 1
    c.loss_chunk = -1

    c.model = ml_collections.ConfigDict(
        dict(
            vocab_size=256,
            d_model=128,
            n_layers=4,
            n_heads=2,
            n_kv_heads=0,
            head_dim=64,
            mlp_hidden=0,
            norm_everywhere=True,
            learnable_norm=False,
            scan_layers=False,
            rope_theta=10000.0,
            attention="auto",
            attention_block=128,
            remat="none",
            param_dtype="float32",
            compute_dtype="bfloat16",
        )
    )  # n_kv_heads / mlp_hidden 0: the defaults (= n_heads; 8/3·d rounded up to 64)

    c.optimizer = ml_collections.ConfigDict(
        dict(
            name="scion",
            learning_rate=2.0**-7,
            momentum=0.0,
            nesterov=False,
            weight_decay=0.0,
            ns_coeffs="muon",
            ns_steps=5,
            ns_dtype="bfloat16",
            ns_gram=False,
            ns_preconditioning="frobenius",
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            grad_clip=0.0,
            partitioned=True,
        )
    )  # b1/b2/eps: AdamW; grad_clip 0: off; partitioned: Newton–Schulz split over the mesh
    # ns_gram: Gram Newton–Schulz where cheaper; ns_preconditioning: frobenius | aol (`scion`)
    c.optimizer.lr_scales = ml_collections.ConfigDict(dict(input=1.0, hidden=1.0, output=1.0))

    # constant | warmup (linear from 0 over warmup_steps, then constant)
    # | linear_decay (to 0 over the last decay_fraction of steps) | wsd (warmup + decay)
    c.schedule = ml_collections.ConfigDict(
        dict(name="constant", warmup_steps=0, decay_fraction=0.25)
    )

    c.data = default_data_config()  # source, tokenizer, ..., num_epochs (None: repeat, logged)
    c.data.num_epochs = ml_collections.config_dict.placeholder(int)

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # -1: the rest

    c.log_every = 10
    c.norm_every = 16
    c.norm_power_iters = 0  # σ_max for rms_to_rms norms: 0 = exact SVD, else power iterations
    c.norm_updates = True  # also log the update's norms (ΔW over the step), "update/..."
    c.norm_extra = ()  # more norms per matrix, e.g. ("supremum", "condition_number")
    c.eval_every = 100
    c.eval_batches = 4  # held-out batches of batch_size sequences, unless ...
    c.eval_sequences = 0  # ... > 0: this many held-out sequences, whatever the batch size
    # > 0: also a second held-out set of this many sequences spread evenly over the whole
    # held-out split (every held-out group in proportion), logged as "eval_spread_loss"
    c.eval_spread_sequences = 0
    c.checkpoint_every = 100
    c.keep_checkpoints = 2  # the last N ...
    c.keep_every = 0  # ... plus every M steps (0: none) ...
    c.keep_steps = ()  # ... plus these steps (saved even off checkpoint_every)

    # Start from another run's checkpoint at `step` (its state and data position), e.g. the
    # decayed variant branched off a constant-LR run (PAPER.md §5). A relative `workdir` is
    # taken from this run's workdir. Used only while this run has no checkpoint of its own.
    c.branch = ml_collections.ConfigDict(dict(workdir="", step=0))
    return c


def decay_start(steps: int, decay_fraction: float) -> int:
    """The step where a linear decay over the last `decay_fraction` of `steps` begins."""
    return steps - round(decay_fraction * steps)


def eval_batch_count(config: ml_collections.ConfigDict, key: str = "eval_sequences") -> int:
    """Held-out batches per evaluation of the set of `key` (`eval_sequences`, or
    `eval_spread_sequences`): config[key] / B when set (the same held-out sequences for
    every batch size), else `eval_batches` batches of B."""
    return config[key] // config.batch_size or config.eval_batches


def cpu_devices(config: ml_collections.ConfigDict, single_process: bool, cores=None) -> int:
    """How many CPU devices `experiments/run.py` makes for `config`: `xla_cpu.cpu_devices`
    of the per-microbatch batch for a single-process run with the default mesh (data=-1,
    fsdp=1, tensor=1), which is then data parallel over them; 1 otherwise."""
    mesh = (config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    if not single_process or mesh != (-1, 1, 1) or config.microbatches < 1:
        return 1
    return xla_cpu.cpu_devices(config.batch_size // config.microbatches, cores)


def cpu_study_config() -> ml_collections.ConfigDict:
    """The run of the CPU norm-transfer studies (`experiments/configs/sweeps/cpu_*.py`):
    byte-level Shakespeare, context 128, d 64 (one head of 64), 4 layers, Scion at the
    paper's group ratio 1 : 1/8 : 1, no momentum, constant LR; logs every 8 steps."""
    c = base_config()
    c.seq_len = 128
    c.model.update(d_model=64, n_layers=4, n_heads=1, vocab_size=256)
    c.optimizer.lr_scales.hidden = 1 / 8
    c.log_every, c.norm_every, c.eval_every, c.checkpoint_every = 8, 8, 64, 256
    # What the studies ran with (before "auto" and 128-position blocks); their runs name it.
    c.model.update(attention="xla", attention_block=512)
    return c


def _choice(key: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"config.{key}={value!r} is invalid; valid choices: {', '.join(valid)}.")


def _positive(config: ml_collections.ConfigDict, *keys: str) -> None:
    for key in keys:
        value = config
        for part in key.split("."):
            value = value[part]
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"config.{key}={value!r} must be a positive number.")


def validate(
    config: ml_collections.ConfigDict, n_devices: int, process_count: int = 1
) -> dict[str, int]:
    """Checks every value the trainer relies on; returns the resolved mesh shape.

    A mesh smaller than the host's devices (single process) runs on the first ones,
    e.g. ``mesh.data=1`` for a one-device run on a many-device host.
    """
    _positive(
        config,
        "steps",
        "batch_size",
        "seq_len",
        "optimizer.learning_rate",
        "log_every",
        "norm_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
    )
    _choice("optimizer.name", config.optimizer.name, OPTIMIZERS)
    _choice("schedule.name", config.schedule.name, SCHEDULES)
    _choice("model.param_dtype", config.model.param_dtype, DTYPES)
    _choice("model.compute_dtype", config.model.compute_dtype, DTYPES)
    _choice("optimizer.ns_dtype", config.optimizer.ns_dtype, DTYPES)
    _choice("optimizer.ns_coeffs", config.optimizer.ns_coeffs, NS_COEFFS)
    _choice("model.attention", config.model.attention, ATTENTION)
    _choice("model.remat", config.model.remat, REMAT)
    _positive(config, "microbatches", "model.attention_block")
    if config.loss_chunk < -1:
        raise ValueError(
            f"config.loss_chunk={config.loss_chunk}; valid: -1 (auto), 0 (plain logits) or a "
            "positive number of positions."
        )
    _choice(
        "optimizer.ns_preconditioning", config.optimizer.ns_preconditioning, NS_PRECONDITIONINGS
    )
    if not isinstance(config.optimizer.ns_gram, bool):
        raise ValueError(
            f"config.optimizer.ns_gram={config.optimizer.ns_gram!r} is invalid; valid choices: "
            "True, False."
        )
    if not 0.0 <= config.optimizer.momentum <= 1.0:
        raise ValueError(
            f"config.optimizer.momentum={config.optimizer.momentum} must be in [0, 1]."
        )
    for name in config.norm_extra:
        _choice("norm_extra", name, NORM_EXTRA)
    if not 0.0 < config.schedule.decay_fraction <= 1.0:
        raise ValueError("config.schedule.decay_fraction must be in (0, 1].")
    for step in config.keep_steps:
        if not (isinstance(step, int) and 0 < step <= config.steps):
            raise ValueError(
                f"config.keep_steps has {step!r}; each must be a step in [1, {config.steps}]."
            )
    for key in ("eval_sequences", "eval_spread_sequences"):
        if config[key] < 0 or config[key] % config.batch_size:
            raise ValueError(
                f"config.{key}={config[key]} must be 0 or a positive multiple of "
                f"batch_size={config.batch_size} (evaluated in batches of that size)."
            )
    if config.branch.workdir and not 0 < config.branch.step < config.steps:
        raise ValueError(
            f"config.branch.step={config.branch.step} must be in [1, steps={config.steps})."
        )
    if config.seq_len > 0 and config.model.vocab_size < 2:
        raise ValueError("config.model.vocab_size must be at least 2.")
    mesh = {axis: int(config.mesh[axis]) for axis in MESH_AXES}
    unknown = set(config.mesh) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"config.mesh has unknown axes {sorted(unknown)}; valid: {MESH_AXES}.")
    rest = [a for a, n in mesh.items() if n == -1]
    if len(rest) > 1 or any(n == 0 or n < -1 for n in mesh.values()):
        raise ValueError(f"config.mesh={mesh}: sizes must be ≥ 1, with at most one -1 (the rest).")
    fixed = math.prod(n for n in mesh.values() if n != -1)
    if rest:
        if n_devices % fixed:
            raise ValueError(f"config.mesh={mesh} does not divide the {n_devices} devices.")
        mesh[rest[0]] = n_devices // fixed
    if math.prod(mesh.values()) > n_devices or (
        math.prod(mesh.values()) < n_devices and process_count > 1
    ):
        raise ValueError(
            f"config.mesh={mesh} needs {math.prod(mesh.values())} devices; there are {n_devices}"
            f"{' (multi-host runs use them all)' if process_count > 1 else ''}."
        )
    if config.batch_size % (mesh["data"] * mesh["fsdp"]):
        raise ValueError(
            f"config.batch_size={config.batch_size} must divide by data×fsdp = "
            f"{mesh['data'] * mesh['fsdp']}."
        )
    if config.batch_size % (config.microbatches * mesh["data"] * mesh["fsdp"]):
        raise ValueError(
            f"config.batch_size={config.batch_size} must divide by config.microbatches × "
            f"mesh data×fsdp = {config.microbatches} × {mesh['data'] * mesh['fsdp']} (every "
            "microbatch is spread over the data-parallel devices)."
        )
    return mesh


def paper_config(size: str, data_source: str | None) -> ml_collections.ConfigDict:
    """A config for one of the paper's model sizes (PAPER.md §4–5), for GPU/TPU pods.

    Paper settings: Scion with no momentum, constant LR, no warmup, no clipping, context
    4096, bf16 compute, batch in sequences. `data_source` is a directory made by
    `python -m scion_jax.data.prepare` (e.g. Nemotron-CC tokenized with a 128k
    tokenizer); without one, the embedded Shakespeare corpus (bytes) is used, which
    runs but is no paper reproduction.
    """
    from scion_jax.model import SIZES  # noqa: PLC0415 - keep config import light

    preset = SIZES[size]
    c = base_config()
    for key in c.model:
        value = getattr(preset, key)
        if key.endswith("dtype"):
            value = str(jnp_name(value))
        c.model[key] = value
    c.seq_len = preset.max_seq_len
    c.batch_size = 256
    c.steps = 10_000
    c.optimizer.learning_rate = 2.0**-9
    c.optimizer.ns_dtype = "bfloat16"
    c.mesh.update(data=-1, fsdp=1, tensor=1)
    # Memory (experiments/benchmarks/README.md, "Memory"): no T×T scores, no [B, T, V]
    # logits, and only each block's input kept for the backward pass (scanned blocks: on
    # XLA:CPU remat of unrolled blocks was measured to be undone by CSE).
    c.model.update(attention="blockwise", attention_block=512, remat="block", scan_layers=True)
    c.loss_chunk = -1  # auto: chunked at V = 128k
    c.log_every, c.norm_every, c.eval_every, c.checkpoint_every = 10, 16, 500, 1000
    c.keep_checkpoints, c.keep_every = 2, 5000
    if data_source:
        c.data.source = data_source
    return c


def jnp_name(dtype) -> str:
    import numpy as np  # noqa: PLC0415

    return np.dtype(dtype).name
