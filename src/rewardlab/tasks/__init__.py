"""Synthetic tasks with a programmatic, per-token gold reward (pure: no file, no model, no config I/O).

``TASKS`` lists them (``task.name`` picks one); a new task is one module here that registers a ``Task``.
"""

from rewardlab.tasks.registry import TASKS, Task

__all__ = ["TASKS", "Task"]
