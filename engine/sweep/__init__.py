"""Sweeps and studies: the cross product of run settings (device, precision, batch, memory
format, threads, CPU allocator), one process and one session per configuration, described by
``DIR/study.json`` (``study``: the format and its reader/writer; ``axes``: values, order, keys;
``runner``: ``run_sweep``)."""
from engine.sweep.study import Study, StudyConfig, is_study, read_study, write_study

__all__ = ["Study", "StudyConfig", "is_study", "read_study", "write_study", "run_sweep", "SweepProgress"]


def __getattr__(name: str):
    if name in ("run_sweep", "SweepProgress"):  # the runner imports RunConfig; the study reader does not
        from engine.sweep import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'engine.sweep' has no attribute {name!r}")
