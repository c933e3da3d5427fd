"""`malm train-runs` (malm/launch/pool.py): the pipeline's runs side by side, the expensive first;
a failed run fails the command at the end, naming it and its log, without stopping the others."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, SMOKE
from malm import config as C
from malm.launch.pool import estimated_cost, plan_runs, threads_per_run, train_runs

PARAMS = REPO / "params.yaml"


def test_pipeline_runs_start_most_expensive_first():
    runs = plan_runs([PARAMS], seeds=[0])
    cost = {r.variant: estimated_cost(r.cfg) for r in runs}
    assert [r.variant for r in runs] == C.from_files([PARAMS]).pipeline.variants  # pipeline order
    assert cost["malm"] == max(cost.values())
    assert cost["baseline"] == cost["ht"] == min(cost.values())
    assert cost["no_mask"] > cost["baseline"] and cost["no_distill"] > cost["no_mask"]
    assert cost["tfood"] > cost["baseline"]
    assert {str(r.run_dir) for r in runs} == {f"runs/{v}/seed0" for v in cost}


@pytest.mark.parametrize("threads,workers,want", [(2, 2, 1), (2, 1, 2), (8, 3, 2), (1, 4, 1)])
def test_threads_are_shared_among_the_workers(threads, workers, want):
    assert threads_per_run(C.merge(C.Config(), {"train": {"threads": threads}}), workers) == want


def test_a_failed_run_fails_the_command_naming_it_and_its_log(tmp_path):
    runs_dir = tmp_path / "runs"
    with pytest.raises(RuntimeError) as err:
        train_runs([SMOKE], variants=["baseline", "malm"], seeds=[0], runs_dir=runs_dir,
                   overrides=[f"data.root={tmp_path / 'nowhere'}", f"data.cache_dir={tmp_path / 'c'}"],
                   workers=2, progress=False, echo=lambda *_: None)
    text = str(err.value)
    assert "2 of 2 run(s) failed" in text
    for v in ("baseline", "malm"):
        log = runs_dir / v / "seed0.log"
        assert f"{v}/seed0" in text and str(log) in text
        assert "nowhere" in log.read_text()  # the run's own error, in its log and in the message
    summary = json.loads((runs_dir / "train_runs.json").read_text())
    assert summary["workers"] == 2 and all(r["returncode"] != 0 for r in summary["runs"])
