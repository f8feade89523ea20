"""Export a trained run as a TensorFlow SavedModel for serving: ``python export.py RUN --out DIR``.

Signatures (dynamic batch size N): serving_default / reconstruct (images [N, 784] in [0, 1]
-> reconstruction probabilities), encode (-> z_mean, z_stddev, and x for the npVAE), decode
(z -> images), generate_from_x (npVAE: x [N, D] -> images, over the run's reference set) and
sample (count, seed -> images). Loading needs TensorFlow only:
``tf.saved_model.load(DIR).signatures["encode"](images=...)``.
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
                          jit_compile=args.xla)
    except (ConfigError, ExportError) as e:
        cli.fail("export.py", str(e))
    with open(os.path.join(path, INFO_FILE)) as f:
        info = json.load(f)
    print(f"SavedModel: {path}")
    print(f"signatures: {', '.join(info['signatures'])}")


if __name__ == "__main__":
    main()
