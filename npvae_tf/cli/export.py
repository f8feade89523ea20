"""Export a trained run as a TensorFlow SavedModel for serving: ``python export.py RUN --out DIR``.

Signatures (dynamic batch size N; docs/serving.md): serving_default / reconstruct (images
[N, P] -> reconstructions), encode (-> z_mean, z_stddev; npVAE: x = f(y), and x_placed for the
neighbour schemes), decode (z -> images), and for the npVAE generate_from_x (x [N, D] ->
sharp images from the VAE's decoder), sample (count, seed -> images), reconstruct_through_x
(images -> the X path decoder's images and log_prob, through the served location) and, for
the neighbour schemes, place (images -> x from the 15 nearest training images). Loading
needs TensorFlow only: ``tf.saved_model.load(DIR).signatures["encode"](images=...)``.
"""

import json
import os

from npvae_tf.cli import common as cli
from npvae_tf.core.config import ConfigError
from npvae_tf.runs.layout import RunError, check_run_dir
from npvae_tf.runs.outputs import check_writable
from npvae_tf.serving.folders import INFO_FILE, ExportError, check_target


def parse_args(argv=None):
    parser = cli.parser("export.py", __doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a finished run folder made by train.py")
    parser.add_argument("--out", default=None,
                        help="SavedModel folder to write (default: RUN_DIR/saved_model); an "
                             "earlier export there is replaced once the new one is complete")
    parser.add_argument("--chunk_size", type=cli.positive_int, default=None,
                        help="reference points per kernel chunk in generate_from_x "
                             "(default: 1024)")
    parser.add_argument("--xla", action="store_true",
                        help="compile generate_from_x's kernel with XLA, for serving from "
                             "Python (a stock TensorFlow Serving CPU build does not run XLA; "
                             "each new batch size compiles on first use)")
    parser.add_argument("--data", "--data_dir", dest="data", metavar="PATH", default=None,
                        help="the run's training data, if not where its data.json says; read "
                             "only for a neighbour-scheme run whose reference set does not keep "
                             "its training images (trained by an earlier version)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    out = args.out or os.path.join(args.run_dir, "saved_model")
    try:  # not a finished run, or nowhere to write: fail before TensorFlow starts
        check_run_dir(args.run_dir)
        check_writable(out, "export folder")
        check_target(out)
    except (RunError, ExportError) as e:
        cli.fail("export.py", str(e))
    from npvae_tf.serving.export import DEFAULT_CHUNK_SIZE, export_run

    try:
        path = export_run(args.run_dir, out, chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE,
                          jit_compile=args.xla, data=args.data)
    except (ConfigError, ExportError) as e:
        cli.fail("export.py", str(e))
    with open(os.path.join(path, INFO_FILE)) as f:
        info = json.load(f)
    print(f"SavedModel: {path}")
    print(f"signatures: {', '.join(info['signatures'])}")


if __name__ == "__main__":
    main()
