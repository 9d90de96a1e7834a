"""``data=text``: a real corpus as byte tokens (b200lab/data/documents.py, b200lab/data/text.py)."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.core.component import CheckContext
from b200lab.data.config.base import DataConfig
from b200lab.data.documents import (
    TOKENIZER,
    CorpusError,
    load_documents,
    split_documents,
)


@dataclass
class TextConfig(DataConfig):
    path: str | None = None  # a text file or folder; None: the Python standard-library corpus
    glob: str = "**/*"  # a folder's files that are documents (hidden files and folders are skipped)
    doc_separator: str | None = None  # cut files into documents at this string; None: a file is a document
    val_fraction: float = 0.1  # fraction of the documents held out for validation
    val_tokens: int | None = None  # score only the first N tokens of the validation stream; None: all
    stride: int | None = None  # validation windows start every `stride` tokens; None: seq.len (disjoint)

    target = "b200lab.data.text.TextData"
    synthetic = False

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = []
        if not ctx.spec("workload").uses_model:
            problems.append(
                f"data=text: workload={ctx.cfg.workload.name} builds no model and reads no data (use forward, train "
                "or eval)"
            )
        vocab = ctx.cfg.model.get("vocab_size")
        if vocab is None:
            problems.append(
                f"data=text feeds byte token ids; model={ctx.cfg.model.name} has no model.vocab_size (not a token "
                "model)"
            )
        elif vocab < TOKENIZER.vocab_size:
            problems.append(
                f"data=text: the byte tokenizer has {TOKENIZER.vocab_size} token ids (256 bytes + end of document); "
                f"model.vocab_size={vocab} is smaller (set model.vocab_size >= {TOKENIZER.vocab_size})"
            )
        seq_len = int(ctx.cfg.seq.len)
        if not 0 < cfg.val_fraction < 1:
            problems.append(f"data.val_fraction={cfg.val_fraction}: must be between 0 and 1 (exclusive)")
        if cfg.stride is not None and not 1 <= cfg.stride <= seq_len:
            problems.append(f"data.stride={cfg.stride}: must be between 1 and seq.len={seq_len}")
        if cfg.val_tokens is not None and cfg.val_tokens < seq_len:
            problems.append(f"data.val_tokens={cfg.val_tokens}: must be at least seq.len={seq_len} (one full window)")
        if problems:
            return problems
        try:
            train, val = split_documents(load_documents(cfg)[0], cfg.val_fraction)
        except (CorpusError, OSError) as exc:
            return [str(exc) if isinstance(exc, CorpusError) else f"data.path={cfg.path}: cannot read ({exc})"]
        for split, docs in (("training", train), ("validation", val)):
            targets = sum(len(d.data) + 1 for d in docs)
            if targets < seq_len:
                problems.append(
                    f"data.val_fraction={cfg.val_fraction}: the {split} split has {targets} tokens, fewer than "
                    f"one window of seq.len={seq_len} (a larger corpus, another split or a shorter seq.len)"
                )
        return problems
