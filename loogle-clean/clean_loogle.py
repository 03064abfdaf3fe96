r"""LooGLE's question answering, cleaned into the jsonl files the pipeline reads.

    python loogle-clean/clean_loogle.py                      # from the hub -> data/loogle/
    python loogle-clean/clean_loogle.py --input ~/LooGLE/data/shortdep_qa.jsonl ~/LooGLE/data/longdep_qa.jsonl

Reads the short- and long-dependency QA of LooGLE (https://github.com/bigai-nlco/LooGLE) from the
Hugging Face hub (`bigai-nlco/LooGLE`, configurations shortdep_qa and longdep_qa: plain data
files that current `datasets` loads; the older `bigainlco/LooGLE` needs a loading script it can
no longer run), or from local copies (--input: .jsonl, .json or .parquet; each file's name or
folder names its configuration, e.g. shortdep_qa.jsonl or shortdep_qa/test-00000-of-00001.parquet).

Cleaning, per configuration (every drop is counted, with the row and the reason):
  - whitespace: \r\n -> \n and trailing spaces of the document's lines removed, the document and
    title trimmed; runs of whitespace in questions, answers and evidence made single spaces
  - a `qa_pairs` string that no Python/JSON literal parser reads: the document is dropped
    (qa_pairs_unparseable); a QA item without string Q and A is dropped (qa_malformed); so is
    one whose Q or A is empty (qa_empty)
  - a document whose text equals an earlier one's: one passage, the QA of both
    (document_duplicate); a question asked twice about one document (compared case- and
    punctuation-blind): the first is kept (qa_duplicate)
  - a row without a document text or title (document_missing_field), a document left with no
    QA (document_no_qa): dropped
Writes, atomically (temp files renamed once everything is cleaned and checked):
  OUTPUT_DIR/shortdep_qa.jsonl, OUTPUT_DIR/longdep_qa.jsonl    LooGLE's own row format (input,
      title, qa_pairs as a Python literal string, output); passage_id N = the N-th row
  OUTPUT_DIR/manifest_<config>.json    where the rows came from, counts in and out, every drop
      and its reason, which source rows each passage comes from, sha256 of inputs and outputs
Then: python -m prepare_data.loogle_to_parquet --input data/loogle/shortdep_qa.jsonl
"""

import argparse
import ast
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a file: import this checkout's modules

from prepare_data.passages import load_records, parse_loogle_row  # noqa: E402
from utils import normalize_question, write_json_atomic  # noqa: E402

log = logging.getLogger("clean_loogle")

HUB_DATASET = "bigai-nlco/LooGLE"
HUB_SPLIT = "test"
CONFIGS = ("shortdep_qa", "longdep_qa")


def hub_rows(config):
    """The rows of one LooGLE configuration on the hub, and where they came from."""
    try:
        import datasets
    except ImportError:
        raise SystemExit(
            "reading LooGLE from the hub needs the `datasets` package (pip install datasets); "
            "or pass local copies with --input"
        ) from None
    try:
        dataset = datasets.load_dataset(HUB_DATASET, config, split=HUB_SPLIT)
    except Exception as e:  # network, offline mode, auth, a renamed config: all end here
        raise SystemExit(
            f"could not load {HUB_DATASET} ({config}, split {HUB_SPLIT}) from the hub: {type(e).__name__}: {e}\n"
            "Check the network (and HF_HUB_OFFLINE / HF_ENDPOINT), or download the files elsewhere and pass --input"
        ) from None
    source = {"hub_dataset": HUB_DATASET, "config": config, "split": HUB_SPLIT,
              "datasets_version": datasets.__version__, "fingerprint": dataset._fingerprint}
    return list(dataset), source


def config_of(path):
    """The LooGLE configuration a local file holds, from its name or its folder's."""
    path = Path(path).resolve()
    for part in (path.name, path.parent.name):
        named = [c for c in CONFIGS if c in part.lower()]
        if len(named) == 1:
            return named[0]
    raise ValueError(f"{path}: cannot tell which LooGLE configuration it holds; its name or folder must say {' or '.join(CONFIGS)}")


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def squash(value):
    """Single spaces in a string (and in the strings of a list); anything else as it is."""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, list):
        return [squash(v) for v in value]
    return value


def clean_text(text):
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


