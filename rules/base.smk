rule train_tokenizer:
    """model.init: scratch only - a byte-level BPE tokenizer trained on the training pairs."""
    input:
        pairs=res("data/pref/train.jsonl"),
    output:
        res("models/tokenizer/tokenizer.json"),
    params:
        cmd=command("train_tokenizer"),
        code=code_of("train_tokenizer"),
        vocab_size=config["model"]["tokenizer_vocab_size"],
        max_len=(config["model"].get("scratch") or {}).get("max_position_embeddings", 2048),
        out=parent_of(0),
    log:
        log("train_tokenizer"),
    benchmark:
        bench("train_tokenizer")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.cmd} --input {input.pairs:q} --vocab-size {params.vocab_size:q} "
        "--model-max-length {params.max_len:q} --output {params.out:q} > {log:q} 2>&1"


rule init_base_model:
    """model.init: scratch only - a seeded GPT-NeoX (Pythia architecture) that SFT and RM
    both start from."""
    input:
        tokenizer=res("models/tokenizer/tokenizer.json"),
    output:
        res("models/base/config.json"),
    params:
        cmd=command("init_base_model"),
        code=code_of("init_base_model"),
        scratch=as_json(config["model"].get("scratch") or {}),
        seed=config["seed"],
        tokenizer=parent_of("tokenizer", "input"),
        out=parent_of(0),
    log:
        log("init_base_model"),
    benchmark:
        bench("init_base_model")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.cmd} --tokenizer {params.tokenizer:q} "
        "--scratch {params.scratch:q} --seed {params.seed:q} --output {params.out:q} "
        "> {log:q} 2>&1"
