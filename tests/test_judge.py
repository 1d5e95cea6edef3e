"""LLM-judge win rates (exoflow.judge) against a real OpenAI-compatible server: `transformers
serve` of a tiny local model on 127.0.0.1 (its answers are mostly invalid: that path is tested
too), the cache (a second run asks nothing), resuming after kill -9, the budget, and faults
injected on the server's side by a proxy in front of it (down, 429 then success, slow).
Verdict parsing and the statistics by hand."""

import http.server
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from exoflow.config import JudgeParams
from exoflow.io import read_json, read_records, write_records
from exoflow.judge import agreement, parse_verdict, summarize_judgements
from tests.helpers import ROOT, free_port, one_line_error, script, served_judge

# ---- by hand ------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer,want", [
    ("A is more polite.\nPreferred: A", "A"),
    ("Reply B answers the question.\n\nPreferred: B\n", "B"),
    ("**Preferred: B**", "B"),
    ("Both are fine... The better reply is A.", "A"),
    ("A", "A"),
    ("B.", "B"),
    ("Reply A", "A"),
    ("A: The answer is A.", "A"),
    ("The answer is B", "B"),
    ("A: A\n\nThe answer is", "A"),  # cut at max_tokens: the last line naming one counts
    ("A: B", None),
    ("I prefer neither.", None),
    ("Preferred: A or B", None),
    ("", None),
    ("::::::::", None),
    ("A is wrong, B is right", None),
])
def test_verdicts_are_parsed_from_the_last_line(answer, want):
    assert parse_verdict(answer) == want


def _rec(v, outcome, gold=None, rm=(1.0, 0.0)):
    r = {"verdicts": list(v), "outcome": outcome, "usage": [{"prompt_tokens": 10,
         "completion_tokens": 2}] * 2, "rm": list(rm)}
    if gold is not None:
        r["gold"] = list(gold)
    return r


def test_win_rate_ties_invalid_and_position_bias_by_hand():
    """4 valid prompts: 2 wins (1, 1), 1 loss (0), 1 tie (0.5) -> 2.5 / 4 = 0.625; the invalid
    one is reported, not counted; consistency 3 / 4; the first position wins 5 of 8 answers
    (win: A, B -> 1; loss: B, A -> 1; tie A, A -> 2; win -> 1)."""
    recs = [_rec("AB", "win", (1, 0)), _rec("AB", "win", (0, 1)), _rec("BA", "loss", (0, 1)),
            _rec("AA", "tie", (1, 0)), _rec((None, "A"), "invalid", (1, 0))]
    s = summarize_judgements(recs, run="r", ckpt=1, baseline="sft",
                             params=JudgeParams(base_url="x", model="m"))
    assert (s["wins"], s["ties"], s["losses"], s["invalid"]) == (2, 1, 1, 1)
    assert s["win_rate"] == 0.625 and s["ci95_low"] < 0.625 < s["ci95_high"]
    assert s["position_consistency"] == 0.75 and s["first_position_wins"] == 5 / 8
    # gold prefers the policy in prompts 1 and 4, the baseline in 2 and 3: of the decided
    # (1 win agree, 2 win disagree, 3 loss agree) 2 of 3 agree
    assert s["agreement_with_gold"]["rate"] == pytest.approx(2 / 3)
    assert s["agreement_with_gold"]["prompts"] == 3
    assert s["agreement_with_rm"]["rate"] == pytest.approx(2 / 3)  # rm always prefers policy
    # answer by answer (9 valid; order 0 shows the policy as A): gold agrees with A, A | A, A
    # -> 0, 0 | B, A -> 1, 1 | A, A -> 1, 0 | -, A -> 0: 5 of 9; the RM likewise 5 of 9
    assert s["agreement_with_gold"]["answer_rate"] == pytest.approx(5 / 9)
    assert s["agreement_with_gold"]["answers"] == 9
    assert s["agreement_with_rm"]["answer_rate"] == pytest.approx(5 / 9)
    assert s["tokens"] == {"prompt_tokens": 100, "completion_tokens": 20}


def test_agreement_is_absent_without_the_reward():
    assert agreement([_rec("AB", "win")], "gold") is None


def test_a_judge_that_always_names_the_first_reply_decides_nothing():
    """Every prompt a tie: no decided prompt to agree on (rate None, not 0 or 0.5), and answer
    by answer it agrees with gold exactly half the time."""
    recs = [_rec("AA", "tie", (1, 0)), _rec("AA", "tie", (0, 1)), _rec("AA", "tie", (2, 1))]
    a = agreement(recs, "gold")
    assert a["rate"] is None and a["prompts"] == 0 and a["rate_ci95_low"] is None
    assert a["answer_rate"] == 0.5 and a["answers"] == 6


# ---- a real server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served_judge(tmp_path_factory.mktemp("judge_model")) as endpoint:
        yield endpoint


