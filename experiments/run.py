"""Train one model: `python experiments/run.py --config=experiments/configs/quickstart.py`.

Override any key: `--config.optimizer.learning_rate=0.01 --config.steps=500`. Rerunning the
same command with the same --workdir resumes from its newest checkpoint. Multi-host: pass
--distributed (TPU pods, SLURM: jax.distributed auto-detects) or the coordinator flags.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    "experiments/configs/quickstart.py",
    "Config file (ml_collections).",
    lock_config=True,
)
flags.DEFINE_string("workdir", None, "Output directory (default: workdirs/<config name>).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (auto-detected env).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.DEFINE_integer(
    "cpu_devices",
    0,
    "CPU devices of this host (data parallel over them; 0: one per core, as many as divide "
    "the microbatch, when config.mesh is data=-1 and the run is single-process). Ignored "
    "where XLA_FLAGS sets xla_force_host_platform_device_count.",
)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from scion_jax import xla_cpu

    config = _CONFIG.value
    devices = FLAGS.cpu_devices
    if not devices:
        single = not (FLAGS.coordinator_address or FLAGS.distributed)
        data_only = (config.mesh.data, config.mesh.fsdp, config.mesh.tensor) == (-1, 1, 1)
        per_micro = config.batch_size // config.microbatches
        devices = xla_cpu.cpu_devices(per_micro) if single and data_only else 1
    xla_cpu.set_flags(cpu_devices=devices)  # before JAX starts its backend
    import jax

    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO; -v 0 shows it

    if FLAGS.coordinator_address or FLAGS.distributed:
        # CPU processes need a collectives backend (GPU/TPU ignore this setting).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    from scion_jax.train import train

    config_path = FLAGS["config"].config_filename
    name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
    workdir = FLAGS.workdir or os.path.join("workdirs", name)
    if jax.process_index() == 0:
        print(f"Training {name} into {workdir} on {jax.device_count()} device(s).")
    row = train(config, workdir)
    if jax.process_index() == 0:
        print(
            f"\nfinal: step {row.get('step')}  loss {row.get('loss', float('nan')):.4f}  "
            f"output norm {row.get('output_norm', float('nan')):.3f}"
        )
        print(f"metrics:     {os.path.join(workdir, 'metrics.jsonl')}")
        print(f"tensorboard: {os.path.join(workdir, 'tensorboard')}")
        print(f"checkpoints: {os.path.join(workdir, 'checkpoints')}")
        print(f"plot:        {os.path.join(workdir, 'summary.png')}")
    if row.get("preempted"):
        sys.exit(143)  # stopped by SIGTERM after saving: schedulers requeue on this code


if __name__ == "__main__":
    app.run(main)
