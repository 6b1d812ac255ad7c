"""Task families and data: Omniglot few-shot sampling; arm target trajectories, kinematics, input codes.

Imports nothing else of pcmeta.
"""
