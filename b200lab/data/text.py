"""``data=text``: a real corpus as byte tokens, split by document, scored with sliding windows.

Tokenizer: every byte of a document is a token (ids 0-255), and id 256 ends a document, so the
vocabulary is 257 and any file (UTF-8 or not) tokenizes without loss. Corpus: ``data.path`` (a
file, or a folder whose files matching ``data.glob`` are read in sorted order, hidden ones
skipped), else the Python standard-library corpus (b200lab/data/corpus.py). Each file is a
document, or ``data.doc_separator`` cuts files into documents (empty pieces are dropped).

Split: documents, not tokens, are held out. The ``val_fraction`` of documents whose names hash
lowest (sha256 of the name: stable when the folder is listed in another order) are validation,
at least one, and at least one stays for training. Each split is one stream,
``EOD doc EOD doc ... EOD``: the leading EOD is context only, so every byte and every document's
end is a target.

Training windows of ``seq.len + 1`` tokens start anywhere in the training stream, drawn on the
device with the rank's generator (seeded by run.seed and its data shard). Validation windows
(:func:`window_plan`) count every target once.
"""

from __future__ import annotations

import torch

from b200lab.data.base import DataSource, Windows
from b200lab.data.config.text import TextConfig
from b200lab.data.documents import (
    LISTED_FILES,
    TOKENIZER,
    Document,
    corpus_sha256,
    load_documents,
    split_documents,
    window_plan,
)


def token_stream(docs: list[Document]) -> torch.Tensor:
    """``EOD doc EOD doc ... EOD`` as int16 token ids (on the CPU)."""
    out = torch.empty(1 + sum(len(d.data) + 1 for d in docs), dtype=torch.int16)
    out[0] = TOKENIZER.eod
    pos = 1
    for d in docs:
        out[pos : pos + len(d.data)] = torch.frombuffer(bytearray(d.data), dtype=torch.uint8)
        pos += len(d.data)
        out[pos] = TOKENIZER.eod
        pos += 1
    return out


def documents_at(tokens: torch.Tensor, eod: int) -> torch.Tensor:
    """Document index of each position: a document ends with (and owns) its EOD token, and the
    next one starts after it."""
    ends = (tokens == eod).long()
    return ends.cumsum(dim=1) - ends


class TextData(DataSource):
    Config = TextConfig
    tokenizer = TOKENIZER

    def __init__(self, cfg, family, device: torch.device):
        super().__init__(cfg, family, device)
        docs, source = load_documents(cfg)
        train, val = split_documents(docs, cfg.val_fraction)
        self.train_stream = token_stream(train).to(device)
        self.val_stream = token_stream(val)
        if cfg.val_tokens is not None:
            self.val_stream = self.val_stream[: cfg.val_tokens + 1]
        self.val_stream = self.val_stream.to(device)
        source.update(bytes=sum(len(d.data) for d in docs), sha256=corpus_sha256(docs))
        self.effective.update(
            tokenizer=f"bytes: ids 0-255, end of document {TOKENIZER.eod}",
            vocab_size=TOKENIZER.vocab_size,
            corpus=source,
            val_fraction=cfg.val_fraction,
            documents={"train": len(train), "val": len(val)},
            val_documents=[d.name for d in val][:LISTED_FILES],
            tokens={"train": self.train_stream.numel() - 1, "val": self.val_stream.numel() - 1},
        )

    def batch(self, batch: int, seq_len: int, generator: torch.Generator):
        starts = torch.randint(
            0, self.train_stream.numel() - seq_len, (batch,), generator=generator, device=self.device
        )
        tokens = self.train_stream[starts[:, None] + torch.arange(seq_len + 1, device=self.device)].long()
        return self.packed(tokens[:, :-1], documents_at(tokens[:, :-1], TOKENIZER.eod)), tokens[:, 1:]

    def validation(self, seq_len: int) -> Windows:
        stride = int(self.cfg.stride or seq_len)
        n_targets = self.val_stream.numel() - 1
        plan = torch.tensor(window_plan(n_targets, seq_len, stride), dtype=torch.long, device=self.device)
        self.effective.update(stride=stride, windows=len(plan))
        return Windows(self.val_stream, plan[:, 0].contiguous(), plan[:, 1].contiguous(), seq_len, n_targets)
