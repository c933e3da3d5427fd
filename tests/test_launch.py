"""The launcher without a cluster: executor choice, resource mapping, local and debug runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import submitit
from submitit.slurm.slurm import _make_sbatch_string

import slurm_jobs
from malm.config import SlurmConfig
from malm.launch.submit import (Checkpointable, JobFailed, executor_params, make_executor,
                                signal_delay_s, submit, submit_and_wait, submit_array, wait_for)

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def job_pythonpath(monkeypatch):
    """Local jobs are subprocesses that unpickle ``slurm_jobs.*``; they inherit PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p))


def test_executor_is_the_one_configured_never_auto_detected(tmp_path, monkeypatch):
    """Where a job runs follows slurm.executor, never submitit's auto-detection (which picks Slurm
    whenever srun is on PATH): with stand-in srun/sbatch first on PATH, `debug` runs the job in this
    process, `local` in a child process, and only `slurm` hands it to sbatch, with the config's
    resources in the batch script."""
    bin_dir, script = tmp_path / "bin", tmp_path / "sbatch_script"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" "{script}"\necho "Submitted batch job 4242"\n')
    for name in ("srun", "sacct", "squeue", "scancel"):  # nothing reaches a real cluster
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    me = os.getpid()
    # timeout_s: a job that went to the stand-in sbatch instead would never end
    assert submit_and_wait(os.getpid, cfg=SlurmConfig(executor="debug"), folder=tmp_path / "debug",
                           poll_s=0.2, timeout_s=20) == me
    child = submit_and_wait(os.getpid, cfg=SlurmConfig(executor="local", timeout_min=1),
                            folder=tmp_path / "local", poll_s=0.2, timeout_s=60)
    assert isinstance(child, int) and child != me
    assert not script.exists(), "a debug/local job went to sbatch"

    job = submit(slurm_jobs.add, 2, 3, cfg=SlurmConfig(executor="slurm", timeout_min=7, mem_gb=1.0),
                 folder=tmp_path / "slurm", name="unit")
    assert isinstance(job, submitit.SlurmJob) and job.job_id == "4242"
    text = script.read_text()
    assert "#SBATCH --time=7" in text and "#SBATCH --mem=1GB" in text and "#SBATCH --job-name=unit" in text


def test_unknown_executor_is_refused(tmp_path):
    with pytest.raises(ValueError, match="slurm, local, debug"):
        make_executor(SlurmConfig(executor="auto"), tmp_path)


def test_cpu_config_maps_to_sbatch_without_gpus(tmp_path):
    cfg = SlurmConfig(executor="slurm", timeout_min=30, mem_gb=3.0, cpus_per_task=2,
                      tasks_per_node=1, array_parallelism=4, max_requeues=5)
    executor = make_executor(cfg, tmp_path, name="unit")
    params = executor._executor.parameters
    assert params["time"] == 30 and params["mem"] == "3GB" and params["cpus_per_task"] == 2
    assert params["ntasks_per_node"] == 1 and params["nodes"] == 1
    assert params["job_name"] == "unit" and params["array_parallelism"] == 4
    assert executor._executor.max_num_timeout == 5
    sbatch = _make_sbatch_string(command="true", folder=tmp_path, **params)
    assert "--gpus-per-node" not in sbatch and "--partition" not in sbatch
    assert "--signal=USR2@90" in sbatch


def test_gpu_config_maps_every_resource():
    cfg = SlurmConfig(executor="slurm", nodes=2, gpus_per_node=2, tasks_per_node=2,
                      cpus_per_task=8, mem_gb=64.0, timeout_min=120, partition="gpu",
                      account="proj", qos="high", constraint="a100")
    params = executor_params(cfg, name="train")
    assert params["gpus_per_node"] == 2 and params["nodes"] == 2
    assert params["tasks_per_node"] == 2 and params["cpus_per_task"] == 8
    assert params["mem_gb"] == 64.0 and params["timeout_min"] == 120 and params["name"] == "train"
    assert params["slurm_srun_args"] == ["--kill-on-bad-exit=1"]  # a dead rank ends the DDP step
    assert "slurm_srun_args" not in executor_params(SlurmConfig(executor="slurm"))
    assert {k: params[f"slurm_{k}"] for k in ("partition", "account", "qos", "constraint")} == {
        "partition": "gpu", "account": "proj", "qos": "high", "constraint": "a100"}


def test_signal_delay_fits_short_limits():
    # signal lands between delay and delay + 30 s before the limit: keep it >= 10 s after start
    assert signal_delay_s(1) == 20
    assert signal_delay_s(2) == 80
    assert signal_delay_s(60) == 90  # submitit's default for real jobs


