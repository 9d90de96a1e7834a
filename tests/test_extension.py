"""The extension seam: a new attention backend and a new workload, each one module plus one YAML
file, found through Hydra's search path, with no edit to b200lab."""

from __future__ import annotations

import textwrap

from conftest import run_cli, runs, results_files

BACKEND = '''
import torch.nn.functional as F
from b200lab.attention import AttentionBackend

class ReversedHeads(AttentionBackend):
    """Throwaway backend: SDPA with the head order reversed twice (a no-op we can detect)."""
    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        self.effective["kernel"] = "throwaway:" + str(self.options["tag"])
    def __call__(self, q, k, v):
        out = F.scaled_dot_product_attention(q.flip(1), k.flip(1), v.flip(1), is_causal=True)
        return out.flip(1)
'''

WORKLOAD = '''
import torch
from b200lab.workloads.base import Workload

class MatrixSquare(Workload):
    """Throwaway workload: squares a random matrix; reports its Frobenius norm."""
    metric_rules = {"square_norm": "mean"}
    def setup(self):
        n = int(self.options["n"])
        self.x = torch.randn(n, n, device=self.ctx.device, generator=self.ctx.generator())
        self.effective = {"n": n}
    def step(self):
        self.y = self.x @ self.x
    def metrics(self, stats):
        return {"square_norm": float(self.y.norm())}
'''


def test_a_new_backend_and_workload_plug_in_from_outside(tmp_path, store):
    pkg = tmp_path / "plugins"
    pkg.mkdir()
    (pkg / "my_attention.py").write_text(BACKEND)
    (pkg / "my_workload.py").write_text(WORKLOAD)
    conf = tmp_path / "extra_conf"
    (conf / "attention").mkdir(parents=True)
    (conf / "workload").mkdir()
    (conf / "attention" / "reversed.yaml").write_text(textwrap.dedent("""\
        _target_: my_attention.ReversedHeads
        name: reversed
        options: {tag: hello}
        """))
    (conf / "workload" / "square.yaml").write_text(textwrap.dedent("""\
        _target_: my_workload.MatrixSquare
        name: square
        options: {n: 64}
        """))
    env = {**store, "PYTHONPATH": str(pkg)}
    search = f"hydra.searchpath=[file://{conf}]"

    proc = run_cli([search, "attention=reversed", "seq=short", "workload.steps=3", "workload.warmup_steps=1"], tmp_path, env)
    assert proc.returncode == 0, proc.output
    [res] = results_files(tmp_path / "outputs")
    assert res["effective"]["attention"] == {"name": "reversed", "reason": None, "kernel": "throwaway:hello"}
    assert res["metrics"]["tokens_per_s"] > 0

    proc = run_cli([search, "workload=square", "hydra.run.dir=out2"], tmp_path, env)
    assert proc.returncode == 0, proc.output
    [res] = results_files(tmp_path / "out2")
    assert res["effective"] == {"workload": "square", "n": 64}
    assert res["metrics"]["square_norm"] > 0 and res["metrics"]["n_steps"] == 20
    assert "tokens_per_s" not in res["metrics"]  # a microbenchmark processes no tokens
    assert {r.data.tags["status"] for r in runs(store["MLFLOW_TRACKING_URI"])} == {"ok"}
