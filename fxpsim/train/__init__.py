"""The embedded NumPy trainer: initialisation, losses, optimizers, schedules, data.

The layers themselves (forward and backward) live in :mod:`fxpsim.graph`,
the one layer graph shared by the trainer and the fixed-point simulator.
"""
