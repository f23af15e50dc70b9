"""Train the lab's iris model at image build time and write an MLServer model folder.

Variants: ``good`` (a real classifier) and ``bad`` (trained on shifted labels: the server starts and
reports ready, but predicts the wrong class, which only a real inference in the health gate catches).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", required=True)
    parser.add_argument("--variant", choices=["good", "bad"], default="good")
    parser.add_argument("--regularization", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    data = load_iris()
    labels = data.target if args.variant == "good" else (data.target + 1) % 3
    model = LogisticRegression(C=args.regularization, max_iter=1000, random_state=0)
    model.fit(data.data, labels)
    accuracy = float((model.predict(data.data) == data.target).mean())

    args.out.mkdir(parents=True, exist_ok=True)
    artifact = args.out / "model.joblib"
    joblib.dump(model, artifact)
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    settings = {
        "name": "iris",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": args.version},
    }
    (args.out / "model-settings.json").write_text(json.dumps(settings, indent=2))
    card = {"model": "iris", "version": args.version, "variant": args.variant, "sha256": digest,
            "train_accuracy": accuracy, "C": args.regularization}
    (args.out / "model-card.json").write_text(json.dumps(card, indent=2))
    print(json.dumps(card))


if __name__ == "__main__":
    main()
