"""Devices, placement, per-device queues and workers: everything between HTTP and a pipeline."""
