"""The source-code modality: C/C++ functions as token sequences (issue: vulnerable-code detection
from few labels). Parsing, label-leak removal, vocabularies, views and encoders live here.

It is one object, CODE, a Modality (contrastive.modality_base). Items are int64
(V, L) token tensors: row 0 the normalised function, rows 1.. its semantics-preserving variants.

Juliet is read whole by default (`--juliet-cases`, DEFAULT_CASES), split by flaw variant, its parse cached by
content (contrastive.code.cache); the defaults for a CPU (the bag encoder, 512 tokens) are measured in BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from contrastive.batches import Views, ViewSpec
from contrastive.code.baselines import BASELINES
from contrastive.code.data import MAX_TOKENS
from contrastive.errors import ContrastiveError
from contrastive.fields import opt
from contrastive.modality_base import Modality

TASK_CHOICES = ("vulnerable", "cwe")
# 0: the whole suite, all 64,099 test cases (issue 24); `--juliet-cases N` draws N of them with a fixed
# seed (contrastive.code.data.SUBSET_SEED). The split is by flaw variant (1,689 of them), so a subset of
# cases holds a few flow variants of many flaws. The first load of the whole suite parses ~100,900 files
# and draws the variants of its ~74k functions; both are cached by content (contrastive.code.cache), so
# later loads read them back. Until issue 24 the default was 600 cases (1,171 training and 324 test
# functions), the largest subset whose default pipeline fitted 30 minutes on this project's shared 2-core
# CPU (benchmarks/results/juliet.md: 698 s at a load of about 5; 300 cases 469 s); pretraining helped the
# encoder's kNN only with more functions (benchmarks/results/code_ablation.md: 1,000 cases +0.03 to +0.05
# over random init). The whole suite is for a GPU or torchrun; on a CPU pass e.g. --juliet-cases 600.
DEFAULT_CASES = 0


@dataclass(frozen=True)
class Options:
    task: str = opt("vulnerable", "the label set; vulnerable (from Juliet's bad*/good* names: flawed or "
                                  "fixed) or cwe (the test case's CWE)", choices=TASK_CHOICES)
    juliet_cases: int = opt(DEFAULT_CASES, "how many Juliet test cases to read, a fixed random draw; 0 (the "
                                           "default): all 64,099, for a GPU or torchrun (on a CPU e.g. 600)")
    # 512: Juliet puts a flaw's sink at the end of its function; 128 tokens cut 23% of the suite's functions (29% of
    # the flawed ones), 256 cut 10% (7,393 of 74,124), 512 cut 296 (0.4%). On Juliet's validation split (issue 24;
    # AdamW bag, 8 epochs of SimCLR, 3 draws of 1% labels, PR-AUC of "vulnerable"; benchmarks/results/
    # juliet_levers.md) 256 -> 512 took the tuned probe from 0.653 to 0.696 and fine-tuning from 0.700 to 0.725,
    # at the same speed: a batch is cut to its longest function (contrastive.code.views.trimmed), and the bag's cost
    # follows the tokens it reads. The cnn's and the transformer's cost grows with the length: on a CPU they are
    # for --max-tokens 128 or 256.
    max_tokens: int = opt(MAX_TOKENS, "tokens per function; longer ones are cut (counted in the log); 512 holds "
                                      "all but 296 of the whole Juliet suite's 74,124 functions whole (256: 90%)")
    variants: int = opt(4, "stored versions of each function, the original and semantics-preserving "
                           "rewrites drawn once at load time (renaming, dead code, reordering)")
    vocab_size: int = opt(8000, "the most tokens in the vocabulary, built from the training split only")


class CodeModality(Modality):
    name = "code"
    noun = "functions"
    kind = "source-code data"
    Options = Options
    load_options = ("task", "juliet_cases", "max_tokens", "variants", "vocab_size")
    specs = "juliet:DIR, code:DIR, code:FILE.jsonl"
    specs_help = ("source code: juliet:DIR (the unpacked juliet-c folder of NIST's Juliet C/C++ 1.3, labelled by "
                  "--task), code:DIR (any C/C++ tree, unlabelled) or code:FILE.jsonl (records {\"code\", \"label\"})")
    backbones_help = ("source code: bag (hashed token n-grams, averaged), cnn or transformer; default bag on a CPU "
                      "(about 8 times the cnn's speed at 128 tokens), transformer on a GPU")
    # The 1% fits' 100-step floor (PipelineConfig) was sized for the digits' speed. On the whole Juliet suite (issue
    # 24; AdamW bag after 8 epochs of SimCLR, 3 draws of 1% = 533 labels, PR-AUC of "vulnerable" on the 5,944
    # validation functions; benchmarks/results/juliet_levers.md) fine-tuning for 100 / 300 / 1,000 steps read
    # 0.658 / 0.677 / 0.680, and the same network from random init 0.646 at 100 steps and 0.666 at 300, so the
    # supervised baseline gets the 300 too. The 10% fits (30 epochs of 21 batches) are above 300 already.
    pipeline_defaults = {"finetune": {"min_steps": 300}, "supervised": {"min_steps": 300}}
    # code has no picture (draws stays False): `similar` then says so and writes no sheet (contrastive.apply)

    @property
    def baselines(self) -> dict:
        """name -> fit(labeled, pool, val, num_classes, seed, positive=None) -> predictor (items -> float
        (len(items), num_classes) probabilities): class-weighted TF-IDF + logistic regression with C chosen on
        validation, and its self-training over the pool (contrastive.code.baselines)."""
        return BASELINES

    @staticmethod
    def claims(spec: str | None) -> bool:
        return spec is not None and spec.partition(":")[0].strip().lower() in ("juliet", "code")

    @staticmethod
    def load(spec: str, options: Options, inputs: dict | None = None):
        """The data; with an encoder's inputs, tokenised with that encoder's vocabulary and length."""
        from contrastive.code.data import load_code

        o = _checked(options)
        length = inputs["max_tokens"] if inputs else o.max_tokens
        return load_code(spec, task=o.task, max_tokens=length, variants=o.variants, vocab_size=o.vocab_size,
                         juliet_cases=o.juliet_cases or None, vocab=inputs["vocab"] if inputs else None)

    def resolve(self, options: Options | dict, data) -> Options:
        """Nothing depends on the data: the options as given, checked."""
        return _checked(self.options(options))

    @staticmethod
    def default_backbone(data, device_type: str = "cpu") -> str:
        """bag on a CPU: 1,380 functions a second on one core at 128 tokens, 7.8 times the cnn (32 times at
        512; benchmarks/results/code_encoders.json), the speed the whole suite needs on 2 cores (issue 24);
        the transformer on a GPU."""
        return "bag" if device_type == "cpu" else "transformer"

    @staticmethod
    def default_optimizer(backbone: str) -> str:
        """What the backbone's class asks for (the bag: adamw; contrastive.code.encoders.TokenBag.optimizer)."""
        from contrastive.code.encoders import ENCODER_CLASSES
        from contrastive.optim import asked_optimizer

        return asked_optimizer(ENCODER_CLASSES.get(backbone)) or "sgd"

    @staticmethod
    def encoder_inputs(data, options: Options) -> dict:
        return {"vocab": list(data.vocab), "max_tokens": data.max_tokens}

    @staticmethod
    def build_encoder(backbone: str, inputs: dict):
        from contrastive.code.encoders import build_encoder

        return build_encoder(backbone, len(inputs["vocab"]), inputs["max_tokens"])

    @staticmethod
    def check_inputs(inputs: dict, data, path) -> None:
        if list(data.vocab) != list(inputs["vocab"]) or data.max_tokens != inputs["max_tokens"]:
            raise ContrastiveError(f"{path} reads tokens with another vocabulary or length than {data.name} was read "
                                   f"with; pass the --data, --juliet-cases and --vocab-size it was trained on")

    @staticmethod
    def pretrain_views(spec: ViewSpec, dataset, inputs: dict, options: Options) -> Views:
        """As many token views as the method asks for global views, all from one recipe whatever its family
        (contrastive.code.views: the family names image recipes). No local views: a window of a function's
        tokens is no smaller view of the same function (the crops that would make one erase the few tokens
        a flaw is in, see views.py), so a method that asks for some is refused; multi-crop methods, which
        ask for the modality's default number (local_views None), get none."""
        from contrastive.code.views import TokenRecipe, one_item, placeholder_blocks, token_view, trimmed

        if spec.local_views:
            raise spec.refusal("code", "source code has no local views", "use a method without local views")
        if spec.global_views < 1:
            raise spec.refusal("code", "a method needs at least one view", "ask for 1 or more global views")
        blocks, count = placeholder_blocks(inputs["vocab"]), spec.global_views

        def views(items, g):
            return [token_view(items, TokenRecipe(), g, blocks) for _ in range(count)]

        # Items read one by one keep the full length: a DataLoader stacks them.
        return Views(lambda item: one_item(views, item), lambda items, g: trimmed(views(items, g)))

    @staticmethod
    def classifier_views(dataset, inputs: dict, augment: bool | str) -> Views:
        """The light token view (step 1 and a 5% mask; "strong" gets it too: the generic crops and span
        deletions erase the few tokens that make a function vulnerable, see views.py) or the function
        untouched."""
        from contrastive.code.views import LIGHT, one_item, token_view, trimmed

        if not augment:
            return CodeModality.eval_views(dataset, inputs)

        def light(items, g):
            return [token_view(items, LIGHT, g)]

        return Views(lambda item: one_item(light, item), lambda items, g: trimmed(light(items, g)))

    @staticmethod
    def eval_views(dataset, inputs: dict) -> Views:
        """The function itself (row 0), untouched (batches cut to their longest function)."""
        from contrastive.code.views import trimmed

        return Views(lambda item: [item[0]], lambda items, g: trimmed([items[:, 0]]))

    @staticmethod
    def groups(dataset) -> list[str]:
        """The unit of the split: a Juliet function's flaw variant, a tree's file, a record (contrastive.code.data)."""
        return list(dataset.groups)

    @staticmethod
    def batch_families(dataset) -> list[str]:
        """A Juliet function's test case (its file without the a/b/... part: the flawed function and its fixed
        twins, one flow), elsewhere its group. Finer than the split's flaw variant, whose dozens of flow
        variants would fill a batch with functions that differ only in their control flow; on the whole suite
        (AdamW, 8 epochs of SimCLR, 3 draws of 1% labels, validation PR-AUC of a tuned logistic probe) test cases
        read 0.591 against 0.552 for flaw variants (issue 24)."""
        from contrastive.code.juliet import case_of

        cases = [case_of(i.split(":", 1)[0]) if ":" in i else None for i in dataset.ids]
        return [case[0] if case else group for case, group in zip(cases, dataset.groups)]

    @staticmethod
    def colourings(dataset) -> dict:
        """The report's extra t-SNE colourings: the test case's CWE and vulnerable / fixed (issue 14;
        contrastive.code.juliet.colourings)."""
        from contrastive.code.juliet import colourings

        return colourings(dataset)

    # --- applying what was learned (predict, similar, export) -------------------------------

    @staticmethod
    def read_item(path: str, inputs: dict) -> torch.Tensor:
        """A query as a raw item int64 (1, L), read with the encoder's vocabulary: FILE:FUNCTION, the function
        of that name in a C/C++ file (the first, where #if branches define it twice); FILE, the file's first
        function. An unknown name is refused in one line listing the names the file has."""
        import os

        from contrastive.code.data import encode
        from contrastive.code.extract import read_functions

        # The file is the shortest prefix before a ':' that names one ("ns::f" keeps its colons).
        cut = next((i for i, c in enumerate(path) if c == ":" and os.path.isfile(path[:i])), None)
        file, name = (path, None) if os.path.isfile(path) or cut is None else (path[:cut], path[cut + 1:])
        functions, reason = read_functions(file)
        if not functions:
            raise ContrastiveError(f"{file}: {reason or 'no function found'}; pass a C/C++ file with a function "
                                   f"or SPLIT:INDEX as --query")
        chosen = [f for f in functions if name is None or f.name == name]
        if not chosen:
            names = list(dict.fromkeys(f.name for f in functions))
            shown = ", ".join(names[:40]) + (f" and {len(names) - 40} more" if len(names) > 40 else "")
            partly = " (it parses in part: a function with a parse error is left out)" if reason else ""
            raise ContrastiveError(f"{file} has no function {name!r}{partly}; its functions: {shown}; pass "
                                   f"FILE:FUNCTION with one of those")
        index = {t: i for i, t in enumerate(inputs["vocab"])}
        return encode([list(chosen[0].tokens)], index, inputs["max_tokens"])

    @staticmethod
    def item_set(raw: torch.Tensor):
        """A dataset of one raw item (V, L), as load() gives them."""
        from contrastive.code.data import CodeSet

        return CodeSet(raw[None])

    @staticmethod
    def item_ids(dataset, split: str) -> list:
        """Where each function is: {"file", "function", "line"} (the predict CSV's columns; line 1-based)
        where the items came from source files (ids FILE:FUNCTION and known lines: juliet:DIR, code:DIR), else
        the ids as they are (a record's "line N" of code:FILE.jsonl, "item:N" of a set made in memory)."""
        if not all(":" in i and line > 0 for i, line in zip(dataset.ids, dataset.lines)):
            return list(dataset.ids)
        # A tree's group is the file itself, so a file name with a ':' is cut right there; elsewhere the
        # first ':' ends the file (a C++ name keeps its "::").
        cuts = [len(g) if i.startswith(f"{g}:") else i.index(":") for i, g in zip(dataset.ids, dataset.groups)]
        return [{"file": i[:c], "function": i[c + 1:], "line": str(line)}
                for i, c, line in zip(dataset.ids, cuts, dataset.lines)]

    @staticmethod
    def export_module(module: torch.nn.Module, inputs: dict) -> torch.nn.Module:
        """The encoder itself: it takes the token ids the vocabulary (saved with it) gives."""
        return module

    @staticmethod
    def example_input(inputs: dict, n: int = 2) -> torch.Tensor:
        """int64 (n, L) token ids, a random prefix of each row, padded with 0."""
        g = torch.Generator().manual_seed(0)
        length, size = inputs["max_tokens"], len(inputs["vocab"])
        ids = torch.randint(3, max(4, size), (n, length), generator=g)
        keep = torch.arange(length)[None] < torch.randint(1, length + 1, (n, 1), generator=g)
        return torch.where(keep, ids, torch.zeros_like(ids))

    @staticmethod
    def describe_input(inputs: dict) -> str:
        return (f"int64 token ids (N, {inputs['max_tokens']}), 0 = padding, from a vocabulary of "
                f"{len(inputs['vocab'])}")


def _checked(o: Options) -> Options:
    if o.task not in TASK_CHOICES:
        raise ContrastiveError(f"unknown task '{o.task}'; choose one of: {', '.join(TASK_CHOICES)}")
    return o


CODE = CodeModality()
