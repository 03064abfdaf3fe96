"""Resumable outputs. A long run appends what it finished to OUT.partial.jsonl — first line the
run's header (its settings), then one JSON record per line, each flushed to disk — writes OUT
when everything is done and removes the partial file. A rerun with the same header resumes after
the records it finds (a line cut by a kill is dropped and redone); another header is refused.
"""

import json
import os
from pathlib import Path


class PartialFile:
    def __init__(self, output, header, overwrite=False):
        output = Path(output)
        self.path = output.with_name(output.name + ".partial.jsonl")
        header = json.loads(json.dumps(header))  # as it reads back
        self.records = []
        if self.path.exists() and not overwrite:
            lines = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    break
            if not lines or lines[0] != header:
                raise ValueError(f"{self.path} holds an unfinished run with other settings; rerun with --overwrite to "
                                 "start over (or with that run's settings to resume it)")
            self.records = lines[1:]
        self.header = header
        output.parent.mkdir(parents=True, exist_ok=True)
        self.keep(len(self.records))

    def keep(self, n):
        """Keep only the first `n` records (rewritten whole, so that new lines never follow a cut one)."""
        self.records = self.records[:n]
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [self.header, *self.records]), encoding="utf-8")
        os.replace(tmp, self.path)

    def append(self, records):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
        self.records.extend(records)

    def remove(self):
        self.path.unlink(missing_ok=True)
