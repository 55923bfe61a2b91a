"""Which convolutions of a population forward run a compiled kernel: measured once per machine.

The compiled kernels (compiled_kernels.py) were tuned on one CPU; on another CPU, at other shapes
or thread counts, torch's ops can be faster. So by default a compiled kernel serves a call only
where it measured faster here: the program's candidates (each convolution on its compiled kernel
or on torch's ops, forward.convolution_paths lists them) each run one input chunk of the call's
shapes, in turn, a few times, and the fastest is kept when it takes at most MARGIN of the time of
torch's ops alone; otherwise torch's ops run.

The decision is kept in this process and on disk beside the built kernels
(kernel_cache.cache_folder(), one `autotune-<key>.json` per decision), under a key of
everything it depends on: the kernels' builds (their file names hash the source, compiler, flags
and CPU), the CPU's model and flags, torch's version and thread count, the architecture and the
shapes timed. A later process reads it instead of timing again; deleting the files measures
afresh (a decision timed while other work loaded the machine is kept like any other).

ZOOSCOPE_COMPILED_KERNELS=0 runs torch's ops and =1 every compiled kernel that can run, neither
timing anything (compiled_kernels.kernel_mode).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from zooscope.population.kernel_cache import cache_folder

log = logging.getLogger(__name__)

# A compiled candidate must take at most this fraction of torch's time: within noise, torch wins.
MARGIN = 0.9
ROUNDS = 3  # timed runs of each candidate at least, after one warm-up run
# ... and more, up to MAX_ROUNDS, until each has run this long: a cheap chunk gets enough runs that
# some of them are not held up by other work on the machine (a thread descheduled in a parallel
# region stalls it for a time slice, longer than the whole chunk)
MIN_SECONDS = 0.05
MAX_ROUNDS = 25
# A candidate this many times slower than the best after a round cannot win: it runs no more.
DROP_FACTOR = 3.0
# Bumped when the meaning of a stored decision changes: older files are then timed afresh.
DECISION_FORMAT = 1

Origin = Literal["measured", "cached", "forced", "torch"]


@dataclass(frozen=True)
class PathChoice:
    """Which convolutions (state_dict prefixes) run compiled, and what that rests on."""

    compiled: frozenset[str]
    # "measured" now, read from the "cached" decision, "forced" (ZOOSCOPE_COMPILED_KERNELS=1) or
    # "torch" (asked for, or no compiled kernel can run)
    origin: Origin
    chosen: str = ""  # the label of the chosen candidate
    timings: Mapping[str, float] = field(default_factory=dict)  # best seconds a chunk, by label
    models: int = 0  # the shapes timed: models, inputs in the chunk
    inputs: int = 0


_LOCK = threading.RLock()  # one tuning at a time: two at once would time each other
# by identity and candidates: looked up on every forward call, so without hashing them to a key
_DECISIONS: dict[Hashable, PathChoice] = {}


def forget_decisions() -> None:
    """Drop the decisions this process holds (the files stay): tests, a changed environment."""
    with _LOCK:
        _DECISIONS.clear()


def choose(
    identity: Mapping[str, Hashable],
    candidates: Mapping[str, frozenset[str]],
    prepare: Callable[[frozenset[str]], Callable[[], object]],
    *,
    reference: str,
    models: int,
    inputs: int,
) -> PathChoice:
    """The candidate (label -> the layers it compiles) to run, by the decision stored under
    `identity` (values written to the file as their str) or by timing each: `prepare(layers)`
    gives a function that runs one chunk that way, and `reference` labels torch's ops alone, which
    a compiled candidate must beat by MARGIN."""
    memo = (tuple(sorted(identity.items())), tuple(sorted(candidates)))
    decision = _DECISIONS.get(memo)
    if decision is not None:
        return decision
    key = decision_key(identity, candidates)
    with _LOCK:
        decision = _DECISIONS.get(memo) or _read(key, candidates)
        if decision is None:
            timings = time_candidates({label: prepare(layers) for label, layers in candidates.items()})
            chosen = pick(timings, reference)
            decision = PathChoice(candidates[chosen], "measured", chosen, timings, models, inputs)
            log.info(
                "autotune %s: %s -> %s",
                describe_identity(identity),
                ", ".join(f"{label} {seconds * 1e3:.2f} ms" for label, seconds in timings.items()),
                chosen,
            )
            _write(key, identity, decision)
        _DECISIONS[memo] = decision
        return decision


def pick(timings: Mapping[str, float], reference: str) -> str:
    """The fastest candidate when it takes at most MARGIN of `reference`'s time, else `reference`."""
    fastest = min(timings, key=timings.__getitem__)
    if fastest != reference and timings[fastest] <= MARGIN * timings[reference]:
        return fastest
    return reference


