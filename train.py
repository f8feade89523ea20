"""Train a VAE or nonparametric VAE on MNIST: ``python train.py --z_dim 500``.

The command is npvae_tf/cli/train.py, installed as ``npvae-train``.
"""

from npvae_tf.cli.train import main, parse_args  # noqa: F401  (tests load the script)

if __name__ == "__main__":
    main()
