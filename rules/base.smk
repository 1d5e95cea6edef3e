# The base model SFT and the RM start from, when a rule makes it: a scratch GPT-NeoX
# (model.init: scratch), or a GGUF file imported (model.init: /path/model.gguf). A local
# checkpoint folder or a hub name is used as it is (Plan.base_model).

if CFG.model.is_scratch:

    rule train_tokenizer:
        """model.init: scratch only - a byte-level BPE tokenizer trained on the training pairs."""
        input:
            pairs=PLAN.path("pref", split="train"),
        output:
            tokenizer=PLAN.path("tokenizer"),
        log:
            log("train_tokenizer"),
        benchmark:
            bench("train_tokenizer")
        conda:
            "../envs/exoflow.yaml"
        params:
            code=code_of("train_tokenizer"),
            vocab_size=CFG.model.tokenizer_vocab_size,
            model_max_length=PLAN.scratch_max_len(),
        shell:
            run_script("train_tokenizer")

    rule init_base_model:
        """model.init: scratch only - a seeded GPT-NeoX (Pythia architecture) that SFT and RM
        both start from."""
        input:
            tokenizer=PLAN.path("tokenizer"),
        output:
            model=PLAN.path("base"),
        log:
            log("init_base_model"),
        benchmark:
            bench("init_base_model")
        conda:
            "../envs/exoflow.yaml"
        params:
            code=code_of("init_base_model"),
            scratch=as_json(CFG.model.scratch),
            seed=CFG.seed,
        shell:
            run_script("init_base_model")


if CFG.model.is_gguf:

    rule import_base_model:
        """model.init: a .gguf file - dequantised into a checkpoint folder once."""
        input:
            gguf=PLAN.gguf_file(),
        output:
            model=PLAN.path("base"),
        log:
            log("import_base_model"),
        benchmark:
            bench("import_base_model")
        conda:
            "../envs/exoflow.yaml"
        params:
            code=code_of("import_base_model"),
        shell:
            run_script("import_base_model")
