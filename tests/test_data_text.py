"""data=text: the byte tokenizer, corpus discovery, the document split, the token streams and
training windows, and the checks that refuse a corpus or model that cannot work."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from b200lab.core.component import CheckContext
from b200lab.core.registry import complete
from b200lab.data import corpus
from b200lab.data.documents import (
    TOKENIZER,
    Document,
    corpus_sha256,
    load_documents,
    split_documents,
)
from b200lab.data.text import TextData, token_stream
from support import run_cli, runs
from tiny_models import write_corpus

TEXT = "b200lab.data.text.TextData"


def text_cfg(**fields):
    return complete("data", {"_target_": TEXT, "name": "text", **fields})


def job_cfg(data, vocab=300, seq_len=16, workload="b200lab.workloads.train.Train"):
    return OmegaConf.create(
        {
            "model": {"name": "m", "vocab_size": vocab},
            "seq": {"len": seq_len, "batch": 2},
            "workload": {"_target_": workload, "name": workload.rsplit(".", 1)[-1].lower()},
            "data": data,
        }
    )


def problems(data, **job):
    cfg = job_cfg(data, **job)
    from b200lab.core.registry import config_class

    specs = {"workload": config_class("workload", cfg.workload._target_)}
    return TextData.Config.validate(cfg.data, CheckContext(cfg=cfg, device="cpu", training=True, specs=specs))


def test_byte_tokenizer_round_trips_any_text_and_bytes():
    rng = random.Random()
    text = "".join(
        chr(rng.choice([rng.randint(32, 126), rng.randint(0x370, 0x3FF), rng.randint(0x1F600, 0x1F64F)]))
        for _ in range(300)
    )
    ids = TOKENIZER.encode(text)
    assert ids == list(text.encode("utf-8")) and max(ids) < 256 and TOKENIZER.decode(ids) == text
    raw = bytes(rng.randrange(256) for _ in range(500))
    assert TOKENIZER.encode(raw) == list(raw)
    assert TOKENIZER.vocab_size == 257 and TOKENIZER.eod == 256
    assert TOKENIZER.decode([*TOKENIZER.encode("ab"), 256, *TOKENIZER.encode("c")], eod_as="|") == "ab|c"


def test_token_stream_is_eod_then_each_document_and_its_eod():
    docs, _ = load_documents(text_cfg(path=str(corpus.stdlib_dir() / "copy.py")))  # any real file
    pieces = [d.data for d in docs] + [bytes(random.randrange(256) for _ in range(37))]
    stream = token_stream([Document(str(i), p) for i, p in enumerate(pieces)])
    expected = [256]
    for p in pieces:
        expected += list(p) + [256]
    assert stream.dtype == torch.int16 and stream.tolist() == expected


def test_folder_corpus_reads_matching_files_in_sorted_order_and_skips_hidden_ones(tmp_path):
    texts = write_corpus(tmp_path)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main")
    (tmp_path / ".hidden.txt").write_text("secret")
    (tmp_path / "notes.md").write_text("not a .txt")
    docs, source = load_documents(text_cfg(path=str(tmp_path), glob="**/*.txt"))
    assert [d.name for d in docs] == sorted(texts) and source["n_files"] == len(texts)
    assert all(d.data == texts[d.name].encode() for d in docs)
    everything, _ = load_documents(text_cfg(path=str(tmp_path)))
    assert sorted(d.name for d in everything) == sorted([*texts, "notes.md"])


def test_a_separator_cuts_a_file_into_documents_and_drops_empty_pieces(tmp_path):
    parts = ["first document\nline two", "second", "third one"]
    (tmp_path / "all.txt").write_text("<|sep|>".join(parts[:2]) + "<|sep|><|sep|>" + parts[2])
    docs, _ = load_documents(text_cfg(path=str(tmp_path / "all.txt"), doc_separator="<|sep|>"))
    assert [d.data.decode() for d in docs] == parts
    assert [d.name for d in docs] == ["all.txt#0", "all.txt#1", "all.txt#3"]


def test_split_holds_out_whole_documents_by_name_hash_whatever_the_listing_order(tmp_path):
    texts = write_corpus(tmp_path, n_docs=20)
    docs, _ = load_documents(text_cfg(path=str(tmp_path)))
    train, val = split_documents(docs, 0.2)
    lowest = sorted(texts, key=lambda n: hashlib.sha256(n.encode()).hexdigest())[:4]
    assert sorted(d.name for d in val) == sorted(lowest)
    assert sorted(d.name for d in train + val) == sorted(texts) and not {d.name for d in train} & {d.name for d in val}
    shuffled = random.sample(docs, len(docs))
    assert sorted(d.name for d in split_documents(shuffled, 0.2)[1]) == sorted(lowest)
    assert (
        len(split_documents(docs, 0.001)[1]) == 1 and len(split_documents(docs, 0.999)[0]) == 1
    )  # never an empty side


def test_corpus_hash_follows_content_and_names(tmp_path):
    write_corpus(tmp_path)
    docs, _ = load_documents(text_cfg(path=str(tmp_path)))
    base = corpus_sha256(docs)
    assert corpus_sha256(docs) == base
    first = docs[0]
    changed = [type(first)(first.name, first.data[:-1] + bytes([first.data[-1] ^ 1])), *docs[1:]]
    renamed = [type(first)(first.name + "x", first.data), *docs[1:]]
    assert len({base, corpus_sha256(changed), corpus_sha256(renamed)}) == 3


def test_default_corpus_is_the_standard_library_list():
    root, present, missing = corpus.default_files()
    assert not missing and len(present) == len(corpus.FILES) == 99
    docs, source = load_documents(text_cfg())
    assert [d.name for d in docs] == sorted(corpus.FILES) and source["missing"] == []
    assert 3e6 < sum(len(d.data) for d in docs) < 6e6


def _pythons_3_10_to_3_13() -> list[str]:
    """Interpreters on PATH and pyenv's installed ones (its PATH shims only run the selected one)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", "~/.pyenv")).expanduser()
    found = [str(p) for m in (10, 11, 12, 13) for p in sorted(pyenv.glob(f"versions/3.{m}.*/bin/python3.{m}"))]
    found += [p for p in (shutil.which(f"python3.{m}") for m in (10, 11, 12, 13)) if p and "shims" not in p]
    return list(dict.fromkeys(found))


