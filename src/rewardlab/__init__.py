"""rewardlab: a reproducible, workflow-managed laboratory for reward models and RLHF."""

__version__ = "0.1.0"
