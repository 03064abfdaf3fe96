"""What every prepare_data entry point shares: LooGLE passages (validated, by passage id),
passage-id ranges, the per-passage output folder, atomic parquet writes and the manifest that
makes a rerun skip finished passages.

passage_id N is the 0-based index of the N-th non-blank row of the LooGLE jsonl.
Per passage, under DATA_DIR/passage{N}/: eval.parquet, stage1_sft.parquet, stage2_sft.parquet,
grpo.parquet, and a manifest_<stage>.json beside each, written last.
"""

import ast
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

LOOGLE_HUB_DATASET = "bigai-nlco/LooGLE"
LOOGLE_HUB_CONFIG = "shortdep_qa"


@dataclass
class Passage:
    passage_id: int
    title: str
    text: str
    qa_pairs: list = field(default_factory=list)  # [{Q, A, S[, type]}]: the LooGLE test QA
    source: str = ""  # "FILE line L", for error messages and manifests


def parse_passage_ids(spec):
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,5-7' -> [0, 2, 5, 6, 7]; '3' -> [3]."""
    ids = []
    for part in str(spec).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"bad passage range {spec!r}: use N, N-M or a comma list such as 0,2,5-7")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if last < first:
            raise ValueError(f"bad passage range {part!r} in {spec!r}: the end is before the start")
        ids.extend(range(first, last + 1))
    return sorted(set(ids))


def _parse_row(row, where):
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object with input, title, qa_pairs; got {type(row).__name__}")
    for key in ("input", "title"):
        if not isinstance(row.get(key), str):
            raise ValueError(f"{where}: missing or non-string field {key!r} (LooGLE rows have input, title, qa_pairs)")
    if not row["input"].strip():
        raise ValueError(f"{where}: the passage text ('input') is empty")
    qa_pairs = row.get("qa_pairs")
    if qa_pairs is None:
        raise ValueError(f"{where}: missing field 'qa_pairs'")
    if isinstance(qa_pairs, str):
        try:
            qa_pairs = ast.literal_eval(qa_pairs) if qa_pairs.strip() not in ("", "none") else []
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"{where}: 'qa_pairs' is not a Python literal list of {{Q, A, S}} ({e})") from None
    if not isinstance(qa_pairs, list):
        raise ValueError(f"{where}: 'qa_pairs' must be a list of {{Q, A, S}}, got {type(qa_pairs).__name__}")
    for j, qa in enumerate(qa_pairs):
        if not (isinstance(qa, dict) and isinstance(qa.get("Q"), str) and isinstance(qa.get("A"), str)):
            raise ValueError(f"{where}: qa_pairs[{j}] needs string fields Q and A, got {qa!r:.200}")
    return row["title"], row["input"], qa_pairs


def load_passages(path, passage_ids=None):
    """Passages of a LooGLE jsonl, validated. `passage_ids=None` loads all of them.

    Only the requested rows are parsed, so a broken row elsewhere does not stop the work;
    an id beyond the file is an error naming the file and its size.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LooGLE file not found: {path} (pass --input FILE.jsonl)")
    wanted = None if passage_ids is None else set(passage_ids)
    passages, n_rows = {}, 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            passage_id, n_rows = n_rows, n_rows + 1
            if wanted is not None and passage_id not in wanted:
                continue
            where = f"{path} line {line_no} (passage {passage_id})"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from None
            title, text, qa_pairs = _parse_row(row, where)
            passages[passage_id] = Passage(passage_id, title, text, qa_pairs, source=f"{path} line {line_no}")
    missing = sorted((wanted or set()) - set(passages))
    if missing:
        raise ValueError(f"passage id(s) {missing} out of range: {path} has {n_rows} passages (ids 0..{n_rows - 1})")
    return [passages[i] for i in sorted(passages)]


def load_hub_passages(passage_ids=None):
    """The same passages from the Hugging Face hub (needs network and the `datasets` package)."""
    from datasets import load_dataset

    rows = load_dataset(LOOGLE_HUB_DATASET, LOOGLE_HUB_CONFIG, split="test")
    ids = range(len(rows)) if passage_ids is None else passage_ids
    bad = [i for i in ids if i >= len(rows)]
    if bad:
        raise ValueError(f"passage id(s) {bad} out of range: {LOOGLE_HUB_DATASET} has {len(rows)} passages")
    passages = []
    for i in ids:
        where = f"{LOOGLE_HUB_DATASET}/{LOOGLE_HUB_CONFIG} row {i}"
        title, text, qa_pairs = _parse_row(rows[i], where)
        passages.append(Passage(i, title, text, qa_pairs, source=where))
    return passages


def passage_dir(data_dir, passage_id):
    return Path(data_dir) / f"passage{passage_id}"


def write_parquet(rows, path):
    """Write rows (dicts) to `path` atomically: a temp file in the same folder, then rename."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(obj, path):
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def manifest_path(out_dir, stage):
    return Path(out_dir) / f"manifest_{stage}.json"


def is_complete(out_dir, stage, output_name, settings):
    """True when `out_dir` holds a finished `output_name` made with exactly `settings`."""
    import pyarrow.parquet as pq

    manifest_file, output = manifest_path(out_dir, stage), Path(out_dir) / output_name
    if not (manifest_file.is_file() and output.is_file()):
        return False
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        same_settings = manifest.get("settings") == json.loads(json.dumps(settings))
        return same_settings and pq.ParquetFile(output).metadata.num_rows == manifest.get("rows")
    except (json.JSONDecodeError, OSError, ValueError):
        return False


def start_stage(out_dir, stage):
    """Drop an old manifest before rewriting outputs, so a crash cannot leave a stale one that
    vouches for new, unfinished files."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    manifest_path(out_dir, stage).unlink(missing_ok=True)


def finish_stage(out_dir, stage, passage, output_name, rows, counts, skipped, settings, seconds):
    """Write the outputs' parquet, then the manifest (last: its presence means complete)."""
    write_parquet(rows, Path(out_dir) / output_name)
    manifest = {
        "stage": stage,
        "passage_id": passage.passage_id,
        "title": passage.title,
        "source": passage.source,
        "output": output_name,
        "rows": len(rows),
        "counts": counts,
        "skipped": skipped,
        "settings": settings,
        "seconds": round(seconds, 2),
    }
    _write_json(manifest, manifest_path(out_dir, stage))
    return manifest
