"""Evaluate run folders on the test set: python evaluate.py --plots RUN_DIR [RUN_DIR ...]

The command is npvae_tf/cli/evaluate.py, installed as ``npvae-evaluate``.
"""

from npvae_tf.cli.evaluate import main, parse_args  # noqa: F401  (tests load the script)

if __name__ == "__main__":
    main()
