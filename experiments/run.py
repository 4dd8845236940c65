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
    "CPU devices of this host, the run data parallel over them (0: one per logical CPU, up "
    "to 2, as many as divide the microbatch, for a single-process run with the default "
    "mesh; see scion_jax/xla_cpu.py). Ignored where XLA_FLAGS sets "
    "xla_force_host_platform_device_count, and on an untested jaxlib.",
)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from scion_jax import xla_cpu
    from scion_jax.train.config import cpu_devices

    config = _CONFIG.value
    single_process = not (FLAGS.coordinator_address or FLAGS.distributed)
    devices = FLAGS.cpu_devices or cpu_devices(config, single_process)
    xla_cpu.set_flags(devices)  # before JAX starts its backend
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
