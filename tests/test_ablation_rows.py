"""Issue 31, item 3: every row of benchmarks/spike_ablation.py is configuration, built by the product's builders.

No training and no store: each row's config is validated by the product's schema and its models (spike arm
and its base arm) are built by ``model.nets.integrate_vrt.build_model`` (or, for the reference rows, by
benchmarks/references.py) and run forward on one tiny clip. The benchmarks patch nothing in the product.
"""
from __future__ import annotations

import ast
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import spike_ablation as ablation  # noqa: E402
from model.nets.fusion.spike_head import FittedSpikeHead, GatedSpikeHead, SpikeHead  # noqa: E402
from model.nets.integrate_vrt import SpikeVRT  # noqa: E402
from model.nets.registry import fuse_type  # noqa: E402
from schemas.config import parse_config  # noqa: E402
from schemas.fuse_types import FUSE_TYPES  # noqa: E402

PRODUCT_PACKAGES = ("model", "spikeprep", "schemas", "cli")
_RUN_FORWARD: set = set()      # one forward pass per distinct model (rows that change LR share their model)


@pytest.mark.parametrize("row", ablation.ROWS, ids=lambda r: r.name)
def test_every_ablation_row_builds_through_the_product(row, tmp_path):
    cfg = parse_config(ablation.row_config(row.fuse, row.shared, root=tmp_path / "store", mean=0.5, std=0.8,
                                           work=tmp_path, spike=row.spike))
    assert cfg.MODEL.FUSE.TYPE == row.fuse
    for key, value in row.spike.items():       # the spike arm's own overrides too
        got = {"SPIKE_BRANCH": cfg.MODEL.SPIKE_BRANCH, "TOTALS_ONLY": cfg.DATA.TOTALS_ONLY,
               "FITTED_HEAD_LR_SCALE": cfg.TRAIN.OPTIM.FITTED_HEAD_LR_SCALE,
               "AUX_SPIKE_RECON_WEIGHT": cfg.TRAIN.AUX_SPIKE_RECON_WEIGHT}[key]
        assert got == value
    for key, value in row.shared.items():      # each override reached the config the trainer reads
        got = {"LR": cfg.TRAIN.OPTIM.LR, "WARMUP_STEPS": cfg.TRAIN.SCHED.WARMUP_STEPS, "K": cfg.DATA.K,
               "CROP_SIZE": cfg.DATA.CROP_SIZE, "CLIP_LEN": cfg.DATA.CLIP_LEN,
               "preset_width": cfg.MODEL.CHANNELS_PER_SCALE[0]}[key]
        assert got == value
    built: list = []
    build = ablation.model_builder(row.reference, built)
    torch.manual_seed(0)
    spike = build(cfg, True)
    assert built == [spike]
    k = cfg.DATA.K
    blur, vox = torch.rand(1, 2, 3, 64, 64), torch.randn(1, 2, k, 64, 64)
    if row.reference is None:
        assert isinstance(spike, SpikeVRT) and spike.fuse_type == row.fuse
        registered = fuse_type(row.fuse)
        assert not cfg.MODEL.SPIKE_BRANCH or all(isinstance(f, type(spike.fuse[0])) for f in spike.fuse)
        if registered.head is None:
            assert spike.spike_head is None
        else:
            assert type(spike.spike_head) is _head_class(registered.head)
        assert hasattr(spike, "spike_encoder") == cfg.MODEL.SPIKE_BRANCH
        assert (spike.aux_luma is not None) == (cfg.TRAIN.AUX_SPIKE_RECON_WEIGHT > 0)
        base = build(cfg, False)
        assert isinstance(base, SpikeVRT) and not base.use_spike and not base.spike_parameters()
    model_key = (row.fuse, row.reference, k, tuple(cfg.MODEL.CHANNELS_PER_SCALE), cfg.MODEL.SPIKE_BRANCH,
                 cfg.TRAIN.AUX_SPIKE_RECON_WEIGHT > 0)
    if model_key not in _RUN_FORWARD:
        _RUN_FORWARD.add(model_key)
        with torch.no_grad():
            assert spike(blur, vox).shape == blur.shape


def test_a_warm_started_row_runs_its_base_first_and_compares_at_equal_total_steps(tmp_path):
    """The base arm trains 2 x steps and keeps its checkpoint at ``steps``; the spike arm needs it, starts its VRT
    there (--init-from) with the backbone frozen for a third of its steps; the table reads the base at 2 x steps."""
    row = ablation.ROW_BY_NAME["motion_gated_warm"]
    configs = []
    runs = ablation.row_runs(row, 30, tmp_path, lambda name, *a: configs.append((name, *a)) or tmp_path / name)
    (base, base_cmd, base_needs), (spike, cmd, needs) = runs
    assert base == "base_x2" and base_needs == () and spike == row.name and needs == (base,)
    assert base_cmd[base_cmd.index("--steps") + 1] == "60" and base_cmd[base_cmd.index("--keep-at") + 1] == "30"
    assert "--no-spike" in base_cmd and cmd[cmd.index("--steps") + 1] == "30"
    assert Path(cmd[cmd.index("--init-from") + 1]) == ablation.kept_checkpoint(tmp_path / "outputs", base, 30)
    assert cmd[cmd.index("--freeze-vrt-steps") + 1] == "10"
    assert ablation.base_steps(row, 30) == 60 and configs[1][1] == row.fuse
    plain = ablation.ROW_BY_NAME["motion_gated"]
    assert ablation.base_name(plain) == "base" and ablation.base_steps(plain, 30) == 30
    assert all("--init-from" not in c for _, c, _ in ablation.row_runs(plain, 30, tmp_path, lambda *a: tmp_path))


def test_the_ablation_covers_every_registered_fuse_type():
    assert {r.fuse for r in ablation.ROWS if r.reference is None} == set(FUSE_TYPES)


def _head_class(head):
    """The class a registered head builds (a ``functools.partial`` of a head class fixes its options)."""
    return head.func if isinstance(head, partial) else head


def test_registered_heads_are_the_spike_heads():
    heads = {_head_class(fuse_type(n).head) for n in FUSE_TYPES} - {None}
    assert heads == {SpikeHead, FittedSpikeHead, GatedSpikeHead}


def _product_names(tree: ast.Module) -> set[str]:
    """Names a benchmark binds to product modules, classes or functions by importing them."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PRODUCT_PACKAGES:
            names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names
                      if a.name.split(".")[0] in PRODUCT_PACKAGES}
    return names


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


@pytest.mark.parametrize("script", ["spike_ablation.py", "references.py", "gpu_check.py"])
def test_benchmarks_patch_nothing_in_the_product(script):
    """No assignment to an attribute of anything imported from the product, no ``setattr`` or
    ``types.MethodType`` rebinding, no call of a product object's private method."""
    tree = ast.parse((REPO / "benchmarks" / script).read_text())
    product = _product_names(tree)
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for t in targets:
            assert not (isinstance(t, ast.Attribute) and _root_name(t) in product), \
                f"{script}:{node.lineno} assigns to {ast.unparse(t)}"
        if isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            assert called not in ("setattr", "types.MethodType"), f"{script}:{node.lineno} calls {called}"
            if isinstance(node.func, ast.Attribute) and _root_name(node.func) in product:
                assert not node.func.attr.startswith("_"), f"{script}:{node.lineno} calls {called}"
