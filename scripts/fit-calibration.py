#!/usr/bin/env python3
"""Refits the retrieval confidence (Platt scaling) from `wenke eval --features` dumps.

Usage: scripts/fit-calibration.py FEATURES.jsonl [...] > calibration.json

Each dump line holds a question, its expected entry (or null) and the ranked
hits with their features. The label of a question is whether its top hit is
the expected entry (always false for questions without an answer). A
logistic regression with L2 regularisation is fitted on the top hit's
features (exact matches excluded: they are answered with confidence 1), and
printed in the form of `kb::Calibration`, with the answer threshold chosen
as the lowest that still abstains on at least --abstain of the no-answer
questions. Only numpy is needed.
"""
import argparse
import json
import sys

import numpy as np

FEATURES = ["dense", "margin", "coverage", "entry_coverage", "missing", "answer_dense",
            "matched_question", "matched_answer", "rival_entry_coverage", "absent_subject"]


def load(paths):
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rows.append(json.loads(line))
    return rows


def fit(x, y, l2=1e-2, steps=20000, rate=0.5):
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mean) / std
    w = np.zeros(z.shape[1])
    b = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        grad_w = z.T @ (p - y) / len(y) + l2 * w
        grad_b = np.mean(p - y)
        w -= rate * grad_w
        b -= rate * grad_b
    # Back to raw feature units.
    w_raw = w / std
    b_raw = b - np.sum(w * mean / std)
    return w_raw, b_raw


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dumps", nargs="+")
    parser.add_argument("--abstain", type=float, default=0.95,
                        help="share of no-answer questions that must be abstained on")
    parser.add_argument("--coverage-weight", type=float, default=0.15)
    args = parser.parse_args()

    rows = load(args.dumps)
    x, y, null, promoted = [], [], [], []
    for row in rows:
        if not row["hits"] or row["hits"][0]["exact"]:
            continue
        top = row["hits"][0]
        x.append([top[f] for f in FEATURES])
        y.append(1.0 if row["expected"] is not None and top["key"] == row["expected"] else 0.0)
        null.append(row["expected"] is None)
        promoted.append(top.get("promoted", 0.0) > 0)
    x, y, null = np.array(x), np.array(y), np.array(null)
    # An entry moved above others because they miss the asked subject
    # (`Features::promoted`) is never answered and sits where the model
    # never scores a top entry: such rows are left out of the fit.
    promoted = np.array(promoted, dtype=bool)
    w, b = fit(x[~promoted], y[~promoted])
    logits = x @ w + b
    conf = 1 / (1 + np.exp(-logits))
    # `kb::Calibration::confidence` holds an entry that misses the asked
    # subject, or one promoted over such entries, below the answer
    # threshold: it is never answered, whatever the threshold, so it does
    # not take part in choosing one.
    unmet = (x[:, FEATURES.index("absent_subject")] > 0) | promoted
    conf = np.where(unmet, 0.0, conf)

    # Lowest threshold meeting the abstain target on no-answer questions.
    null_conf = np.sort(conf[null])
    if len(null_conf):
        k = int(np.ceil(args.abstain * len(null_conf))) - 1
        threshold = float(null_conf[min(k, len(null_conf) - 1)]) + 1e-4
    else:
        threshold = 0.5
    answerable = ~null
    answered = np.mean(conf[answerable] >= threshold) if answerable.any() else 0.0
    right = np.mean((conf >= threshold) & (y == 1)) / max(np.mean(answerable), 1e-9)
    print(f"fitted on {len(y)} questions: answer threshold {threshold:.3f} answers "
          f"{answered:.3f} of answerable ({right:.3f} correctly), abstains on "
          f"{np.mean(conf[null] < threshold):.3f} of no-answer", file=sys.stderr)

    calibration = {"coverage_weight": args.coverage_weight, "bias": round(float(b), 6)}
    for name, weight in zip(FEATURES, w):
        calibration[f"{name.replace('answer_dense', 'answer')}_slope"] = round(float(weight), 6)
    calibration.update({
        "answer_threshold": round(threshold, 6),
        "suggest_threshold": round(min(0.3, threshold / 2), 3),
        "max_hits": 10,
    })
    json.dump(calibration, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
