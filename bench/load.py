#!/usr/bin/env python3
"""Load generator for OpenAI-compatible servers: K concurrent streaming clients.

Each client sends one streaming `POST /v1/completions` (per round) whose prompt is
--prompt-tokens random token ids (from --token-range: exact lengths on any server that takes
token-id prompts, and no prompt shared between clients) and asks for --max-tokens tokens with
`ignore_eos` (generation runs to the budget where the server honours it; `webgpu-llm serve` and
llama.cpp's `llama-server` do), greedy. Per run of K clients it reports:

- aggregate generated tok/s: the tokens all streams received / the time from the first request
  sent to the last token received;
- time to first token: from sending a request to its first text chunk (p50, p99, mean);
- inter-token latency: the gaps between consecutive text chunks of a stream, pooled over the
  streams (p50, p99); llama-server sends one chunk a token, `webgpu-llm serve` one for each
  group of tokens its engine hands over (`tokens_per_chunk` says how many on average);
- per-stream decode tok/s: (tokens - 1) / (last chunk - first chunk), p50;
- the server's own mean time to first token and request duration, where it reports them
  (`webgpu-llm serve`'s /metrics: from a request's submission to its engine's first and last
  token), beside the clients' (what HTTP and the clients add).

Tokens are counted from the final usage chunk (`stream_options.include_usage`) where the server
sends one, else as text chunks. JSON goes to stdout (and --out FILE); a table to stderr.

    python bench/load.py --url http://127.0.0.1:8080 --clients 1,8,32
    # start a server per K (placeholders {port}, {clients}, {ctx} = tokens per sequence,
    # {ctx_total} = {ctx} x K, as llama-server's -c wants it, {python} = this interpreter):
    python bench/load.py --clients 1,32,64 --server-cmd \\
        "{python} -m webgpu_llm.cli.main serve -m model.gguf --backend dawn --parallel {clients} --ctx {ctx} --port {port}"
    python bench/load.py --clients 1,32,64 --server-cmd \\
        "env LD_LIBRARY_PATH=/tmp/lsv/bin /tmp/lsv/bin/llama-server -m model.gguf -ngl 99 -np {clients} -c {ctx_total} -fa off --port {port}"
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import random
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

# --procs 0: clients a client process takes, at most a process a core. With 16 a process, one
# process's requests went out one after another while its first streams' events came in: on an
# H100 host (16 cores, 0.5B q4_0, 32 streams) TTFT p50 207-254 ms and events read in bursts
# (ITL p50 0.2 ms), where 2 a process measured 108 ms and the step's own 2.5 ms.
CLIENTS_A_PROCESS = 2


@dataclass
class Stream:
    sent: float
    chunks: list[float] = field(default_factory=list)  # arrival times of text chunks
    tokens: int = 0
    error: str | None = None


def pct(xs: list[float], p: float) -> float | None:
    """The p-th percentile (0..100), linear between the closest ranks; None for no data."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(xs: list[float]) -> dict[str, float | None]:
    return {"p50": pct(xs, 50), "p99": pct(xs, 99), "mean": sum(xs) / len(xs) if xs else None,
            "max": max(xs) if xs else None}


async def one(client: openai.AsyncOpenAI, model: str, prompt: list[int], args: argparse.Namespace) -> Stream:
    s = Stream(sent=time.perf_counter())
    usage = None
    try:
        stream = await client.completions.create(
            model=model, prompt=prompt, max_tokens=args.max_tokens, temperature=0.0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": not args.no_ignore_eos})
        async for chunk in stream:
            now = time.perf_counter()
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].text:
                s.chunks.append(now)
    except Exception as e:  # a failed stream is counted and reported, the run goes on
        s.error = f"{type(e).__name__}: {e}"[:300]
    s.tokens = usage if usage is not None else len(s.chunks)
    return s


