"""Training callbacks (npvae_tf/training/callbacks.py): the progress line."""

import io
import types

from npvae_tf.core.objective import Objective
from npvae_tf.training.callbacks import Progress

LOGS = {"loss": 100.0, "elbo": -95.0, "val_elbo": -96.0, "kl": 20.0, "match": 3.129,
        "neighbour": 0.812, "landmark": 1.5, "lengthscale": 0.5}


def epoch_line(objective, logs=LOGS):
    stream = io.StringIO()
    progress = Progress(epochs=2, steps=None, live=False, stream=stream)
    progress.set_model(types.SimpleNamespace(objective=objective))
    progress.on_train_begin()
    progress.on_epoch_begin(0)
    progress.on_epoch_end(0, dict(logs))
    return stream.getvalue()


def test_the_line_shows_the_active_terms_and_not_an_inactive_match():
    line = epoch_line(Objective(match_weight=0.0, neighbour_weight=1.0, landmark_weight=1.0))
    assert "neighbour 0.812" in line and "landmark 1.500" in line
    assert "match" not in line
    assert line.startswith("epoch 1/2  ELBO -95.00/-96.00  KL 20.00")


def test_the_papers_objective_shows_its_match_term():
    line = epoch_line(Objective())
    assert "match 3.129" in line and len(line.rstrip("\n")) <= 100
