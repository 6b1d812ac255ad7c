"""Synaptic substrates: exact software and a simulated phase-change-memory (PCM) crossbar.

Imports nothing else of pcmeta.
"""
