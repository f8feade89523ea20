"""The explorer (npvae_tf/serving/explorer.py, explore.py) in a real headless Chromium, on a
run of the recommended (neighbour) scheme: hover decodes the location (equal to
generate_from_x), two clicks give the strip, a test image is placed as the SavedModel places
it, the map has a legend, every function is traced before the page is offered; bad input
fails in one line."""

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import npvae_tf
from npvae_tf.core.objective import SCHEMES
from tests.browser import free_port, headless_chromium, wait_for
from tests.helpers import ROOT, digit_images, make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("explore") / "run")
    images, labels = digit_images(400, 0)
    make_run(folder, images, labels, z_dim=6, **SCHEMES["neighbour"].changes)
    return folder


@pytest.fixture(scope="module")
def served(run_dir):
    """The app on a free port, for the toy run, or for the run in ``NPVAE_EXPLORE_RUN`` (to
    measure the latency on a real one: ``NPVAE_EXPLORE_RUN=runs/... pytest -s -k hover``)."""
    from npvae_tf.serving.explorer import make_server

    run = npvae_tf.load_run(os.environ.get("NPVAE_EXPLORE_RUN") or run_dir)
    port = free_port()
    server, state = make_server(run, port, digit_images(20, 3)[0])
    # Warmed before the page is offered: the first hover does not trace.
    assert run._serving.generate_from_x.experimental_get_tracing_count() >= 1
    assert run._serving.place.experimental_get_tracing_count() >= 1
    thread = threading.Thread(target=server.io_loop.start, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/", state, run
    finally:
        server.io_loop.add_callback(server.stop)
        server.io_loop.add_callback(server.io_loop.stop)
        thread.join(10)


def test_hover_decodes_the_location_and_two_clicks_give_the_strip(served, tmp_path):
    url, state, run = served
    driver = headless_chromium()
    try:
        driver.set_page_load_timeout(30)
        driver.get(url)
        # The plot's frame in CSS pixels and data ranges, read from BokehJS.
        view = wait_for(lambda: driver.execute_script("""
            const doc = Bokeh.documents[0]; if (!doc) return null;
            const plot = doc.get_model_by_name('map'); if (!plot) return null;
            const v = Bokeh.index.get_one(plot); if (!v || !v.frame) return null;
            const el = v.el; const r = el.getBoundingClientRect();
            return {left: r.left, top: r.top, fl: v.frame.bbox.left, ft: v.frame.bbox.top,
                    fw: v.frame.bbox.width, fh: v.frame.bbox.height,
                    x0: plot.x_range.start, x1: plot.x_range.end,
                    y0: plot.y_range.start, y1: plot.y_range.end};"""), 30)
        assert view["x1"] > view["x0"] and view["fw"] > 0

        def move_to(fx, fy):
            """Moves the mouse to the fraction (fx, fy) of the frame; returns the data point."""
            px = view["left"] + view["fl"] + fx * view["fw"]
            py = view["top"] + view["ft"] + (1 - fy) * view["fh"]
            driver.execute_cdp_cmd("Input.dispatchMouseEvent",
                                   {"type": "mouseMoved", "x": px, "y": py})
            return (view["x0"] + fx * (view["x1"] - view["x0"]),
                    view["y0"] + fy * (view["y1"] - view["y0"]))

        latencies, shown = [], []
        # Two known points checked against generate_from_x, then more moves for the
        # latency (reported, not asserted: it depends on the machine and its load).
        path = [(0.3, 0.4), (0.7, 0.65)] + [(0.2 + 0.06 * i, 0.7 - 0.04 * i) for i in range(10)]
        for fx, fy in path:
            before = state.decoded
            t = time.perf_counter()
            expected_xy = move_to(fx, fy)
            wait_for(lambda: state.decoded > before
                     and np.allclose(state.last_location, expected_xy,
                                     atol=0.02 * (view["x1"] - view["x0"])))
            # The image reached the page: the hover image's data source holds it.
            wait_for(lambda: driver.execute_script(
                "const f = Bokeh.documents[0].get_model_by_name('hover_image');"
                "const d = f.renderers[0].data_source.data.image[0];"
                "return d && d.length > 0 && Array.from(d).some(v => v !== 0xffffffff "
                "&& v !== -1);"))
            latencies.append(time.perf_counter() - t)
            if len(shown) < 2:
                location, image = state.last_location.copy(), state.last_image.copy()
                np.testing.assert_allclose(image, run.generate_from_x(location[None])[0],
                                           rtol=1e-5, atol=1e-5)
                shown.append((location, image))
        assert not np.allclose(shown[0][1], shown[1][1])
        warm = np.array(latencies[1:]) * 1000
        print(f"\nhover -> image latency, M = {len(run.reference.x):,}: first move "
              f"{latencies[0] * 1000:.0f} ms (traces the function); then median "
              f"{np.median(warm):.0f} ms, max {warm.max():.0f} ms over {len(warm)} moves")

        # Two clicks: the interpolation strip.
        for fx, fy in ((0.3, 0.4), (0.7, 0.65)):
            px = view["left"] + view["fl"] + fx * view["fw"]
            py = view["top"] + view["ft"] + (1 - fy) * view["fh"]
            for kind in ("mousePressed", "mouseReleased"):
                driver.execute_cdp_cmd("Input.dispatchMouseEvent", {
                    "type": kind, "x": px, "y": py, "button": "left", "clickCount": 1})
            time.sleep(0.3)
        strip = wait_for(lambda: driver.execute_script(
            "const f = Bokeh.documents[0].get_model_by_name('strip');"
            "return f.renderers[0].data_source.data.image.length;"))
        assert strip == 8 and state.strip is not None and state.strip.shape[0] == 8
        # A test image and samples (buttons).
        for name in ("test_button", "sample_button"):
            driver.execute_script(  # Bokeh 3 renders widgets in shadow DOM: click via its view
                f"const v = Bokeh.index.get_one(Bokeh.documents[0].get_model_by_name('{name}'));"
                "(v.button_el || v.shadow_el.querySelector('button')).click();")
        wait_for(lambda: state.test is not None and state.samples is not None)
        # The test image is placed as the SavedModel places it; the panel shows the sharp
        # image there and the X path decoder's reconstruction through X.
        test = state.test
        np.testing.assert_array_equal(test["location"], run.locate(test["image"][None])[0])
        np.testing.assert_allclose(test["through_x"],
                                   run.reconstruct_through_x(test["image"][None])[0][0],
                                   rtol=1e-5, atol=1e-5)
        notes = driver.execute_script(
            "const d = Bokeh.documents[0];"
            "return [d.get_model_by_name('test_note').text,"
            "        d.get_model_by_name('decoders').text];")
        assert "15 nearest training images" in notes[0] and "own decoder" in notes[0]
        assert "VAE's decoder" in notes[1]
        # A legend entry per class of the map.
        entries = driver.execute_script(
            "return Bokeh.documents[0].get_model_by_name('legend').items.length;")
        if not os.environ.get("NPVAE_EXPLORE_RUN"):
            assert entries == len(np.unique(run.reference.labels)) == 10
        time.sleep(0.5)
        driver.save_screenshot("/tmp/npvae_explorer.png")
    finally:
        driver.quit()


def test_bad_input_is_one_line_and_nonzero(tmp_path, run_dir):
    cmd = [sys.executable, f"{ROOT}/explore.py"]
    out = subprocess.run(cmd + [str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0
    assert out.stderr.startswith("explore.py: error:")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(cmd + [run_dir, "--port", str(port)], capture_output=True,
                             text=True, timeout=120)
    assert out.returncode == 1 and "in use" in out.stderr and out.stderr.count("\n") == 1


def test_a_port_left_in_time_wait_is_free_for_a_rerun(tmp_path):
    """Ctrl-C and rerun: the old server's closed connections hold its port in TIME_WAIT, which
    the server's own bind (SO_REUSEADDR) accepts; the port check must not call it in use."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server side closes first: its port goes to TIME_WAIT
        client.close()
    out = subprocess.run([sys.executable, f"{ROOT}/explore.py", str(tmp_path / "none"),
                          "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "in use" not in out.stderr
    assert "no such run folder" in out.stderr
