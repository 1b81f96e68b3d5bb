"""Tests for the pre-activation ResNet-18 of YOPO and the paper's Table 4."""

from __future__ import annotations

import torch
from torch import nn

from hmcam.models.preact_resnet import PreActBlock, preact_resnet18


def test_preact_resnet18_has_exactly_11171146_parameters():
    # Convolutions have no bias; a block has BN on its input (2 * in) and on its middle (2 * out);
    # the first block of layers 2-4 adds a 1x1 projection (in * out).
    # stem 3*64*9                                                   =      1,728
    # layer1: 2 * (128 + 64*64*9 + 128 + 64*64*9)                   =    147,968
    # layer2: (128 + 64*128*9 + 256 + 128*128*9 + 64*128)
    #         + (256 + 2 * 128*128*9 + 256)                         =    525,184
    # layer3: (256 + 128*256*9 + 512 + 256*256*9 + 128*256)
    #         + (512 + 2 * 256*256*9 + 512)                         =  2,098,944
    # layer4: (512 + 256*512*9 + 1024 + 512*512*9 + 256*512)
    #         + (1024 + 2 * 512*512*9 + 1024)                       =  8,392,192
    # classifier 512*10 + 10                                        =      5,130
    # total                                                         = 11,171,146
    assert sum(p.numel() for p in preact_resnet18().parameters()) == 11_171_146


def test_projection_shortcuts_only_where_the_shape_changes():
    model = preact_resnet18()
    blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
    assert len(blocks) == 8
    assert [b.shortcut is not None for b in blocks] == [False, False, True, False, True, False, True, False]
    assert all(isinstance(b.shortcut, nn.Conv2d) and b.shortcut.kernel_size == (1, 1) for b in blocks if b.shortcut)


def test_block_adds_its_input_unchanged_when_shapes_match():
    torch.manual_seed(0)
    block = PreActBlock(16, 16, 1).eval()
    with torch.no_grad():
        block.conv2.weight.zero_()
        x = torch.randn(2, 16, 8, 8)
        assert torch.equal(block(x), x)
