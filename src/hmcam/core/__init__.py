"""The bottom layer: what every other package shares and nothing domain-specific.

- :mod:`hmcam.core.validate`: the one set of argument checks.
- :mod:`hmcam.core.storage`: atomic files and safetensors with metadata (nothing unpickles).
- :mod:`hmcam.core.distributed`: devices, process groups and collectives under ``torchrun``.
- :mod:`hmcam.core.batching`: reading labelled datasets in batches.
"""
