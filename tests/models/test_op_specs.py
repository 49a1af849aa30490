"""Every op of the space: the enumeration covers the ops of random members, nothing extra, nothing twice."""

from __future__ import annotations

import random

import pytest

from conftest import tiny_space
from ersam_ssl.hw import spec_key
from ersam_ssl.models import SAMSpace, layer_specs, space_op_specs


@pytest.mark.parametrize("space_name", ["default", "tiny", "one-deep"])
def test_space_op_specs_cover_the_ops_of_random_members(space_name):
    space = {
        "default": SAMSpace(),
        "tiny": tiny_space(),
        "one-deep": SAMSpace(depths=(1,), kernels=(3, 5), width_mults=(0.5, 1.0)),
    }[space_name]
    settings = {"num_samples": 16000, "num_classes": 4, "head": "poisson"}
    table = {spec_key(s) for s in space_op_specs(space, **settings)}
    seen: set[str] = set()
    rng = random.Random(0)
    for _ in range(600):
        ops = {spec_key(s) for s in layer_specs(space.sample(rng), space, **settings)}
        assert ops <= table
        seen |= ops
    for arch in (space.smallest(), space.largest()):
        assert {spec_key(s) for s in layer_specs(arch, space, **settings)} <= table
    assert seen == table  # and nothing extra: 600 random members contain every listed op (seeded)


def test_space_op_specs_count_for_the_default_space():
    space = SAMSpace()
    specs = space_op_specs(space)
    keys = [spec_key(s) for s in specs]
    assert len(keys) == len(set(keys))  # each op once, whatever its place in a model
    widths, heads = len(space.width_mults), len(space.pool_heads)
    block_choices = len(space.kernels) * len(space.expands) * len(space.se_choices)
    positions = 2 * space.num_stages  # per stage: its first (strided) block and the blocks after it
    expected = 1 + widths + widths * heads + widths + widths * positions * block_choices
    assert len(specs) == expected == 445  # frontend, stems, pooling heads, classifiers, MBConv blocks
    assert {s["op"] for s in specs} == {"frontend", "stem", "mbconv", "pool_head", "classifier"}