def test_overrides_win(tmp_path):
    executor = make_executor(SlurmConfig(executor="slurm", timeout_min=1), tmp_path,
                             slurm_signal_delay_s=15)
    assert executor._executor.parameters["signal_delay_s"] == 15


def test_debug_executor_runs_in_process(tmp_path):
    cfg = SlurmConfig(executor="debug")
    assert submit_and_wait(slurm_jobs.add, 2, 3, cfg=cfg, folder=tmp_path) == 5
    jobs = submit_array(slurm_jobs.square, [(2,), (5,)], cfg=cfg, folder=tmp_path)
    assert [wait_for(job) for job in jobs] == [4, 25]


def test_local_executor_runs_a_subprocess(tmp_path):
    cfg = SlurmConfig(executor="local", timeout_min=1)
    assert submit_and_wait(slurm_jobs.add, 2, 3, cfg=cfg, folder=tmp_path, poll_s=0.2) == 5


def test_local_job_failure_raises_job_failed(tmp_path):
    with pytest.raises(JobFailed, match="boom-local") as info:
        submit_and_wait(slurm_jobs.fail, "boom-local", cfg=SlurmConfig(executor="local"),
                        folder=tmp_path, poll_s=0.2)
    assert str(info.value.stderr) in str(info.value)


def test_checkpoint_resubmits_itself_with_its_arguments(tmp_path):
    counter = slurm_jobs.CountTo(str(tmp_path / "p.json"), n=2, step_s=0)
    delayed = counter.checkpoint("a", k=1)
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert delayed.function is counter and delayed.args == ("a",) and delayed.kwargs == {"k": 1}
    assert isinstance(counter, Checkpointable)
    assert counter()["count"] == 2 and counter()["starts"] == [0, 2]  # resumes from its file


def test_training_stage_job_requeues_itself_with_its_arguments(tmp_path, monkeypatch):
    """What a requeued training job relies on, without a cluster (on the cluster: the slow
    test_slurm_pipeline.py::test_training_job_requeues_at_its_time_limit_and_resumes): `run_stage`
    submits the train stage as a Checkpointable job, and the submission its checkpoint() returns,
    pickled as submitit pickles it for the requeue, runs the same stage on the same config and run
    directory (the trainer then resumes there: test_train.py::test_a_run_killed_mid_epoch_resumes_bit_for_bit)."""
    import cloudpickle

    from malm import config as C
    from malm.launch.stage import StageJob, run_stage

    submitted = []
    monkeypatch.setattr("malm.launch.submit.submit_and_wait",
                        lambda fn, *args, cfg, **kw: submitted.append((fn, args, cfg)) or "done")
    cfg = C.merge(C.Config(), {"variant": "baseline", "slurm": {"max_requeues": 3}})
    run_dir = str(tmp_path / "run")
    assert run_stage("train", cfg, executor="slurm", run_dir=run_dir) == "done"
    [(job, args, slurm)] = submitted
    assert isinstance(job, StageJob) and isinstance(job, Checkpointable) and job.stage == "train"
    assert slurm.executor == "slurm" and slurm.max_requeues == 3
    assert C.from_dict(args[0]) == cfg and args[1]["run_dir"] == run_dir
    again = cloudpickle.loads(cloudpickle.dumps(job.checkpoint(*args)))
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert isinstance(again.function, StageJob) and again.function.stage == "train"
    assert again.args == args and again.kwargs == {}


def test_grid_seed_subset_is_checked_before_submitting(tmp_path):
    """`grid submit --seeds` takes a subset of the grid's seeds; an unknown seed is refused before
    anything is submitted (no jobs.json is written)."""
    import yaml

    from malm.config import ConfigError
    from malm.launch.grid import submit_grid

    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "variants": ["baseline"], "seeds": [0, 1],
                                    "out": str(tmp_path / "out")}))
    with pytest.raises(ConfigError, match=r"seeds \[7\] are not in the grid"):
        submit_grid(grid, executor="debug", seeds=[7])
    assert not (tmp_path / "out" / "jobs.json").exists()


def _finished_cell(grid_file, tmp_path, epochs: int):
    """Write a grid (train.epochs=`epochs`) and fake its one cell as trained and evaluated under it."""
    import yaml

    from malm import config as C
    from malm.launch.grid import load_grid
    from malm.eval.names import bag_label

    grid_file.write_text(yaml.safe_dump({"name": "g", "variants": ["baseline"], "seeds": [0],
                                         "out": str(tmp_path / "out"),
                                         "overrides": {"train": {"epochs": epochs}}}))
    _, [(cell, cfg)] = load_grid(grid_file)
    Path(cell.run_dir).mkdir(parents=True)
    C.save(cfg, Path(cell.run_dir) / "config.yaml")
    Path(cell.metrics_dir).mkdir(parents=True)
    for p in cfg.eval.protocols:
        for b, _ in cfg.eval.bags:
            (Path(cell.metrics_dir) / f"{p}_{bag_label(b)}.json").write_text("{}")
    return cell


