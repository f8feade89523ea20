"""Reproduce the paper: train each scheme at several Z, evaluate them, write docs/results.md.

The command is npvae_tf/cli/reproduce.py, installed as ``npvae-reproduce``.
"""

from npvae_tf.cli.reproduce import main, parse_args  # noqa: F401  (tests load the script)

if __name__ == "__main__":
    main()