def time_candidates(runners: Mapping[str, Callable[[], object]]) -> dict[str, float]:
    """Best seconds of each runner: one warm-up run each, then rounds of each in turn (so that
    drifts in the machine's speed reach all alike), ROUNDS of them and more until every runner
    still timed has run MIN_SECONDS (at most MAX_ROUNDS). After ROUNDS rounds (before, a stall
    could pass for slowness), a runner DROP_FACTOR times slower than the best runs no more: its
    best so far is what it gets."""
    for run in runners.values():
        run()
    best = dict.fromkeys(runners, float("inf"))
    spent = dict.fromkeys(runners, 0.0)
    active = list(runners)
    for done in range(1, MAX_ROUNDS + 1):
        for label in active:
            started = time.perf_counter()
            runners[label]()
            seconds = time.perf_counter() - started
            best[label], spent[label] = min(best[label], seconds), spent[label] + seconds
        if done < ROUNDS:
            continue
        fastest = min(best.values())
        active = [label for label in active if best[label] <= DROP_FACTOR * fastest]
        if all(spent[label] >= MIN_SECONDS for label in active):
            break
    return best


def decision_key(identity: Mapping[str, Hashable], candidates: Mapping[str, frozenset[str]]) -> str:
    """The name of the decision's file: a hash of everything it depends on."""
    text = json.dumps(
        {"format": DECISION_FORMAT, **identity, "candidates": sorted(candidates)}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def describe_identity(identity: Mapping[str, Hashable]) -> str:
    return ", ".join(
        f"{key} {identity[key]}" for key in ("kernel", "architecture", "models", "inputs") if key in identity
    )


def _path(key: str) -> Path:
    return cache_folder() / f"autotune-{key}.json"


def _read(key: str, candidates: Mapping[str, frozenset[str]]) -> PathChoice | None:
    try:
        stored = json.loads(_path(key).read_text())
        chosen, timings = stored["chosen"], {str(k): float(v) for k, v in stored["timings"].items()}
        if chosen not in candidates:
            return None
        return PathChoice(
            candidates[chosen], "cached", chosen, timings, int(stored["models"]), int(stored["inputs"])
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:  # unreadable: time again
        log.warning("autotune decision %s unreadable, timing afresh: %s", _path(key), error)
        return None


def _write(key: str, identity: Mapping[str, Hashable], decision: PathChoice) -> None:
    """Written beside its final name and renamed, so a reader never sees half a file; a folder
    that cannot be written keeps the decision for this process only."""
    record = {
        "format": DECISION_FORMAT,
        "identity": identity,
        "chosen": decision.chosen,
        "compiled": sorted(decision.compiled),
        "timings": dict(decision.timings),
        "models": decision.models,
        "inputs": decision.inputs,
    }
    path = _path(key)
    scratch: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
            scratch = handle.name
            json.dump(record, handle, indent=1, sort_keys=True, default=str)
        os.replace(scratch, path)
    except OSError as error:
        log.warning("autotune decision not stored in %s: %s", path.parent, error)
        if scratch is not None:
            Path(scratch).unlink(missing_ok=True)
