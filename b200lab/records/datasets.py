"""What data a run read, as MLflow dataset inputs (the runs table's Dataset column, the run's
Inputs): the text corpus by its sha256, its train and validation splits as two inputs; synthetic
data by the model family's generator and the seed, so runs with the same generator and seed show
one dataset (the batch shape that also decides the draws is in the run's params).

MLflow keeps a dataset's digest in 36 characters: the corpus digest is the first 32 hex digits of
its sha256 (the whole hash is in the dataset's source)."""

from __future__ import annotations

import hashlib
import json

DIGEST_CHARS = 32


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def dataset_inputs(results: dict) -> list[tuple[dict, str]]:
    """[(dataset fields for ``mlflow.entities.Dataset``, context)], empty for a run that read no data."""
    data = (results.get("effective") or {}).get("data") or {}
    cfg = results.get("config") or {}
    if data.get("name") == "text" and (data.get("corpus") or {}).get("sha256"):
        corpus = data["corpus"]
        source = json.dumps(
            {k: corpus.get(k) for k in ("source", "root", "sha256", "bytes") if corpus.get(k) is not None},
            sort_keys=True,
        )
        name = f"text: {corpus.get('source') or corpus.get('root') or 'corpus'}"
        out = []
        for split, context in (("train", "train"), ("val", "validation")):
            profile = {
                "documents": (data.get("documents") or {}).get(split),
                "tokens": (data.get("tokens") or {}).get(split),
                "val_fraction": data.get("val_fraction"),
                "tokenizer": data.get("tokenizer"),
            }
            fields = {
                "name": f"{name} ({context})",
                "digest": corpus["sha256"][:DIGEST_CHARS],
                "source_type": "local",
                "source": source,
                "profile": json.dumps(profile, sort_keys=True),
            }
            out.append((fields, context))
        return out
    if data.get("name") == "random":
        model = (cfg.get("model") or {}).get("name")
        seed = (cfg.get("run") or {}).get("seed")
        generator = {"generator": f"{model}'s family synthetic_batch (its random inputs and targets)", "seed": seed}
        if "doc_len" in data:
            generator["doc_len"] = data["doc_len"]
        fields = {
            "name": f"synthetic batch ({model})",
            "digest": _digest(json.dumps({"model": model, **generator}, sort_keys=True)),
            "source_type": "code",
            "source": json.dumps(generator, sort_keys=True),
        }
        return [(fields, "train" if (cfg.get("workload") or {}).get("name") == "train" else "benchmark")]
    return []
