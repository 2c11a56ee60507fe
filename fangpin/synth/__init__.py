"""Synthetic ledger generator (`fangpin synth`): a household simulation written in the contract's format.

See docs/synthetic-data.md for the model, its rates and its calibration.
"""
