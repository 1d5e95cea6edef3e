"""The results layout: every path under ``results/<run_name>/`` a rule or a target names, and the wildcard patterns.

A part of :class:`exoflow.plan.Plan` (a mixin: its methods read ``self.cfg`` and call the
other parts' methods)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ParamsError

__all__ = ["PATHS", "Layout"]

# Every file a rule makes and a target or another rule names, under results/<run_name>/, stated
# once: the rules (PLAN.path(...)) and the targets both take them from here; a {wildcard} not
# given to path() is left for Snakemake.
PATHS = {
    "base": "models/base/config.json",
    "tokenizer": "models/tokenizer/tokenizer.json",
    "sft": "models/sft/config.json",
    "rm": "models/rm/config.json",
    "rm_metrics": "models/rm/metrics.json",
    "model": "models/{stage}/config.json",
    "model_metrics": "models/{stage}/metrics.json",
    "pref": "data/pref/{split}.jsonl",
    "p2r": "data/p2r/{split}.jsonl",
    "rm_labels": "data/rm_labels/{split}.jsonl",
    "align_data": "data/{data}/train.jsonl",
    "stats": "data/stats/{split}.json",
    "stats_all": "data/stats.json",
    "sft_samples": "data/sft_samples/{split}.jsonl",
    "samples": "samples/{run}/ckpt{ckpt}/test.jsonl",
    "eval": "eval/{run}/ckpt{ckpt}/reward.json",
    "eval_rewards": "eval/{run}/ckpt{ckpt}/rewards.jsonl",
    "dataset_eval": "eval/dataset/reward.json",
    "dataset_rewards": "eval/dataset/rewards.jsonl",
    "judgements": "judge/{run}/ckpt{ckpt}/{baseline}/judgements.jsonl",
    "win_rate": "judge/{run}/ckpt{ckpt}/{baseline}/win_rate.json",
    "summary_csv": "summary.csv",
    "summary_png": "summary.png",
}



def _regex(names) -> str:
    return "|".join(re.escape(n) for n in names)


class Layout:
    """Paths under the results folder."""

    @property
    def results(self) -> str:
        return f"results/{self.cfg.run_name}"

    def path(self, name: str, **wildcards) -> str:
        """The results path :data:`PATHS` calls ``name``, with the given wildcards filled
        (``path("pref", split="test")``) and the others left as ``{wildcard}``."""
        return self.res(re.sub(r"\{(\w+)\}", lambda m: str(wildcards.get(m[1], m[0])),
                               PATHS[name]))

    def res(self, path: str) -> str:
        """A path under ``results/<run_name>/``."""
        return f"{self.results}/{path}"

    def base_is_built(self) -> bool:
        """Whether a rule makes the base model folder ``models/base``: the scratch model, or
        the import of a GGUF file."""
        return self.cfg.model.is_scratch or self.cfg.model.is_gguf

    def base_model(self) -> str:
        """The folder (or hub name) SFT and RM start from: ``models/base`` when a rule makes it
        (:meth:`base_is_built`), else ``model.init`` (a leading ``~`` expanded)."""
        if self.base_is_built():
            return self.res("models/base")
        return os.path.expanduser(self.cfg.model.init)

    def gguf_file(self) -> str:
        """``model.init``'s GGUF file (a leading ``~`` expanded): the import's input."""
        return os.path.expanduser(self.cfg.model.init)

    def base_model_inputs(self) -> list[str]:
        """The files SFT and RM depend on: the built base model's config.json (a rule makes
        it), or for a local ``model.init`` folder its config, weights and tokenizer files, so
        that a checkpoint fetched again (or replaced) re-runs everything trained from it. A hub
        name has no local files: the hub's cache is not the workflow's to watch."""
        if self.base_is_built():
            return [self.path("base")]
        folder = Path(self.base_model())
        if not folder.is_dir():
            return []
        keep = ("config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.json", "merges.txt")
        return sorted(str(p) for p in folder.iterdir() if p.is_file() and (
            p.name in keep or p.suffix in (".safetensors", ".bin")))

    def align_data(self, run: str) -> str:
        """The training records of a run: data/<rm_labels|p2r>/train.jsonl."""
        return self.path("align_data", data=self.run_params(run).data)

    def ckpt_dir(self, run: str, k: int) -> str:
        return self.res(f"models/align/{run}/ckpt{k}")

    def ckpt_config(self, run: str, k: int) -> str:
        """config.json of checkpoint k (1..num_checkpoints(run)) of an alignment run."""
        return f"{self.ckpt_dir(run, k)}/config.json"

    def align_ckpt_configs(self, run: str) -> list[str]:
        return [self.ckpt_config(run, k) for k in range(1, self.num_checkpoints(run) + 1)]

    def align_metrics(self, run: str) -> str:
        return self.res(f"models/align/{run}/metrics.json")

    def ref_cache_name(self, run: str) -> str:
        """``<data>_t<temp>_l<max_len>_g<max_gen_len>_e<eos_after_cut: 1|0>[_<visits>].jsonl``:
        runs with the same data, temp and truncation share it (with ``align.ref_records:
        visited`` those that visit the same records: :class:`exoflow.schedule.Visits`). The
        temp is written with repr() so that the name gives back the float."""
        p = self.run_params(run)
        visits = f"_{self.run_visits(run).name}" if self.cfg.align.ref_records == "visited" else ""
        return (f"{p.data}_t{float(p.temp)!r}_l{int(p.max_len)}_g{int(p.max_gen_len)}"
                f"_e{int(p.eos_after_cut)}{visits}.jsonl")

    def ref_cache_path(self, run: str) -> str:
        return self.res(f"data/ref_logps/{self.ref_cache_name(run)}")

    def ref_cache_inputs(self, run: str) -> list[str]:
        """[the cache] with align.precompute_ref, else [] (the trainer runs the reference)."""
        return [self.ref_cache_path(run)] if self.precompute_ref() else []

    def align_run_regex(self) -> str:
        return _regex(self.align_runs())

    def align_data_regex(self) -> str:
        return _regex(sorted({self.run_params(r).data for r in self.align_runs()}))

    def eval_run_regex(self) -> str:
        """The run wildcard of samples/ and eval/: sft or an alignment run."""
        return _regex(["sft", *self.align_runs()])

    def ckpt_model(self, run: str, k: int) -> str:
        """config.json of the model behind samples/<run>/ckpt<k>: SFT for sft/ckpt0, else the
        run's checkpoint k (1..its checkpoint count)."""
        k = int(k)
        if run == "sft":
            if k != 0:
                raise ParamsError(f"sft/ckpt{k}: the SFT model is checkpoint 0 only (sft/ckpt0)")
            return self.path("sft")
        n = self.num_checkpoints(run)
        if not 1 <= k <= n:
            raise ParamsError(f"{run}/ckpt{k}: run {run} has checkpoints ckpt1..ckpt{n} "
                              "(its step 0 is the SFT model: sft/ckpt0)")
        return self.ckpt_config(run, k)
