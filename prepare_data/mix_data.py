r"""Concatenate per-passage parquet shards into one training file, schema-checked.

    python -m prepare_data.mix_data --data_dir data --passages 0-4 --file grpo.parquet \
        --output data/mixed/grpo_0-4.parquet [--shuffle --seed 0]

Every shard DATA_DIR/passage{N}/FILE must be complete (its manifest present) and have the same
columns as the first; rows keep their passage id (`passage_id` column for SFT data,
extra_info["passage_id"] for RLHFDataset data) and, for RL data, get a fresh extra_info["index"]
over the mixed file. Used for GRPO on several source passages and for multi-passage SFT.
"""

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

from prepare_data.passages import parse_passage_ids, passage_dir, write_parquet

log = logging.getLogger("mix_data")


def read_shard(path, passage_id):
    """A shard's rows, checked: complete (manifest), and every row of passage `passage_id`."""
    if not path.is_file():
        raise FileNotFoundError(f"missing shard {path}: generate passage {passage_id} first (scripts/gen_data/)")
    manifests = [json.loads(m.read_text(encoding="utf-8")) for m in path.parent.glob("manifest_*.json")]
    manifest = next((m for m in manifests if m.get("output") == path.name), None)
    frame = pd.read_parquet(path)
    if manifest is None or manifest.get("passage_id") != passage_id or manifest.get("rows") != len(frame):
        raise ValueError(f"{path}: no matching manifest for passage {passage_id} beside it, so it may be incomplete; regenerate it")
    if "messages" in frame.columns and "passage_id" in frame.columns:
        wrong = frame.index[frame["passage_id"] != passage_id].tolist()
    elif "extra_info" in frame.columns and "prompt" in frame.columns:
        wrong = [i for i, info in enumerate(frame["extra_info"]) if (info or {}).get("passage_id") != passage_id]
    else:
        raise ValueError(f"{path}: neither PaST SFT data (`messages`, `passage_id`) nor RLHFDataset data (`prompt`, `extra_info`); columns: {list(frame.columns)}")
    if wrong:
        raise ValueError(f"{path} rows {wrong[:5]}: passage_id differs from the folder's passage {passage_id}")
    return frame


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data", help="root of the per-passage folders (default: data)")
    parser.add_argument("--passages", required=True, help="passage ids: N, N-M or a comma list")
    parser.add_argument("--file", required=True, help="shard name inside each passage folder, e.g. grpo.parquet")
    parser.add_argument("--output", required=True, help="the mixed parquet to write")
    parser.add_argument("--shuffle", action="store_true", help="shuffle rows (seeded) instead of passage order")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        shards = []
        for passage_id in parse_passage_ids(args.passages):
            path = passage_dir(args.data_dir, passage_id) / args.file
            frame = read_shard(path, passage_id)
            if shards and list(frame.columns) != list(shards[0][1].columns):
                raise ValueError(f"{path}: columns {list(frame.columns)} differ from {shards[0][0]}'s {list(shards[0][1].columns)}")
            shards.append((path, frame))
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    mixed = pd.concat([frame for _, frame in shards], ignore_index=True)
    if args.shuffle:
        mixed = mixed.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
    if "extra_info" in mixed.columns:
        mixed["extra_info"] = [{**info, "index": i} for i, info in enumerate(mixed["extra_info"])]
    write_parquet(mixed.to_dict("records"), Path(args.output), list(mixed.columns))
    log.info("%d rows from %d shards -> %s", len(mixed), len(shards), args.output)


if __name__ == "__main__":
    main()
