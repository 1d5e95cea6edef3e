"""How jobs launch: GPUs and processes, the runtime a training job gets, the command prefixes, the memory and time a job asks for.

A part of :class:`exoflow.plan.Plan` (a mixin: its methods read ``self.cfg`` and call the
other parts' methods)."""

from __future__ import annotations

from .. import gpus
from ..config import EngineParams, Runtime
from ..resources import snakemake_resources

__all__ = ["Launch"]




class Launch:
    """GPUs, processes, runtimes and command prefixes."""

    def gpus(self) -> int:
        return self.cfg.engine.gpus

    def job_resources(self, stage: str, run: str | None = None) -> dict:
        """A job's ``mem_mb`` and ``runtime`` (minutes) for a cluster, from its model's size and
        its work (:mod:`exoflow.resources`), as functions Snakemake evaluates per job."""
        return snakemake_resources(self, stage, run)

    def inference_gpus(self) -> int:
        """GPUs of a sampling, scoring or evaluation job: one when training has any."""
        return min(self.gpus(), 1)

    def runtime(self, run: str | None = None) -> Runtime:
        """What a training job runs with (the run's seed for an alignment run)."""
        return self.cfg.runtime(None if run is None else self.run_seed(run))

    def ref_runtime(self) -> Runtime:
        """The engine keys that set the precision the alignment runs train in (and so the one
        the reference log-probs are computed in), the others at their defaults: they would only
        cause re-runs."""
        e = self.cfg.engine
        return Runtime(engine=EngineParams(deepspeed=e.deepspeed, gpus=self.inference_gpus()),
                       dtype=self.cfg.model.dtype)

    def deepspeed_inputs(self) -> list[str]:
        """``[engine.deepspeed]`` when set: an input of every rule whose job it configures
        (training, and the reference cache whose precision it decides), so that an edited ZeRO
        config re-runs them (Snakemake compares the file's contents)."""
        ds = self.cfg.engine.deepspeed
        return [str(ds)] if ds else []

    def processes(self) -> int:
        return self.cfg.engine.num_processes

    def train_launcher(self) -> str:
        """Multi-process training when the job has more than one process (one per GPU, or
        ``engine.processes`` on the CPU): torch.distributed.run (torchrun), not the deepspeed
        launcher, which drops CUDA_VISIBLE_DEVICES (so it would ignore the GPUs SLURM or the
        lock pool gave the job) and always binds port 29500. The Trainer still runs DeepSpeed
        ZeRO from engine.deepspeed."""
        n = self.processes()
        if n <= 1:
            return self.python
        return f"{self.python} -m torch.distributed.run --standalone --nproc_per_node {n}"

    def gpu_prefix(self, n: int) -> str:
        """Shell prefix giving a job ``n`` GPUs of its own on a workstation: exoflow.gpus takes
        ``n`` free devices from a file-lock pool, sets CUDA_VISIBLE_DEVICES and runs the command
        ('' when n is 0; unchanged where CUDA_VISIBLE_DEVICES is already set, e.g. by SLURM)."""
        return gpus.prefix(n, self.python)

    def train_prefix(self) -> str:
        """The shell words before a training script: its GPUs, threads per process (at least 1)
        and the launcher (``{threads}`` is the job's, filled in by Snakemake)."""
        n = self.processes()
        return (f"{self.gpu_prefix(self.gpus())}OMP_NUM_THREADS=$(( {{threads}} / {n} > 1 ? "
                f"{{threads}} / {n} : 1 )) {self.train_launcher()}")

    def inference_prefix(self, threads: bool = True) -> str:
        """The shell words before an inference script: its GPU and (with ``threads``) the
        job's threads as OpenMP's."""
        omp = "OMP_NUM_THREADS={threads} " if threads else ""
        return f"{self.gpu_prefix(self.inference_gpus())}{omp}{self.python}"

    def inference_dtype(self) -> str | None:
        """The precision inference jobs load models in: ``model.dtype``, or None for fp32 (the
        saved models' own)."""
        d = self.cfg.model.dtype
        return None if d == "fp32" else d
