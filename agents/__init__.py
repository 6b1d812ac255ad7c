"""Learning-to-learn agents written against the :mod:`pcmeta.hardware` Substrate interface."""
