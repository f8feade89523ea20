"""``npvae-explore RUN``: the explorer (npvae_tf/serving/explorer.py) as a local web app."""

from __future__ import annotations

import argparse
import errno
import socket
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Explore a run's 2-D space in the browser: decode "
        "under the mouse, interpolate, sample, locate test images (serves 127.0.0.1).")
    parser.add_argument("run", help="a finished run folder (npVAE, or a VAE with z_dim 2)")
    parser.add_argument("--port", type=int, default=5006)
    parser.add_argument("--data", "--data_dir", dest="data", metavar="PATH", default=None,
                        help="the data the run was trained on, if it moved (default: where "
                             "data.json says)")
    args = parser.parse_args(argv)
    prog = parser.prog

    def port_error(e: OSError) -> int:
        why = "in use" if e.errno == errno.EADDRINUSE else e.strerror
        print(f"{prog}: error: port {args.port} on 127.0.0.1: {why}", file=sys.stderr)
        return 1

    # Checked before the run loads (seconds), binding as the server will: with
    # SO_REUSEADDR, so a port the last explorer left in TIME_WAIT (Ctrl-C, rerun) is free.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", args.port))
        except OSError as e:
            return port_error(e)
    import npvae_tf
    from npvae_tf.serving.explorer import ExplorerError, make_server

    try:
        run = npvae_tf.load_run(args.run)
        test_images = None
        try:
            from npvae_tf.evaluation.evaluate import load_data_for

            test_images = run.scaling.to_client(load_data_for(run, args.data, {}).test.images)
        except Exception as e:  # the map works without them
            print(f"{prog}: no test images ({str(e).splitlines()[0]})", file=sys.stderr)
        server, _ = make_server(run, args.port, test_images)
    except (npvae_tf.RunError, ExplorerError, ValueError) as e:
        print(f"{prog}: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    except OSError as e:  # taken while the run loaded
        if e.errno != errno.EADDRINUSE:
            raise
        return port_error(e)
    print(f"explorer for {args.run}: http://127.0.0.1:{args.port}/", flush=True)
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
