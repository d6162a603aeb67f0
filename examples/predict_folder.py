"""Predict every PNG/JPEG in a folder with a running digitstream service, and teach it the true labels.

    python examples/predict_folder.py examples/digits            # predictions only
    python examples/predict_folder.py examples/digits --teach    # also send each file's true label

A file named after its digit (``7.png``, ``7-smudged.jpg``) carries its true label; with --teach
the label goes back as feedback, which the worker learns like any stream sample. The service is
$DIGITSTREAM_URL, else http://127.0.0.1:8000 (what ``digitstream demo`` starts).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from digitstream.clients.prediction import ClientError, PredictionClient


def true_label(path: Path) -> int | None:
    head = path.stem[:1]
    return int(head) if head.isdigit() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--teach", action="store_true", help="send each file's true label as feedback")
    parser.add_argument("--url", default=os.environ.get("DIGITSTREAM_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("DIGITSTREAM_API_KEY"))
    args = parser.parse_args(argv)
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        print(f"no PNG or JPEG files in {args.folder}", file=sys.stderr)
        return 2
    right = 0
    try:
        with PredictionClient(args.url, api_key=args.api_key, retries=3) as client:
            client.wait_until_ready(timeout=60)
            for path in files:
                result = client.predict_image(path)
                label = true_label(path)
                right += result.digit == label
                verdict = "" if label is None else ("  right" if result.digit == label else f"  wrong (it is {label})")
                print(f"{path.name:>16}  {result.digit}  {result.probabilities[result.digit]:6.1%}{verdict}")
                if args.teach and label is not None:
                    client.feedback(result.prediction_id, label)
    except (ClientError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{right} of {len(files)} right (model version {result.model_version}, {result.samples_learned:,} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
