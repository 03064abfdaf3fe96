"""A raw-text dataset for verl 0.9.1's SFT trainer: the source stage's knowledge SFT trains on
plain text with the LM loss on every token, as TTT does, not on chat turns.

    data.custom_cls.path=pkg://seal_squad.sft_dataset data.custom_cls.name=RawTextSFTDataset

(scripts/train/sft.sh: SFT_DATASET_CLASS=seal_squad.sft_dataset.RawTextSFTDataset). verl builds it
as it builds its MultiTurnSFTDataset, `cls(parquet_files=, tokenizer=, config=data, processor=,
max_samples=)`. The parquet holds one sequence per row in a column `text`
(make_source_data.py writes it). A row is tokenized as a base model reads text (the
tokenizer's own special tokens only, as TTT and vLLM's /completions tokenize it), followed by the
EOS token, so the model also learns where a sequence ends (TTT's pads, which are EOS, teach the
same). The loss covers every token but the first, which nothing predicts.

Items are what verl's no-padding mode (data.pad_mode=no_padding, its default) takes: 1-D tensors
`input_ids`, `position_ids` and `loss_mask` of the sequence's length. Sequences longer than
data.max_length are cut at the right with data.truncation=right (or left), or refused with
`error`, naming the row.
"""

import pandas as pd
import torch
from torch.utils.data import Dataset


class RawTextSFTDataset(Dataset):
    def __init__(self, parquet_files, tokenizer, config=None, processor=None, max_samples=-1):
        config = config or {}
        pad_mode = config.get("pad_mode", "no_padding")
        if pad_mode != "no_padding":
            raise ValueError(f"RawTextSFTDataset builds variable-length items: set data.pad_mode=no_padding, not {pad_mode!r}")
        self.truncation = config.get("truncation", "error")
        if self.truncation not in ("error", "left", "right"):
            raise ValueError(f"data.truncation must be error, left or right, got {self.truncation!r}")
        self.max_length = int(config.get("max_length", 1024))
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no EOS token to end each sequence with")
        self.tokenizer = tokenizer
        files = [parquet_files] if isinstance(parquet_files, str) else list(parquet_files)
        frames = [pd.read_parquet(f) for f in files]
        for f, frame in zip(files, frames):
            if "text" not in frame.columns:
                raise ValueError(f"{f}: no column 'text' (columns: {list(frame.columns)}); write it with "
                                 "SEAL/general-knowledge/make_source_data.py")
        self.texts = [t for frame in frames for t in frame["text"].tolist()]
        if max_samples is not None and max_samples > 0:
            self.texts = self.texts[:max_samples]
        for i, text in enumerate(self.texts):
            if not isinstance(text, str) or not text:
                raise ValueError(f"{', '.join(files)} row {i}: 'text' must be a non-empty string, got {text!r:.80}")

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, index):
        ids = self.tokenizer(self.texts[index])["input_ids"] + [self.tokenizer.eos_token_id]
        if len(ids) > self.max_length:
            if self.truncation == "error":
                raise ValueError(f"row {index}: {len(ids)} tokens > data.max_length {self.max_length} "
                                 "(raise SFT_MAX_LENGTH, or set data.truncation=right)")
            ids = ids[: self.max_length] if self.truncation == "right" else ids[-self.max_length :]
        input_ids = torch.tensor(ids, dtype=torch.long)
        loss_mask = torch.ones_like(input_ids)
        loss_mask[0] = 0  # verl shifts the mask by one: position 0 would score the previous row's last token
        return {"input_ids": input_ids, "position_ids": torch.arange(len(ids), dtype=torch.long), "loss_mask": loss_mask}
