"""`fp8stream zoo`: many checkpoints, one Ray task each, straight from and to object storage.

Ray does the scheduling, retries and placement; this package only lists the work
(`listing`), decides what is already done (`identity`), runs one file (`task`) and drives
the tasks (`driver`). docs/remote.md has the commands and the measured figures.
"""