async def _streams(url: str, model: str, prompts: list[list[list[int]]], args: argparse.Namespace,
                   warmup: list[list[int]] | None = None, ready: Any = None) -> list[Stream]:
    """Each client's rounds (its prompts, one after the other), the clients at once, after the
    warm-up requests and `ready()`. A warm-up is a measured request's shape: the openai client's
    first request in a process loads its modules (~0.2 s that would count in the first streams'
    time to first token), and a server's first streams after a pause ran slower (an H100 after
    its load: the first stream's 128 tokens at 503 tok/s, the next at 1266; a short warm-up left
    the first measured request's first token at 48 ms where the next ones took 5)."""
    limits = httpx.Limits(max_connections=len(prompts) + 8, max_keepalive_connections=len(prompts) + 8)
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=args.api_key or "none", max_retries=0,
                                  timeout=args.timeout, http_client=openai.DefaultAsyncHttpxClient(limits=limits)) as c:
        for p in warmup or []:
            if (w := await one(c, model, p, args)).error:
                raise RuntimeError(f"the warm-up request failed: {w.error}")
        if ready is not None:
            ready()

        async def client_loop(rounds: list[list[int]]) -> list[Stream]:
            return [await one(c, model, p, args) for p in rounds]

        per_client = await asyncio.gather(*(client_loop(rounds) for rounds in prompts))
    return [s for cl in per_client for s in cl]


def _worker(url: str, model: str, prompts: list[list[list[int]]], args: argparse.Namespace, barrier: Any,
            out: Any, i: int, warmup: list[list[int]]) -> None:
    """One process's share of the clients, warmed up, then started with the others' (a
    barrier), its streams (or its error) put on `out`."""
    try:
        streams = asyncio.run(_streams(url, model, prompts, args, warmup[:1],
                                       ready=lambda: barrier.wait(timeout=args.start_timeout)))
        out.put((i, [dataclasses.astuple(s) for s in streams], None))
    except BaseException as e:  # reported by the parent, which does not wait forever
        barrier.abort()  # nor do the other workers wait for this one at the start
        out.put((i, [], f"{type(e).__name__}: {e}"[:300]))


