"""nodenet.simulations: a discrete-event simulator that runs the real `nodenet.protocol` code.

In a notebook::

    from nodenet.simulations import Scenario, run
    result = run(Scenario.load("partition_heal"), seed=1, nodes=200)
    result.summary.convergence_s
    result.to_csv("out/")

`sweep` runs a scenario over a grid of settings; `Cluster` is the lower-level building
block (nodes, faults, virtual time). docs/simulations.md is the guide.
"""

from nodenet.simulations.cluster import Cluster
from nodenet.simulations.links import LinkModel
from nodenet.simulations.results import Result, Summary
from nodenet.simulations.runner import SweepRun, build, run, sweep
from nodenet.simulations.scenario import Scenario, ScenarioError, available

__all__ = [
    "Cluster",
    "LinkModel",
    "Result",
    "Scenario",
    "ScenarioError",
    "Summary",
    "SweepRun",
    "available",
    "build",
    "run",
    "sweep",
]
