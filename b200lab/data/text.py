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

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from b200lab.components import CheckContext, resolve_target
from b200lab.data import corpus
from b200lab.data.base import DataConfig, DataSource, Windows

LISTED_FILES = 100  # effective lists at most this many file and document names


@dataclass
class TextConfig(DataConfig):
    path: Optional[str] = None  # a text file or folder; None: the Python standard-library corpus
    glob: str = "**/*"  # a folder's files that are documents (hidden files and folders are skipped)
    doc_separator: Optional[str] = None  # cut files into documents at this string; None: a file is a document
    val_fraction: float = 0.1  # fraction of the documents held out for validation
    val_tokens: Optional[int] = None  # score only the first N tokens of the validation stream; None: all
    stride: Optional[int] = None  # validation windows start every `stride` tokens; None: seq.len (disjoint)


class ByteTokenizer:
    """Bytes are token ids 0-255; ``eod`` (256) ends a document."""

    vocab_size = 257
    eod = 256

    def encode(self, text) -> list[int]:
        return list(text.encode("utf-8") if isinstance(text, str) else bytes(text))

    def decode(self, ids, eod_as: str = "\n") -> str:
        """Text of ``ids``; each EOD becomes ``eod_as``; invalid UTF-8 is replaced."""
        out, piece = [], bytearray()
        for i in ids:
            if int(i) == self.eod:
                out.append(piece.decode("utf-8", "replace") + eod_as)
                piece = bytearray()
            else:
                piece.append(int(i))
        return "".join(out) + piece.decode("utf-8", "replace")


TOKENIZER = ByteTokenizer()


class CorpusError(ValueError):
    """A corpus that cannot be used; the message names the data.* key."""


@dataclass
class Document:
    name: str
    data: bytes


def _folder_files(root: Path, pattern: str) -> list[tuple[Path, str]]:
    """(file, its relative posix name) of the folder's matching files, sorted by that name."""
    found = [(p, p.relative_to(root).as_posix()) for p in root.glob(pattern) if p.is_file()]
    return sorted(((p, n) for p, n in found if not any(part.startswith(".") for part in n.split("/"))), key=lambda f: f[1])


def load_documents(cfg) -> tuple[list[Document], dict]:
    """The corpus's non-empty documents in corpus order, and where they came from."""
    if cfg.path is None:
        root, names, missing = corpus.default_files()
        files = [(root / n, n) for n in names]
        source = {"source": f"python {_python()} standard library", "root": str(root), "missing": missing}
    else:
        path = Path(cfg.path).expanduser()
        if not path.exists():
            raise CorpusError(f"data.path={cfg.path}: no such file or folder")
        if path.is_dir():
            files = _folder_files(path, cfg.glob)
            if not files:
                raise CorpusError(f"data.path={cfg.path}: no files match data.glob={cfg.glob!r} (hidden files are skipped)")
        else:
            files = [(path, path.name)]
        source = {"source": str(path.absolute())}
    docs = []
    for file, name in files:
        data = file.read_bytes()
        if cfg.doc_separator:
            docs += [Document(f"{name}#{i}", piece) for i, piece in enumerate(data.split(cfg.doc_separator.encode()))]
        else:
            docs.append(Document(name, data))
    docs = [d for d in docs if d.data]
    if not docs:
        where = f"data.path={cfg.path}" if cfg.path is not None else f"the standard-library corpus under {source['root']}"
        raise CorpusError(f"{where}: the corpus is empty ({len(files)} files, no bytes in any document)")
    source["files"] = [n for _, n in files][:LISTED_FILES]
    source["n_files"] = len(files)
    return docs, source


def _python() -> str:
    import sys

    return ".".join(map(str, sys.version_info[:3]))


def corpus_sha256(docs: list[Document]) -> str:
    """One hash of the documents' names and bytes, in order: equal hashes, equal corpus and split."""
    h = hashlib.sha256()
    for d in docs:
        for part in (d.name.encode(), d.data):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


def split_documents(docs: list[Document], val_fraction: float) -> tuple[list[Document], list[Document]]:
    """(train, validation), each in corpus order; validation is the share whose names hash lowest."""
    if len(docs) < 2:
        raise CorpusError(f"the corpus has {len(docs)} document; the train/validation split holds out whole documents, "
                          "so it needs at least 2 (give a folder of files, or set data.doc_separator)")
    n_val = min(len(docs) - 1, max(1, round(val_fraction * len(docs))))
    by_hash = sorted(range(len(docs)), key=lambda i: hashlib.sha256(docs[i].name.encode()).hexdigest())
    held_out = set(by_hash[:n_val])
    return [d for i, d in enumerate(docs) if i not in held_out], [d for i, d in enumerate(docs) if i in held_out]