def _in_processes(url: str, model: str, prompts: list[list[list[int]]], args: argparse.Namespace,
                  procs: int, warmup: list[list[int]], started: Any) -> list[Stream]:
    """The clients spread over `procs` processes: one Python process decoding every stream's
    server-sent events tops out near 10k events/s (the openai client's parsing), below what a
    fast server sends to 64 streams. perf_counter is the system's monotonic clock, shared by the
    processes, so their times mix."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs + 1), ctx.Queue()  # the workers, warmed up, and this process
    shares = [prompts[i::procs] for i in range(procs)]
    workers = [ctx.Process(target=_worker, args=(url, model, share, args, barrier, out, i, warmup), daemon=True)
               for i, share in enumerate(shares)]
    for w in workers:
        w.start()
    got: dict[int, list[Stream]] = {}
    try:
        try:
            barrier.wait(timeout=args.start_timeout)
        except threading.BrokenBarrierError:
            pass  # a worker failed before its start: its error comes through `out`
        started()
        while len(got) < procs:
            try:
                i, streams, error = out.get(timeout=args.timeout + args.start_timeout)
            except queue.Empty:
                raise SystemExit("a client process sent nothing back in time") from None
            if error:
                raise SystemExit(f"a client process failed: {error}")
            got[i] = [Stream(*t) for t in streams]  # plain tuples: the class is __main__'s here, __mp_main__'s there
    finally:
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.kill()
    return [s for i in range(procs) for s in got[i]]


SERVER_HISTOGRAMS = {"ttft": "webgpu_llm_time_to_first_token_seconds", "duration": "webgpu_llm_request_duration_seconds"}


def server_histograms(url: str, api_key: str | None) -> dict[str, tuple[float, float]] | None:
    """The sum and count of the server's own time-to-first-token and request-duration histograms
    (`webgpu-llm serve`'s /metrics: from a request's submission to its engine's first and last
    token), None where it has none."""
    try:
        r = httpx.get(url + "/metrics", timeout=10, headers={"Authorization": f"Bearer {api_key}"} if api_key else None)
    except httpx.HTTPError:
        return None
    lines = dict(line.split(" ", 1) for line in r.text.splitlines() if r.status_code == 200 and " " in line
                 and not line.startswith("#"))
    try:
        return {k: (float(lines[f"{name}_sum"]), float(lines[f"{name}_count"])) for k, name in SERVER_HISTOGRAMS.items()}
    except (KeyError, ValueError):
        return None


def run_clients(url: str, model: str, k: int, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    lo, hi = args.token_range

    def prompt() -> list[int]:
        return [rng.randrange(lo, hi) for _ in range(args.prompt_tokens)]

    warmup = [prompt() for _ in range(args.warmup)]
    prompts = [[prompt() for _ in range(args.rounds)] for _ in range(k)]
    procs = min(k, args.procs or min(-(-k // CLIENTS_A_PROCESS), os.cpu_count() or 1))
    # the server's histograms before the measured requests, after every warm-up (none of them
    # finishes, so none is observed, within the moment after the start)
    before: list[dict[str, tuple[float, float]] | None] = []
    mark = lambda: before.append(server_histograms(url, args.api_key))  # noqa: E731
    if procs <= 1:
        streams = asyncio.run(_streams(url, model, prompts, args, warmup, ready=mark))
    else:
        asyncio.run(_streams(url, model, [], args, warmup))
        streams = _in_processes(url, model, prompts, args, procs, warmup, mark)
    after = server_histograms(url, args.api_key)
    b0 = before[0] if before else None
    server = {h: (after[h][0] - b0[h][0]) / (after[h][1] - b0[h][1]) if after and b0 and after[h][1] > b0[h][1] else None
              for h in SERVER_HISTOGRAMS}
    ok = [s for s in streams if s.error is None and s.chunks]
    start = min((s.sent for s in streams), default=0.0)
    end = max((s.chunks[-1] for s in ok), default=start)
    tokens = sum(s.tokens for s in ok)
    ttft = [s.chunks[0] - s.sent for s in ok]
    itl = [b - a for s in ok for a, b in zip(s.chunks, s.chunks[1:])]
    decode = [(s.tokens - 1) / (s.chunks[-1] - s.chunks[0]) for s in ok if s.tokens > 1 and s.chunks[-1] > s.chunks[0]]
    errors = [s.error for s in streams if s.error]
    return {"clients": k, "client_processes": procs, "requests": len(streams), "completed": len(ok),
            "failed": len(streams) - len(ok), "errors": errors[:5], "generated_tokens": tokens,
            "short_streams": sum(1 for s in ok if s.tokens < args.max_tokens),
            "tokens_per_chunk": tokens / max(1, sum(len(s.chunks) for s in ok)),
            "wall_s": end - start, "aggregate_tok_s": tokens / (end - start) if end > start else 0.0,
            "ttft_s": summary(ttft), "itl_s": summary(itl), "stream_decode_tok_s": summary(decode),
            # the server's own means (submission to its engine's first and last token, without
            # HTTP and the clients), where it reports them
            "server_ttft_mean_s": server["ttft"], "server_duration_mean_s": server["duration"]}


# -- a server started per run -------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Started:
    """A server started from --server-cmd for one run, stopped (SIGTERM) after it."""

    def __init__(self, template: str, k: int, args: argparse.Namespace) -> None:
        self.port = free_port()
        ctx = args.prompt_tokens + args.max_tokens + 16
        self.cmd = template.format(port=self.port, clients=k, ctx=ctx, ctx_total=ctx * k,
                                   python=shlex.quote(sys.executable))
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(args.server_log, "ab") if args.server_log else subprocess.DEVNULL
        self.proc = subprocess.Popen(shlex.split(self.cmd), stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + args.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited with code {self.proc.returncode}: {self.cmd}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.stop()
        raise SystemExit(f"the server did not answer /health within {args.start_timeout:g} s: {self.cmd}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not subprocess.DEVNULL:
            self.log.close()


def model_of(url: str, key: str | None) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.get(url + "/v1/models", headers=headers, timeout=30)
        r.raise_for_status()
        return str(r.json()["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as e:
        raise SystemExit(f"load.py: no model list at {url}/v1/models ({type(e).__name__}: {e}); is the server "
                         "up, and is --url its base URL?") from None


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="base URL of a running server, e.g. http://127.0.0.1:8080")
    where.add_argument("--server-cmd", metavar="CMD",
                       help="start this server for each run of --clients and stop it after "
                            "(placeholders {port} {clients} {ctx} {ctx_total} {python})")
    ap.add_argument("--clients", default="1,8,32", metavar="K,...",
                    help="concurrent clients, one run per value (default: %(default)s)")
    ap.add_argument("--prompt-tokens", type=int, default=64, metavar="N",
                    help="prompt length in tokens (default: %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=128, metavar="N",
                    help="tokens to generate per request (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=1, metavar="R",
                    help="requests each client sends one after the other (default: %(default)s)")
    ap.add_argument("--procs", type=int, default=0, metavar="P",
                    help=f"client processes the clients are spread over (default 0: one per {CLIENTS_A_PROCESS} "
                         "clients, at most one a core: a process sends its clients' requests one after another, "
                         "and the openai client's parsing of every stream's events caps a process near 10k tok/s)")
    ap.add_argument("--warmup", type=int, default=1, metavar="N",
                    help="requests of the measured shape sent before each run (and one by each client "
                         "process), not measured (default: %(default)s)")
    ap.add_argument("--model", default=None, help="the model name to send (default: the first of GET /v1/models)")
    ap.add_argument("--api-key", default=None, metavar="KEY", help="sent as 'Authorization: Bearer KEY' (default: none)")
    ap.add_argument("--token-range", default="100:1000", metavar="LO:HI",
                    help="prompt token ids are drawn from [LO, HI) (default: %(default)s)")
    ap.add_argument("--no-ignore-eos", action="store_true",
                    help="let the model stop at its end-of-text token (streams may then be shorter)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompt ids (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=600.0, metavar="S",
                    help="per-request timeout in seconds (default: %(default)s)")
    ap.add_argument("--start-timeout", type=float, default=600.0, metavar="S",
                    help="with --server-cmd: how long a server may take to answer /health (default: %(default)s)")
    ap.add_argument("--server-log", default=None, metavar="FILE",
                    help="with --server-cmd: append the server's output to FILE (default: discarded)")
    ap.add_argument("--out", default=None, metavar="FILE", help="also write the JSON to FILE")
    ap.add_argument("--quiet", "-q", action="store_true", help="no table on stderr")
    args = ap.parse_args(argv)
    try:
        args.clients = [int(k) for k in args.clients.split(",")]
        lo, hi = (int(v) for v in args.token_range.split(":"))
    except ValueError:
        ap.error("--clients takes numbers like 1,8,32 and --token-range LO:HI")
    if args.procs < 0:
        ap.error(f"--procs must be 0 (one process per {CLIENTS_A_PROCESS} clients) or more")
    if min(args.clients) < 1 or args.prompt_tokens < 1 or args.max_tokens < 1 or args.rounds < 1 or not 0 <= lo < hi:
        ap.error("--clients, --prompt-tokens, --max-tokens and --rounds must be at least 1, and --token-range LO < HI")
    args.token_range = (lo, hi)
    return args


def table(doc: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.1f}"

    rows = [f"{'K':>4} {'ok':>5} {'tokens':>7} {'agg tok/s':>10} {'TTFT p50/p99 ms':>17} {'ITL p50/p99 ms':>16} "
            f"{'stream tok/s':>12} {'server TTFT ms':>14}"]
    for r in doc["runs"]:
        rows.append(f"{r['clients']:>4} {r['completed']:>2}/{r['requests']:<2} {r['generated_tokens']:>7} "
                    f"{r['aggregate_tok_s']:>10.1f} {ms(r['ttft_s']['p50']):>8}/{ms(r['ttft_s']['p99']):<8} "
                    f"{ms(r['itl_s']['p50']):>7}/{ms(r['itl_s']['p99']):<8} "
                    f"{r['stream_decode_tok_s']['p50'] or 0:>12.1f} {ms(r.get('server_ttft_mean_s')):>14}")
        rows += [f"     error: {e}" for e in r["errors"]]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rng = random.Random(args.seed)
    doc: dict[str, Any] = {"url": args.url, "server_cmd": args.server_cmd, "model": args.model,
                           "prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens,
                           "rounds": args.rounds, "ignore_eos": not args.no_ignore_eos,
                           "host": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": []}
    for k in args.clients:
        started = Started(args.server_cmd, k, args) if args.server_cmd else None
        try:
            url = (started.url if started else args.url).rstrip("/")
            model = args.model or model_of(url, args.api_key)
            doc["model"] = model
            run = run_clients(url, model, k, args, rng)
            if started:
                run["server_cmd"] = started.cmd
            doc["runs"].append(run)
            if not args.quiet:
                print(table({"runs": [run]}).split("\n", 1)[1] if doc["runs"][:-1] else table({"runs": [run]}),
                      file=sys.stderr, flush=True)
        finally:
            if started:
                started.stop()
    text = json.dumps(doc, indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    return 1 if any(r["failed"] for r in doc["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
