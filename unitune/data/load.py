"""Load rows from files, folders, built-in datasets and the Hugging Face hub.

A spec names one source:

- a file: `.jsonl`; `.json` (an array of objects, an object holding one under
  "data" or "rows", or JSON lines despite the name); `.csv` (a header row; every
  cell stays a string, an empty cell is ""); `.parquet`; `.txt` (one row
  `{"text": line}` per non-empty line -- write one document per line, or use
  JSONL for documents that span lines);
- a folder: every supported file directly inside it, in name order; or a
  folder written by `datasets.Dataset.save_to_disk` (its "train" split);
- a built-in dataset name (`unitune.data.registry`);
- a hub id `owner/name` (optionally `owner/name:split`, default "train"),
  loaded with `datasets.load_dataset`. When the hub cannot be reached it is
  looked up in the local hub cache only, and a miss is a one-line error
  rather than minutes of retries.

`spec#N` samples N rows without replacement (seeded); N larger than the
source is an error, not silent repetition.

Every row keeps its origin ("file.jsonl:12", "file.csv:row 3",
"builtin:pirate-chat:row 7", "hf:owner/name:row 9"), so later stages can name
the file and line of a bad row. Everything is read into memory: fine for
fine-tuning sized data, not for pretraining corpora of many gigabytes.
"""

import csv
import io
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from unitune.data import registry
from unitune.errors import UnituneError, suggest
from unitune.hub import hub_reachable

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
HUB_ID = re.compile(r"([\w.-]+/[\w.-]+)(?::([\w.-]+))?")


@dataclass
class Row:
    data: dict
    source: str  # where it came from: "path:line", "path:row N", "builtin:NAME:row N", "hf:ID:row N"


def load_source(spec: str, *, seed: int, columns: dict) -> list[Row]:
    """Rows of one source spec (see the module docstring), sampled and renamed."""
    if not spec.strip():
        raise UnituneError("an empty data source: give a file, folder, dataset or built-in name")
    spec, n = _split_sample(spec)
    rows = _load_unsampled(spec)
    if not rows:
        raise UnituneError(f"{spec}: no rows (empty file or dataset)")
    if n is not None:
        rows = _sample(rows, n, seed, spec)
    return rename_columns(rows, columns, spec)


def load_mixture(specs: list[str], weights: list[float], *, seed: int, columns: dict,
                 log=print) -> list[Row]:
    """Concatenate sources, or mix them by weight; `log` gets one line per source.

    With weights, the mixture has as many rows as the sources together and
    source i contributes p_i * total rows (p = normalised weights; rounded by
    largest remainder so the counts add up to the total): drawn without
    replacement up to its size, then cycling through it again.
    """
    if weights and len(weights) != len(specs):
        raise UnituneError(f"data.weights has {len(weights)} values for {len(specs)} "
                           f"train sources; give one weight per source")
    if any(w < 0 for w in weights) or (weights and sum(weights) <= 0):
        raise UnituneError(f"data.weights must be non-negative with a positive sum, got {weights}")
    sources = [load_source(s, seed=seed, columns={}) for s in specs]
    if not weights:
        for spec, rows in zip(specs, sources):
            log(f"data: {spec}: {len(rows)} rows")
        return rename_columns([r for rows in sources for r in rows], columns, ", ".join(specs))
    wsum = sum(weights)
    mixed = []
    counts = _shares(weights, sum(len(rows) for rows in sources))
    for i, (spec, rows, w, take) in enumerate(zip(specs, sources, weights, counts)):
        order = list(range(len(rows)))
        random.Random(f"{seed}:{i}").shuffle(order)
        mixed += [rows[order[k % len(rows)]] for k in range(take)]
        log(f"data: {spec}: {len(rows)} rows, weight {w / wsum:.2f} -> {take} rows"
            + (" (repeated)" if take > len(rows) else ""))
    return rename_columns(mixed, columns, ", ".join(specs))


