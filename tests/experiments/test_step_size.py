"""Fig. 3's jobs: the cache stems of the old runs, and HMCAM's capped fractions after every attack."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hmcam.experiments.step_size import ALPHA_FACTORS, SETTINGS, job_key, step_size_jobs


def _context(sources: list[str]) -> Any:
    return SimpleNamespace(bench=SimpleNamespace(sources=sources), settings=SETTINGS["smoke"])


def test_jobs_keep_the_old_cache_stems_and_compute_the_capped_fractions_last() -> None:
    jobs = step_size_jobs(_context(["MLP", "LeNet"]))
    attacks = [job for job in jobs if job[1] != "capped"]
    assert [job_key(job) for job in attacks] == [
        f"{source}-{attack}-{factor:g}"
        for source in ("MLP", "LeNet")
        for attack in ("mpgd", "hmcam")
        for factor in ALPHA_FACTORS
    ]
    assert jobs[len(attacks) :] == [("MLP", "capped", factor) for factor in ALPHA_FACTORS]
    assert job_key(("MLP", "capped", 0.001)) == "MLP-capped-0.001"
    assert len(set(map(job_key, jobs))) == len(jobs)
