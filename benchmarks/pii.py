"""PII detection quality and speed: ours beside Presidio's pattern recognisers, if installed.

Run by hand: ``.venv/bin/python benchmarks/pii.py [--per-type N] [--runs N]``. Prints tables;
never asserts. Needs the bench-only packages faker and (optionally) presidio-analyzer
(``pip install -e '.[bench]'``); ``make test`` needs neither.

Quality is span-level: a prediction counts when a labelled span of the same type overlaps it.
It is measured on our generated corpus (``pii_corpus.py``) and on Presidio's own recognizer
test cases (``tests/data/pii/presidio_cases.yaml``; weak spans there count neither way).
Latency is find() on each corpus text (the mean), and on ~1 KB and ~4 KB prompts that mix
labelled sentences with plain prose.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from benchmarks.pii_corpus import Sample, Span, build, documents
from policy_extproc.detect import pii_wallets
from policy_extproc.detect.pii import ENTITIES, PiiDetector

Predict = Callable[[str], Iterable[Span]]

# Presidio's entity names for the types we both have; DATE_TIME is any date, not a birth date.
PRESIDIO_NAMES = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "US_SSN": "US_SSN",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP_ADDRESS",
    "US_PASSPORT": "US_PASSPORT",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "DATE_TIME": "DATE_OF_BIRTH",
    "ABA_ROUTING_NUMBER": "US_BANK_ROUTING",
    "US_ITIN": "US_ITIN",
    "UK_NHS": "UK_NHS",
    "CRYPTO": "CRYPTO_WALLET",
}


def score(predict: Predict, positives: list[Sample], negatives: list[Sample]) -> dict[str, object]:
    """Per-type TP/FP/FN over the positives, and false positives per negative kind."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for sample in positives:
        gold = list(sample.spans)
        for p in predict(sample.text):
            hit = next(
                (g for g in gold if g.entity == p.entity and p.start < g.end and g.start < p.end),
                None,
            )
            if hit is None:
                fp[p.entity] += 1
            else:
                tp[p.entity] += 1
                gold.remove(hit)
        for g in gold:
            fn[g.entity] += 1
    neg_fp: Counter[str] = Counter()
    neg_examples: list[str] = []
    for sample in negatives:
        preds = list(predict(sample.text))
        neg_fp[sample.kind.removeprefix("negative:")] += len(preds)
        if preds and len(neg_examples) < 5:
            p = preds[0]
            neg_examples.append(f"{p.entity}: {sample.text[p.start : p.end]!r} in {sample.text!r}")
    return {"tp": tp, "fp": fp, "fn": fn, "neg_fp": neg_fp, "neg_examples": neg_examples}


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 (0 where undefined)."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def ours() -> Predict:
    """Our detector with every type on, as a predictor."""
    detector = PiiDetector()
    return lambda text: (Span(m.entity, m.start, m.end) for m in detector.find(text))


CASES = Path(__file__).resolve().parent.parent / "tests" / "data" / "pii" / "presidio_cases.yaml"


def presidio_cases() -> list[tuple[str, str, list[Span], list[Span]]]:
    """(type, text, gold spans, weak spans) of Presidio's cases whose spans are all given."""
    out = []
    for c in yaml.safe_load(CASES.read_text())["cases"]:
        gold = [Span(c["entity"], a, b) for a, b in c["spans"]]
        weak = [Span(c["entity"], a, b) for a, b in c.get("weak", [])]
        if len(gold) + len(weak) == c["count"]:
            out.append((c["entity"], c["text"], gold, weak))
    return out