class Proxy:
    """An HTTP proxy in front of the server that injects faults: the first ``fail`` chat
    requests answered 429, each request delayed ``delay`` seconds."""

    def __init__(self, target: str, fail: int = 0, delay: float = 0.0):
        self.target, self.fail, self.delay, self.seen = target, fail, delay, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.seen += 1
                if proxy.seen <= proxy.fail:
                    self.send_response(429)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "slow down"}}')
                    return
                time.sleep(proxy.delay)
                req = urllib.request.Request(proxy.target + self.path.removeprefix("/v1"),
                                             data=body, headers={"Content-Type":
                                                                 "application/json"})
                with urllib.request.urlopen(req, timeout=120) as r:
                    out = r.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(out)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def close(self):
        self.httpd.shutdown()


PROMPTS = 6  # 2 validation, 4 judged


@pytest.fixture()
def evals(tmp_path):
    """A checkpoint's eval records and the dataset's, as eval_checkpoint and eval_dataset
    write them (synthetic: with gold)."""
    recs, ds = [], []
    for i in range(PROMPTS):
        p = f"\n\nHuman: What is {i} plus {i}?\n\nAssistant:"
        recs.append({"prompt": p, "completions": [f" It is {2 * i}.", " x"],
                     "sft_completions": [f" Maybe {i}.", " y"], "rewards": [1.0, 0.0],
                     "sft_rewards": [0.0, 0.0], "gold": [0.5, 0.0], "sft_gold": [-0.5, 0.0]})
        ds.append({"prompt": p, "completions": [f" {2 * i}.", " No."], "rewards": [0.2, -1.0],
                   "gold": [0.6, -1.0]})
    write_records(tmp_path / "rewards.jsonl", recs)
    write_records(tmp_path / "ds.jsonl", ds)
    return tmp_path


def judge(evals, base_url, model, baseline="sft", name="out", cache="cache", **params):
    j = dict(dict(base_url=base_url, model=model, num_prompts=4, max_tokens=8, concurrency=2,
                  retries=1, backoff_s=0.05, timeout_s=30, invalid_retries=1), **params)
    out = evals / name
    return script("judge", "--evals", evals / "rewards.jsonl", "--dataset", evals / "ds.jsonl",
                  "--run", "exo", "--ckpt", 1, "--baseline", baseline, "--first", 2,
                  "--cache", evals / cache, "--judge", j, "--judgements",
                  out / "judgements.jsonl", "--summary", out / "win_rate.json"), out


def test_judging_through_a_real_server_then_from_the_cache(server, evals):
    proc, out = judge(evals, **server)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = read_json(out / "win_rate.json")
    recs = read_records(out / "judgements.jsonl")
    assert s["prompts"] == 4 and [r["index"] for r in recs] == [2, 3, 4, 5]  # report prompts
    assert s["wins"] + s["ties"] + s["losses"] + s["invalid"] == 4
    # a random tiny model names neither A nor B: each answer asked once more, then invalid
    assert s["invalid"] == sum(r["outcome"] == "invalid" for r in recs) >= 1
    assert s["requests"] == sum(sum(r["attempts"]) for r in recs) >= 8
    assert s["answers_from_cache"] == 0 and s["tokens"]["completion_tokens"] > 0
    assert recs[0]["policy"] == " It is 4." and recs[0]["baseline"] == " Maybe 2."
    for f in (evals / "cache").rglob("*.json"):  # a stale verdict is not trusted: the
        entry = json.loads(f.read_text())          # answer is parsed again
        entry["verdict"] = "B"
        f.write_text(json.dumps(entry))
    again, out2 = judge(evals, name="again", **server)
    assert again.returncode == 0, again.stderr[-3000:]
    s2 = read_json(out2 / "win_rate.json")
    assert s2["requests"] == 0 and s2["answers_from_cache"] == 8
    assert {k: s2[k] for k in ("wins", "ties", "losses", "invalid")} == \
        {k: s[k] for k in ("wins", "ties", "losses", "invalid")}
    chosen, out3 = judge(evals, baseline="chosen", name="chosen", **server)
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    assert read_records(out3 / "judgements.jsonl")[0]["baseline"] == " 4."


def test_the_budget_stops_the_job_before_a_request(server, evals):
    proc, out = judge(evals, max_requests=3, cache="c_budget", **server)
    one_line_error(proc, "this job needs 8 judge requests", "judge.max_requests is 3")
    assert not (evals / "c_budget").exists() and not (out / "win_rate.json").exists()


