"""How many nearest training images to place a new image from: a sweep on validation images.

    python benchmarks/placement_neighbours.py RUN [--k 5 10 15 25]

For a finished run of a neighbour scheme, each of the run's validation images (never the test
set) is placed at the median X of its k nearest training images (the served rule,
:mod:`npvae_tf.model.placement`), for each k, and measured as evaluation measures the served
column: 5-NN accuracy and trustworthiness of the placed X, the Fréchet distance (against the
real validation images) and class accuracy of the VAE decoder's images there, and the X path
with the X path's decoder. Prints one JSON line per k, then the encoder's f(y) for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run of a neighbour scheme")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 15, 25])
    args = parser.parse_args(argv)
    import numpy as np

    from npvae_tf.evaluation.classifier import load_or_train_classifier
    from npvae_tf.evaluation.metrics import (embedding_trustworthiness, frechet_distance,
                                             knn_accuracy)
    from npvae_tf.evaluation.settings import Settings
    from npvae_tf.evaluation.steps import decoder_for, x_path_log_likelihood_at
    from npvae_tf.model.placement import place
    from npvae_tf.runs.load import load_run, training_data

    run = load_run(args.run)
    data = training_data(run)
    images, labels = data.validation.images, data.validation.labels
    stored, scale = run.placement_set(dataset=data)
    s = Settings()
    classifier = load_or_train_classifier(
        data.train.images, data.train.labels, data.test.images, data.test.labels,
        data.image_shape, s.classifier_cache, s.classifier_epochs, s.seed, log=print)
    real, _ = classifier.predict(images)
    decode = decoder_for(run, s.batch_size)
    ref = run.reference

    def measured(x):
        features, probs = classifier.predict(decode(x))
        return {"knn5": knn_accuracy(ref.x, ref.labels, x, labels, (5,))[5],
                "trust": embedding_trustworthiness(images, x, 5, s.trust_subset, s.seed),
                "frechet": frechet_distance(features, real),
                "accuracy": float(np.mean(np.argmax(probs, -1) == labels)),
                "x_path": float(np.mean(x_path_log_likelihood_at(run, x, images,
                                                                 s.batch_size)))}

    for k in args.k:
        print(json.dumps({"k": k, **measured(place(stored, ref.x, images, k=k, scale=scale))}))
    print(json.dumps({"k": "f(y)", **measured(run.model.embed(images).numpy())}))


if __name__ == "__main__":
    main()