def _shares(weights: list[float], total: int) -> list[int]:
    """Split `total` in proportion to `weights`: floors, then the largest remainders get +1."""
    exact = [w / sum(weights) * total for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[:total - sum(counts)]:
        counts[i] += 1
    return counts


def rename_columns(rows: list[Row], columns: dict, where: str) -> list[Row]:
    """Rename keys per `columns` ({old: new}); an old name found in no row is an error."""
    if not columns:
        return rows
    present = set().union(*(r.data.keys() for r in rows))
    for old in columns:
        if old not in present:
            raise UnituneError(f"data.columns: no column '{old}' in {where}{suggest(old, present)} "
                               f"(columns: {', '.join(sorted(present))})")
    out = []
    for row in rows:
        data = {}
        for key, value in row.data.items():
            new = columns.get(key, key)
            if new in data:
                raise UnituneError(f"{row.source}: data.columns would make two '{new}' columns")
            data[new] = value
        out.append(Row(data, row.source))
    return out


def _split_sample(spec: str) -> tuple[str, int | None]:
    """'file.jsonl#100' -> ('file.jsonl', 100)."""
    base, sep, n = spec.rpartition("#")
    if not sep or not base or not n.isdigit():
        return spec, None
    if int(n) == 0:
        raise UnituneError(f"{spec}: '#{n}' must be a positive number of rows to sample")
    return base, int(n)


def _sample(rows: list[Row], n: int, seed: int, spec: str) -> list[Row]:
    if n > len(rows):
        raise UnituneError(f"{spec}#{n}: cannot sample {n} rows from {len(rows)} "
                           f"(sampling is without replacement; use at most {len(rows)})")
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def _load_unsampled(spec: str) -> list[Row]:
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_folder(path)
    if path.is_file():
        return _load_file(path)
    if spec in registry.DATASETS:
        return [Row(dict(d), f"builtin:{spec}:row {i}") for i, d in enumerate(registry.DATASETS[spec](), 1)]
    m = HUB_ID.fullmatch(spec)
    if m and path.suffix.lower() not in SUFFIXES and not Path(spec.split("/")[0]).is_dir():
        return _load_hub(m.group(1), m.group(2) or "train")
    raise UnituneError(_not_found(spec, path))


def _not_found(spec: str, path: Path) -> str:
    if "/" not in spec and os.sep not in spec and path.suffix.lower() not in SUFFIXES:
        names = sorted(registry.DATASETS)
        return (f"unknown dataset '{spec}': not a file, folder or built-in dataset"
                f"{suggest(spec, names + _listdir(Path('.')))}; built-in: {', '.join(names)}; "
                f"a hub dataset is named owner/name")
    return f"file not found: {spec}{suggest(path.name, _listdir(path.parent))}"


def _listdir(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def _load_folder(folder: Path) -> list[Row]:
    if any((folder / f).exists() for f in ("state.json", "dataset_dict.json")):
        return _load_saved(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise UnituneError(f"{folder}: folder has no data files ({', '.join(SUFFIXES)})")
    return [row for f in files for row in _load_file(f)]


def _load_file(path: Path) -> list[Row]:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UnituneError(f"{path}: unsupported file type '{suffix}' (supported: {', '.join(SUFFIXES)})")
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        return _numbered(pq.read_table(path).to_pylist(), f"{path}:row")
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise UnituneError(f"{path}: empty file")
    if suffix == ".txt":
        return [Row({"text": line.strip()}, f"{path}:{i}")
                for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if suffix == ".csv":
        return _load_csv(path, text)
    if suffix == ".json":
        return _load_json(path, text)
    return _load_jsonl(path, text)


def _looks_like_jsonl(text: str) -> bool:
    """True when the first non-empty line is a complete JSON object on its own."""
    first = next(line for line in text.splitlines() if line.strip())
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _load_jsonl(path: Path, text: str) -> list[Row]:
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UnituneError(f"{path}:{i}: invalid JSON: {e.msg} (column {e.colno})") from None
        rows.append(Row(_object(obj, f"{path}:{i}"), f"{path}:{i}"))
    return rows


def _load_json(path: Path, text: str) -> list[Row]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        if _looks_like_jsonl(text):
            return _load_jsonl(path, text)
        raise UnituneError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    if isinstance(obj, dict):
        key = next((k for k in ("data", "rows") if isinstance(obj.get(k), list)), None)
        obj = obj[key] if key else [obj]  # {"data": [...]}, or one object = one row
    return _numbered(obj, f"{path}:row")


def _numbered(objs: list, prefix: str) -> list[Row]:
    return [Row(_object(o, f"{prefix} {i}"), f"{prefix} {i}") for i, o in enumerate(objs, 1)]


def _object(obj, where: str) -> dict:
    if not isinstance(obj, dict):
        raise UnituneError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _load_csv(path: Path, text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise UnituneError(f"{path}: CSV file has no header row")
    rows = []
    for i, rec in enumerate(reader, 1):
        if None in rec:
            raise UnituneError(f"{path}:row {i}: more cells than the {len(reader.fieldnames)} header columns")
        rows.append(Row({k: v for k, v in rec.items() if v is not None}, f"{path}:row {i}"))
    return rows


def _load_saved(folder: Path) -> list[Row]:
    import datasets

    ds = datasets.load_from_disk(str(folder))
    if isinstance(ds, datasets.DatasetDict):
        ds = _pick_split(ds, "train", str(folder))
    return _numbered(ds.to_list(), f"{folder}:row")


def _pick_split(dsd, split: str, where: str):
    if split in dsd:
        return dsd[split]
    if len(dsd) == 1 and split == "train":
        return next(iter(dsd.values()))
    raise UnituneError(f"{where}: no split '{split}'{suggest(split, dsd)} (splits: {', '.join(dsd)})")


def _load_hub(repo: str, split: str) -> list[Row]:
    import datasets

    target = repo if hub_reachable() else _cached_snapshot(repo)
    try:
        ds = datasets.load_dataset(target, split=split)
    except Exception as e:  # the hub's errors are many and long; the user needs the first line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UnituneError(f"hf:{repo}: could not load split '{split}': {first}") from None
    return _numbered(ds.to_list(), f"hf:{repo}:row")


def _cached_snapshot(repo: str) -> str:
    """The local hub-cache folder of `repo`, without touching the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo, repo_type="dataset", local_files_only=True)
    except LocalEntryNotFoundError:
        raise UnituneError(f"hf:{repo}: the Hugging Face hub cannot be reached and the dataset "
                           f"is not in the local cache; download it once online, or pass a local file") from None
