"""The paper's proxy_69m model (PAPER.md §4), for GPU/TPU pods.

Memory defaults (blockwise attention, chunked loss, scanned blocks with remat):
data-parallel: batch 256 on 8 devices = 32 sequences per device (the paper's
B = 2048 on 64 chips), ≤ 16 GiB per device (experiments/benchmarks/README.md, "Memory").

python experiments/run.py --config=experiments/configs/proxy_69m.py:/path/to/prepared_data
"""

from scion_jax.train.config import paper_config


def get_config(data_source: str | None = None):
    return paper_config("proxy_69m", data_source)
