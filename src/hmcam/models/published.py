"""Architectures the field publishes CIFAR-10 weights for, loading state dicts in RobustBench's layout.

``--architecture NAME --weights FILE`` builds one of :data:`PUBLISHED` and loads a state dict written
by the public code these weights come from (RobustBench's ``model_zoo/architectures``, itself from
TRADES and kuangliu/pytorch-cifar). Where that layout names a tensor differently from hmcam's network,
:func:`from_published` renames it:

- WideResNet-28-10 / 34-10 (hmcam's :class:`~hmcam.models.wide_resnet.WideResNet`): ``blockN.layer.I.``
  is ``blockN.I.``, ``convShortcut`` is ``shortcut`` and the final ``bn1`` is ``bn``. The unused
  ``sub_block1`` of some checkpoints is dropped, and a classifier saved without bias
  (``bias_last=False``) gets a zero one, which computes the same function.
- PreAct-ResNet-18: ``shortcut.0`` is ``shortcut``. The published ``PreActResNet18`` feeds the block's
  *input* to its projection shortcut (hmcam's block feeds the activated input, as the published
  ``PreActBlockV2`` does: ``preact_resnet18_v2``); a ``bn`` before the classifier (``bn_before_fc``) is
  taken when the file has one.
- ResNet-18 (kuangliu's CIFAR layout, built here): the same names.

BatchNorm ``num_batches_tracked`` counters that old files lack are set to zero (they do not enter
the eval-mode forward pass). Every network takes 32x32 inputs whose normalization, if any, is given
with ``--mean/--std`` or ``--normalization``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmcam.models.external import load_weights
from hmcam.models.preact_resnet import PreActBlock, PreActResNet18
from hmcam.models.resnet import BasicBlock
from hmcam.models.wide_resnet import WideResNet


class InputShortcutPreActBlock(PreActBlock):
    """The published ``PreActBlock``: as hmcam's, but the projection shortcut takes the block's raw input."""

    def forward(self, x: Tensor) -> Tensor:
        """The block applied to feature maps ``x`` ``[B, C, H, W]``."""
        out = F.relu(self.bn1(x))
        shortcut: Tensor = x if self.shortcut is None else self.shortcut(x)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        result: Tensor = out + shortcut
        return result


class PublishedPreActResNet18(PreActResNet18):
    """hmcam's PreAct-ResNet-18 with the published variants: input shortcuts and a BN-ReLU before the classifier."""

    def __init__(self, num_classes: int = 10, *, input_shortcut: bool = True, final_bn: bool = False) -> None:
        super().__init__(num_classes=num_classes)
        if input_shortcut:
            channels = 64
            for index, (width, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
                blocks = (InputShortcutPreActBlock(channels, width, stride), InputShortcutPreActBlock(width, width, 1))
                setattr(self, f"layer{index}", nn.Sequential(*blocks))
                channels = width
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(512) if final_bn else None

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for a batch of images ``x`` ``[B, C, H, W]``."""
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        if self.bn is not None:
            out = F.relu(self.bn(out))
        logits: Tensor = self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))
        return logits


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (kuangliu's layout): 3x3 stem, 2-2-2-2 basic blocks with projection shortcuts."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages = []
        channels = 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks = (BasicBlock(channels, width, stride, "projection"), BasicBlock(width, width, 1, "projection"))
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for a batch of images ``x`` ``[B, C, H, W]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        logits: Tensor = self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))
        return logits


def _wrn_names(key: str) -> str | None:
    if key.startswith("sub_block1."):
        return None  # built by some published WRNs but never used in their forward pass
    key = re.sub(r"^block(\d)\.layer\.(\d+)\.", r"block\1.\2.", key)
    key = key.replace(".convShortcut.", ".shortcut.")
    return re.sub(r"^bn1\.", "bn.", key)


def _preact_names(key: str) -> str | None:
    return re.sub(r"\.shortcut\.0\.", ".shortcut.", key)


def _same_names(key: str) -> str | None:
    return key


#: Each published architecture: (builder from the number of classes and the file's keys, key renaming).
PUBLISHED: dict[str, tuple[Callable[[int, frozenset[str]], nn.Module], Callable[[str], str | None]]] = {
    "wrn28_10": (lambda classes, _: WideResNet(28, 10, num_classes=classes), _wrn_names),
    "wrn34_10": (lambda classes, _: WideResNet(34, 10, num_classes=classes), _wrn_names),
    "preact_resnet18": (
        lambda classes, keys: PublishedPreActResNet18(classes, input_shortcut=True, final_bn="bn.weight" in keys),
        _preact_names,
    ),
    "preact_resnet18_v2": (
        lambda classes, keys: PublishedPreActResNet18(classes, input_shortcut=False, final_bn="bn.weight" in keys),
        _preact_names,
    ),
    "resnet18": (lambda classes, _: ResNet18(num_classes=classes), _same_names),
}


def published_architecture(name: str) -> str:
    """``name`` as a key of :data:`PUBLISHED` (``-`` read as ``_``); ValueError listing the known ones."""
    key = name.strip().lower().replace("-", "_")
    if key not in PUBLISHED:
        raise ValueError(f"unknown --architecture {name!r}; known: {', '.join(PUBLISHED)}")
    return key


def from_published(name: str, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` in the published layout of architecture ``name``, renamed into hmcam's network's names."""
    rename = PUBLISHED[published_architecture(name)][1]
    result: dict[str, Tensor] = {}
    for key, tensor in state.items():
        new = rename(key)
        if new is not None:
            result[new] = tensor
    return result


def _complete(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Add what old or bias-free published files lack and does not change the function: BN counters, a zero bias."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key in state:
            continue
        if key.endswith("num_batches_tracked") and key.replace("num_batches_tracked", "running_mean") in state:
            state[key] = torch.zeros_like(tensor)
        elif key == "fc.bias" and "fc.weight" in state:
            state[key] = torch.zeros_like(tensor)
    return state


def num_classes_of(name: str, state: Mapping[str, Tensor]) -> int:
    """The number of classes of a published state dict: the rows of its classifier's weight."""
    renamed = from_published(name, state)
    for key in ("fc.weight", "linear.weight"):
        if key in renamed and renamed[key].dim() == 2:
            return int(renamed[key].shape[0])
    raise ValueError(f"the weights have no classifier (fc.weight or linear.weight) of architecture {name}")


def load_published(name: str, state: Mapping[str, Tensor], source: str, num_classes: int | None = None) -> nn.Module:
    """Architecture ``name`` with ``state`` (published layout) loaded strictly, in eval mode on the CPU.

    ``num_classes`` defaults to the classifier's rows in ``state``; a wrong key set is one
    :class:`~hmcam.models.external.WeightsError` line naming the missing and unexpected keys.
    """
    key = published_architecture(name)
    build, _ = PUBLISHED[key]
    classes = num_classes_of(key, state) if num_classes is None else num_classes
    renamed = from_published(key, state)
    model = build(classes, frozenset(renamed))
    load_weights(model, _complete(model, renamed), f"{source} (as {key})")
    return model.eval()