def parse_qa_literal(value):
    """LooGLE's qa_pairs (a Python literal string, or already a list); None when unreadable."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        return None
    for parse in (ast.literal_eval, json.loads):
        try:
            parsed = parse(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        return parsed if isinstance(parsed, list) else None
    return None


def clean(rows, where):
    """(cleaned rows, report) for the rows of one configuration; `where` names them in messages."""
    dropped, documents, by_text = [], [], {}

    def drop(row, reason, **detail):
        dropped.append({"row": row, "reason": reason, **detail})

    qa_in = 0
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            drop(i, "document_missing_field", detail=f"not an object: {type(row).__name__}")
            continue
        text, title = row.get("input"), row.get("title")
        if not (isinstance(text, str) and clean_text(text) and isinstance(title, str) and title.strip()):
            drop(i, "document_missing_field", detail="needs non-empty `input` and `title`")
            continue
        items = parse_qa_literal(row.get("qa_pairs"))
        if items is None:
            drop(i, "qa_pairs_unparseable", title=squash(title))
            continue
        qa_in += len(items)
        qa_pairs = []
        for j, qa in enumerate(items):
            if not (isinstance(qa, dict) and isinstance(qa.get("Q"), str) and isinstance(qa.get("A"), str)):
                drop(i, "qa_malformed", qa_index=j, detail=repr(qa)[:200])
                continue
            qa = {key: squash(value) for key, value in qa.items()}
            if not (qa["Q"] and qa["A"]):
                drop(i, "qa_empty", qa_index=j, question=qa["Q"])
                continue
            qa_pairs.append((j, qa))
        text = clean_text(text)
        if text in by_text:
            first = by_text[text]
            first["rows"].append(i)
            first["qa"].extend((i, j, qa) for j, qa in qa_pairs)
            drop(i, "document_duplicate", same_as_row=first["rows"][0])
            continue
        document = {"rows": [i], "input": text, "title": squash(title), "output": row.get("output", "none"),
                    "qa": [(i, j, qa) for j, qa in qa_pairs]}
        by_text[text] = document
        documents.append(document)

    cleaned, passages = [], []
    for document in documents:
        seen, qa_pairs = set(), []
        for i, j, qa in document["qa"]:
            key = normalize_question(qa["Q"])
            if key in seen:
                drop(i, "qa_duplicate", qa_index=j, question=qa["Q"])
                continue
            seen.add(key)
            qa_pairs.append(qa)
        if not qa_pairs:
            drop(document["rows"][0], "document_no_qa", title=document["title"])
            continue
        row = {"input": document["input"], "title": document["title"], "qa_pairs": repr(qa_pairs), "output": document["output"]}
        parse_loogle_row(row, f"{where}: cleaned row {len(cleaned)}")  # what the pipeline reads, checked
        passages.append({"passage_id": len(cleaned), "title": row["title"], "source_rows": document["rows"], "qa": len(qa_pairs)})
        cleaned.append(row)

    reasons = {}
    for d in dropped:
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    report = {
        "documents_in": len(rows), "documents_out": len(cleaned),
        "qa_in": qa_in, "qa_out": sum(p["qa"] for p in passages),
        "dropped_by_reason": dict(sorted(reasons.items())),
        "dropped": sorted(dropped, key=lambda d: (d["row"], d.get("qa_index", -1))),
        "passages": passages,
    }
    return cleaned, report


def write_atomically(outputs):
    """outputs: [(path, text)]. Every file goes to a temp name first; only when all are written
    are they renamed, manifests last, so a crash leaves the old files or the new ones."""
    temps = []
    try:
        for path, text in outputs:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            temps.append((tmp, path))
        for tmp, path in temps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", metavar="FILE", help="local LooGLE files instead of the hub (see above)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS, help="hub configurations to read (default: both)")
    parser.add_argument("--output_dir", default="data/loogle", help="where the jsonl files and manifests go (default: data/loogle)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    sources = {}
    for path in args.input or []:
        try:
            config = config_of(path)
        except ValueError as e:
            parser.error(str(e))
        if config in sources:
            parser.error(f"two inputs hold {config}: {sources[config]} and {path}")
        sources[config] = path
    results = []
    for config in sources or args.configs:
        start = time.time()
        if sources:
            path = Path(sources[config])
            try:
                rows = load_records(path, None, None, None)
            except (ValueError, FileNotFoundError) as e:
                parser.error(str(e))
            if not isinstance(rows, list):
                parser.error(f"{path}: expected LooGLE rows (one JSON object per line), got a {type(rows).__name__}")
            source = {"file": str(path), "config": config, "sha256": sha256(path)}
        else:
            log.info("reading %s (%s) from the hub", HUB_DATASET, config)
            rows, source = hub_rows(config)
        cleaned, report = clean(rows, source.get("file") or f"{HUB_DATASET}/{config}")
        if not cleaned:
            parser.error(f"{source.get('file') or HUB_DATASET + '/' + config}: no usable LooGLE documents "
                         f"(dropped: {report['dropped_by_reason']}); is it LooGLE's {config}?")
        log.info("%s: %d of %d documents, %d of %d QA pairs kept; dropped %s", config, report["documents_out"],
                 report["documents_in"], report["qa_out"], report["qa_in"], report["dropped_by_reason"] or "nothing")
        results.append((config, source, cleaned, report, time.time() - start))

    output_dir = Path(args.output_dir)
    jsonl = [(output_dir / f"{config}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in cleaned))
             for config, _, cleaned, _, _ in results]
    for config, *_ in results:  # a crash from here on leaves no manifest vouching for other data
        (output_dir / f"manifest_{config}.json").unlink(missing_ok=True)
    write_atomically(jsonl)
    for (config, source, _, report, seconds), (path, _) in zip(results, jsonl):
        manifest = {"output": path.name, "sha256": sha256(path), "bytes": path.stat().st_size, "source": source,
                    **report, "seconds": round(seconds, 2)}
        write_json_atomic(output_dir / f"manifest_{config}.json", manifest)
        log.info("%s -> %s (sha256 %s)", config, path, manifest["sha256"][:12])


if __name__ == "__main__":
    main()
