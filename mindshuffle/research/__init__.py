"""Research on the zoo, not the zoo itself: the paper's questions asked of the models.

- ``analysis``: params, FLOPs and memory access cost (MAC) per layer and in total (``tools/profile.py``).
- ``guidelines``: the ShuffleNet V2 paper's guideline experiments G1-G4, rebuilt and timed
  (``tools/guidelines.py``).
- ``benchmark``: speed on the current device: latency, throughput, training-step speed, compile time, memory
  (``tools/benchmark.py``).

research/ stands on the zoo (``builder``, ``layers``, ``fileio``) and nothing in the zoo imports it: training,
evaluation, export and the model table work without it. The model table's params and FLOPs are the registry's
recorded figures (counted once with ``analysis`` and checked against it in the tests), not a count at run time.
"""
