"""LoRA (``model.lora``) for SFT, RM and alignment, through peft.

The original scripts offer ``--lora_dim`` (DeepSpeed-Chat's LoRA on the decoder's linear
layers); here ``model.lora`` = ``{rank, alpha, dropout, target_modules}`` (off when null) wraps
the model a stage trains in a ``peft`` LoRA model: the base weights are frozen, only the adapters
(and, for the reward model, its new scalar head) train. By default the adapters go on every
linear layer of the transformer blocks, whatever the family (:func:`block_linear_layers`:
GPT-NeoX's ``query_key_value, dense, dense_h_to_4h, dense_4h_to_h``, Llama's ``q_proj, k_proj,
v_proj, o_proj, gate_proj, up_proj, down_proj``, GPT-2's ``c_attn, c_proj, c_fc``, ...), never
on the embeddings, the LM head or the reward head.

Every model and checkpoint is saved *merged*: each adapted weight ``W + (alpha / rank) B A``
written under the plain model's names (:func:`merged_state_dict`, computed beside the live
weights, which stay untouched), so sampling, evaluation and the next stage load an ordinary
``AutoModelForCausalLM`` / ``AutoModelForSequenceClassification`` folder and nothing downstream
knows LoRA was used. Alignment without a reference cache takes the reference from the same
model with its adapters disabled (no second copy in memory): at the start the two are the SFT
model exactly, since peft initialises ``B`` to zero.
"""

from __future__ import annotations

from .config import LoraParams
from .errors import ParamsError

__all__ = ["apply_lora", "is_peft", "merged_state_dict"]


_LINEAR = ("Linear", "Conv1D")  # torch's, and GPT-2's transposed one (transformers.Conv1D)


def block_linear_layers(model) -> list[str]:
    """The names (last component) of every linear layer of ``model`` but its input and output
    embeddings and its heads (the LM head, a sequence-classification ``score``): the default
    LoRA targets, peft's "all-linear" for any family, the reward head excluded too."""
    heads = {id(m) for m in (model.get_output_embeddings(), model.get_input_embeddings())
             if m is not None}
    for name in ("score", "classifier", "lm_head", "embed_out"):
        head = getattr(model, name, None)
        if head is not None:
            heads.add(id(head))
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                   if type(m).__name__ in _LINEAR and id(m) not in heads})


def apply_lora(model, params: LoraParams | dict, task: str):
    """``model`` wrapped in LoRA adapters (``task``: ``"CAUSAL_LM"`` or ``"SEQ_CLS"``; for the
    latter peft also trains the new ``score`` head in full). ``target_modules`` null: every
    linear layer of the blocks (:func:`block_linear_layers`); named ones the model does not have
    are refused, naming the ones it has."""
    from peft import LoraConfig, get_peft_model

    if isinstance(params, dict):
        params = LoraParams.from_dict(params)
    linear = block_linear_layers(model)
    targets = list(params.target_modules) if params.target_modules else linear
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = sorted(set(targets) - names)
    if missing:
        raise ParamsError(f"model.lora.target_modules {missing}: the model has no such module; "
                          f"its linear layers are {linear}")
    conv1d = any(type(m).__name__ == "Conv1D" and n.rsplit(".", 1)[-1] in targets
                 for n, m in model.named_modules())
    config = LoraConfig(r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout,
                        target_modules=targets, task_type=task, bias="none",
                        fan_in_fan_out=conv1d)  # GPT-2's Conv1D stores weights transposed
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
