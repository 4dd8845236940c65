"""experiments/run.py with a fault to inject: after SIGUSR1, this process's next training
batch raises OSError, as a failing disk or data mount of one host would.

    python tests/run_with_fault.py RUN_PY_FLAGS...
"""

import os
import runpy
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PY = os.path.join(ROOT, "experiments", "run.py")


def main() -> None:
    # Imports jax without starting a backend: run.py still sets its XLA flags first.
    from scion_jax.train import trainer

    fault = []
    signal.signal(signal.SIGUSR1, lambda *_: fault.append(True))
    global_batch = trainer._global_batch

    def faulty_global_batch(batch, sharding):
        if fault:
            raise OSError("injected: this host's data read failed")
        return global_batch(batch, sharding)

    trainer._global_batch = faulty_global_batch
    sys.argv = [RUN_PY, *sys.argv[1:]]
    runpy.run_path(RUN_PY, run_name="__main__")


if __name__ == "__main__":
    main()
