#!/usr/bin/env bash
# Downloads, here (a machine with network), the wheels the GPU image lacks, for its
# platform (Linux x86_64, Python 3.12), into .wheels/ (git-ignored; the device tool carries
# it: `carry: [".wheels"]`). The image has jax 0.11 + the CUDA plugin, flax, optax, orbax,
# chex, equinox (and their dependencies); it lacks what scion_jax and its tests import
# beyond those. gpu_check.sh installs them offline from here.
#
#   experiments/benchmarks/gpu_wheels.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-.wheels}
PIP=${PIP:-.venv/bin/pip}
# The project's own requirements missing from the image, then their dependencies that the
# image's packages do not bring (no jax, numpy, protobuf, etils, absl: the image has them).
PACKAGES=(
  grain array_record cloudpickle dm-tree attrs wrapt more-itertools
  ml_collections PyYAML
  tensorboardX
  tqdm
  matplotlib contourpy cycler fonttools kiwisolver pillow pyparsing python-dateutil six packaging
  pytest pluggy iniconfig pygments
)
mkdir -p "$DIR"
"$PIP" download --quiet --dest "$DIR" --no-deps --only-binary=:all: \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --python-version 3.12 --implementation cp "${PACKAGES[@]}"
ls "$DIR"
du -sh "$DIR"
