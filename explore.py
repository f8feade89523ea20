"""Explore a run's 2-D space in the browser: ``python explore.py RUN [--port 5006]``.

The command is npvae_tf/cli/explore.py, installed as ``npvae-explore``.
"""

import sys

from npvae_tf.cli.explore import main

if __name__ == "__main__":
    sys.exit(main())
