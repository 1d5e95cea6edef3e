"""LoRA (``model.lora``) for SFT, RM and alignment, through peft.

The original scripts offer ``--lora_dim`` (DeepSpeed-Chat's LoRA on the decoder's linear
layers); here ``model.lora`` = ``{rank, alpha, dropout, target_modules}`` (off when null) wraps
the model a stage trains in a ``peft`` LoRA model: the base weights are frozen, only the adapters
(and, for the reward model, its new scalar head) train.

Every model and checkpoint is saved *merged*: each adapted weight ``W + (alpha / rank) B A``
written under the plain model's names (:func:`merged_state_dict`, computed beside the live
weights, which stay untouched), so sampling, evaluation and the next stage load an ordinary
``AutoModelForCausalLM`` / ``AutoModelForSequenceClassification`` folder and nothing downstream
knows LoRA was used. Alignment without a reference cache takes the reference from the same
model with its adapters disabled (no second copy in memory): at the start the two are the SFT
model exactly, since peft initialises ``B`` to zero.
"""

from __future__ import annotations

from .errors import ParamsError
from .params import LoraParams

__all__ = ["apply_lora", "is_peft", "merged_state_dict"]


def apply_lora(model, params: LoraParams | dict, task: str):
    """``model`` wrapped in LoRA adapters (``task``: ``"CAUSAL_LM"`` or ``"SEQ_CLS"``; for the
    latter peft also trains the new ``score`` head in full). Refuses target modules the model
    does not have, naming the ones it has."""
    from peft import LoraConfig, get_peft_model

    if isinstance(params, dict):
        params = LoraParams.from_dict(params)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = sorted(set(params.target_modules) - names)
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if type(m).__name__ == "Linear"})
        raise ParamsError(f"model.lora.target_modules {missing}: the model has no such module; "
                          f"its linear layers are {linear}")
    config = LoraConfig(r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout,
                        target_modules=list(params.target_modules), task_type=task, bias="none")
    return get_peft_model(model, config)


def is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def merged_state_dict(model) -> dict:
    """The plain model's state dict of a peft LoRA ``model``, adapters merged: for every LoRA
    layer ``weight = base weight + delta`` (peft's ``get_delta_weight``), the reward head's
    trained copy in place of the original, no adapter tensor. The live model is not modified;
    only the merged weights are new tensors (the others are the state dict's own, not copies)."""
    import torch
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    lora = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    out = {}
    with torch.no_grad():
        for key, value in base.state_dict().items():
            parts = key.split(".")
            if any(p.startswith("lora_") for p in parts) or "original_module" in parts:
                continue
            if "modules_to_save" in parts:  # <module>.modules_to_save.<adapter>.<param>
                i = parts.index("modules_to_save")
                parts = parts[:i] + parts[i + 2:]
            if "base_layer" in parts:
                i = parts.index("base_layer")
                owner = ".".join(parts[:i])
                parts = parts[:i] + parts[i + 1:]
                if parts[-1] == "weight" and owner in lora:
                    layer = lora[owner]
                    for adapter in layer.active_adapters:
                        if adapter in layer.lora_A:
                            value = value + layer.get_delta_weight(adapter).to(value.dtype)
            out[".".join(parts)] = value
    return out
