"""Load check for `unitune serve`: N concurrent streaming chat clients over loopback.

    python bench/serve_load.py --model tiny-llama --clients 64 --max-tokens 64
    python bench/serve_load.py --model smollm2-135m-instruct --clients 64 --max-tokens 32
    python bench/serve_load.py --model smollm2-135m-instruct --engine.prepack false   # flags it does not know go to the server

Starts the real server (`python -m unitune serve --serve.port 0`), warms it up,
then sends the same N requests (fixed seeds, so the same completions) twice:
one at a time, and all N at once as streaming clients. Reports errors, generated
tokens/s for both (tokens from the usage chunk of each stream), the speed-up,
and per-request latency (p50/p99 to the last token, p50 to the first token).
Bounded: N requests per phase, `--timeout` seconds per phase. Exits 1 on any
error. The clients run on the same machine as the server and share its CPUs.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def start_server(args) -> tuple[subprocess.Popen, str]:
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "unitune", "serve", "--model", args.model, "--serve.port", "0",
           "--engine.max_batch_size", str(args.clients), "--engine.device", args.device,
           "--engine.threads", str(args.threads), *args.server_flags]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        text = Path(log.name).read_text()
        for line in text.splitlines():
            if line.startswith("unitune: serving") and "http://" in line:
                return proc, line.split(" on ", 1)[1].split()[0]
        if proc.poll() is not None:
            sys.exit(f"server exited:\n{text}")
        time.sleep(0.2)
    proc.kill()
    sys.exit("server did not start in 300 s")


async def one(client: httpx.AsyncClient, url: str, args, i: int) -> dict:
    body = {"model": args.model, "stream": True, "max_tokens": args.max_tokens, "seed": i,
            "temperature": 1.0, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"Tell me a short story about robot number {i}."}]}
    start, first, tokens = time.perf_counter(), None, None
    async with client.stream("POST", f"{url}/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    if tokens is None:
        raise RuntimeError("no usage chunk")
    return {"latency": end - start, "ttft": (first or end) - start, "tokens": tokens}


async def phase(url: str, args, concurrent: bool) -> dict:
    limits = httpx.Limits(max_connections=args.clients + 8, max_keepalive_connections=args.clients + 8)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as client:
        start = time.perf_counter()
        if concurrent:
            jobs = [one(client, url, args, i) for i in range(args.clients)]
            results = await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), args.timeout)
        else:
            results = []
            for i in range(args.clients):
                try:
                    results.append(await one(client, url, args, i))
                except Exception as err:  # noqa: BLE001
                    results.append(err)
                if time.perf_counter() - start > args.timeout:
                    break
        wall = time.perf_counter() - start
    ok = [r for r in results if isinstance(r, dict)]
    errors = [repr(r) for r in results if not isinstance(r, dict)]
    tokens = sum(r["tokens"] for r in ok)
    lat = sorted(r["latency"] for r in ok)
    return {"requests": len(results), "errors": len(errors), "first_errors": errors[:3], "wall_s": round(wall, 2),
            "tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
            "p50_s": round(statistics.median(lat), 3) if lat else None,
            "p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3) if lat else None,
            "ttft_p50_s": round(statistics.median(r["ttft"] for r in ok), 3) if ok else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1,
                    help="server's torch threads (1: the clients share these CPUs; 0: torch's default)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per phase")
    args, args.server_flags = ap.parse_known_args()
    proc, url = start_server(args)
    try:
        asyncio.run(phase(url, argparse.Namespace(**{**vars(args), "clients": 2}), concurrent=True))  # warm-up
        seq = asyncio.run(phase(url, args, concurrent=False))
        conc = asyncio.run(phase(url, args, concurrent=True))
    finally:
        proc.terminate()
        proc.wait(60)
    report = {"model": args.model, "server_flags": args.server_flags, "clients": args.clients, "max_tokens": args.max_tokens, "cpus": os.cpu_count(),
              "one_at_a_time": seq, "concurrent": conc,
              "speedup": round(conc["tokens_per_s"] / max(seq["tokens_per_s"], 1e-9), 2),
              "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(report, indent=2))
    return 1 if seq["errors"] or conc["errors"] or conc["requests"] != args.clients else 0


if __name__ == "__main__":
    sys.exit(main())
