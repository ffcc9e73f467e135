"""Running the real CLI in a subprocess, and small data files for it."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([sys.executable, "-m", "unitune", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def chat_rows(n: int = 48):
    """Conversations with one learnable pattern: the answer repeats a fixed greeting."""
    return [{"messages": [{"role": "user", "content": f"Greet guest number {i}."},
                          {"role": "assistant", "content": "Welcome aboard, friend! Welcome aboard!"}]}
            for i in range(n)]


def metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
