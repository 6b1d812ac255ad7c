"""The ``pcmeta`` command line and the end-to-end runs (train, deploy, evaluate, render, bench)."""
