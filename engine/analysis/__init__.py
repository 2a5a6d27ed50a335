"""Every figure LayerScope shows, computed once: the exports, ``layerscope summary`` and the app's
live views all call these functions (one function per figure).

- ``stats``: percentile, which steps count (no warm-up), step time statistics, samples/s
- ``layers``: per-layer mean/median/p95 times, share of the step, achieved GFLOP/s, memory, the
  page-fault cost (``fault_ms``, ``fault_share``, ``alloc_bound``) and a run's (``run_faults``:
  fault_share of the step time and the allocator advice)
- ``energy``: J per step / per sample from energy counters, the run's meter, the power note
- ``summary``: run totals and per-layer rows of a session (the JSON export's content)
- ``compare``: session B against session A
- ``snapshot``: a live run's ``LiveSnapshot`` fed to the same functions (``node_metrics`` too)
- ``memory``: which layers hold the training memory (saved for backward, share of the peak) and one
  step's memory timeline
"""
