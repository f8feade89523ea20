"""Train a VAE or nonparametric VAE on MNIST: ``python train.py --z_dim 500``.

The command is npvae_tf/commands/train.py, installed as ``npvae-train``.
"""

from npvae_tf.commands.train import main

if __name__ == "__main__":
    main()
