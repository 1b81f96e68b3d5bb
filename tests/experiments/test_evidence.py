"""Evidence on disk and pooled over zoos (hmcam.experiments.evidence)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hmcam.experiments.claims import Claim, judge
from hmcam.experiments.evidence import evidence_from_records, evidence_records, pool

CLAIM = Claim("e", "up", "HMCAM beats PGD", "+2", "points", "images", "greater")
CAPPED = Claim("e", "flat", "insensitive", "-", "points", "images", "equivalent", margin=1.0)


def test_records_round_trip_through_json() -> None:
    evidence = [CLAIM.evidence([1.0, 2.0, 0.5], ours="ours"), CAPPED.evidence(ours="-", untestable="capped")]
    back = evidence_from_records(json.loads(json.dumps(evidence_records(evidence))))
    assert [item.claim for item in back] == [CLAIM, CAPPED]
    assert back[0].first is not None and back[0].first.tolist() == [1.0, 2.0, 0.5]
    assert back[1].untestable == "capped" and back[1].first is None


def test_pool_labels_each_value_with_its_zoo_and_keeps_untestable_claims() -> None:
    runs = {
        seed: [
            CLAIM.evidence(np.full(4, float(seed)) + np.arange(4), ours="-"),
            CAPPED.evidence(np.zeros(4), ours="-") if seed else CAPPED.evidence(ours="-", untestable="capped"),
        ]
        for seed in (0, 1, 2)
    }
    pooled = pool(runs)
    first = pooled[0]
    assert first.groups is not None and first.groups.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert first.first is not None and first.first.size == 12 and "mean per zoo seed 0: +1.5" in first.ours
    assert pooled[1].untestable == "zoo seed 0: capped"
    records = judge(pooled)
    assert records[0]["unit"] == "3 zoo seeds x images" and records[1]["verdict"] == "untestable"


def test_pool_refuses_one_zoo_or_other_claims() -> None:
    with pytest.raises(ValueError, match="at least two zoos"):
        pool({0: [CLAIM.evidence([1.0], ours="-")]})
    with pytest.raises(ValueError, match="judged other claims"):
        pool({0: [CLAIM.evidence([1.0], ours="-")], 1: [CAPPED.evidence([1.0], ours="-")]})
    with pytest.raises(ValueError, match="lacks or misnames"):
        evidence_from_records([{"values": [1.0]}])