def token_stream(docs: list[Document]) -> torch.Tensor:
    """``EOD doc EOD doc ... EOD`` as int16 token ids (on the CPU)."""
    out = torch.empty(1 + sum(len(d.data) + 1 for d in docs), dtype=torch.int16)
    out[0] = TOKENIZER.eod
    pos = 1
    for d in docs:
        out[pos:pos + len(d.data)] = torch.frombuffer(bytearray(d.data), dtype=torch.uint8)
        pos += len(d.data)
        out[pos] = TOKENIZER.eod
        pos += 1
    return out


def documents_at(tokens: torch.Tensor, eod: int) -> torch.Tensor:
    """Document index of each position: a document ends with (and owns) its EOD token, and the
    next one starts after it."""
    ends = (tokens == eod).long()
    return ends.cumsum(dim=1) - ends


def window_plan(n_targets: int, length: int, stride: int) -> list[tuple[int, int]]:
    """(begin, score_from) of each validation window over a stream of ``n_targets`` + 1 tokens.

    Windows start every ``stride`` tokens; each scores the targets the previous one did not, so
    a target at stream position j (1..n) is predicted from the tokens since
    ``min(stride * ceil(max(0, j - length) / stride), n - length)``: the first window's targets
    see 0..length-1 tokens of context, later ones at least ``length - stride``. The last window
    ends at the stream's end (it may overlap the one before; only its new targets are scored),
    so every window is full length."""
    if not 1 <= stride <= length <= n_targets:
        raise ValueError(f"window plan needs 1 <= stride ({stride}) <= length ({length}) <= targets ({n_targets})")
    plan, scored_to, begin = [], 0, 0
    while scored_to < n_targets:
        begin = min(begin, n_targets - length)
        plan.append((begin, scored_to - begin))
        scored_to = begin + length
        begin += stride
    return plan


class TextData(DataSource):
    Config = TextConfig
    synthetic = False
    tokenizer = TOKENIZER

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = []
        if not resolve_target("workload", ctx.cfg.workload._target_).uses_model:
            problems.append(f"data=text: workload={ctx.cfg.workload.name} builds no model and reads no data (use forward, train or eval)")
        vocab = ctx.cfg.model.get("vocab_size")
        if vocab is None:
            problems.append(f"data=text feeds byte token ids; model={ctx.cfg.model.name} has no model.vocab_size (not a token model)")
        elif vocab < TOKENIZER.vocab_size:
            problems.append(f"data=text: the byte tokenizer has {TOKENIZER.vocab_size} token ids (256 bytes + end of document); "
                            f"model.vocab_size={vocab} is smaller (set model.vocab_size >= {TOKENIZER.vocab_size})")
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
                problems.append(f"data.val_fraction={cfg.val_fraction}: the {split} split has {targets} tokens, fewer than "
                                f"one window of seq.len={seq_len} (a larger corpus, another split or a shorter seq.len)")
        return problems

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
            tokenizer=f"bytes: ids 0-255, end of document {TOKENIZER.eod}", vocab_size=TOKENIZER.vocab_size, corpus=source,
            val_fraction=cfg.val_fraction, documents={"train": len(train), "val": len(val)},
            val_documents=[d.name for d in val][:LISTED_FILES],
            tokens={"train": self.train_stream.numel() - 1, "val": self.val_stream.numel() - 1},
        )

    def batch(self, batch: int, seq_len: int, generator: torch.Generator):
        starts = torch.randint(0, self.train_stream.numel() - seq_len, (batch,), generator=generator, device=self.device)
        tokens = self.train_stream[starts[:, None] + torch.arange(seq_len + 1, device=self.device)].long()
        return self.packed(tokens[:, :-1], documents_at(tokens[:, :-1], TOKENIZER.eod)), tokens[:, 1:]

    def validation(self, seq_len: int) -> Windows:
        stride = int(self.cfg.stride or seq_len)
        n_targets = self.val_stream.numel() - 1
        plan = torch.tensor(window_plan(n_targets, seq_len, stride), dtype=torch.long, device=self.device)
        self.effective.update(stride=stride, windows=len(plan))
        return Windows(self.val_stream, plan[:, 0].contiguous(), plan[:, 1].contiguous(), seq_len, n_targets)
