"""experiments/benchmarks/bench_optimizer.py: the summary over interleaved rounds."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments", "benchmarks"))


def test_summarize_reports_rounds_the_torch_child_missed():
    from bench_optimizer import summarize

    rounds = [{"a": 1.0, "b": 2.0, "torch": 4.0}, {"a": 2.0, "b": 3.0}, {"a": 1.0, "b": 4.0}]
    out = summarize(rounds, "a", "torch")
    t, vs_base, vs_ref, missing = out["b"]
    assert t == 3.0 and vs_base == (2.0, 1.5, 4.0) and missing == []
    assert vs_ref == (0.5, 0.5, 0.5)  # only round 1 timed the reference
    t, vs_base, vs_ref, missing = out["torch"]
    assert (t, vs_base, vs_ref, missing) == (4.0, (4.0, 4.0, 4.0), (1.0, 1.0, 1.0), [2, 3])
    assert summarize(rounds[1:], "a", "torch")["b"][2] is None  # no reference at all
    assert out["a"][:2] == (1.0, (1.0, 1.0, 1.0))
