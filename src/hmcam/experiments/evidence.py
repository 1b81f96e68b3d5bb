"""A run's claim evidence on disk, and the evidence of several zoos pooled into one per claim.

Every attack experiment keeps the per-unit values behind its claims in ``evidence.json``
(:func:`evidence_records`), so that the runs of one experiment on several zoos (one per zoo seed)
can be judged together: :func:`pool` joins each claim's values of every zoo, labelled with the
zoo seed, for the two-stage bootstrap of :func:`hmcam.experiments.claims.judge`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hmcam.experiments.claims import Claim, Evidence

#: The file of a run folder that holds its claims' evidence.
EVIDENCE_FILE = "evidence.json"


def evidence_records(evidence: Sequence[Evidence]) -> list[dict[str, Any]]:
    """``evidence`` as JSON-ready records: the claim's declaration, the values, the sentence, the reason."""
    return [
        {
            "claim": dataclasses.asdict(item.claim),
            "values": None if item.first is None else item.first.tolist(),
            "versus": None if item.second is None else item.second.tolist(),
            "ours": item.ours,
            "untestable": item.untestable,
        }
        for item in evidence
    ]


def evidence_from_records(records: Sequence[Mapping[str, Any]]) -> list[Evidence]:
    """The evidence :func:`evidence_records` wrote; a ValueError names a record that is not one."""
    evidence = []
    for record in records:
        try:
            claim = Claim(**record["claim"])
            evidence.append(
                claim.evidence(
                    record["values"], versus=record["versus"], ours=record["ours"], untestable=record["untestable"]
                )
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"an evidence record lacks or misnames a field ({error})") from None
    return evidence


def pool(runs: Mapping[int, Sequence[Evidence]]) -> list[Evidence]:
    """One :class:`~hmcam.experiments.claims.Evidence` per claim from the runs on several zoos (seed -> evidence).

    Each claim's paired values of every zoo are joined and labelled with their zoo seed. A claim
    untestable on any zoo is untestable (the reason names the zoo): pooling only the zoos where it
    could be tested would choose the zoos by their outcome.
    """
    if len(runs) < 2:
        raise ValueError(f"pooling needs the runs of at least two zoos, got {len(runs)}")
    seeds = sorted(runs)
    names = [item.claim.name for item in runs[seeds[0]]]
    by_seed = {seed: {item.claim.name: item for item in runs[seed]} for seed in seeds}
    for seed in seeds:
        if sorted(by_seed[seed]) != sorted(names):
            raise ValueError(f"zoo seed {seed} judged other claims ({sorted(by_seed[seed])}) than seed {seeds[0]}")
    pooled = []
    for name in names:
        items = {seed: by_seed[seed][name] for seed in seeds}
        claim = items[seeds[0]].claim
        blocked = [(seed, item.untestable) for seed, item in items.items() if item.untestable]
        if blocked:
            reason = "; ".join(f"zoo seed {seed}: {why}" for seed, why in blocked)
            pooled.append(claim.evidence(ours="-", untestable=reason))
            continue
        if any(item.second is not None for item in items.values()):
            raise ValueError(f"claim {name!r}: only paired per-unit evidence can be pooled over zoos")
        values = [np.asarray(items[seed].first) for seed in seeds]
        means = ", ".join(f"{seed}: {float(value.mean()):+.3g}" for seed, value in zip(seeds, values, strict=True))
        pooled.append(
            claim.evidence(
                np.concatenate(values),
                ours=f"mean per zoo seed {means}",
                groups=np.concatenate([np.full(value.size, seed) for seed, value in zip(seeds, values, strict=True)]),
            )
        )
    return pooled
