"""`healer edit`: write a spectrally edited checkpoint, register it as an `edit` run with its parameters and
lineage, and evaluate it on ID and OOD. Imports no torch itself."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from healer.presets import RunSpec, build_spec, starting_from
from healer.refs import CheckpointRef
from healer.spectra import label
from healer.store import Run, Status, Store


def edit_checkpoint(store: Store, target: CheckpointRef, reference: CheckpointRef, plan: Any, out_dir: Path,
                    say: Callable[[str], None] = print) -> Run:  # fmt: skip
    """Write the edit (healer.spectral.edit), then record it as a finished `edit` run whose model is out_dir."""
    from healer.spectral.edit import write

    done = write(target.path, reference.path, plan, out_dir, say)
    spec = build_spec(target.run.spec_dict, source=f"run {target.run.id}") if target.run else RunSpec()
    name = f"edit-{label(target).replace('/', '_')[-40:]}"
    spec = dataclasses.replace(starting_from(spec, str(out_dir)), name=name)
    params = {"checkpoint": label(target), "checkpoint_path": target.path, "ref": label(reference),
              "ref_path": reference.path, "restore": plan.restore, "top": plan.top, "top_frac": plan.top_frac,
              "bottom": plan.bottom, "layers": sorted(plan.layers) if plan.layers is not None else None,
              "modules": list(plan.modules), "matrices": len(done["matrices"]),
              "full_rank_swaps": len(done["full_rank_swaps"]), "partial_swaps": done["partial_swaps"]}  # fmt: skip
    run = store.create_run(kind="edit", method="edit", name=name, spec=spec.to_dict(), model_path=str(out_dir),
                           parent_run=target.run.id if target.run else None,
                           parent_step=target.step if target.run else None, out_dir=str(out_dir),
                           params=json.dumps(params, sort_keys=True))  # fmt: skip
    store.finish_run(run.id, Status.DONE, exit_code=0)
    return store.run(run.id)


def evaluate_edit(store: Store, run: Run) -> list[Any]:
    """The edited model's ID and OOD evaluation, stored as the edit run's step 0."""
    from healer.train.checkpoints import evaluate_checkpoint

    spec = build_spec(run.spec_dict, source=f"run {run.id}")
    return evaluate_checkpoint(store, CheckpointRef(run, 0, run.model_path or ""), spec)
