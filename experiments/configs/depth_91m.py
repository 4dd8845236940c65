"""The paper's depth_91m model (PAPER.md §4), for GPU/TPU pods.

Memory defaults (blockwise attention, chunked loss, scanned blocks with remat):
data-parallel, 32 sequences per device (batch 256 on 8 devices), ≤ 16 GiB per device
(experiments/benchmarks/README.md, "Memory").

python experiments/run.py --config=experiments/configs/depth_91m.py:/path/to/prepared_data
"""

from scion_jax.train.config import paper_config


def get_config(data_source: str | None = None):
    return paper_config("depth_91m", data_source)
