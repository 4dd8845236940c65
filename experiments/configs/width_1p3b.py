"""The paper's width_1p3b model (PAPER.md §4), for GPU/TPU pods.

Memory defaults (blockwise attention, chunked loss, scanned blocks with remat):
FSDP over 8 devices (mesh fsdp 8, data = the rest): batch 256 on 8 devices = 32
sequences per device in 8 microbatches of 4, ≤ 16 GiB per device
(experiments/benchmarks/README.md, "Memory"). On more devices, keep
batch_size / (devices × microbatches) ≤ 4.

python experiments/run.py --config=experiments/configs/width_1p3b.py:/path/to/prepared_data
"""

from scion_jax.train.config import paper_config


def get_config(data_source: str | None = None):
    c = paper_config("width_1p3b", data_source)
    c.microbatches = 8
    c.mesh.update(data=-1, fsdp=8)
    return c
