rule train_tokenizer:
    """model.init: scratch only - a byte-level BPE tokenizer trained on the training pairs."""
    input:
        script=script("train_tokenizer"),
        code=code("modeling"),
        pairs=res("data/pref/train.jsonl"),
    output:
        res("models/tokenizer/tokenizer.json"),
    params:
        vocab_size=config["model"]["tokenizer_vocab_size"],
        max_len=(config["model"].get("scratch") or {}).get("max_position_embeddings", 2048),
    log:
        log("train_tokenizer"),
    benchmark:
        bench("train_tokenizer")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "python {input.script} --input {input.pairs} --vocab-size {params.vocab_size} "
        "--model-max-length {params.max_len} --output $(dirname {output}) > {log} 2>&1"


rule init_base_model:
    """model.init: scratch only - a seeded GPT-NeoX (Pythia architecture) that SFT and RM
    both start from."""
    input:
        script=script("init_base_model"),
        code=code("modeling"),
        tokenizer=res("models/tokenizer/tokenizer.json"),
    output:
        res("models/base/config.json"),
    params:
        scratch=as_json(config["model"].get("scratch") or {}),
        seed=config["seed"],
    log:
        log("init_base_model"),
    benchmark:
        bench("init_base_model")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "python {input.script} --tokenizer $(dirname {input.tokenizer}) "
        "--scratch {params.scratch:q} --seed {params.seed} --output $(dirname {output}) "
        "> {log} 2>&1"
