"""Dialogs of the main window: the held-out predictions grid (``predictions``) and the short
questions and notes the window asks and shows (``prompts``). Each opens alone for a look:
``python -m app.dialogs.predictions CHECKPOINT``."""
