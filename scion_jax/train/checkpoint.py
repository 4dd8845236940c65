"""Orbax checkpoints of the train state and the grain iterator (exact resume).

Orbax writes each step to a temporary directory and renames it when complete, so a
kill never leaves a half-written checkpoint that looks finished. A checkpoint that
fails to restore anyway (disk corruption) is reported and the previous one is used.
"""

from __future__ import annotations

import logging
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies


class Checkpoints:
    """The last `keep` checkpoints, plus every `keep_every`-th step and the `keep_steps`,
    saved asynchronously. `read_only` opens another run's checkpoints to branch from."""

    def __init__(
        self,
        directory: str,
        keep: int = 1,
        keep_every: int = 0,
        keep_steps: tuple[int, ...] = (),
        read_only: bool = False,
    ):
        keep_policies = [policies.LatestN(keep)]
        if keep_every:
            keep_policies.append(policies.EveryNSteps(keep_every))
        if keep_steps:
            keep_policies.append(policies.CustomSteps(list(keep_steps)))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep_policies),
            enable_async_checkpointing=True,
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
        )
        self.directory = directory
        self.manager = ocp.CheckpointManager(directory, options=options)

    def save(self, step: int, state: Any, data_iter: grain.DatasetIterator) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(data_iter),
            ),
        )

    def restore(self, step: int, abstract_state: Any, data_iter: grain.DatasetIterator) -> Any:
        """The state saved at `step` (`data_iter` is restored in place)."""
        if step not in self.manager.all_steps():
            raise FileNotFoundError(
                f"No checkpoint at step {step} in {self.directory}; it has steps "
                f"{sorted(self.manager.all_steps())}. (A run keeps a step for branching "
                "when it is in the run's config.keep_steps.)"
            )
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=grain.checkpoint.CheckpointRestore(data_iter),
            ),
        )
        return restored.state

    def restore_latest(
        self, abstract_state: Any, data_iter: grain.DatasetIterator
    ) -> tuple[int, Any] | None:
        """(step, state) of the newest readable checkpoint (`data_iter` is restored in
        place), or None when there is none. Unreadable checkpoints are skipped with a
        warning, newest first."""
        self.manager.reload()
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state = self.restore(step, abstract_state, data_iter)
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: try the previous
                logging.warning(
                    "Checkpoint at step %d is unreadable (%s); trying the previous.",
                    step,
                    str(e).splitlines()[0][:200],
                )
                continue
            return step, state
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_like(state: Any) -> Any:
    """ShapeDtypeStructs (with shardings) that tell orbax where to restore each array."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
