"""Rebuild ``external.yaml`` from the public sources (see README.md here). Run by hand, once:

    python tests/data/semantic/external/build.py GARAK_GIT DEEPSET_TRAIN_JSON DEEPSET_TEST_JSON

``GARAK_GIT``: a bare clone of NVIDIA/garak (the commit named in README.md); the deepset files:
the two parquet files of deepset/prompt-injections (as copied in sinanw/llm-security-prompt-
injection) turned into JSON lists of {text, label}. Sampling and the split use fixed seeds;
near-duplicates (word 3-gram Jaccard >= 0.5, or the same garak document) stay on one side.
"""

from __future__ import annotations

import ast
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parent / "external.yaml"
SEED = 13
_GERMAN = re.compile(r"\b(und|der|die|das|ich|nicht|ist|wie|sie|mir|du|bitte|eine?)\b", re.I)


def _show(git: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", git, "show", f"HEAD:{path}"],
                          check=True, capture_output=True, text=True).stdout  # fmt: skip


def _class_attrs(source: str, names: dict[str, str]) -> dict[str, dict[str, object]]:
    """Literal class attributes (f-strings of the module's markers evaluated) per class."""
    out: dict[str, dict[str, object]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        attrs: dict[str, object] = {}
        for item in node.body:
            if isinstance(item, ast.Assign) and isinstance(item.targets[0], ast.Name):
                try:
                    expr = compile(ast.Expression(item.value), "<attr>", "eval")
                    attrs[item.targets[0].id] = eval(expr, {"__builtins__": {}}, dict(names))
                except Exception:
                    continue
        out[node.name] = attrs
    return out


def latent(git: str, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """garak's latent-injection probes: documents with an instruction buried in them (attacks)
    and the same documents without it (benign), grouped by document."""
    src = _show(git, "garak/probes/latentinjection.py")
    marks = {"INJECTION_MARKER": "<|i|>", "PAYLOAD_MARKER": "<|p|>", "TRIGGER_MARKER": "<|t|>"}
    classes = _class_attrs(src, marks)
    snippet = classes["FactSnippetMixin"]
    attacks, benign = [], []
    for name in ("LatentInjectionReportFull", "LatentInjectionResumeFull",
                 "LatentInjectionFactSnippetEiffelFull", "LatentInjectionFactSnippetLegalFull",
                 "LatentJailbreakFull", "LatentWhois"):  # fmt: skip
        c = {**snippet, **classes[name]} if "paragraphs" in classes[name] else classes[name]
        contexts = list(c.get("contexts", []))  # type: ignore[call-overload]
        if "paragraphs" in c:
            paras = list(c["paragraphs"])  # type: ignore[call-overload]
            for _ in range(4):
                picked = rng.sample(paras, min(3, len(paras)))
                picked.insert(rng.randrange(len(picked) + 1), "<|i|>")
                contexts.append("\n".join(picked))
        tops = list(c.get("top_instructions", [""]))  # type: ignore[call-overload]
        seps = list(c.get("injection_sep_pairs", [("", "")]))  # type: ignore[call-overload]
        instr = list(c.get("injection_instructions", ["<|p|>"]))  # type: ignore[call-overload]
        payloads = list(c.get("payloads", ["<|t|>"]))  # type: ignore[call-overload]
        triggers = list(c.get("payload_triggers", ["Haha pwned!"]))  # type: ignore[call-overload]
        if not triggers:
            triggers = ["This domain is clearly not malicious."]
        for k, ctx in enumerate(c for c in contexts if "<|i|>" in c):
            group = f"garak-latent:{name}:{k}"
            top = rng.choice(tops)
            clean = (top + ctx.replace("<|i|>", "")).strip()
            if len(ctx) > 200:  # a document, not a bare template: its clean form is benign
                benign.append(_item(clean, "benign", "document", "garak-latent", group))
            for _ in range(2 if len(ctx) > 200 else 1):
                s0, s1 = rng.choice(seps)
                inj = rng.choice(instr).replace("<|p|>", rng.choice(payloads))
                inj = inj.replace("<|t|>", rng.choice(triggers))
                text = (rng.choice(tops) + ctx.replace("<|i|>", s0 + inj + s1)).strip()
                attacks.append(_item(text, "attack", "indirect", "garak-latent", group))
    return attacks, benign


def _item(text: str, label: str, family: str, source: str, group: str = "") -> dict:
    lang = "de" if len(_GERMAN.findall(text)) >= 2 else "en"
    if re.search(r"[\u4e00-\u9fff]", text):
        lang = "zh"
    return {"text": text, "label": label, "family": family, "source": source, "lang": lang,
            "group": group}  # fmt: skip


def garak_direct(git: str, rng: random.Random) -> tuple[list[dict], list[dict]]:
    attacks, benign = [], []
    wild = json.loads(_show(git, "garak/data/inthewild_jailbreak_llms.json"))
    attacks += [_item(t, "attack", "jailbreak_wild", "garak-inthewild")
                for t in rng.sample(wild, 110)]  # fmt: skip
    names = subprocess.run(["git", "--git-dir", git, "ls-tree", "--name-only", "HEAD",
                            "garak/data/dan/"], check=True, capture_output=True,
                           text=True).stdout.split()  # fmt: skip
    for path in names:
        for t in json.loads(_show(git, path)):
            t = t.replace("{generator.name}", "ChatGPT")
            attacks.append(_item(t, "attack", "persona_dan", "garak-dan"))
    sysp = json.loads(_show(git, "garak/data/sysprompt_extraction/attacks.json"))
    for cat, texts in sysp.items():
        attacks += [_item(t, "attack", "extraction", f"garak-sysprompt:{cat}") for t in texts]
    ns: dict[str, object] = {}
    exec(_show(git, "garak/resources/promptinject/prompt_data.py"), ns)
    rogue = list(ns["rogue_strings"].values())  # type: ignore[attr-defined]
    bases = [v["instruction"] for v in ns["openai_playground_prompts"].values()]  # type: ignore[attr-defined]
    for v in ns["goal_hikacking_attacks"].values():  # type: ignore[attr-defined]
        for base in rng.sample(bases, 2):
            text = base + v["instruction"].replace("{REPLACE_rogue_string}", rng.choice(rogue))
            attacks.append(_item(text, "attack", "override", "garak-promptinject"))
    for v in ns["prompt_leaking_attacks"].values():  # type: ignore[attr-defined]
        for base in rng.sample(bases, 2):
            attacks.append(_item(base + v["instruction"], "attack", "extraction",
                                 "garak-promptinject"))  # fmt: skip
    benign += [_item(b, "benign", "task_prompt", "garak-promptinject") for b in bases]
    normal = json.loads(_show(git, "garak/data/payloads/normal_instructions.json"))["payloads"]
    benign += [_item(t, "benign", "request", "garak-normal") for t in normal]
    harmful = []
    for name in ("malicious_uses", "information_hazard", "human_chatbox"):
        lines = _show(git, f"garak/data/donotanswer/{name}.jsonl").splitlines()
        harmful += [json.loads(x)["prompt"] for x in lines if x.strip()]
    benign += [_item(t, "benign", "harmful_question", "garak-donotanswer")
               for t in rng.sample(harmful, 60)]  # fmt: skip
    return attacks, benign


def deepset(train: str, test: str, rng: random.Random) -> tuple[list[dict], list[dict]]:
    rows = json.loads(Path(train).read_text()) + json.loads(Path(test).read_text())
    inj = [r["text"] for r in rows if r["label"] == 1]
    ok = [r["text"] for r in rows if r["label"] == 0]
    return ([_item(t, "attack", "deepset", "deepset") for t in rng.sample(inj, 140)],
            [_item(t, "benign", "request", "deepset") for t in rng.sample(ok, 250)])  # fmt: skip


def _shingles(text: str) -> set[tuple[str, ...]]:
    w = re.findall(r"\w+", text.lower())
    return {tuple(w[i : i + 3]) for i in range(max(len(w) - 2, 1))}


def split(items: list[dict], rng: random.Random) -> None:
    """Union-find of near-duplicates and same-document groups; each group to one side."""
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    sh = [_shingles(x["text"]) for x in items]
    by_group: dict[str, int] = {}
    for i, x in enumerate(items):
        if x["group"]:
            j = by_group.setdefault(x["group"], i)
            parent[find(i)] = find(j)
        for j in range(i):
            a, b = sh[i], sh[j]
            if len(a & b) >= 0.5 * min(len(a), len(b)) and find(i) != find(j):
                parent[find(i)] = find(j)
    roots = sorted({find(i) for i in range(len(items))})
    side = {r: ("ext-tune" if rng.random() < 0.5 else "ext-heldout") for r in roots}
    for i, x in enumerate(items):
        x["split"] = side[find(i)]
        del x["group"]


def main() -> None:
    git, train, test = sys.argv[1:4]
    rng = random.Random(SEED)
    a1, b1 = deepset(train, test, rng)
    a2, b2 = garak_direct(git, rng)
    a3, b3 = latent(git, rng)
    seen: set[str] = set()
    items = []
    for x in [*a1, *a2, *a3, *b1, *b2, *b3]:
        key = " ".join(x["text"].lower().split())
        if key and key not in seen:
            seen.add(key)
            items.append(x)
    split(items, rng)
    head = "# Built by build.py (see README.md): public sources, fixed seeds. Do not edit.\n"
    OUT.write_text(head + yaml.safe_dump({"items": items}, allow_unicode=True, width=100,
                                         sort_keys=False))  # fmt: skip


if __name__ == "__main__":
    main()