def score_cases(predict: Callable[[str, str], Iterable[Span]]) -> dict[str, Counter[str]]:
    """Per-type TP/FP/FN over Presidio's cases, one type enabled per case as in its tests."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for entity, text, gold, weak in presidio_cases():
        left = list(gold)
        for p in predict(entity, text):
            hit = next((g for g in left if p.start < g.end and g.start < p.end), None)
            if hit is not None:
                tp[entity] += 1
                left.remove(hit)
            elif not any(p.start < w.end and w.start < p.end for w in weak):
                fp[entity] += 1
        fn[entity] += len(left)
    return {"tp": tp, "fp": fp, "fn": fn}


def ours_per_type() -> Callable[[str, str], Iterable[Span]]:
    """Our detector with only the asked type on (one detector per type)."""
    detectors: dict[str, PiiDetector] = {}

    def predict(entity: str, text: str) -> list[Span]:
        d = detectors.setdefault(entity, PiiDetector([entity]))
        return [Span(m.entity, m.start, m.end) for m in d.find(text)]

    return predict


def presidio() -> Callable[[str], list[tuple[Span, float]]] | None:
    """Presidio's predefined recognisers over a blank spaCy pipeline (no model to download).

    Without a trained pipeline there are no lemmas, so Presidio's context words (which it
    compares with lemmas) do not raise its scores: it runs on its base pattern scores.
    """
    try:
        import spacy
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
    except ImportError:
        return None
    # tldextract (its e-mail recogniser) tries to download the suffix list, then falls back to
    # its bundled copy; the failed download is only noise here.
    logging.getLogger("tldextract").disabled = True

    class BlankSpacy(SpacyNlpEngine):  # type: ignore[misc]
        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}

    engine = BlankSpacy(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.load()
    registry = RecognizerRegistry()
    registry.load_predefined_recognizers(nlp_engine=engine)
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])
    entities = list(PRESIDIO_NAMES)

    def analyze(text: str) -> list[tuple[Span, float]]:
        results = analyzer.analyze(text, language="en", entities=entities)
        return [(Span(PRESIDIO_NAMES[r.entity_type], r.start, r.end), r.score) for r in results]

    return analyze


def at_threshold(analyze: Callable[[str], list[tuple[Span, float]]], threshold: float) -> Predict:
    """The spans an analyser scores at or above threshold (analyses cached per text)."""
    cache: dict[str, list[tuple[Span, float]]] = {}

    def predict(text: str) -> list[Span]:
        if text not in cache:
            cache[text] = analyze(text)
        return [span for span, s in cache[text] if s >= threshold]

    return predict


def latency(find: Callable[[str], object], docs: list[str], runs: int) -> tuple[float, float]:
    """p50 and p99 of one call, in microseconds."""
    for d in docs[:20]:
        find(d)
    times = []
    for i in range(runs):
        doc = docs[i % len(docs)]
        pii_wallets.is_eth_address.cache_clear()  # every run pays the Keccak it would pay cold
        t0 = time.perf_counter_ns()
        find(doc)
        times.append((time.perf_counter_ns() - t0) / 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def table(results: dict[str, dict[str, Counter[str]]], names: list[str]) -> None:
    """Per-type precision, recall and F1, one column group per detector."""
    head = f"{'type':<18}" + "".join(f"| {n + ' P':>10} {'R':>5} {'F1':>5} " for n in names)
    print(head + "\n" + "-" * len(head))
    for entity in ENTITIES:
        row = f"{entity:<18}"
        for n in names:
            r = results[n]
            tp, fp, fn = r["tp"][entity], r["fp"][entity], r["fn"][entity]
            if (n.startswith("presidio") and entity not in PRESIDIO_NAMES.values()) or not (
                tp + fp + fn
            ):
                row += f"| {'-':>10} {'-':>5} {'-':>5} "
                continue
            p, rc, f1 = prf(tp, fp, fn)
            row += f"| {p:>10.3f} {rc:>5.3f} {f1:>5.3f} "
        print(row)


def mean_per_text(find: Callable[[str], object], texts: list[str], rounds: int = 5) -> float:
    """Mean microseconds of one find() over the corpus texts (best of rounds)."""
    for t in texts[:50]:
        find(t)
    best = float("inf")
    for _ in range(rounds):
        pii_wallets.is_eth_address.cache_clear()
        t0 = time.perf_counter_ns()
        for t in texts:
            find(t)
        best = min(best, (time.perf_counter_ns() - t0) / 1000 / len(texts))
    return best


def main() -> None:
    """Build the corpus, score both detectors, time them, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-type", type=int, default=150)
    ap.add_argument("--runs", type=int, default=2000)
    args = ap.parse_args()
    positives, negatives = build(per_type=args.per_type)
    print(f"corpus: {len(positives)} labelled sentences, {len(negatives)} hard negatives\n")

    results = {"ours": score(ours(), positives, negatives)}
    theirs = presidio()
    if theirs is not None:
        # Presidio's default threshold is 0 (everything it scores); 0.5 matches ours.
        results["presidio"] = score(at_threshold(theirs, 0.5), positives, negatives)
        results["presidio@0"] = score(at_threshold(theirs, 0.0), positives, negatives)
    else:
        print("presidio-analyzer not installed: ours only\n")

    names = list(results)
    print("our corpus:")
    table(results, names)  # type: ignore[arg-type]

    print(f"\n{'hard negatives (false positives)':<34}" + "".join(f"{n:>12}" for n in names))
    kinds = sorted({s.kind.removeprefix("negative:") for s in negatives})
    for kind in kinds:
        count = sum(s.kind == f"negative:{kind}" for s in negatives)
        print(
            f"{kind + f' ({count})':<34}"
            + "".join(
                f"{results[n]['neg_fp'][kind]:>10}"
                for n in names  # type: ignore[index]
            )
        )
    for n in names:
        for ex in results[n]["neg_examples"]:  # type: ignore[attr-defined]
            print(f"  {n} false positive: {ex}")

    case_results = {"ours": score_cases(ours_per_type())}
    if theirs is not None:
        reverse = {ours_name: p for p, ours_name in PRESIDIO_NAMES.items()}

        def theirs_per_type(entity: str, text: str) -> list[Span]:
            if entity not in reverse:
                return []
            return [span for span, _ in theirs(text) if span.entity == entity]  # type: ignore[misc]

        case_results["presidio@0"] = score_cases(theirs_per_type)
    print(f"\nPresidio's recognizer cases ({len(presidio_cases())} with spans):")
    table(case_results, list(case_results))

    texts = [s.text for s in positives + negatives]
    print(f"\nmean find() per corpus text ({len(texts)} texts, all types on):")
    print(f"  ours      {mean_per_text(PiiDetector().find, texts):7.1f} us")
    print(
        f"\nlatency of find(), all {len(ENTITIES)} types on, {args.runs} runs each (Presidio 1/20)"
    )
    print("  prose: no PII; typical: ~5% of sentences labelled or look-alikes; dense: ~35%")
    labelled = positives + negatives
    finders: dict[str, Callable[[str], object]] = {"ours": PiiDetector().find}
    if theirs is not None:
        finders["presidio"] = theirs
    for size in (1024, 4096):
        for mix, rate in (("prose", 0.0), ("typical", 0.05), ("dense", 0.35)):
            docs = documents(labelled, size, 50, rate=rate)
            values = sum(len(list(ours()(d))) for d in docs) / len(docs)
            for n, find in finders.items():
                runs = args.runs if n == "ours" else max(50, args.runs // 20)
                p50, p99 = latency(find, docs, runs)
                kb = size / 1024
                print(
                    f"  {n:<9} {size // 1024} KB {mix:<8} ({values:4.1f} PII values): "
                    f"p50 {p50:7.1f} us  p99 {p99:7.1f} us"
                    f"  ({p50 / kb:6.1f} / {p99 / kb:6.1f} us/KB)"
                )


if __name__ == "__main__":
    main()
