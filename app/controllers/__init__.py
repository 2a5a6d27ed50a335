"""What the main window's menus and panels do, apart from how the window is laid out.

Each controller is a ``QObject`` holding references to the widgets it drives; the window builds
the widgets, creates the controllers and wires signals. ``MonitorController`` routes snapshots to
the monitor views and colours the canvas; ``RunController`` starts, pauses and stops runs (and
downloads datasets for them); ``SessionController`` opens, scrubs, closes and exports sessions;
``WeightsController`` loads, saves and tests checkpoints; ``NetController`` opens and saves nets.
"""
