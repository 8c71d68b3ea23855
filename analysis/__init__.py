"""Spectra from i-PI trajectories: IR, INS, and the NQE comparison."""
