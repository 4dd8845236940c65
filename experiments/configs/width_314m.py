"""The paper's width_314m model (PAPER.md §4), for GPU/TPU pods.

Memory defaults (blockwise attention, chunked loss, scanned blocks with remat):
data-parallel, 32 sequences per device (batch 256 on 8 devices) in 2 microbatches of
16, ≤ 16 GiB per device (experiments/benchmarks/README.md, "Memory"). On more devices, keep
batch_size / (devices × microbatches) ≤ 16.

python experiments/run.py --config=experiments/configs/width_314m.py:/path/to/prepared_data
"""

from scion_jax.train.config import paper_config


def get_config(data_source: str | None = None):
    c = paper_config("width_314m", data_source)
    c.microbatches = 2
    return c
