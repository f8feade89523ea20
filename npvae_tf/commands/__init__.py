"""The command lines: ``train.py``, ``evaluate.py``, ``export.py``, ``reproduce.py`` in a
checkout, installed as ``npvae-train``, ``npvae-evaluate``, ``npvae-export`` and
``npvae-reproduce`` (pyproject.toml). Each module's ``main(argv=None)`` is the command; they
live in the package so that the installed console scripts can import them."""
