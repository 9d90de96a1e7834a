"""A corpus as byte-token documents, split by document, cut into scoring windows: everything of
``data=text`` that needs no torch (the config check reads the corpus with it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from b200lab.data import corpus

LISTED_FILES = 100  # effective lists at most this many file and document names


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
    return sorted(
        ((p, n) for p, n in found if not any(part.startswith(".") for part in n.split("/"))), key=lambda f: f[1]
    )


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
                raise CorpusError(
                    f"data.path={cfg.path}: no files match data.glob={cfg.glob!r} (hidden files are skipped)"
                )
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
        where = (
            f"data.path={cfg.path}" if cfg.path is not None else f"the standard-library corpus under {source['root']}"
        )
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
        raise CorpusError(
            f"the corpus has {len(docs)} document; the train/validation split holds out whole documents, "
            "so it needs at least 2 (give a folder of files, or set data.doc_separator)"
        )
    n_val = min(len(docs) - 1, max(1, round(val_fraction * len(docs))))
    by_hash = sorted(range(len(docs)), key=lambda i: hashlib.sha256(docs[i].name.encode()).hexdigest())
    held_out = set(by_hash[:n_val])
    return [d for i, d in enumerate(docs) if i not in held_out], [d for i, d in enumerate(docs) if i in held_out]


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
