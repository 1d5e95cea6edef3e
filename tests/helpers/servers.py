"""Local servers: a model served by `transformers serve`, a judge endpoint."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from .models import make_family


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc, seconds: float = 120):
    import time
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline:
        assert proc.poll() is None, "the server died"
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not come up")


@contextlib.contextmanager
def served(model: str, seconds: float = 120):
    """`transformers serve <model>` on a free port of 127.0.0.1: yields the /v1 base URL."""
    import signal

    port = free_port()
    serve = Path(sys.executable).parent / "transformers"
    proc = subprocess.Popen([str(serve), "serve", model, "--host", "127.0.0.1", "--port",
                             str(port), "--device", "cpu"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_up(f"http://127.0.0.1:{port}/health", proc, seconds)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@contextlib.contextmanager
def served_judge(folder: Path, biased: bool = False):
    """A tiny random Llama with a chat template, served: yields ``{"base_url", "model"}``. Its
    answers rarely name A or B (most are invalid, a path worth testing). ``biased``: a judge
    that always answers "A", whatever it is shown (every token's embedding carries +100 on one
    hidden unit, the final norm keeps only that unit, the head maps it to "A"): with
    ``max_tokens: 1`` each prompt is a tie (each order's first reply wins), a result known by
    hand."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = make_family(folder, "llama" if biased else "llama3")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                         "{% endfor %}assistant:")
    tok.save_pretrained(folder)
    if biased:
        model = AutoModelForCausalLM.from_pretrained(folder)
        a = tok.convert_tokens_to_ids("A")
        assert a is not None and a != tok.unk_token_id
        with torch.no_grad():
            model.model.embed_tokens.weight[:, 0] = 100.0
            model.model.norm.weight.zero_()
            model.model.norm.weight[0] = 1.0
            model.lm_head.weight.zero_()
            model.lm_head.weight[a, 0] = 50.0
        model.save_pretrained(folder)
    with served(str(folder)) as base_url:
        yield {"base_url": base_url, "model": str(folder)}