def test_a_killed_job_resumes_from_the_cached_answers(server, evals):
    proxy = Proxy(server["base_url"], delay=0.5)
    try:
        cmd_proc = None
        j = dict(base_url=proxy.base_url, model=server["model"], num_prompts=4, max_tokens=8,
                 concurrency=1, retries=0, invalid_retries=0, timeout_s=30)
        args = [sys.executable, str(ROOT / "workflow_scripts" / "judge.py"), "--evals",
                str(evals / "rewards.jsonl"), "--dataset", str(evals / "ds.jsonl"), "--run",
                "exo", "--ckpt", "1", "--baseline", "sft", "--first", "2", "--cache",
                str(evals / "c_kill"), "--judge", json.dumps(j), "--judgements",
                str(evals / "k" / "judgements.jsonl"), "--summary", str(evals / "k" / "w.json")]
        cmd_proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while len(list((evals / "c_kill").rglob("*.json"))) < 3:
            assert time.time() < deadline and cmd_proc.poll() is None
            time.sleep(0.05)
        cmd_proc.send_signal(signal.SIGKILL)
        cmd_proc.wait()
        cached = len(list((evals / "c_kill").rglob("*.json")))
        assert 3 <= cached < 8 and not (evals / "k" / "w.json").exists()
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        s = read_json(evals / "k" / "w.json")
        assert s["answers_from_cache"] == cached and s["requests"] == 8 - cached
    finally:
        proxy.close()


def test_429s_are_retried_with_backoff(server, evals):
    proxy = Proxy(server["base_url"], fail=2)
    try:
        proc, out = judge(evals, base_url=proxy.base_url, model=server["model"], retries=3,
                          concurrency=1, cache="c_429")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proxy.seen == read_json(out / "win_rate.json")["requests"] + 2
    finally:
        proxy.close()


def test_a_server_that_is_down_is_one_line_naming_the_url(evals):
    url = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.time()
    proc, _ = judge(evals, base_url=url, model="m", cache="c_down")
    one_line_error(proc, f"judge.base_url {url}: no answer after 2 tries", "is the server up")
    assert time.time() - t0 < 60


def test_a_slow_server_times_out_then_one_line(server, evals):
    proxy = Proxy(server["base_url"], delay=3.0)
    try:
        proc, _ = judge(evals, base_url=proxy.base_url, model=server["model"], timeout_s=0.5,
                        retries=1, concurrency=1, cache="c_slow")
        one_line_error(proc, f"judge.base_url {proxy.base_url}: no answer after 2 tries",
                       "APITimeoutError", "judge.timeout_s = 0.5")
    finally:
        proxy.close()


GOOD = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "A"}}]})
BAD = {  # HTTP 200 bodies that hold no answer
    "html": ("text/html", "<html><body><h1>Welcome to nginx!</h1></body></html>"),
    "empty choices": ("application/json", json.dumps({"id": "x", "choices": []})),
    "error object": ("application/json", json.dumps({"error": {"message": "model overloaded"}})),
    "not json": ("application/json", '{"choices": [{"message": '),
    "null content": ("application/json", GOOD.replace('"A"', "null")),
}


class Replies:
    """A local endpoint answering ``bad`` (a key of BAD) to the first ``n`` chat requests (all
    of them with n = None), then a valid "A"."""

    def __init__(self, bad: str, n: int | None):
        self.seen = 0
        replies = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                replies.seen += 1
                kind, body = BAD[bad] if n is None or replies.seen <= n else \
                    ("application/json", GOOD)
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.end_headers()
                self.wfile.write(body.encode())

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def close(self):
        self.httpd.shutdown()


@pytest.mark.parametrize("bad,what", [
    ("html", "a HTML page body '<html><body><h1>Welcome to nginx!</h1></body></html>'"),
    ("empty choices", "an empty choices list"),
    ("error object", "an error object 'model overloaded'"),
    ("not json", "a body that is not JSON"),
    ("null content", "a reply without text (content null or empty)"),
])
def test_a_200_without_an_answer_is_retried_never_cached_then_one_line(evals, bad, what):
    """Each bad body: retried (a later good answer is used and cached), and from a server that
    only answers so, one line naming the endpoint and what it returned, nothing cached."""
    flaky = Replies(bad, n=1)
    try:
        proc, out = judge(evals, base_url=flaky.base_url, model="m", retries=2, concurrency=1,
                          cache="c_flaky")
        assert proc.returncode == 0, proc.stderr[-3000:]
        s = read_json(out / "win_rate.json")
        assert s["invalid"] == 0 and s["requests"] == 8 and flaky.seen == 9
        cached = [json.loads(f.read_text()) for f in (evals / "c_flaky").rglob("*.json")]
        assert len(cached) == 8 and {c["answer"] for c in cached} == {"A"}
    finally:
        flaky.close()
    broken = Replies(bad, n=None)
    try:
        proc, _ = judge(evals, base_url=broken.base_url, model="m", retries=1, cache="c_broken")
        one_line_error(proc, f"judge.base_url {broken.base_url}: no usable answer after 2 tries",
                       f"(the last: {what}")
        assert not list((evals / "c_broken").rglob("*.json"))
    finally:
        broken.close()


def test_judge_all_without_an_endpoint_fails_in_the_dry_run(tmp_path):
    from tests.helpers import copy_workflow, snakemake

    wd = copy_workflow(tmp_path)
    proc = snakemake(wd, "judge_all", "-n", "--configfile", "configs/tiny.yaml")
    assert proc.returncode != 0 and "judge.base_url is not set" in proc.stdout + proc.stderr
