"""Export a trained run as a TensorFlow SavedModel for serving: ``python export.py RUN --out DIR``.

The command is npvae_tf/cli/export.py, installed as ``npvae-export``.
"""

from npvae_tf.cli.export import main, parse_args  # noqa: F401  (tests load the script)

if __name__ == "__main__":
    main()