def test_grid_cells_are_keyed_by_their_resolved_config(tmp_path, monkeypatch, capsys):
    """A cell counts as finished only under the config it ran with: changing the grid's overrides
    makes it CHANGED (naming the key), `submit` and `collect` refuse it, and `--rerun-changed` moves
    the old run and metrics aside (nothing deleted) and submits the cell again."""
    from malm.config import ConfigError
    from malm.launch import grid as G

    grid_file = tmp_path / "g.yaml"
    cell = _finished_cell(grid_file, tmp_path, epochs=2)
    assert [s["state"] for s in G.cell_states(*G.load_grid(grid_file)).values()] == ["FINISHED"]
    submitted = []
    monkeypatch.setattr("malm.launch.submit.submit_array",
                        lambda job, items, **kw: submitted.extend(items) or [])
    assert G.submit_grid(grid_file, executor="debug") == {} and submitted == []  # nothing to do

    # a CLI override changes what the cell would run: no longer finished
    states = G.cell_states(*G.load_grid(grid_file, ["train.lr=0.5"]))
    assert states["baseline/seed0"]["state"] == "CHANGED"
    assert states["baseline/seed0"]["changed"] == ["train.lr"]

    # so does an edited grid file
    import yaml

    spec = yaml.safe_load(grid_file.read_text())
    spec["overrides"]["train"]["epochs"] = 5
    grid_file.write_text(yaml.safe_dump(spec))
    G.status(grid_file)
    assert "CHANGED (train.epochs differ)" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"(?s)baseline/seed0 .*train\.epochs.*--rerun-changed"):
        G.submit_grid(grid_file, executor="debug")
    with pytest.raises(ConfigError, match="(?s)baseline/seed0: train.epochs.*mix two experiments|mix two experiments.*baseline/seed0: train.epochs"):
        G.build_grid_tables(grid_file)
    assert submitted == [] and Path(cell.run_dir, "config.yaml").exists()

    class FakeJob:
        job_id = "42"

    monkeypatch.setattr("malm.launch.submit.submit_array",
                        lambda job, items, **kw: submitted.extend(items) or [FakeJob()])
    assert G.submit_grid(grid_file, executor="debug", rerun_changed=True) == {"baseline/seed0": "42"}
    assert len(submitted) == 1 and submitted[0][0]["train"]["epochs"] == 5
    moved = sorted(p.name for p in Path(cell.run_dir).parent.iterdir())
    assert any(n.startswith("seed0.stale-") for n in moved) and not Path(cell.run_dir).exists()
    assert any(p.name.startswith("seed0.stale-") for p in Path(cell.metrics_dir).parent.iterdir())


def test_a_grid_cell_made_by_other_code_or_on_other_inputs_is_changed(tmp_path):
    """The config alone does not make a cell finished: a checkpoint whose recorded code or inputs
    differ from today's (an edited malm file the run imported, a rebuilt data cache) is CHANGED,
    naming the file, as `malm train` would refuse to resume it."""
    from malm import config as C
    from malm.io import CHECKPOINT, save_checkpoint
    from malm.launch import grid as G
    from malm.train.checkpoint import code_fingerprint, input_fingerprints

    grid_file = tmp_path / "g.yaml"
    cell = _finished_cell(grid_file, tmp_path, epochs=2)
    _, [(_, cfg)] = G.load_grid(grid_file)
    code, inputs = code_fingerprint(), input_fingerprints(cfg)

    def checkpoint(code: dict, inputs: dict) -> str:
        save_checkpoint(Path(cell.run_dir) / CHECKPOINT, {"config": C.to_dict(cfg), "inputs": inputs,
                                                          "code": code, "finished": True})
        return G.cell_states(*G.load_grid(grid_file))["baseline/seed0"]

    assert checkpoint(code, inputs)["state"] == "FINISHED"
    edited = next(iter(code))
    state = checkpoint({**code, edited: "0" * 64}, inputs)
    assert state["state"] == "CHANGED" and state["changed"] == [f"code malm/{edited}"]
    state = checkpoint(code, {**inputs, "data.cache_dir": "another cache"})
    assert state["state"] == "CHANGED" and state["changed"] == ["input data.cache_dir"]