OTHER_PYTHONS = _pythons_3_10_to_3_13()


@pytest.mark.skipif(not OTHER_PYTHONS, reason="no python3.10-3.13 interpreter on PATH to check the corpus list against")
@pytest.mark.parametrize("python", OTHER_PYTHONS)
def test_default_corpus_files_exist_in_other_pythons(python):
    out = subprocess.run(
        [python, "-c", "import sys, sysconfig; print(sysconfig.get_paths()['stdlib']); print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        pytest.skip(f"{python} does not run here: {out.stderr.strip()[:200]}")
    stdlib = Path(out.stdout.splitlines()[0])
    assert [f for f in corpus.FILES if not (stdlib / f).is_file()] == [], out.stdout


def test_training_windows_are_slices_of_the_training_stream_and_follow_the_generator(tmp_path):
    write_corpus(tmp_path, n_docs=8)
    data = TextData(text_cfg(path=str(tmp_path), val_fraction=0.25), family=None, device=torch.device("cpu"))
    stream = data.train_stream.long()
    g = torch.Generator().manual_seed(7)
    inputs, targets = data.batch(5, 24, g)
    assert inputs.shape == targets.shape == (5, 24) and inputs.dtype == torch.long
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    for row_in, row_t in zip(inputs, targets):
        starts = [s for s in range(stream.numel() - 24) if torch.equal(stream[s : s + 24], row_in)]
        assert starts and any(torch.equal(stream[s + 1 : s + 25], row_t) for s in starts)
    again = data.batch(5, 24, torch.Generator().manual_seed(7))[0]
    other = data.batch(5, 24, torch.Generator().manual_seed(8))[0]
    assert torch.equal(inputs, again) and not torch.equal(inputs, other)
    val_names = set(data.effective["val_documents"])
    assert data.effective["documents"] == {"train": 6, "val": 2} and len(val_names) == 2
    assert data.effective["tokens"]["train"] + 1 == stream.numel()


def test_data_parallel_ranks_draw_different_training_windows(tmp_path):
    from b200lab.parallel.data_parallel import DataParallel
    from b200lab.workloads.base import RankContext

    write_corpus(tmp_path, n_docs=8)
    cfg = OmegaConf.create(
        {
            "run": {"seed": random.randrange(10_000)},
            "parallelism": complete(
                "parallelism", {"_target_": "b200lab.parallel.data_parallel.DataParallel", "name": "ddp", "nproc": 2}
            ),
        }
    )
    data = TextData(text_cfg(path=str(tmp_path)), family=None, device=torch.device("cpu"))
    cpu = torch.device("cpu")
    batches = [
        data.batch(4, 16, RankContext(cfg, cpu, DataParallel(cfg.parallelism, rank, 2, cpu), rank, 2).generator())[0]
        for rank in (0, 1, 0)
    ]
    assert not torch.equal(batches[0], batches[1]) and torch.equal(batches[0], batches[2])


def test_validation_refuses_what_cannot_work(tmp_path):
    assert problems(text_cfg()) == []
    assert "model.vocab_size=200 is smaller" in problems(text_cfg(), vocab=200)[0]
    assert problems(text_cfg(path=str(tmp_path / "nowhere")))[0].endswith("no such file or folder")
    (tmp_path / "empty").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "empty" / name).write_bytes(b"")
    assert "the corpus is empty (2 files" in problems(text_cfg(path=str(tmp_path / "empty")))[0]
    (tmp_path / "one.txt").write_text("just one document")
    assert "needs at least 2" in problems(text_cfg(path=str(tmp_path / "one.txt")))[0]
    write_corpus(tmp_path / "small", n_docs=3, size=(20, 30))
    assert "fewer than one window of seq.len=64" in problems(text_cfg(path=str(tmp_path / "small")), seq_len=64)[0]
    assert "data.stride=17: must be between 1 and seq.len=16" in problems(text_cfg(stride=17))[0]
    assert "data.val_fraction=1.0" in problems(text_cfg(val_fraction=1.0))[0]
    assert "workload=gemm builds no model" in problems(text_cfg(), workload="b200lab.workloads.gemm.Gemm")[0]


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["missing", "empty", "vocab"])
def test_bad_text_input_exits_2_through_the_cli_and_creates_nothing(case, tmp_path, store):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_bytes(b"")
    overrides, needle = {
        "missing": ([f"data.path={tmp_path / 'nowhere'}"], f"data.path={tmp_path / 'nowhere'}: no such file or folder"),
        "empty": ([f"data.path={tmp_path / 'empty'}"], f"data.path={tmp_path / 'empty'}: the corpus is empty (1 files"),
        "vocab": (["model.vocab_size=256"], "model.vocab_size=256 is smaller (set model.vocab_size >= 257)"),
    }[case]
    proc = run_cli(["workload=train", "data=text", "seq=short", *overrides], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert needle in proc.stderr
    assert runs(store["MLFLOW_TRACKING_URI"]) == [] and not list(tmp_path.rglob("results.json"))
